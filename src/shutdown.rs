//! The container's stop sequence (C-INIT-3) as a pure state machine: events in, actions out,
//! no processes touched here (init executes the actions), so every path is unit-tested.
//!
//! ```text
//!  Running ──stop / main exited──▶ Stopping ──grace over──▶ Killed ──2 s more──▶ exit (forced)
//!                                     │ ours gone: TERM the rest     │
//!                                     └──── nothing left to reap ────┴──────────▶ exit
//! ```
//! The exit code is the main program's (0 when there was none), or 137 when something outlived
//! SIGKILL and the final deadline forced the exit.

use std::time::{Duration, Instant};

/// What the loop saw on one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGTERM, SIGINT without a main program, or a main program that could not start.
    Stop,
    /// The main program exited with this code (128+N for a signal).
    MainExited(i32),
    /// A pass of the loop: `ours_left` — the main program or a service still runs;
    /// `children_left` — anything at all is left to reap (orphans included).
    Tick { ours_left: bool, children_left: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// TERM (+CONT) to the main program's group, and stop every service.
    TermOurs,
    /// Our own are gone: TERM to everything else left (orphans, stray daemons; init decides
    /// how far "everything" reaches).
    TermRest,
    /// The grace is over: KILL to everything left.
    KillAll,
    /// Exit with this code. `forced`: processes were still present after the last deadline.
    Exit { code: i32, forced: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Stopping { kill_at: Instant, end: Instant },
    Killed { end: Instant },
}

pub struct Shutdown {
    phase: Phase,
    grace: Duration,
    code: Option<i32>,
    termed_rest: bool,
}

/// How long after SIGKILL we wait for the kernel to hand back the last children.
const AFTER_KILL: Duration = Duration::from_secs(2);

impl Shutdown {
    pub fn new(grace: Duration) -> Shutdown {
        Shutdown { phase: Phase::Running, grace, code: None, termed_rest: false }
    }

    pub fn stopping(&self) -> bool {
        self.phase != Phase::Running
    }

    /// The next moment a `Tick` has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Running => None,
            Phase::Stopping { kill_at, .. } => Some(kill_at),
            Phase::Killed { end } => Some(end),
        }
    }

    pub fn on(&mut self, ev: Event, now: Instant) -> Vec<Action> {
        match ev {
            Event::Stop => self.begin(now),
            Event::MainExited(code) => {
                self.code = Some(code);
                self.begin(now)
            }
            Event::Tick { ours_left, children_left } => self.tick(ours_left, children_left, now),
        }
    }

    fn begin(&mut self, now: Instant) -> Vec<Action> {
        if self.phase != Phase::Running {
            return Vec::new();
        }
        let kill_at = now + self.grace;
        self.phase = Phase::Stopping { kill_at, end: kill_at + AFTER_KILL };
        vec![Action::TermOurs]
    }

    fn tick(&mut self, ours_left: bool, children_left: bool, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Running {
            return out;
        }
        if !ours_left {
            if !children_left {
                return vec![Action::Exit { code: self.code.unwrap_or(0), forced: false }];
            }
            if !self.termed_rest {
                self.termed_rest = true;
                out.push(Action::TermRest);
            }
        }
        if let Phase::Stopping { kill_at, end } = self.phase {
            if now >= kill_at {
                self.phase = Phase::Killed { end };
                out.push(Action::KillAll);
            }
        }
        if let Phase::Killed { end } = self.phase {
            if now >= end {
                out.push(Action::Exit { code: self.code.unwrap_or(137), forced: true });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Duration = Duration::from_secs(3);
    fn tick(ours: bool, children: bool) -> Event {
        Event::Tick { ours_left: ours, children_left: children }
    }

    #[test]
    fn c_init_3_nothing_happens_until_a_stop() {
        let (mut s, t) = (Shutdown::new(G), Instant::now());
        assert_eq!(s.on(tick(false, false), t), vec![]);
        assert!(!s.stopping() && s.deadline().is_none());
    }

    #[test]
    fn c_init_2_main_exit_stops_everything_and_its_code_is_the_exit_code() {
        let (mut s, t) = (Shutdown::new(G), Instant::now());
        assert_eq!(s.on(Event::MainExited(42), t), vec![Action::TermOurs]);
        assert_eq!(s.deadline(), Some(t + G));
        assert_eq!(s.on(tick(true, true), t), vec![]);
        assert_eq!(s.on(tick(false, false), t), vec![Action::Exit { code: 42, forced: false }]);
    }

    #[test]
    fn c_init_3_stop_is_idempotent_and_exits_at_once_when_nothing_is_left() {
        let (mut s, t) = (Shutdown::new(G), Instant::now());
        assert_eq!(s.on(Event::Stop, t), vec![Action::TermOurs]);
        assert_eq!(s.on(Event::Stop, t), vec![]);
        // The main program's code arrives during the stop and is kept.
        assert_eq!(s.on(Event::MainExited(143), t), vec![]);
        assert_eq!(s.on(tick(false, false), t), vec![Action::Exit { code: 143, forced: false }]);
    }

    #[test]
    fn c_init_3_orphans_get_term_once_ours_are_gone_then_kill_at_the_grace() {
        let (mut s, t) = (Shutdown::new(G), Instant::now());
        s.on(Event::Stop, t);
        assert_eq!(s.on(tick(false, true), t), vec![Action::TermRest]);
        assert_eq!(s.on(tick(false, true), t), vec![], "TERM once");
        assert_eq!(s.on(tick(false, true), t + G), vec![Action::KillAll]);
        assert_eq!(s.deadline(), Some(t + G + AFTER_KILL));
        assert_eq!(s.on(tick(false, false), t + G), vec![Action::Exit { code: 0, forced: false }]);
    }

    #[test]
    fn c_init_3_term_ignoring_processes_are_killed_and_a_stuck_one_forces_the_exit() {
        let (mut s, t) = (Shutdown::new(G), Instant::now());
        s.on(Event::Stop, t);
        assert_eq!(s.on(tick(true, true), t + G), vec![Action::KillAll]);
        assert_eq!(s.on(tick(true, true), t + G + Duration::from_secs(1)), vec![]);
        assert_eq!(s.on(tick(true, true), t + G + AFTER_KILL), vec![Action::Exit { code: 137, forced: true }]);
    }
}
