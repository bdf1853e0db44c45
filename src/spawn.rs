//! vfork-style spawn: a list of small pre-exec steps, each one a syscall (C-SVC-8).
//!
//! The child is a `clone(CLONE_VM | CLONE_VFORK)` on its own stack: it shares PID 1's memory
//! and PID 1 waits until it has exec'd or died. Nothing is copied (no page tables, and none of
//! the copy-on-write faults a fork leaves PID 1 with), and a failed step is simply written into
//! memory the parent reads afterwards, so the parent gets a real error instead of a mysterious
//! exit 127. The price is discipline: everything that allocates or reads files happens before
//! the clone; the child only makes raw syscalls and writes nothing but its failure report.

use crate::creds::{self, Identity};
use nix::unistd::Pid;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// Process-group placement of the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// New session (and group): services.
    Session,
    /// New process group, made the foreground group of this terminal if given: the main program.
    Own { tty: Option<RawFd> },
}

/// A file opened and checked before the fork (see `supervisor::launch`).
#[derive(Debug)]
pub enum Exec {
    /// Executed from the descriptor (`execveat`), or, for a `#!` script whose interpreter must
    /// re-open it by name, as `./name` from the working directory once the child has checked
    /// that the name still denotes this inode.
    Fd { fd: OwnedFd, name: CString, script: bool, dev: (u32, u32), ino: u64 },
}

/// The signals this process ignores (bit `sig - 1`), once [`learn_ignored_signals`] has read
/// them; until then a child resets every disposition.
static IGNORED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// For a process whose dispositions no longer change (PID 1, once running): read which signals
/// it ignores (`SigIgn` in /proc/self/status), so that each child resets just those, not all
/// 62 (an ignored signal stays ignored across exec; a handled one does not).
pub fn learn_ignored_signals() {
    use std::io::Read;
    // One read: procfs reports a size of 0, so read_to_string would grow its buffer read by read.
    let mut buf = [0u8; 4096];
    let Ok(n) = std::fs::File::open("/proc/self/status").and_then(|mut f| f.read(&mut buf)) else { return };
    let status = String::from_utf8_lossy(&buf[..n]);
    let mask =
        status.lines().find_map(|l| l.strip_prefix("SigIgn:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    if let Some(mask) = mask {
        let _ = IGNORED.set(mask);
    }
}

/// The soft limit on open files the container gave us: PID 1 raises its own (it holds pipes
/// for every service), and every child gets the original back.
static CHILD_NOFILE: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// Raise our soft RLIMIT_NOFILE to the hard limit, remembering the original for children.
pub fn raise_nofile() -> u64 {
    let Ok((soft, hard)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft == hard {
        // Nothing to raise, so nothing for a child to restore.
        return hard;
    }
    let _ = CHILD_NOFILE.set(libc::rlimit { rlim_cur: soft, rlim_max: hard });
    if nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    }
}

pub struct Command {
    /// What to execute; argv[0] when not set.
    program: Option<CString>,
    /// A checked, opened file to execute instead of a path.
    pub exec: Option<Exec>,
    /// The working directory by descriptor (wins over `cwd`).
    pub cwd_fd: Option<RawFd>,
    argv: Vec<CString>,
    env: Vec<CString>,
    pub cwd: Option<CString>,
    pub identity: Option<Identity>,
    pub group: Group,
    /// fds to install as 0, 1, 2; `None` keeps the parent's.
    pub stdio: [Option<RawFd>; 3],
}

#[derive(Debug)]
pub struct Error {
    pub step: &'static str,
    pub errno: nix::Error,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.errno)
    }
}

impl std::error::Error for Error {}

const STEPS: [&str; 9] =
    ["setsid", "setpgid", "tcsetpgrp", "dup2", "chdir", "switch identity", "execve", "setrlimit", "verify"];

fn cstr(s: impl AsRef<[u8]>) -> CString {
    // Interior NULs cannot come from argv or the environment; strip them defensively.
    CString::new(s.as_ref().iter().copied().filter(|&b| b != 0).collect::<Vec<u8>>()).unwrap_or_default()
}

impl Command {
    pub fn new<S: AsRef<[u8]>>(argv: &[S]) -> Command {
        Command {
            program: None,
            exec: None,
            cwd_fd: None,
            argv: argv.iter().map(cstr).collect(),
            env: Vec::new(),
            cwd: None,
            identity: None,
            group: Group::Session,
            stdio: [None; 3],
        }
    }

