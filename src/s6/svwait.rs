//! `s6-svwait [ -U | -u | -d | -D | -r | -R ] [ -a | -o ] [ -t timeout ] servicedir…`
//! (C-S6-4), and the waiting that `s6-svc -w…` shares with it.
//!
//! Up, down and "down and finished" are answered by PID 1 (a `wait` request, no polling).
//! Two stretches are watched by reading the status every 25 ms instead: a restart (`-r`), a
//! sequence of states that one condition cannot express, and the end of a stop — PID 1's
//! `down` holds as soon as a service is being stopped, s6's only once its process is gone. hermesinit has no readiness notification:
//! `-U`/`-R` behave as `-u`/`-r` when the service directory has a `notification-fd` file,
//! and — exactly like s6 — never succeed when it has none.

use super::common::{self, CallError, Resolved, SYSTEM, fatal, usage};
use super::getopt;
use super::status::Snapshot;
use crate::control::{ClientError, Request, ServiceStatus, WaitFor};
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

const PROG: &str = "s6-svwait";
const USAGE: &str = "s6-svwait [ -U | -u | -d | -D | -r | -R ] [ -a | -o ] [ -t timeout ] servicedir...";

/// Exit code when the wait times out.
pub const TIMED_OUT: i32 = 99;
/// Exit code when the supervisor goes away during the wait.
pub const DIED: i32 = 102;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    Up,
    Down,
    /// Down and the finish script done.
    Finished,
    /// Down (if it was up), then up again.
    Restart,
    /// Readiness that can never be reported.
    Never,
}

#[derive(Debug)]
pub enum WaitError {
    TimedOut,
    Died(String),
    Call(CallError),
}

/// Does this service already meet the condition?
pub fn met(s: &ServiceStatus, until: Until) -> bool {
    let snap = Snapshot::from_status(s, true, false);
    match until {
        Until::Up => snap.up,
        Until::Down => !snap.up,
        Until::Finished => !snap.up && !snap.finishing,
        Until::Restart | Until::Never => false,
    }
}

/// Wait until every named service (or `any` one of them) meets `until`, or the deadline.
/// `initial` is their status before any command was sent (for `Restart`).
pub fn wait(
    names: &[String],
    until: Until,
    any: bool,
    deadline: Option<Instant>,
    initial: &[ServiceStatus],
) -> Result<(), WaitError> {
    let remaining = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
    match until {
        Until::Up | Until::Down | Until::Finished => {
            let wait_for = match until {
                Until::Up => WaitFor::Up,
                Until::Down => WaitFor::Down,
                _ => WaitFor::Finished,
            };
            let timeout_ms = remaining().map(|d| d.as_millis() as u64);
            let req = Request::Wait { services: names.to_vec(), until: wait_for, any, timeout_ms };
            match crate::config::Config::for_client().client().request(req) {
                Ok(r) if r.ok && r.timed_out => Err(WaitError::TimedOut),
                // PID 1 counts a service that is being stopped as down already; for s6 it is
                // up until its process is gone, so that last stretch is watched here.
                Ok(r) if r.ok && until == Until::Down => poll(names, any, deadline, |_, s| met(s, Until::Down)),
                Ok(r) if r.ok => Ok(()),
                Ok(r) => Err(WaitError::Call(CallError::Refused(r.error.unwrap_or_default()))),
                Err(ClientError::NotRunning(_)) => Err(WaitError::Call(CallError::NotSupervised)),
                Err(e) => Err(WaitError::Died(e.to_string())),
            }
        }
        Until::Never => {
            match remaining() {
                Some(d) => std::thread::sleep(d),
                None => loop {
                    std::thread::sleep(Duration::from_secs(3600));
                },
            }
            Err(WaitError::TimedOut)
        }
        Until::Restart => {
            let mut seen_down: Vec<bool> = names
                .iter()
                .map(|n| initial.iter().find(|s| &s.name == n).is_none_or(|s| !met(s, Until::Up)))
                .collect();
            poll(names, any, deadline, |i, now| {
                let up = met(now, Until::Up);
                if !up {
                    seen_down[i] = true;
                }
                let before = initial.iter().find(|s| s.name == now.name);
                let changed = before.is_some_and(|b| b.pid != now.pid || b.since_ms != now.since_ms);
                up && (seen_down[i] || changed)
            })
        }
    }
}

