//! `s6-svstat [ -uwNrpgest | -o fields ] [ -n ] servicedir` (C-S6-3).
//!
//! Differences from Debian's s6 2.11, on purpose: the `pgid` field and `-g` of s6 ≥ 2.12 are
//! accepted (the human line still has no ` pgid N`, which Hermes 0.19.0's `\(pid (\d+)\)`
//! regex would miss); like every control request, a status is answered to root and the hermes user only (C-SVC-6).

use super::common::{self, CallError, Resolved, SYSTEM, fatal, usage};
use super::getopt;
use super::status::{self, Snapshot};
use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const PROG: &str = "s6-svstat";
const USAGE: &str = "s6-svstat [ -uwNrpgest | -o up,wantedup,normallyup,ready,paused,pid,pgid,exitcode,signal,signum,updownsince,readysince,updownfor,readyfor ] [ -n ] servicedir";
const FIELDS: &[&str] = &[
    "up",
    "wantedup",
    "normallyup",
    "ready",
    "paused",
    "pid",
    "pgid",
    "exitcode",
    "signal",
    "signum",
    "updownsince",
    "readysince",
    "updownfor",
    "readyfor",
];
const MAXFIELDS: usize = 16;

pub fn main(args: Vec<OsString>) -> i32 {
    let Ok(p) = getopt::parse(&args, "no:uwNrpgest") else {
        return usage(PROG, USAGE);
    };
    let mut numeric = false;
    let mut fields: Vec<&'static str> = Vec::new();
    for (opt, arg) in p.opts {
        let one = match opt {
            'n' => {
                numeric = true;
                continue;
            }
            'o' => {
                for name in arg.unwrap_or_default().split(',').filter(|n| !n.is_empty()) {
                    let Some(f) = FIELDS.iter().find(|f| **f == name) else {
                        return fatal(PROG, 100, format!("invalid option field: {name}"));
                    };
                    if fields.len() >= MAXFIELDS {
                        return fatal(PROG, 100, "too many option fields");
                    }
                    fields.push(f);
                }
                continue;
            }
            'u' => "up",
            'w' => "wantedup",
            'N' => "normallyup",
            'r' => "ready",
            'p' => "pid",
            'g' => "pgid",
            'e' => "exitcode",
            's' => "signal",
            't' => "updownfor",
            _ => return usage(PROG, USAGE),
        };
        if fields.len() >= MAXFIELDS {
            return fatal(PROG, 100, "too many option fields");
        }
        fields.push(one);
    }
    let Some(dir) = args.get(p.rest) else {
        return usage(PROG, USAGE);
    };
    let dir = Path::new(dir);
    let shown = dir.display();
    let not_running = || fatal(PROG, 1, format!("unable to read status for {shown}: s6-supervise not running"));
    let name = match common::resolve(dir, &common::scan_dir()) {
        Resolved::Name(n) => n,
        Resolved::NotSupervised => return not_running(),
        Resolved::Missing(e) if e.kind() == std::io::ErrorKind::NotFound => return not_running(),
        Resolved::Missing(e) => {
            return fatal(PROG, SYSTEM, format!("unable to check {shown}: {}", common::strerror(&e)));
        }
    };
    let st = match common::status(&name) {
        Ok(s) => s,
        Err(CallError::NotSupervised) => return not_running(),
        Err(e) => return fatal(PROG, SYSTEM, format!("unable to read status for {shown}: {e}")),
    };
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let normally_up = match std::fs::metadata(dir.join("down")) {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            return fatal(
                PROG,
                SYSTEM,
                format!("unable to access {}: {}", dir.join("down").display(), common::strerror(&e)),
            );
        }
    };
    let paused = st.pid.is_some_and(status::stopped);
    let snap = Snapshot::from_status(&st, normally_up, paused);
    let line = if fields.is_empty() {
        snap.human(now_ms, numeric)
    } else {
        fields.iter().map(|f| snap.field(f, now_ms).unwrap_or_default()).collect::<Vec<_>>().join(" ")
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        return fatal(PROG, SYSTEM, "unable to write to stdout");
    }
    0
}
