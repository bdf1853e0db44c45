//! `with-contenv prog…` (C-S6-7): exec `prog` with the container environment snapshot
//! (C-BOOT-1, `/run/s6/container_environment`) applied over the current environment, as
//! s6-overlay's `with-contenv` does with `s6-envdir -Lfn`: snapshot values override, other
//! variables are kept, values are whole files. `S6_KEEP_ENV` set to anything but zero skips
//! the snapshot, as in s6-overlay.
//!
//! Two deliberate differences: an empty file sets the variable to the empty string (s6-envdir
//! would unset it; the container had it set, empty), and `/command` stays on PATH when the
//! caller had it (a run script's `s6-setuidgid`/`s6-log` are found by bare name, C-IMG-4, even
//! though the snapshot's PATH is the image's, which does not list it).

use super::common::{fatal, strerror, usage};
use super::setuidgid::exec_as;
use crate::config::Config;
use crate::envdir;
use crate::routing::{self, COMMAND_DIR};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

const USAGE: &str = "with-contenv prog...";

/// s6-overlay's test: `eltest 0${S6_KEEP_ENV} -eq 0` — unset, empty or zero apply the snapshot.
fn apply_snapshot(keep: Option<&[u8]>) -> bool {
    match keep {
        None => true,
        Some(v) => v.iter().all(|b| *b == b'0'),
    }
}

pub fn main(args: Vec<OsString>) -> i32 {
    if args.is_empty() {
        return usage("with-contenv", USAGE);
    }
    let keep = std::env::var_os("S6_KEEP_ENV");
    if apply_snapshot(keep.as_ref().map(|v| v.as_bytes())) {
        let dir = Config::for_client().env_dir.clone();
        let vars = match envdir::read(&dir) {
            Ok(v) => v,
            Err(e) => return fatal("s6-envdir", 111, format!("unable to envdir {}: {}", dir.display(), strerror(&e))),
        };
        let had_command = std::env::var_os("PATH")
            .is_some_and(|p| p.as_bytes().split(|b| *b == b':').any(|d| d == COMMAND_DIR.as_bytes()));
        for (k, v) in vars.iter().filter(|(k, _)| !k.as_bytes().contains(&b'=')) {
            // SAFETY: single-threaded; the process execs right after.
            unsafe { std::env::set_var(k, v) };
        }
        if had_command {
            let path = routing::path_with_command(std::env::var_os("PATH").as_deref());
            // SAFETY: as above.
            unsafe { std::env::set_var("PATH", path) };
        }
    }
    exec_as("with-contenv", &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_env_follows_s6_overlay() {
        assert!(apply_snapshot(None));
        assert!(apply_snapshot(Some(b"")));
        assert!(apply_snapshot(Some(b"0")));
        assert!(apply_snapshot(Some(b"00")));
        assert!(!apply_snapshot(Some(b"1")));
        assert!(!apply_snapshot(Some(b"yes")));
    }
}
