//! `s6-svscanctl [ -zabhitqnN ] scandir` (C-S6-4).
//!
//! `-a` is a rescan; `-h`, `-n` and `-N` (and `-an`) a rescan that also drops services whose
//! directory is gone; `-z` (reap zombies) needs nothing, PID 1 always reaps. The commands
//! that would tear the supervision tree down (`-b`, `-t`, `-i`, `-q`) are refused with 111
//! and nothing is sent: under hermesinit the container stops through its PID 1 (`docker stop`,
//! SIGTERM), and only that path gives every service its grace period.

use super::common::{self, CallError, SYSTEM, fatal, usage};
use super::getopt;
use crate::control::Request;
use std::ffi::OsString;
use std::path::Path;

const PROG: &str = "s6-svscanctl";
const USAGE: &str = "s6-svscanctl [ -zabhitqnN ] svscandir";

pub fn main(args: Vec<OsString>) -> i32 {
    let Ok(p) = getopt::parse(&args, "zabhitqnN") else {
        return usage(PROG, USAGE);
    };
    let Some(dir) = args.get(p.rest) else {
        return usage(PROG, USAGE);
    };
    let dir = Path::new(dir);
    let shown = dir.display();
    match common::is_scan_dir(dir, &common::scan_dir()) {
        Ok(true) => {}
        Ok(false) => return fatal(PROG, 100, format!("unable to control {shown}: supervisor not listening")),
        Err(e) => return fatal(PROG, SYSTEM, format!("unable to control {shown}: {}", common::strerror(&e))),
    }
    let letters: Vec<char> = p.opts.iter().map(|(c, _)| *c).collect();
    if let Some(c) = letters.iter().find(|c| matches!(c, 'b' | 't' | 'i' | 'q')) {
        return fatal(
            PROG,
            SYSTEM,
            format!(
                "unable to control {shown}: -{c} (tear down the supervision tree) is not available under hermesinit; \
                 stop the container instead (docker stop sends SIGTERM to PID 1)"
            ),
        );
    }
    let prune = letters.iter().any(|c| matches!(c, 'h' | 'n' | 'N'));
    let rescan = prune || letters.contains(&'a');
    if !rescan {
        // -z alone, or no command: nothing to send, but the supervisor must be there.
        return match common::call(Request::Status { services: Vec::new() }) {
            Ok(_) => 0,
            Err(e) => failed(dir, e),
        };
    }
    match common::call(Request::Rescan { prune }) {
        Ok(_) => 0,
        Err(e) => failed(dir, e),
    }
}

fn failed(dir: &Path, e: CallError) -> i32 {
    match e {
        CallError::NotSupervised => {
            fatal(PROG, 100, format!("unable to control {}: supervisor not listening", dir.display()))
        }
        e => fatal(PROG, SYSTEM, format!("unable to control {}: {e}", dir.display())),
    }
}
