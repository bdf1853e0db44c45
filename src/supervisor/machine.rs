//! One service's state machine, as pure logic: events in, actions out, no processes, no clock
//! reads (the caller passes `now`). The runtime executes the actions and feeds back results.
//!
//! ```text
//!            up / scan(no down file)                 exit (wanted up, crash)
//!   Down ─────────────────────────────▶ Up ─────────────────────────────▶ Backoff ──timer──▶ Up
//!    ▲  ▲                               │ │                                   │
//!    │  └──────── exit (wanted down, ───┘ │ down: TERM (+CONT)                │ down
//!    │           stay-down code,          ▼                                   ▼
//!    │           finish 125)           Stopping ──timeout: KILL──▶ (exit) ──▶ Down
//!    │                                    │ exit
//!    └──────── Finishing (s6 `finish` runs after every exit; 125 = stay down)
//! ```

use crate::config::Backoff;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Down,
    Up {
        pid: i32,
    },
    /// TERM sent; KILL at the deadline if it is still there.
    Stopping {
        pid: i32,
    },
    /// The s6 `finish` script runs; the service is down meanwhile.
    Finishing {
        pid: i32,
    },
    /// Waiting to restart after a crash.
    Backoff {
        until: Instant,
    },
}

impl State {
    /// The state as the control protocol spells it.
    pub fn wire(&self) -> crate::control::ServiceState {
        use crate::control::ServiceState as W;
        match self {
            State::Down => W::Down,
            State::Up { .. } => W::Up,
            State::Stopping { .. } => W::Stopping,
            State::Finishing { .. } => W::Finishing,
            State::Backoff { .. } => W::Backoff,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Exit codes after which the service stays down (native services: 0 and 78).
    pub stay_down_codes: Vec<i32>,
    /// Run `finish` after each exit (s6 services that have one).
    pub has_finish: bool,
    pub stop_timeout: Duration,
    pub finish_timeout: Duration,
    pub backoff: Backoff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The service's process group.
    Service,
    /// The finish script's process group.
    Finish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start the service now; report the outcome with `spawned`.
    Spawn,
    /// Start `finish` with s6's arguments: exit code (256 when killed) and signal number.
    SpawnFinish {
        code: i32,
        signal: i32,
    },
    Kill(Target, i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Want up; start if down (s6-svc -u).
    Up,
    /// Start if down, but do not restart after the next exit (s6-svc -o).
    Once,
    /// Want down; TERM then KILL (s6-svc -d).
    Down,
    /// Restart now, wanted up afterwards.
    Restart,
    /// Deliver a signal; an exit it causes restarts at once when wanted up (s6-svc -t/-k…).
    Signal(i32),
    Exited(Exit),
    FinishResult(Exit),
    Tick,
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub state: State,
    pub wanted_up: bool,
    pub policy: Policy,
    /// Consecutive crashes without a stable run in between.
    pub failures: u32,
    /// When the current streak of crashes (the one `failures` counts) began.
    pub failing_since: Option<Instant>,
    pub last_exit: Option<Exit>,
    /// When the state last changed between up and down (for status).
    pub since: Instant,
    up_since: Option<Instant>,
    /// Deadline for KILL while Stopping/Finishing.
    kill_at: Option<Instant>,
    /// The next exit was asked for by an operator: restart at once, not counted as a crash.
    expected_exit: bool,
    /// Exit seen, decision waits for finish.
    pending_exit: Option<Exit>,
}

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;
const SIGCONT: i32 = 18;

impl Machine {
    pub fn new(policy: Policy, wanted_up: bool, now: Instant) -> Machine {
        Machine {
            state: State::Down,
            wanted_up,
            policy,
            failures: 0,
            failing_since: None,
            last_exit: None,
            since: now,
            up_since: None,
            kill_at: None,
            expected_exit: false,
            pending_exit: None,
        }
    }

    /// The first actions for a new service: start it when it is wanted up.
    pub fn start(&mut self) -> Vec<Action> {
        if self.wanted_up && self.state == State::Down { vec![Action::Spawn] } else { Vec::new() }
    }

    /// The next moment `Tick` has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Backoff { until } => Some(until),
            State::Stopping { .. } | State::Finishing { .. } => self.kill_at,
            _ => None,
        }
    }

    pub fn pid(&self) -> Option<i32> {
        match self.state {
            State::Up { pid } | State::Stopping { pid } => Some(pid),
            _ => None,
        }
    }

    /// Is nothing of this service running (service or finish)?
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Down | State::Backoff { .. })
    }

    /// Report the outcome of `Action::Spawn`.
    pub fn spawned(&mut self, pid: Option<i32>, now: Instant) -> Vec<Action> {
        match pid {
            Some(pid) => {
                self.state = State::Up { pid };
                self.since = now;
                self.up_since = Some(now);
                Vec::new()
            }
            // Could not even start: counts as a crash (exit 111, like s6's "cannot spawn").
            None => {
                self.up_since = Some(now);
                self.state = State::Up { pid: -1 };
                self.on_exit(Exit::Code(111), now)
            }
        }
    }

    /// Report the outcome of `Action::SpawnFinish` (None: could not start it).
    pub fn finish_spawned(&mut self, pid: Option<i32>, now: Instant) -> Vec<Action> {
        match pid {
            Some(pid) => {
                self.state = State::Finishing { pid };
                self.kill_at = Some(now + self.policy.finish_timeout);
                Vec::new()
            }
            None => self.decide(None, now),
        }
    }

    pub fn handle(&mut self, ev: Event, now: Instant) -> Vec<Action> {
        match ev {
            Event::Up => {
                self.wanted_up = true;
                self.spawn_if_down()
            }
            Event::Once => {
                self.wanted_up = false;
                self.spawn_if_down()
            }
            Event::Down => {
                self.wanted_up = false;
                match self.state {
                    State::Up { .. } => self.stop(now),
                    State::Backoff { .. } => {
                        self.state = State::Down;
                        Vec::new()
                    }
                    _ => Vec::new(),
                }
            }
            Event::Restart => {
                self.wanted_up = true;
                match self.state {
                    State::Up { .. } => {
                        self.expected_exit = true;
                        self.stop(now)
                    }
                    _ => self.spawn_if_down(),
                }
            }
            Event::Signal(sig) => match self.state {
                State::Up { .. } | State::Stopping { .. } => {
                    self.expected_exit = true;
                    vec![Action::Kill(Target::Service, sig)]
                }
                _ => Vec::new(),
            },
            Event::Exited(exit) => self.on_exit(exit, now),
            Event::FinishResult(exit) => match self.state {
                State::Finishing { .. } => {
                    self.kill_at = None;
                    self.decide(Some(exit), now)
                }
                _ => Vec::new(),
            },
            Event::Tick => self.tick(now),
        }
    }

    fn spawn_if_down(&mut self) -> Vec<Action> {
        match self.state {
            State::Down | State::Backoff { .. } => vec![Action::Spawn],
            _ => Vec::new(),
        }
    }

    fn stop(&mut self, now: Instant) -> Vec<Action> {
        let State::Up { pid } = self.state else {
            return Vec::new();
        };
        self.state = State::Stopping { pid };
        self.kill_at = Some(now + self.policy.stop_timeout);
        vec![Action::Kill(Target::Service, SIGTERM), Action::Kill(Target::Service, SIGCONT)]
    }

    fn tick(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Backoff { until } if until <= now => vec![Action::Spawn],
            State::Stopping { .. } if self.kill_at.is_some_and(|t| t <= now) => {
                self.kill_at = None;
                vec![Action::Kill(Target::Service, SIGKILL)]
            }
            State::Finishing { .. } if self.kill_at.is_some_and(|t| t <= now) => {
                self.kill_at = None;
                vec![Action::Kill(Target::Finish, SIGKILL)]
            }
            _ => Vec::new(),
        }
    }

    fn on_exit(&mut self, exit: Exit, now: Instant) -> Vec<Action> {
        if !matches!(self.state, State::Up { .. } | State::Stopping { .. }) {
            return Vec::new();
        }
        self.last_exit = Some(exit);
        self.kill_at = None;
        self.since = now;
        if self.policy.has_finish {
            self.pending_exit = Some(exit);
            let (code, signal) = match exit {
                Exit::Code(c) => (c, 0),
                Exit::Signal(s) => (256, s),
            };
            // Finishing is entered when the runtime reports the finish pid.
            self.state = State::Down;
            return vec![Action::SpawnFinish { code, signal }];
        }
        self.state = State::Down;
        self.decide(None, now)
    }

    /// After the exit (and finish, if any): stay down or restart, with backoff for crashes.
    fn decide(&mut self, finish: Option<Exit>, now: Instant) -> Vec<Action> {
        let exit = self.pending_exit.take().or(self.last_exit);
        self.state = State::Down;
        let expected = std::mem::take(&mut self.expected_exit);
        if finish == Some(Exit::Code(125)) {
            self.wanted_up = false;
        }
        if let Some(Exit::Code(c)) = exit {
            if self.policy.stay_down_codes.contains(&c) && !expected {
                self.wanted_up = false;
            }
        }
        if !self.wanted_up {
            return Vec::new();
        }
        let ran = self.up_since.map(|t| now.saturating_duration_since(t)).unwrap_or_default();
        if ran >= Duration::from_millis(self.policy.backoff.reset_after_ms) {
            self.failures = 0;
            self.failing_since = None;
        }
        if expected {
            return vec![Action::Spawn];
        }
        self.failures += 1;
        self.failing_since.get_or_insert(now);
        let delay = backoff_delay(&self.policy.backoff, self.failures);
        if delay.is_zero() {
            vec![Action::Spawn]
        } else {
            self.state = State::Backoff { until: now + delay };
            Vec::new()
        }
    }
}