    /// Replace the whole environment.
    pub fn env<K: AsRef<OsStr>, V: AsRef<OsStr>>(&mut self, vars: impl IntoIterator<Item = (K, V)>) -> &mut Self {
        self.env = vars
            .into_iter()
            .map(|(k, v)| {
                let mut kv = k.as_ref().as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_ref().as_bytes());
                cstr(kv)
            })
            .collect();
        self
    }

    /// Execute this file, keeping argv[0] as given (programs that pick a role from it).
    pub fn program(&mut self, path: &str) -> &mut Self {
        self.program = Some(cstr(path));
        self
    }

    pub fn cwd(&mut self, dir: &std::path::Path) -> &mut Self {
        self.cwd = Some(cstr(dir.as_os_str().as_bytes()));
        self
    }

    pub fn spawn(&self) -> Result<Pid, Error> {
        let argv: Vec<*const libc::c_char> =
            self.argv.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        let envp: Vec<*const libc::c_char> =
            self.env.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        if self.argv.is_empty() {
            return Err(Error { step: "execve", errno: nix::Error::EINVAL });
        }
        let report = Report { step: AtomicUsize::new(NO_FAILURE), errno: AtomicI32::new(0) };
        let child = Child { cmd: self, argv: &argv, envp: &envp, report: &report };
        let stack = child_stack().map_err(|e| Error { step: "stack", errno: e })?;
        // SAFETY: the child runs `child_main` on its own stack and only makes raw syscalls;
        // CLONE_VFORK keeps `child` (and this thread) untouched until it has exec'd or exited.
        let pid = unsafe {
            libc::clone(
                child_main,
                stack,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&raw const child).cast_mut().cast(),
            )
        };
        if pid < 0 {
            return Err(Error { step: "clone", errno: nix::Error::last() });
        }
        match report.step.load(Ordering::Acquire) {
            NO_FAILURE => Ok(Pid::from_raw(pid)),
            step => Err(Error {
                step: STEPS.get(step).copied().unwrap_or("exec"),
                errno: nix::Error::from_raw(report.errno.load(Ordering::Acquire)),
            }),
        }
    }

    /// Runs in the child. Returns only on failure: (step index, errno).
    fn child_steps(&self, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> (usize, i32) {
        let errno = || nix::Error::last() as i32;
        // SAFETY: every call below is async-signal-safe and gets valid pointers.
        unsafe {
            match self.group {
                Group::Session => {
                    if libc::setsid() < 0 {
                        return (0, errno());
                    }
                }
                Group::Own { tty } => {
                    if libc::setpgid(0, 0) < 0 {
                        return (1, errno());
                    }
                    // Signals are still blocked here, so SIGTTOU cannot stop us.
                    if let Some(fd) = tty {
                        if libc::tcsetpgrp(fd, libc::getpid()) < 0 {
                            return (2, errno());
                        }
                    }
                }
            }
            for (target, src) in self.stdio.iter().enumerate() {
                if let Some(fd) = *src {
                    if fd != target as RawFd && libc::dup2(fd, target as RawFd) < 0 {
                        return (3, errno());
                    }
                }
            }
            // Nothing beyond 0-2 survives exec: mark the rest close-on-exec.
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
                for fd in 3..4096 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            if let Some(fd) = self.cwd_fd {
                if libc::fchdir(fd) < 0 {
                    return (4, errno());
                }
            } else if let Some(dir) = &self.cwd {
                if libc::chdir(dir.as_ptr()) < 0 {
                    return (4, errno());
                }
            }
            if let Some(lim) = CHILD_NOFILE.get() {
                if libc::setrlimit(libc::RLIMIT_NOFILE, lim) < 0 {
                    return (7, errno());
                }
            }
            if let Some(id) = &self.identity {
                if let Err(e) = id.apply() {
                    let code = match e {
                        creds::SwitchFail::Syscall(_, n) => n,
                        creds::SwitchFail::Mismatch(..) => libc::EPERM,
                    };
                    return (5, code);
                }
            }
            creds::reset_signals_in(IGNORED.get().copied().unwrap_or(!0));
            match &self.exec {
                Some(Exec::Fd { fd, script: false, .. }) => {
                    libc::syscall(
                        libc::SYS_execveat,
                        fd.as_raw_fd(),
                        c"".as_ptr(),
                        argv.as_ptr(),
                        envp.as_ptr(),
                        libc::AT_EMPTY_PATH,
                    );
                }
                Some(Exec::Fd { name, dev, ino, .. }) => {
                    let mut st: libc::stat = std::mem::zeroed();
                    if libc::fstatat(libc::AT_FDCWD, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) < 0 {
                        return (8, errno());
                    }
                    if st.st_ino != *ino || st.st_dev != libc::makedev(dev.0, dev.1) {
                        return (8, libc::ESTALE);
                    }
                    let mut rel = [0u8; 258];
                    rel[..2].copy_from_slice(b"./");
                    let n = name.as_bytes().len().min(255);
                    rel[2..2 + n].copy_from_slice(&name.as_bytes()[..n]);
                    libc::execve(rel.as_ptr().cast(), argv.as_ptr(), envp.as_ptr());
                }
                None => {
                    let path = self.program.as_ref().map_or(argv[0], |p| p.as_ptr());
                    libc::execve(path, argv.as_ptr(), envp.as_ptr());
                }
            }
            (6, errno())
        }
    }
}

