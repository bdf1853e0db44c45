//! Running hermes-agent's own Python at boot (config migration, bundled skills sync): as the
//! hermes user (the one identity switch, `creds`), with the env snapshot as environment,
//! `HOME=$HERMES_HOME`, cwd `$HERMES_HOME`, stdin `/dev/null`, in its own process group, with
//! a deadline. Its output is read through a pipe and logged line by line with a prefix.
//!
//! Init's event loop is not running yet, so, as for hooks, boot waits for its own child by pid.
//! A timeout stops the group (TERM, KILL after 2 s) and is a warning; a SIGTERM/SIGINT stops
//! the child and the container (128+N), as during hooks.

use super::StepErr;
use crate::creds::Identity;
use crate::spawn::{Command, Group};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

pub const PYTHON: &str = "/opt/hermes/.venv/bin/python";

/// How a run ended (not a failure of the boot: callers warn).
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Code(i32),
    Signal(i32),
    TimedOut,
}

pub struct Run<'a> {
    pub argv: Vec<String>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: &'a Path,
    pub identity: Option<Identity>,
    pub timeout: Duration,
}

/// Run to completion; `line` gets each output line (lossy UTF-8, without newline).
pub fn run(r: &Run, mut line: impl FnMut(&str)) -> Result<Ended, StepErr> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(|e| StepErr::new(format!("pipe: {e}")))?;
    // The child's end must block.
    nix::fcntl::fcntl(wr.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()))
        .map_err(|e| StepErr::new(format!("fcntl: {e}")))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| StepErr::new(format!("/dev/null: {e}")))?;
    let mut cmd = Command::new(&r.argv);
    cmd.env(r.env.iter().map(|(k, v)| (k, v)));
    cmd.cwd(r.cwd);
    cmd.identity = r.identity.clone();
    cmd.group = Group::Own { tty: None };
    cmd.stdio = [Some(null.as_raw_fd()), Some(wr.as_raw_fd()), Some(wr.as_raw_fd())];
    let pid = match cmd.spawn() {
        Ok(p) => p,
        Err(e) => {
            line(&format!("could not start {}: {e}", r.argv[0]));
            return Ok(Ended::Code(if e.errno == nix::Error::ENOENT { 127 } else { 126 }));
        }
    };
    drop(wr);
    let mut out = Output { rd: Some(rd), buf: Vec::new(), line: &mut line };
    let (st, stop) = wait_child(pid, Some(&mut out), Some(r.timeout), Duration::from_secs(2))
        .map_err(|e| StepErr::new(format!("waiting for {}: {e}", r.argv[0])))?;
    Ok(match (stop, st) {
        (Some(Stop::Signal(sig)), _) => {
            return Err(StepErr {
                code: 128 + sig,
                reason: format!("stopped by signal {sig} while {} ran", r.argv.join(" ")),
            });
        }
        (Some(Stop::Timeout), _) => Ended::TimedOut,
        (None, WaitStatus::Signaled(_, s, _)) => Ended::Signal(s as i32),
        (None, WaitStatus::Exited(_, c)) => Ended::Code(c),
        (None, _) => Ended::Code(1),
    })
}

/// A child's output pipe, split into lines for `line` (lossy UTF-8, without newline).
pub struct Output<'a> {
    rd: Option<OwnedFd>,
    buf: Vec<u8>,
    line: &'a mut dyn FnMut(&str),
}

impl Output<'_> {
    /// Read what the pipe holds; at EOF the pipe is closed and a partial last line flushed.
    fn drain(&mut self) {
        let Some(rd) = &self.rd else { return };
        let mut chunk = [0u8; 8192];
        let mut eof = false;
        loop {
            match nix::unistd::read(rd.as_raw_fd(), &mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(nix::Error::EINTR) => {}
                Err(_) => break,
            }
        }
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let l: Vec<u8> = self.buf.drain(..=i).collect();
            (self.line)(String::from_utf8_lossy(&l[..i]).trim_end());
        }
        // A very long line without newline is flushed in pieces.
        if self.buf.len() > 16384 || (eof && !self.buf.is_empty()) {
            (self.line)(String::from_utf8_lossy(&self.buf).trim_end());
            self.buf.clear();
        }
        if eof {
            self.rd = None;
        }
    }
}

