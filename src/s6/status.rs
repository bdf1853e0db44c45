//! A service's status as s6-supervise would have recorded it, built from PID 1's answer, and
//! the `s6-svstat` renderings of it (Debian's s6 2.11.3: no ` pgid N` in the human line).

use super::common::sig_name;
use crate::control::{ServiceState, ServiceStatus};

/// How the last `run` process ended (s6's `wstat`). A service that never ran reads as
/// `exitcode 0`, as a fresh s6-supervise status file does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wstat {
    Exited(i32),
    Signaled(i32),
}

/// The fields of s6's `s6_svstatus_t` that the tools print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// A `run` process exists and the finish script is not running.
    pub up: bool,
    pub pid: Option<i32>,
    /// `./finish` is running (down, and not ready to be started again).
    pub finishing: bool,
    pub wstat: Wstat,
    /// Wall-clock ms of the last up/down transition.
    pub stamp_ms: u64,
    /// s6's `flagready`: without readiness notification this only holds while the service is
    /// down and no finish script runs ("ready to be brought up").
    pub ready: bool,
    pub ready_stamp_ms: u64,
    pub want_up: bool,
    /// No `down` file in the service directory.
    pub normally_up: bool,
    /// The process is stopped (SIGSTOP, `s6-svc -p`).
    pub paused: bool,
}

impl Snapshot {
    /// `normally_up` and `paused` are looked up by the caller: s6-svstat reads the `down` file
    /// itself, at the moment it runs.
    pub fn from_status(s: &ServiceStatus, normally_up: bool, paused: bool) -> Snapshot {
        let up = s.pid.is_some_and(|p| p > 0) && matches!(s.state, ServiceState::Up | ServiceState::Stopping);
        let finishing = s.state == ServiceState::Finishing;
        let wstat = match &s.last_exit {
            Some(e) => match (e.code, e.signal) {
                (_, Some(sig)) => Wstat::Signaled(sig),
                (Some(code), None) => Wstat::Exited(code),
                (None, None) => Wstat::Exited(0),
            },
            None => Wstat::Exited(0),
        };
        Snapshot {
            up,
            pid: if up { s.pid } else { None },
            finishing,
            wstat,
            stamp_ms: s.since_ms,
            ready: !up && !finishing,
            ready_stamp_ms: s.since_ms,
            want_up: s.wanted_up,
            normally_up,
            paused: up && paused,
        }
    }

    /// The human line (no trailing newline). `numeric` is `-n`: signal numbers, not names.
    pub fn human(&self, now_ms: u64, numeric: bool) -> String {
        let mut s = String::new();
        match (self.up, self.pid) {
            (true, Some(pid)) => s.push_str(&format!("up (pid {pid}) ")),
            _ => {
                s.push_str("down (");
                match self.wstat {
                    Wstat::Signaled(sig) if numeric => s.push_str(&format!("signal {sig}")),
                    Wstat::Signaled(sig) => s.push_str(&format!("signal SIG{}", sig_name(sig))),
                    Wstat::Exited(code) => s.push_str(&format!("exitcode {code}")),
                }
                s.push_str(") ");
            }
        }
        s.push_str(&format!("{} seconds", seconds_since(self.stamp_ms, now_ms)));
        if self.up && !self.normally_up {
            s.push_str(", normally down");
        }
        if !self.up && self.normally_up {
            s.push_str(", normally up");
        }
        if self.up && self.paused {
            s.push_str(", paused");
        }
        if !self.up && self.want_up {
            s.push_str(", want up");
        }
        if self.up && !self.want_up {
            s.push_str(", want down");
        }
        if self.ready {
            s.push_str(&format!(", ready {} seconds", seconds_since(self.ready_stamp_ms, now_ms)));
        }
        s
    }

    /// One `-o` field, or None for an unknown name.
    pub fn field(&self, name: &str, now_ms: u64) -> Option<String> {
        let b = |v: bool| if v { "true" } else { "false" }.to_string();
        let pid = || self.pid.filter(|_| self.up).unwrap_or(-1).to_string();
        let code = match self.wstat {
            Wstat::Exited(c) if !self.up => c,
            _ => -1,
        };
        let sig = match self.wstat {
            Wstat::Signaled(s) if !self.up => s,
            _ => -1,
        };
        Some(match name {
            "up" => b(self.up),
            "wantedup" => b(self.want_up),
            "normallyup" => b(self.normally_up),
            // s6: `pid && flagready`; hermesinit has no readiness notification, so a running
            // service never reports ready and a down one has no pid.
            "ready" => b(self.up && self.ready),
            "paused" => b(self.paused),
            "pid" => pid(),
            // s6 ≥ 2.12's field: every hermesinit service leads its own process group.
            "pgid" => pid(),
            "exitcode" => code.to_string(),
            "signal" if sig < 0 => "NA".to_string(),
            "signal" => format!("SIG{}", sig_name(sig)),
            "signum" => sig.to_string(),
            "updownsince" => tai64n_label(self.stamp_ms),
            "readysince" => tai64n_label(self.ready_stamp_ms),
            "updownfor" => seconds_since(self.stamp_ms, now_ms).to_string(),
            "readyfor" => seconds_since(self.ready_stamp_ms, now_ms).to_string(),
            _ => return None,
        })
    }
}

/// Whole seconds from `then` to `now`; a stamp in the future counts as now (as s6-svstat does).
fn seconds_since(then_ms: u64, now_ms: u64) -> u64 {
    now_ms.saturating_sub(then_ms) / 1000
}

/// The TAI64N label of a wall-clock time in ms.
pub fn tai64n_label(ms: u64) -> String {
    crate::tai::label(std::time::Duration::from_millis(ms))
}

