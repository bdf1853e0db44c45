//! s6-compatible front ends (C-S6): the `/command/s6-*` tools that unmodified hermes-agent
//! 0.19.0 calls by absolute path, as applets of the one binary.
//!
//! The supervision applets (`s6-svc`, `s6-svstat`, `s6-svscanctl`, `s6-svwait`) translate s6's
//! command line into control-protocol requests to PID 1; the exec helpers (`s6-setuidgid`,
//! `with-contenv`) and the logger (`s6-log`) work on their own. Options, output formats, exit
//! codes and messages follow Debian's s6 2.11 (`skalibs` conventions: `prog: fatal: …`,
//! usage 100, system errors 111); the differential tests in `tests/s6_differential.rs` hold
//! them against the real tools. Where hermesinit differs on purpose, the applet's module says
//! so; in short:
//!
//! - `s6-svstat` prints `up (pid N)` without s6 ≥ 2.12's ` pgid N` (Hermes 0.19.0's regex),
//!   accepts the `pgid` field, and answers only root and the hermes user (C-SVC-6: other users
//!   are refused, status included; s6's status file is world-readable).
//! - `s6-svc -x` does nothing; `s6-svscanctl -b/-t/-i/-q` are refused (stop the container
//!   through PID 1 instead); `-wU`/`-wR` and `s6-svwait -U/-R` have no readiness to wait for.
//! - `s6-log` keeps no `lock` file, logs a last line without newline, refuses processors.
//! - `with-contenv` sets a variable whose snapshot file is empty to "" (s6-envdir unsets it)
//!   and keeps `/command` on PATH.
//!
//! A service directory maps to a service only when its parent is the scan directory
//! (`HERMESINIT_SCAN_DIR`, the config's `scan_dir`, `/run/service`); anything else is "not
//! supervised", as for s6 a directory without an s6-supervise.

mod common;
mod getopt;
mod log;
mod setuidgid;
pub(crate) mod status;
mod svc;
mod svscanctl;
mod svstat;
mod svwait;
mod with_contenv;

pub const APPLETS: &[&str] =
    &["s6-svc", "s6-svstat", "s6-svscanctl", "s6-svwait", "s6-setuidgid", "s6-log", "with-contenv"];

/// Run one applet; the result is the process's exit code (when it did not exec).
pub fn main(applet: &str, args: Vec<std::ffi::OsString>) -> i32 {
    // The clients of PID 1 must hear EPIPE; s6-log sets its own, and the exec'ing applets hand
    // the disposition they were given to their program.
    let client = |run: fn(Vec<std::ffi::OsString>) -> i32, args| {
        crate::control::ignore_sigpipe();
        run(args)
    };
    match applet {
        "s6-svc" => client(svc::main, args),
        "s6-svstat" => client(svstat::main, args),
        "s6-svscanctl" => client(svscanctl::main, args),
        "s6-svwait" => client(svwait::main, args),
        "s6-setuidgid" => setuidgid::main(args),
        "s6-log" => log::main(args),
        "with-contenv" => with_contenv::main(args),
        other => {
            eprintln!("hermesinit: {other} is not an s6 applet");
            100
        }
    }
}
