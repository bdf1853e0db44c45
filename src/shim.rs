//! `/opt/hermes/bin/hermes`: the privilege-drop exec for `docker exec` (C-SHIM-1..5).
//!
//! One exec, no shell, no PATH lookup: the real CLI is always called by absolute path, so the
//! shim can never re-enter itself.

use crate::creds::{self, Identity};
use crate::routing::{self, HERMES_REAL};
use std::ffi::CString;
use std::os::unix::ffi::OsStringExt;

const REMEDY: &str = "run the command with `docker exec --user hermes …`, or set \
HERMES_DOCKER_EXEC_AS_ROOT=1 to keep root on purpose";

pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    main_with(HERMES_REAL, args)
}

/// The shim with the target as a parameter, so tests can point it elsewhere.
pub fn main_with(real: &str, args: Vec<std::ffi::OsString>) -> i32 {
    if std::fs::metadata(real).is_err() {
        eprintln!("hermes: the Hermes CLI is missing at {real}; the image is broken");
        return 127;
    }
    if creds::current_uid() == 0 && !routing::env_truthy("HERMES_DOCKER_EXEC_AS_ROOT") {
        let user = std::env::var("HERMESINIT_USER").unwrap_or_else(|_| "hermes".into());
        let id = match Identity::resolve(&user) {
            Ok(id) => id,
            Err(e) => {
                eprintln!("hermes: cannot drop root to the {user} user ({e}); {REMEDY}");
                return 126;
            }
        };
        if let Err(e) = id.switch() {
            eprintln!("hermes: cannot drop root to the {user} user ({e}); {REMEDY}");
            return 126;
        }
        let home = std::env::var("HERMES_HOME").unwrap_or_else(|_| routing::HERMES_HOME_DEFAULT.into());
        // SAFETY: single-threaded at this point.
        unsafe {
            std::env::set_var("HOME", &home);
            std::env::set_var("USER", &user);
            std::env::set_var("LOGNAME", &user);
        }
    }
    creds::reset_signals();
    exec(real, args)
}

/// execv, returning the exit code to use when it fails (127 missing, 126 otherwise).
pub fn exec(path: &str, args: Vec<std::ffi::OsString>) -> i32 {
    let to_c = |b: Vec<u8>| CString::new(b).unwrap_or_default();
    let mut argv = vec![to_c(path.as_bytes().to_vec())];
    argv.extend(args.into_iter().map(|a| to_c(a.into_vec())));
    let err = nix::unistd::execv(&argv[0], &argv).unwrap_err();
    eprintln!("hermes: cannot execute {path}: {err}");
    if err == nix::Error::ENOENT { 127 } else { 126 }
}