/// Why boot stopped one of its children before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM/SIGINT reached PID 1 (`docker stop`) while it ran.
    Signal(i32),
    Timeout,
}

/// Wait for boot's own child `pid`. Boot runs before PID 1's loop exists, so it waits for its
/// children by pid — the one exception to the single reaper. It stays answerable to `docker
/// stop` meanwhile: SIGTERM/SIGINT (or `timeout`) send TERM to the child's group, KILL follows
/// `grace` later. With `out`, the child's output pipe is read as it comes: poll() does the
/// waiting while the pipe is open; after that, sigtimedwait() waits for SIGCHLD or a signal
/// (100 ms at most: SIGCHLD may go to another thread when boot runs from a test).
pub fn wait_child(
    pid: Pid,
    mut out: Option<&mut Output>,
    timeout: Option<Duration>,
    grace: Duration,
) -> nix::Result<(WaitStatus, Option<Stop>)> {
    let mut set = nix::sys::signal::SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        set.add(s);
    }
    let _ = set.thread_block();
    let started = Instant::now();
    let mut stop: Option<(Instant, Stop)> = None;
    loop {
        let open = out.as_ref().and_then(|o| o.rd.as_ref()).is_some();
        if let Some(o) = out.as_deref_mut().filter(|_| open) {
            if let Some(rd) = &o.rd {
                let mut fds = [nix::poll::PollFd::new(rd.as_fd(), nix::poll::PollFlags::POLLIN)];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
            }
            o.drain();
        }
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                if let Some(o) = out.as_deref_mut() {
                    o.drain();
                }
                return Ok((st, stop.map(|(_, why)| why)));
            }
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
        let ts = libc::timespec { tv_sec: 0, tv_nsec: if open { 0 } else { 100_000_000 } };
        // SAFETY: sigtimedwait with a valid set and timeout.
        let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
        let asked = if sig == libc::SIGTERM || sig == libc::SIGINT {
            Some(Stop::Signal(sig))
        } else if timeout.is_some_and(|t| started.elapsed() > t) {
            Some(Stop::Timeout)
        } else {
            None
        };
        // A signal wins over a timeout already under way: the container is stopping.
        if let Some(why) = asked.filter(|w| stop.is_none_or(|(_, s)| s == Stop::Timeout && *w != Stop::Timeout)) {
            if let (Stop::Timeout, Some(o)) = (why, out.as_deref_mut()) {
                (o.line)(&format!("timed out after {} s: stopping it", timeout.unwrap_or_default().as_secs()));
            }
            stop = Some((Instant::now(), why));
            // SAFETY: kill(2) on the child's own process group.
            unsafe { libc::kill(-pid.as_raw(), libc::SIGTERM) };
        }
        if let Some((t, _)) = stop {
            if t.elapsed() > grace {
                // SAFETY: as above.
                unsafe { libc::kill(-pid.as_raw(), libc::SIGKILL) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> (Result<Ended, StepErr>, Vec<String>) {
        let mut lines = Vec::new();
        let r = Run {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into()), ("X".into(), "x".into())],
            cwd: Path::new("/"),
            identity: None,
            timeout,
        };
        let e = run(&r, |l| lines.push(l.to_string()));
        (e, lines)
    }

    #[test]
    fn output_lines_exit_codes_and_timeout() {
        let (e, lines) = sh("echo one; echo \"two $X\" >&2; printf three; exit 3", Duration::from_secs(20));
        assert_eq!(e.unwrap(), Ended::Code(3));
        assert_eq!(lines, ["one", "two x", "three"]);
        let t = Instant::now();
        let (e, lines) = sh("echo start; exec sleep 30", Duration::from_millis(300));
        assert_eq!(e.unwrap(), Ended::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(lines[0], "start");
        // A child that closes its output but keeps running is still waited for.
        let (e, _) = sh("exec >/dev/null 2>&1; sleep 0.3; exit 4", Duration::from_secs(20));
        assert_eq!(e.unwrap(), Ended::Code(4));
    }
}