/// Delay before restart number `failures` (1-based): `first_ms`, then `base_ms` doubling, capped.
pub fn backoff_delay(b: &Backoff, failures: u32) -> Duration {
    let ms = match failures {
        0 | 1 => b.first_ms,
        n => b.base_ms.saturating_mul(1u64 << (n - 2).min(32)),
    };
    Duration::from_millis(ms.min(b.max_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(finish: bool) -> Policy {
        Policy {
            stay_down_codes: vec![0, 78],
            has_finish: finish,
            stop_timeout: Duration::from_secs(5),
            finish_timeout: Duration::from_secs(5),
            backoff: Backoff { first_ms: 0, base_ms: 500, max_ms: 4000, reset_after_ms: 10_000 },
        }
    }

    fn up(m: &mut Machine, pid: i32, now: Instant) {
        assert_eq!(m.start(), vec![Action::Spawn]);
        m.spawned(Some(pid), now);
        assert_eq!(m.state, State::Up { pid });
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        let b = policy(false).backoff;
        let d: Vec<u64> = (1..=7).map(|n| backoff_delay(&b, n).as_millis() as u64).collect();
        assert_eq!(d, vec![0, 500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(backoff_delay(&b, 200).as_millis(), 4000);
    }

    #[test]
    fn c_svc_4_crash_restarts_fast_then_backs_off_then_resets_after_a_stable_run() {
        let t0 = Instant::now();
        let mut m = Machine::new(policy(false), true, t0);
        up(&mut m, 10, t0);
        // first crash: immediate restart
        assert_eq!(m.handle(Event::Exited(Exit::Code(1)), t0), vec![Action::Spawn]);
        m.spawned(Some(11), t0);
        // second crash: backoff 500 ms
        assert!(m.handle(Event::Exited(Exit::Signal(9)), t0).is_empty());
        assert_eq!(m.state, State::Backoff { until: t0 + Duration::from_millis(500) });
        assert_eq!(m.deadline(), Some(t0 + Duration::from_millis(500)));
        assert!(m.handle(Event::Tick, t0 + Duration::from_millis(499)).is_empty());
        assert_eq!(m.handle(Event::Tick, t0 + Duration::from_millis(500)), vec![Action::Spawn]);
        let t1 = t0 + Duration::from_millis(500);
        m.spawned(Some(12), t1);
        // a long stable run resets the counter: next crash restarts at once
        let t2 = t1 + Duration::from_secs(11);
        assert_eq!(m.handle(Event::Exited(Exit::Code(2)), t2), vec![Action::Spawn]);
        assert_eq!(m.failures, 1);
    }

    #[test]
    fn c_svc_3_exit_0_and_78_stay_down_others_restart() {
        for (code, restarts) in [(0, false), (78, false), (1, true), (143, true)] {
            let t = Instant::now();
            let mut m = Machine::new(policy(false), true, t);
            up(&mut m, 5, t);
            let a = m.handle(Event::Exited(Exit::Code(code)), t);
            assert_eq!(!a.is_empty(), restarts, "code {code}");
            assert_eq!(m.wanted_up, restarts);
        }
    }

    #[test]
    fn down_terms_then_kills_after_the_timeout_and_stays_down() {
        let t = Instant::now();
        let mut m = Machine::new(policy(false), true, t);
        up(&mut m, 7, t);
        let a = m.handle(Event::Down, t);
        assert_eq!(a, vec![Action::Kill(Target::Service, 15), Action::Kill(Target::Service, 18)]);
        assert_eq!(m.state, State::Stopping { pid: 7 });
        assert!(m.handle(Event::Tick, t + Duration::from_secs(4)).is_empty());
        assert_eq!(m.handle(Event::Tick, t + Duration::from_secs(5)), vec![Action::Kill(Target::Service, 9)]);
        assert!(m.handle(Event::Exited(Exit::Signal(9)), t).is_empty());
        assert_eq!(m.state, State::Down);
        assert!(!m.wanted_up);
    }

    #[test]
    fn operator_signal_and_restart_come_back_at_once_without_counting_a_crash() {
        let t = Instant::now();
        let mut m = Machine::new(policy(false), true, t);
        up(&mut m, 7, t);
        assert_eq!(m.handle(Event::Signal(15), t), vec![Action::Kill(Target::Service, 15)]);
        assert_eq!(m.handle(Event::Exited(Exit::Code(0)), t), vec![Action::Spawn], "exit 0 after -t restarts");
        m.spawned(Some(8), t);
        assert_eq!(m.failures, 0);
        assert_eq!(m.handle(Event::Restart, t).len(), 2);
        assert_eq!(m.handle(Event::Exited(Exit::Code(1)), t), vec![Action::Spawn]);
        assert_eq!(m.failures, 0);
    }

    #[test]
    fn c_s6_5_finish_runs_after_exit_and_125_keeps_it_down() {
        let t = Instant::now();
        let mut m = Machine::new(policy(true), true, t);
        up(&mut m, 3, t);
        assert_eq!(m.handle(Event::Exited(Exit::Signal(9)), t), vec![Action::SpawnFinish { code: 256, signal: 9 }]);
        assert!(m.finish_spawned(Some(4), t).is_empty());
        assert_eq!(m.state, State::Finishing { pid: 4 });
        assert_eq!(m.handle(Event::FinishResult(Exit::Code(0)), t), vec![Action::Spawn]);
        m.spawned(Some(5), t);
        assert_eq!(m.handle(Event::Exited(Exit::Code(78)), t), vec![Action::SpawnFinish { code: 78, signal: 0 }]);
        m.finish_spawned(Some(6), t);
        assert!(m.handle(Event::FinishResult(Exit::Code(125)), t).is_empty());
        assert_eq!((m.state, m.wanted_up), (State::Down, false));
    }

    #[test]
    fn once_runs_a_single_time_and_spawn_failure_backs_off() {
        let t = Instant::now();
        let mut m = Machine::new(policy(false), false, t);
        assert!(m.start().is_empty());
        assert_eq!(m.handle(Event::Once, t), vec![Action::Spawn]);
        m.spawned(Some(9), t);
        assert!(m.handle(Event::Exited(Exit::Code(1)), t).is_empty());
        assert_eq!(m.state, State::Down);
        let mut m = Machine::new(policy(false), true, t);
        m.start();
        assert_eq!(m.spawned(None, t), vec![Action::Spawn], "first failure retries at once");
        assert!(m.spawned(None, t).is_empty());
        assert!(matches!(m.state, State::Backoff { .. }));
        assert_eq!(m.last_exit, Some(Exit::Code(111)));
        assert!(m.handle(Event::Down, t).is_empty());
        assert_eq!(m.state, State::Down);
    }
}