/// Read the status every 25 ms until `done` holds for every service (or any of them).
fn poll(
    names: &[String],
    any: bool,
    deadline: Option<Instant>,
    mut done: impl FnMut(usize, &ServiceStatus) -> bool,
) -> Result<(), WaitError> {
    loop {
        let r = common::call(Request::Status { services: names.to_vec() }).map_err(|e| match e {
            CallError::System(m) => WaitError::Died(m),
            e => WaitError::Call(e),
        })?;
        let mut results = Vec::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            let Some(now) = r.services.iter().find(|s| &s.name == n) else {
                return Err(WaitError::Call(CallError::NotSupervised));
            };
            results.push(done(i, now));
        }
        if if any { results.iter().any(|d| *d) } else { results.iter().all(|d| *d) } {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(WaitError::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Downgrade a readiness wait as s6-svc does: without `notification-fd` there is nothing to
/// wait for but the plain state (and a warning says so).
pub fn notification_fd_present(dir: &Path) -> Result<bool, std::io::Error> {
    match std::fs::metadata(dir.join("notification-fd")) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn main(args: Vec<OsString>) -> i32 {
    let Ok(p) = getopt::parse(&args, "UudDrRaot:") else {
        return usage(PROG, USAGE);
    };
    let mut until = Until::Up;
    let mut ready = false;
    let mut any = false;
    let mut timeout = 0u64;
    for (opt, arg) in p.opts {
        match opt {
            'U' => (until, ready) = (Until::Up, true),
            'u' => (until, ready) = (Until::Up, false),
            'd' => (until, ready) = (Until::Down, false),
            'D' => (until, ready) = (Until::Finished, false),
            'r' => (until, ready) = (Until::Restart, false),
            'R' => (until, ready) = (Until::Restart, true),
            'a' => any = false,
            'o' => any = true,
            't' => match arg.as_deref().and_then(getopt::uint) {
                Some(t) => timeout = t,
                None => return usage(PROG, USAGE),
            },
            _ => return usage(PROG, USAGE),
        }
    }
    let dirs = &args[p.rest..];
    if dirs.is_empty() {
        return usage(PROG, USAGE);
    }
    let deadline = (timeout > 0).then(|| Instant::now() + Duration::from_millis(timeout));
    let scan = common::scan_dir();
    let mut names = Vec::new();
    for d in dirs {
        let dir = Path::new(d);
        let subscribe =
            |why: String| fatal(PROG, SYSTEM, format!("unable to subscribe to events for {}: {why}", dir.display()));
        match common::resolve(dir, &scan) {
            Resolved::Name(n) => names.push(n),
            Resolved::NotSupervised => return subscribe("supervisor not listening".into()),
            Resolved::Missing(e) => return subscribe(common::strerror(&e)),
        }
        if ready {
            match notification_fd_present(dir) {
                Ok(true) => {}
                // s6 waits for a readiness report that cannot come.
                Ok(false) => until = Until::Never,
                Err(e) => {
                    return fatal(PROG, SYSTEM, format!("unable to access {}/notification-fd: {e}", dir.display()));
                }
            }
        }
    }
    let initial = match common::call(Request::Status { services: names.clone() }) {
        Ok(r) => r.services,
        Err(e) => return fatal(PROG, SYSTEM, format!("unable to read status: {e}")),
    };
    match wait(&names, until, any, deadline, &initial) {
        Ok(()) => 0,
        Err(e) => report(PROG, e),
    }
}

/// Turn a failed wait into s6's message and exit code.
pub fn report(prog: &str, e: WaitError) -> i32 {
    match e {
        WaitError::TimedOut => fatal(prog, TIMED_OUT, "timed out"),
        WaitError::Died(m) => fatal(prog, DIED, format!("supervisor died: {m}")),
        WaitError::Call(CallError::NotSupervised) => fatal(prog, SYSTEM, "supervisor not listening"),
        WaitError::Call(e) => fatal(prog, SYSTEM, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_follow_s6_states() {
        let s =
            |state: &str, pid: Option<i32>| ServiceStatus { state: state.parse().unwrap(), pid, ..Default::default() };
        assert!(met(&s("up", Some(3)), Until::Up));
        assert!(met(&s("stopping", Some(3)), Until::Up), "still up until it exits");
        assert!(met(&s("finishing", None), Until::Down));
        assert!(!met(&s("finishing", None), Until::Finished));
        assert!(met(&s("backoff", None), Until::Finished));
        assert!(!met(&s("down", None), Until::Restart));
    }
}
