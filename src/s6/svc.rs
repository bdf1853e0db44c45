//! `s6-svc [ -wu | -wU | -wd | -wD | -wr | -wR ] [ -T timeout ] [ -abqhkti12pcyroduDUxOQ ]
//! servicedir` (C-S6-2).
//!
//! Each command letter becomes one control request, in order:
//!
//! | s6-svc | s6-supervise does | request |
//! |---|---|---|
//! | `-u` / `-U` | want up, start if down (`-U` also removes `./down`) | `up` |
//! | `-d` / `-D` | want down, SIGTERM + SIGCONT (`-D` also creates `./down`) | `down` |
//! | `-o` | start if down, do not restart | `once` |
//! | `-O` / `-Q` | do not restart, do not start (`-Q`: + `./down`) | `once` if up, else `down` |
//! | `-r` | if up, send `./down-signal` (TERM); restarts if wanted up | `signal` |
//! | `-a -b -q -h -k -t -i -1 -2 -p -c -y` | send ALRM ABRT QUIT HUP KILL TERM INT USR1 USR2 STOP CONT WINCH if up | `signal` |
//! | `-x` | exit the supervisor once down | nothing: PID 1 never exits for it |
//!
//! With `-w…`, the state before the commands is read first and, as s6-svlisten1 does, an
//! already-met condition ends the wait at once; otherwise PID 1 answers when it is met.
//! Exit codes: 0, 100 (usage, or no supervisor for the directory), 111 (refused or failed),
//! 99 (the `-T` timeout, reported under s6's helper names `s6-svlisten1` / `s6-svwait`).

use super::common::{self, CallError, Resolved, SYSTEM, fatal, usage, warn};
use super::getopt;
use super::svwait::{self, Until};
use crate::control::{Request, ServiceStatus};
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

const PROG: &str = "s6-svc";
const USAGE: &str = "s6-svc [ -wu | -wU | -wd | -wD | -wr | -wR ] [ -T timeout ] [ -abqhkti12pcyroduDUxOQ ] servicedir";

/// The signal a command letter sends, if it is a signal command.
fn letter_signal(c: char) -> Option<i32> {
    Some(match c {
        'a' => libc::SIGALRM,
        'b' => libc::SIGABRT,
        'q' => libc::SIGQUIT,
        'h' => libc::SIGHUP,
        'k' => libc::SIGKILL,
        't' => libc::SIGTERM,
        'i' => libc::SIGINT,
        '1' => libc::SIGUSR1,
        '2' => libc::SIGUSR2,
        'p' => libc::SIGSTOP,
        'c' => libc::SIGCONT,
        'y' => libc::SIGWINCH,
        _ => return None,
    })
}

/// `./down-signal`, the signal of `-r` (SIGTERM when absent or unreadable).
fn down_signal(dir: &Path) -> i32 {
    std::fs::read_to_string(dir.join("down-signal"))
        .ok()
        .and_then(|s| common::sig_number(s.lines().next().unwrap_or("")))
        .unwrap_or(libc::SIGTERM)
}

