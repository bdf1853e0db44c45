//! The one identity switch every role uses (shim, main program, services, `s6-setuidgid`).
//!
//! Order matters: supplementary groups first (needs CAP_SETGID), then the gid, then the uid
//! (after which neither of the others can be changed). Afterwards we read everything back
//! and refuse to go on if the kernel did not give us exactly what we asked for.

use crate::users::{self, Group, User};
use std::fmt;

/// A fully resolved identity: nothing left to look up after fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub name: Option<String>,
    pub home: Option<String>,
}

#[derive(Debug)]
pub enum Error {
    Users(users::Error),
    UnknownUser(String),
    UnknownGroup(String),
    Syscall(&'static str, nix::Error),
    Mismatch(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Users(e) => e.fmt(f),
            Error::UnknownUser(u) => write!(f, "unknown user '{u}' (not in {})", users::PASSWD),
            Error::UnknownGroup(g) => write!(f, "unknown group '{g}' (not in {})", users::GROUP),
            Error::Syscall(what, e) => write!(f, "{what} failed: {e}"),
            Error::Mismatch(m) => write!(f, "identity check failed after the switch: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Why `Identity::apply` failed, without allocating.
#[derive(Debug, Clone, Copy)]
pub enum SwitchFail {
    Syscall(&'static str, i32),
    /// (what, a value the kernel reports, the value wanted)
    Mismatch(&'static str, u32, u32),
}

fn errno() -> i32 {
    nix::Error::last() as i32
}

impl From<users::Error> for Error {
    fn from(e: users::Error) -> Self {
        Error::Users(e)
    }
}

impl Identity {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    fn from_user(u: &User, groups: &[Group]) -> Identity {
        Identity {
            uid: u.uid,
            gid: u.gid,
            groups: users::supplementary_gids(groups, &u.name, u.gid),
            name: Some(u.name.clone()),
            home: Some(u.home.clone()),
        }
    }

    /// gosu-style spec: `user`, `uid`, `user:group`, `uid:gid`, `user:gid`, `uid:group`,
    /// looked up in the real `/etc/passwd` and `/etc/group`.
    pub fn resolve(spec: &str) -> Result<Identity, Error> {
        let passwd = users::users()?;
        // A missing /etc/group only matters when a group is named.
        let groups = users::groups();
        match (&groups, spec.split_once(':')) {
            (Err(_), Some((_, g))) if g.parse::<u32>().is_err() => Err(groups.unwrap_err().into()),
            _ => Identity::resolve_with(spec, &passwd, groups.as_deref().unwrap_or(&[])),
        }
    }

    /// The lookup itself. A bare uid with no passwd entry runs with gid = uid and no
    /// supplementary groups; an explicit group replaces the primary group, as gosu does.
    pub fn resolve_with(spec: &str, passwd: &[User], groups: &[Group]) -> Result<Identity, Error> {
        let (user_part, group_part) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let mut id = match user_part.parse::<u32>() {
            Ok(uid) => match passwd.iter().find(|u| u.uid == uid) {
                Some(u) => Identity::from_user(u, groups),
                None => Identity { uid, gid: uid, groups: vec![uid], name: None, home: None },
            },
            Err(_) => match passwd.iter().find(|u| u.name == user_part) {
                Some(u) => Identity::from_user(u, groups),
                None => return Err(Error::UnknownUser(user_part.to_string())),
            },
        };
        if let Some(g) = group_part {
            id.gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => groups
                    .iter()
                    .find(|x| x.name == g)
                    .map(|x| x.gid)
                    .ok_or_else(|| Error::UnknownGroup(g.to_string()))?,
            };
            id.groups = vec![id.gid];
        }
        Ok(id)
    }

    /// Switch the calling process to this identity and verify it.
    pub fn switch(&self) -> Result<(), Error> {
        self.apply().map_err(|f| match f {
            SwitchFail::Syscall(what, errno) => Error::Syscall(what, nix::Error::from_raw(errno)),
            SwitchFail::Mismatch(what, got, wanted) => Error::Mismatch(format!("{what} is {got}, wanted {wanted}")),
        })
    }

    /// The switch itself: raw syscalls, no allocation, so it is safe in a child that shares
    /// PID 1's memory (`spawn`). The raw syscalls change only the calling task: glibc's
    /// wrappers would try to change every thread they know of, and in that child those are
    /// PID 1's threads.
    pub fn apply(&self) -> Result<(), SwitchFail> {
        // SAFETY: plain syscalls with valid pointers.
        unsafe {
            if libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr()) != 0 {
                return Err(SwitchFail::Syscall("setgroups", errno()));
            }
            if libc::syscall(libc::SYS_setresgid, self.gid, self.gid, self.gid) != 0 {
                return Err(SwitchFail::Syscall("setresgid", errno()));
            }
            if libc::syscall(libc::SYS_setresuid, self.uid, self.uid, self.uid) != 0 {
                return Err(SwitchFail::Syscall("setresuid", errno()));
            }
            let (mut r, mut e, mut s) = (0, 0, 0);
            let (mut rg, mut eg, mut sg) = (0, 0, 0);
            let mut buf = [0 as libc::gid_t; 64];
            libc::syscall(libc::SYS_getresuid, &mut r as *mut u32, &mut e as *mut u32, &mut s as *mut u32);
            libc::syscall(libc::SYS_getresgid, &mut rg as *mut u32, &mut eg as *mut u32, &mut sg as *mut u32);
            let n = libc::syscall(libc::SYS_getgroups, buf.len(), buf.as_mut_ptr());
            // Read everything back: refuse to go on unless the kernel gave exactly that.
            for (what, got, wanted) in [("uid", [r, e, s], self.uid), ("gid", [rg, eg, sg], self.gid)] {
                if let Some(&bad) = got.iter().find(|&&v| v != wanted) {
                    return Err(SwitchFail::Mismatch(what, bad, wanted));
                }
            }
            if n >= 0 && (n as usize) <= buf.len() {
                let got = &buf[..n as usize];
                if got.len() != self.groups.len() || self.groups.iter().any(|g| !got.contains(g)) {
                    return Err(SwitchFail::Mismatch(
                        "supplementary groups differ; their count",
                        got.len() as u32,
                        self.groups.len() as u32,
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The identity of the calling process, as far as the kernel knows it.
pub fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Give an exec'd program a clean slate: no blocked signals, default dispositions.
/// Async-signal-safe (used between fork and exec).
pub fn reset_signals() {
    reset_signals_in(!0);
}

/// [`reset_signals`] for a caller that knows which dispositions can survive exec: a handler
/// is reset by exec itself, so only ignored signals need resetting — bit `sig - 1` of
/// `ignored` set; unblocking is always done.
pub fn reset_signals_in(ignored: u64) {
    // SAFETY: sigprocmask/signal are async-signal-safe and take valid arguments.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        // The raw syscall: glibc's signal() refuses the real-time signals it reserves (32, 33),
        // and an ignored one of those would still be inherited.
        #[repr(C)]
        struct KernelSigaction {
            handler: usize,
            flags: libc::c_ulong,
            restorer: usize,
            mask: u64,
        }
        let dfl = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP && ignored & (1u64 << (sig - 1)) != 0 {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (Vec<User>, Vec<Group>) {
        let p = std::path::Path::new("/etc/passwd");
        let pw = "root:x:0:0:root:/root:/bin/sh\nhermes:x:10000:10000::/opt/data:/bin/sh\n";
        let gr = "root:x:0:\nhermes:x:10000:\naudio:x:29:hermes\n";
        (users::parse_passwd(p, pw).unwrap(), users::parse_group(p, gr).unwrap())
    }

    /// The identity table, after gosu's: every accepted spelling and the refusals.
    #[test]
    fn identity_specs_resolve_like_gosu() {
        let (pw, gr) = table();
        let r = |s: &str| Identity::resolve_with(s, &pw, &gr);
        let hermes = r("hermes").unwrap();
        assert_eq!((hermes.uid, hermes.gid, hermes.groups.clone()), (10000, 10000, vec![10000, 29]));
        assert_eq!(hermes.home.as_deref(), Some("/opt/data"));
        assert_eq!(r("10000").unwrap(), hermes);
        let ug = r("hermes:audio").unwrap();
        assert_eq!((ug.uid, ug.gid, ug.groups), (10000, 29, vec![29]));
        let n = r("1234:5678").unwrap();
        assert_eq!((n.uid, n.gid, n.groups, n.name), (1234, 5678, vec![5678], None));
        let bare = r("4321").unwrap();
        assert_eq!((bare.uid, bare.gid, bare.groups), (4321, 4321, vec![4321]));
        assert_eq!(r("root:0").unwrap().groups, vec![0]);
        assert!(matches!(r("nosuch"), Err(Error::UnknownUser(u)) if u == "nosuch"));
        assert!(matches!(r("hermes:nogroup"), Err(Error::UnknownGroup(g)) if g == "nogroup"));
    }

    #[test]
    fn errors_read_clearly() {
        assert_eq!(Error::UnknownUser("nosuch".into()).to_string(), "unknown user 'nosuch' (not in /etc/passwd)");
    }
}
