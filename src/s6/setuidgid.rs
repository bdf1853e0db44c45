//! `s6-setuidgid account prog…` (C-S6-7): supplementary groups (initgroups from /etc/group),
//! gid, uid, then exec through PATH. The environment is left alone, as s6 does.
//!
//! `account` is a user name (a bare number is a name too: unknown unless such a user
//! exists), `uid:gid` in digits (groups = just gid), or empty (exec without any change).
//! Like s6, it needs root even to become the current user: scripts guard with
//! `[ "$(id -u)" = 0 ]`. Messages carry the names of s6's own helpers (`s6-envuidgid`,
//! `s6-applyuidgid`), as the real `s6-setuidgid` prints them.

use super::common::{fatal, usage};
use crate::creds::{Error, Identity};
use crate::users;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;

const USAGE: &str = "s6-setuidgid username prog...";
const APPLY: &str = "s6-applyuidgid";
const APPLY_USAGE: &str = "s6-applyuidgid [ -z ] [ -u uid ] [ -g gid ] [ -G gidlist ] [ -U ] prog...";

pub fn main(args: Vec<OsString>) -> i32 {
    if args.len() < 2 {
        return usage("s6-setuidgid", USAGE);
    }
    let account = args[0].to_string_lossy().into_owned();
    let prog = &args[1..];
    if !account.is_empty() {
        let id = match lookup(&account) {
            Ok(id) => id,
            Err(code) => return code,
        };
        if let Err(e) = id.switch() {
            let what = match &e {
                Error::Syscall("setgroups", e) => format!("unable to set supplementary group list: {}", e.desc()),
                Error::Syscall("setresgid", e) => format!("unable to setgid: {}", e.desc()),
                Error::Syscall("setresuid", e) => format!("unable to setuid: {}", e.desc()),
                e => e.to_string(),
            };
            return fatal(APPLY, 111, what);
        }
    }
    exec(prog)
}

/// The identity for `account`, or the exit code after the message.
fn lookup(account: &str) -> Result<Identity, i32> {
    if let Some((u, g)) = account.split_once(':') {
        let digits =
            |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u32>().ok()).flatten();
        return match (digits(u), digits(g)) {
            (Some(uid), Some(gid)) => Ok(Identity { uid, gid, groups: vec![gid], name: None, home: None }),
            _ => Err(usage(APPLY, APPLY_USAGE)),
        };
    }
    let user = match users::user_by_name(account) {
        Ok(Some(u)) => u,
        Ok(None) => return Err(fatal("s6-envuidgid", 1, format!("unknown user: {account}"))),
        Err(e) => return Err(fatal("s6-envuidgid", 111, format!("unable to getpwnam {account}: {e}"))),
    };
    let groups = users::groups().unwrap_or_default();
    Ok(Identity {
        uid: user.uid,
        gid: user.gid,
        groups: users::supplementary_gids(&groups, &user.name, user.gid),
        name: Some(user.name.clone()),
        home: Some(user.home.clone()),
    })
}

/// execvp; on failure 127 (not found) or 126, with s6-applyuidgid's message.
pub(super) fn exec_as(prog_name: &str, prog: &[OsString]) -> i32 {
    let argv: Vec<CString> = prog.iter().map(|a| CString::new(a.clone().into_vec()).unwrap_or_default()).collect();
    let Some(first) = argv.first() else {
        return 100;
    };
    let err = nix::unistd::execvp(first, &argv).unwrap_err();
    let code = if err == nix::Error::ENOENT { 127 } else { 126 };
    fatal(prog_name, code, format!("unable to exec {}: {}", prog[0].to_string_lossy(), err.desc()))
}

fn exec(prog: &[OsString]) -> i32 {
    exec_as(APPLY, prog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_gid_pairs_are_digits_only() {
        let id = lookup("10000:10001").unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (10000, 10001, vec![10001]));
        assert_eq!(lookup("hermes:x").unwrap_err(), 100);
        assert_eq!(lookup(":1").unwrap_err(), 100);
        assert_eq!(lookup("no-such-user-here").unwrap_err(), 1);
        // A bare number is a user name, as with s6.
        assert_eq!(lookup("4242424").unwrap_err(), 1);
        assert_eq!(lookup("root").unwrap().uid, 0);
    }
}