/// `STEPS` index meaning "the child exec'd".
const NO_FAILURE: usize = usize::MAX;

/// What the child writes before it dies: the step that failed and its errno.
struct Report {
    step: AtomicUsize,
    errno: AtomicI32,
}

/// Everything the child reads, in memory it shares with the (waiting) parent.
struct Child<'a> {
    cmd: &'a Command,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    report: &'a Report,
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Child`, alive until we exec or exit (CLONE_VFORK).
    let child = unsafe { &*arg.cast::<Child>() };
    let (step, errno) = child.cmd.child_steps(child.argv, child.envp);
    child.report.errno.store(errno, Ordering::Release);
    child.report.step.store(step, Ordering::Release);
    // SAFETY: _exit ends this child only (it has its own thread group).
    unsafe { libc::_exit(if step == 6 && errno == libc::ENOENT { 127 } else { 126 }) }
}

/// Size of the child's stack: its whole life is `child_steps`, a few frames of syscalls.
const CHILD_STACK: usize = 64 * 1024;

/// The child's stack, mapped once per thread with a guard page below it and reused: a vfork
/// child is gone before the next spawn can start. Returns the top (stacks grow down).
fn child_stack() -> Result<*mut libc::c_void, nix::Error> {
    thread_local! {
        static TOP: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
    TOP.with(|top| {
        if top.get() == 0 {
            let page = 4096;
            // SAFETY: a fresh private anonymous mapping; the guard page is made inaccessible.
            unsafe {
                let base = libc::mmap(
                    std::ptr::null_mut(),
                    CHILD_STACK + page,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                    -1,
                    0,
                );
                if base == libc::MAP_FAILED {
                    return Err(nix::Error::last());
                }
                libc::mprotect(base, page, libc::PROT_NONE);
                top.set(base as usize + page + CHILD_STACK);
            }
        }
        Ok(top.get() as *mut libc::c_void)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{WaitStatus, waitpid};

    fn exit_of(pid: Pid) -> i32 {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => code,
            other => panic!("child ended as {other:?}"),
        }
    }

    #[test]
    fn a_failed_step_comes_back_as_its_name_and_errno() {
        let err = Command::new(&["/nonexistent/program"]).spawn().unwrap_err();
        assert_eq!((err.step, err.errno), ("execve", nix::Error::ENOENT));
        let mut cmd = Command::new(&["/bin/true"]);
        cmd.cwd(std::path::Path::new("/nonexistent-dir"));
        let err = cmd.spawn().unwrap_err();
        assert_eq!((err.step, err.errno), ("chdir", nix::Error::ENOENT));
    }

    #[test]
    fn the_child_runs_with_argv_and_env_and_its_status_is_reaped() {
        let mut cmd = Command::new(&["/bin/sh", "-c", "exit $CODE"]);
        cmd.env([("CODE", "7")]);
        let pid = cmd.spawn().unwrap();
        assert_eq!(exit_of(pid), 7);
    }

    /// Only ignored dispositions survive exec: knowing which, the child resets just those.
    #[test]
    fn a_child_ignores_nothing_its_parent_ignored() {
        // SAFETY: setting a disposition of this test process.
        unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
        learn_ignored_signals();
        assert_ne!(IGNORED.get().copied().unwrap_or(0) & (1 << (libc::SIGUSR2 - 1)), 0);
        let pid = Command::new(&["/bin/grep", "-qE", "^SigIgn:\\s+0+$", "/proc/self/status"]).spawn().unwrap();
        assert_eq!(exit_of(pid), 0, "the child still ignores a signal");
    }

    /// The child shares PID 1's memory: its identity switch must change only itself, never a
    /// thread of the parent (glibc's setxid wrappers would try to).
    #[test]
    fn the_identity_switch_changes_the_child_only_even_with_other_threads() {
        if nix::unistd::geteuid().as_raw() != 0 {
            return; // needs root to switch
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            rx.recv().ok();
            nix::unistd::geteuid().as_raw()
        });
        let mut cmd = Command::new(&["/bin/sh", "-c", "test \"$(id -u):$(id -g)\" = 65534:65534"]);
        cmd.identity = Some(Identity { uid: 65534, gid: 65534, groups: vec![65534], name: None, home: None });
        let pid = cmd.spawn().unwrap();
        assert_eq!(exit_of(pid), 0, "the child did not run as 65534:65534");
        tx.send(()).unwrap();
        assert_eq!(other.join().unwrap(), 0, "a parent thread lost root");
        assert_eq!(nix::unistd::geteuid().as_raw(), 0, "the parent lost root");
    }
}