fn tai64n_bytes(ms: u64) -> [u8; 12] {
    crate::tai::pack(std::time::Duration::from_millis(ms))
}

/// The size of s6-supervise's `supervise/status` record in s6 2.11.
pub const STATUS_SIZE: usize = 35;

impl Snapshot {
    /// The record s6-supervise keeps in `supervise/status`, so Debian's own s6-svstat reads a
    /// hermesinit slot: stamp and ready stamp (TAI64N), pid (u64), wstat (u16, as waitpid gives
    /// it), then the flags paused, finishing, want up, ready — all big-endian.
    pub fn pack(&self) -> [u8; STATUS_SIZE] {
        let mut b = [0u8; STATUS_SIZE];
        b[..12].copy_from_slice(&tai64n_bytes(self.stamp_ms));
        b[12..24].copy_from_slice(&tai64n_bytes(self.ready_stamp_ms));
        b[24..32].copy_from_slice(&(self.pid.unwrap_or(0).max(0) as u64).to_be_bytes());
        let wstat: u16 = match self.wstat {
            Wstat::Exited(c) => ((c & 0xff) as u16) << 8,
            Wstat::Signaled(s) => (s & 0x7f) as u16,
        };
        b[32..34].copy_from_slice(&wstat.to_be_bytes());
        b[34] = u8::from(self.paused)
            | u8::from(self.finishing) << 1
            | u8::from(self.want_up) << 2
            | u8::from(self.ready) << 3;
        b
    }
}

/// Is this process stopped (state `T` or `t` in /proc)? False when it cannot be read.
pub fn stopped(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the last ')' (the command name may contain anything).
    stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).is_some_and(|s| s == "T" || s == "t")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Exit;

    fn st(state: &str, pid: Option<i32>, wanted_up: bool, last_exit: Option<Exit>) -> ServiceStatus {
        ServiceStatus {
            name: "svc".into(),
            state: state.parse().unwrap(),
            pid,
            since_ms: 1_000_000,
            wanted_up,
            normally_up: true,
            last_exit,
            ..Default::default()
        }
    }

    const NOW: u64 = 1_013_999;

    /// C-S6-3: the human lines of Debian's s6 2.11, recorded from the real tools.
    #[test]
    fn c_s6_3_human_lines_match_s6_2_11() {
        let h = |s: ServiceStatus, normally_up: bool| Snapshot::from_status(&s, normally_up, false).human(NOW, false);
        assert_eq!(h(st("up", Some(42), true, None), true), "up (pid 42) 13 seconds");
        assert_eq!(h(st("up", Some(42), true, None), false), "up (pid 42) 13 seconds, normally down");
        assert_eq!(h(st("stopping", Some(42), false, None), false), "up (pid 42) 13 seconds, normally down, want down");
        assert_eq!(h(st("down", None, false, None), false), "down (exitcode 0) 13 seconds, ready 13 seconds");
        let killed = Some(Exit { code: None, signal: Some(9) });
        assert_eq!(
            h(st("backoff", None, true, killed.clone()), true),
            "down (signal SIGKILL) 13 seconds, normally up, want up, ready 13 seconds"
        );
        assert_eq!(
            Snapshot::from_status(&st("down", None, true, killed), true, false).human(NOW, true),
            "down (signal 9) 13 seconds, normally up, want up, ready 13 seconds"
        );
        let three = Some(Exit { code: Some(3), signal: None });
        assert_eq!(h(st("finishing", None, false, three), true), "down (exitcode 3) 13 seconds, normally up");
        assert_eq!(
            Snapshot::from_status(&st("up", Some(7), true, None), true, true).human(NOW, false),
            "up (pid 7) 13 seconds, paused"
        );
        // A stamp in the future reads as 0 seconds.
        assert_eq!(h(st("up", Some(42), true, None), true).replace("13", "x"), "up (pid 42) x seconds");
        assert!(
            Snapshot::from_status(&st("up", Some(1), true, None), true, false)
                .human(999_000, false)
                .contains(" 0 seconds")
        );
    }

    #[test]
    fn c_s6_3_fields_match_s6_2_11() {
        let fields = "up,wantedup,normallyup,ready,paused,pid,pgid,exitcode,signal,signum,updownfor,readyfor";
        let f = |s: ServiceStatus| {
            let snap = Snapshot::from_status(&s, true, false);
            fields.split(',').map(|n| snap.field(n, NOW).unwrap()).collect::<Vec<_>>().join(" ")
        };
        assert_eq!(f(st("up", Some(42), true, None)), "true true true false false 42 42 -1 NA -1 13 13");
        let term = Some(Exit { code: None, signal: Some(15) });
        assert_eq!(f(st("down", None, false, term)), "false false true false false -1 -1 -1 SIGTERM 15 13 13");
        let seven = Some(Exit { code: Some(7), signal: None });
        assert_eq!(f(st("down", None, false, seven)), "false false true false false -1 -1 7 NA -1 13 13");
        let snap = Snapshot::from_status(&st("up", Some(1), true, None), true, false);
        assert_eq!(snap.field("bogus", NOW), None);
        assert_eq!(snap.field("updownsince", NOW).unwrap(), "@400000000000040d00000000");
    }

    #[test]
    fn tai64n_labels_carry_the_leap_seconds() {
        // 2026-11-23 10:48:50 UTC was printed by Debian's s6-tai64n as @400000006b041a37…
        assert_eq!(&tai64n_label(1_795_430_930_427)[..17], "@400000006b041a37");
        assert_eq!(&tai64n_label(1_795_430_930_427)[17..], "197380c0");
    }

    #[test]
    fn stopped_reads_proc() {
        assert!(!stopped(std::process::id() as i32));
        assert!(!stopped(-5));
    }
}
