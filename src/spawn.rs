//! fork + exec as a list of small pre-exec steps, each one a syscall (C-SVC-8).
//!
//! Everything that allocates or reads files happens before `fork`; the child only runs
//! async-signal-safe calls, and reports a failed step through a CLOEXEC pipe so the parent
//! gets a real error instead of a mysterious exit 127.

use crate::creds::{self, Identity};
use nix::unistd::{ForkResult, Pid};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

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

/// The soft limit on open files the container gave us: PID 1 raises its own (it holds pipes
/// for every service), and every child gets the original back.
static CHILD_NOFILE: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// Raise our soft RLIMIT_NOFILE to the hard limit, remembering the original for children.
pub fn raise_nofile() -> u64 {
    let Ok((soft, hard)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
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
        let (rd, wr) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error { step: "pipe", errno: e })?;
        // SAFETY: PID 1 is single-threaded; the child only makes async-signal-safe calls.
        match unsafe { nix::unistd::fork() }.map_err(|e| Error { step: "fork", errno: e })? {
            ForkResult::Child => {
                let (step, errno) = self.child_steps(&argv, &envp);
                let msg = [step as u8, 0, 0, 0, errno as u8, (errno >> 8) as u8, (errno >> 16) as u8, 0];
                // SAFETY: write/_exit are async-signal-safe.
                unsafe {
                    libc::write(wr.as_raw_fd(), msg.as_ptr().cast(), msg.len());
                    libc::_exit(if step == 6 && errno == libc::ENOENT { 127 } else { 126 });
                }
            }
            ForkResult::Parent { child } => {
                drop(wr);
                let mut msg = [0u8; 8];
                let n = loop {
                    match nix::unistd::read(rd.as_raw_fd(), &mut msg) {
                        Err(nix::Error::EINTR) => continue,
                        r => break r.unwrap_or(0),
                    }
                };
                if n == msg.len() {
                    let errno = i32::from(msg[4]) | i32::from(msg[5]) << 8 | i32::from(msg[6]) << 16;
                    let step = STEPS.get(msg[0] as usize).copied().unwrap_or("exec");
                    return Err(Error { step, errno: nix::Error::from_raw(errno) });
                }
                Ok(child)
            }
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
                if let Err(e) = id.switch() {
                    let code = match e {
                        creds::Error::Syscall(_, n) => n as i32,
                        _ => libc::EPERM,
                    };
                    return (5, code);
                }
            }
            creds::reset_signals();
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