pub fn main(args: Vec<OsString>) -> i32 {
    let Ok(p) = getopt::parse(&args, "abqhkti12pcyroduDUxOQT:w:") else {
        return usage(PROG, USAGE);
    };
    let mut cmds = Vec::new();
    let mut timeout = 0u64;
    let mut wait: Option<char> = None;
    for (opt, arg) in p.opts {
        match opt {
            'T' => match arg.as_deref().and_then(getopt::uint) {
                Some(t) => timeout = t,
                None => return usage(PROG, USAGE),
            },
            'w' => match arg.as_deref().and_then(|a| a.chars().next()).filter(|c| "dDuUrR".contains(*c)) {
                Some(c) => wait = Some(c),
                None => return usage(PROG, USAGE),
            },
            c => {
                if cmds.len() >= 62 {
                    return fatal(PROG, 100, "too many commands");
                }
                cmds.push(c);
            }
        }
    }
    let operands = &args[p.rest..];
    let Some(dir) = operands.first() else {
        return usage(PROG, USAGE);
    };
    if operands.len() > 1 {
        warn(PROG, "ignoring extra arguments");
    }
    if dir.is_empty() {
        return fatal(PROG, 100, "invalid service path");
    }
    let dir = Path::new(dir);
    let shown = dir.display();
    if let Some(w @ ('U' | 'R')) = wait {
        match svwait::notification_fd_present(dir) {
            Ok(true) => warn(PROG, "hermesinit has no readiness notification - waiting for the plain state"),
            Ok(false) => {
                warn(PROG, format!("{shown}/notification-fd not present - ignoring request for readiness notification"))
            }
            Err(e) => {
                return fatal(
                    PROG,
                    SYSTEM,
                    format!("unable to access {shown}/notification-fd: {}", common::strerror(&e)),
                );
            }
        }
        wait = Some(if w == 'U' { 'u' } else { 'r' });
    }
    // With -w, s6-svc execs into s6-svlisten1 (commands) or s6-svwait (none): their names
    // are on the messages of the wait.
    let wait_prog = if cmds.is_empty() { "s6-svwait" } else { "s6-svlisten1" };
    let name = match common::resolve(dir, &common::scan_dir()) {
        Resolved::Name(n) => n,
        Resolved::NotSupervised if wait.is_some() => {
            return fatal(
                wait_prog,
                SYSTEM,
                format!("unable to subscribe to events for {shown}: supervisor not listening"),
            );
        }
        Resolved::NotSupervised => {
            return fatal(PROG, 100, format!("unable to control {shown}: supervisor not listening"));
        }
        Resolved::Missing(e) if wait.is_some() => {
            return fatal(
                wait_prog,
                SYSTEM,
                format!("unable to subscribe to events for {shown}: {}", common::strerror(&e)),
            );
        }
        Resolved::Missing(e) => {
            return fatal(PROG, SYSTEM, format!("unable to control {shown}: {}", common::strerror(&e)));
        }
    };
    let deadline = (timeout > 0).then(|| Instant::now() + Duration::from_millis(timeout));
    let control_error = |e: CallError| match e {
        CallError::NotSupervised => fatal(PROG, 100, format!("unable to control {shown}: supervisor not listening")),
        e => fatal(PROG, SYSTEM, format!("unable to control {shown}: {e}")),
    };

    let mut last: Option<ServiceStatus> = None;
    let mut initial: Option<ServiceStatus> = None;
    if wait.is_some() || cmds.iter().any(|c| matches!(c, 'O' | 'Q')) {
        match common::status(&name) {
            Ok(s) => {
                initial = Some(s.clone());
                last = Some(s);
            }
            Err(e) => return control_error(e),
        }
    }
    for c in cmds.iter().copied() {
        let services = vec![name.clone()];
        let req = match c {
            'u' => Request::Up { services },
            'U' => {
                set_down_file(dir, false);
                Request::Up { services }
            }
            'd' => Request::Down { services },
            'D' => {
                set_down_file(dir, true);
                Request::Down { services }
            }
            'o' => Request::Once { services },
            'O' | 'Q' => {
                if c == 'Q' {
                    set_down_file(dir, true);
                }
                if last.as_ref().is_some_and(|s| svwait::met(s, Until::Up)) {
                    Request::Once { services }
                } else {
                    Request::Down { services }
                }
            }
            'r' => Request::Signal { services, signal: down_signal(dir) },
            'x' => continue,
            c => match letter_signal(c) {
                Some(signal) => Request::Signal { services, signal },
                None => return usage(PROG, USAGE),
            },
        };
        match common::call(req) {
            Ok(r) => last = r.services.into_iter().find(|s| s.name == name).or(last),
            Err(e) => return control_error(e),
        }
    }

    let Some(w) = wait else { return 0 };
    let until = match w {
        'u' => Until::Up,
        'd' => Until::Down,
        'D' => Until::Finished,
        _ => Until::Restart,
    };
    let initial: Vec<ServiceStatus> = initial.into_iter().collect();
    if until != Until::Restart && initial.iter().all(|s| svwait::met(s, until)) {
        return 0;
    }
    match svwait::wait(std::slice::from_ref(&name), until, false, deadline, &initial) {
        Ok(()) => 0,
        Err(svwait::WaitError::Died(_)) if !cmds.is_empty() => {
            fatal(wait_prog, 1, format!("{PROG} failed permanently or its supervisor died"))
        }
        Err(e) => svwait::report(wait_prog, e),
    }
}

/// `-D`/`-Q` create `./down`, `-U` removes it; s6-supervise does that itself, here the caller
/// does (the hermes user owns the directories Hermes creates). A failure only warns.
fn set_down_file(dir: &Path, present: bool) {
    let f = dir.join("down");
    let r = if present {
        std::fs::OpenOptions::new().create(true).append(true).open(&f).map(drop)
    } else {
        match std::fs::remove_file(&f) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    };
    if let Err(e) = r {
        warn(
            PROG,
            format!(
                "unable to {} {}: {}",
                if present { "create" } else { "remove" },
                f.display(),
                common::strerror(&e)
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_map_to_s6_signals() {
        let sent: Vec<i32> = "abqhkti12pcy".chars().map(|c| letter_signal(c).unwrap()).collect();
        assert_eq!(sent, vec![14, 6, 3, 1, 9, 15, 2, 10, 12, 19, 18, 28]);
        assert_eq!(letter_signal('u'), None);
    }

    #[test]
    fn down_signal_file_overrides_term() {
        let d = std::env::temp_dir().join(format!("hi-s6-downsig-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert_eq!(down_signal(&d), 15);
        std::fs::write(d.join("down-signal"), "SIGHUP\n").unwrap();
        assert_eq!(down_signal(&d), 1);
        std::fs::write(d.join("down-signal"), "nonsense\n").unwrap();
        assert_eq!(down_signal(&d), 15);
        set_down_file(&d, true);
        assert!(d.join("down").exists());
        set_down_file(&d, false);
        set_down_file(&d, false);
        assert!(!d.join("down").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
