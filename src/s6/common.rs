//! What the supervision applets share: skalibs-style diagnostics, mapping a service directory
//! to a hermesinit service name, and talking to PID 1.

use crate::config::Config;
use crate::control::{self, ClientError, Request, Response, ServiceStatus};
use std::path::{Path, PathBuf};

/// Wrong usage (skalibs `strerr_dieusage`).
pub const USAGE: i32 = 100;
/// A system call (or the conversation with PID 1) failed.
pub const SYSTEM: i32 = 111;

/// `prog: fatal: msg`, returning `code` for the caller to exit with.
pub fn fatal(prog: &str, code: i32, msg: impl std::fmt::Display) -> i32 {
    eprintln!("{prog}: fatal: {msg}");
    code
}

pub fn warn(prog: &str, msg: impl std::fmt::Display) {
    eprintln!("{prog}: warning: {msg}");
}

/// `prog: usage: …`, exit 100.
pub fn usage(prog: &str, text: &str) -> i32 {
    eprintln!("{prog}: usage: {text}");
    USAGE
}

/// The text of an errno, as strerror(3) words it (the io::Error text without ` (os error N)`).
pub fn strerror(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::Error::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

/// The scan directory hermesinit supervises: `HERMESINIT_SCAN_DIR`, else the config's
/// `scan_dir`, else `/run/service`. A broken config file is not our business here: it falls
/// back to the environment and the default.
pub fn scan_dir() -> PathBuf {
    Config::for_client().scan_dir.clone()
}

#[derive(Debug)]
pub enum Resolved {
    /// A directory in the scan directory: the service with this name (if PID 1 knows it).
    Name(String),
    /// It exists but is not a service directory of the scan directory.
    NotSupervised,
    /// It cannot be reached at all (ENOENT, EACCES, …).
    Missing(std::io::Error),
}

/// Map a service directory as s6 tools get it (relative or absolute, maybe through a
/// symlink) to a name: it must be a directory whose parent is the scan directory.
pub fn resolve(dir: &Path, scan: &Path) -> Resolved {
    let canonical = match std::fs::canonicalize(dir) {
        Ok(c) => c,
        Err(e) => return Resolved::Missing(e),
    };
    if !canonical.is_dir() {
        return Resolved::Missing(std::io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    let Ok(scan) = std::fs::canonicalize(scan) else {
        return Resolved::NotSupervised;
    };
    let named = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_string);
    if canonical.parent() == Some(scan.as_path()) {
        if let Some(n) = named(&canonical) {
            return Resolved::Name(n);
        }
    }
    // `/run/service/x` may itself be a symlink into another tree: what counts is where the
    // name sits, not where it points (PID 1 decides whether it supervises such an entry).
    if let (Some(parent), Some(n)) = (dir.parent(), named(dir)) {
        let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
        if std::fs::canonicalize(parent).is_ok_and(|p| p == scan) && n != "." && n != ".." {
            return Resolved::Name(n);
        }
    }
    Resolved::NotSupervised
}

/// Is `dir` the scan directory itself?
pub fn is_scan_dir(dir: &Path, scan: &Path) -> Result<bool, std::io::Error> {
    let d = std::fs::canonicalize(dir)?;
    Ok(std::fs::canonicalize(scan).is_ok_and(|s| s == d))
}

#[derive(Debug)]
pub enum CallError {
    /// No supervisor listening, or it does not know the service.
    NotSupervised,
    /// PID 1 answered no (e.g. permission: only root and the hermes user may control).
    Refused(String),
    /// The conversation itself failed.
    System(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotSupervised => f.write_str("supervisor not listening"),
            CallError::Refused(m) | CallError::System(m) => f.write_str(m),
        }
    }
}

/// An answer with `ok: false` as the s6 tools see it: a service PID 1 does not know is "not
/// supervised" (by its error code), anything else a refusal with PID 1's words.
fn failed(r: Response) -> CallError {
    if r.code == Some(control::ErrorCode::NoSuchService) {
        return CallError::NotSupervised;
    }
    CallError::Refused(r.error.unwrap_or_else(|| "request refused".into()))
}

/// One request; an answer with `ok: false` becomes an error.
pub fn call(req: Request) -> Result<Response, CallError> {
    match Config::for_client().client().request(req) {
        Ok(r) if r.ok => Ok(r),
        Ok(r) => Err(failed(r)),
        Err(ClientError::NotRunning(_)) => Err(CallError::NotSupervised),
        Err(e) => Err(CallError::System(e.to_string())),
    }
}

/// The status of one service.
pub fn status(name: &str) -> Result<ServiceStatus, CallError> {
    let r = call(Request::Status { services: vec![name.to_string()] })?;
    r.services.into_iter().find(|s| s.name == name).ok_or(CallError::NotSupervised)
}

/// Signal names as skalibs' `sig_name` spells them (without the `SIG` prefix); realtime and
/// unknown signals are `???`.
pub fn sig_name(sig: i32) -> &'static str {
    const NAMES: [&str; 32] = [
        "???", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE",
        "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM",
        "PROF", "WINCH", "POLL", "PWR", "SYS",
    ];
    usize::try_from(sig).ok().and_then(|i| NAMES.get(i)).copied().unwrap_or("???")
}

/// A signal given by name (`TERM`, `SIGTERM`, any case) or number, as s6's `down-signal` file
/// and `sig0_scan` accept it.
pub fn sig_number(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let name = match name {
        "IO" => "POLL",
        "IOT" => "ABRT",
        n => n,
    };
    (1..32).find(|&n| sig_name(n) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_follow_skalibs() {
        assert_eq!(sig_name(15), "TERM");
        assert_eq!(sig_name(29), "POLL");
        assert_eq!(sig_name(16), "STKFLT");
        assert_eq!(sig_name(34), "???");
        assert_eq!(sig_name(0), "???");
        assert_eq!(sig_name(-3), "???");
        assert_eq!(sig_number("SIGHUP"), Some(1));
        assert_eq!(sig_number("term\n"), Some(15));
        assert_eq!(sig_number("io"), Some(29));
        assert_eq!(sig_number("9"), Some(9));
        assert_eq!(sig_number("99"), None);
        assert_eq!(sig_number("BOGUS"), None);
    }

    #[test]
    fn service_dirs_map_to_names_only_inside_the_scan_dir() {
        let base = std::env::temp_dir().join(format!("hi-s6-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let scan = base.join("scan");
        std::fs::create_dir_all(scan.join("gateway-a")).unwrap();
        std::fs::create_dir_all(base.join("elsewhere/svc")).unwrap();
        std::os::unix::fs::symlink(base.join("elsewhere/svc"), scan.join("linked")).unwrap();
        let name = |p: PathBuf| match resolve(&p, &scan) {
            Resolved::Name(n) => Some(n),
            _ => None,
        };
        assert_eq!(name(scan.join("gateway-a")), Some("gateway-a".into()));
        assert_eq!(name(scan.join("gateway-a/")), Some("gateway-a".into()));
        assert_eq!(name(scan.join("gateway-a/../gateway-a")), Some("gateway-a".into()));
        assert_eq!(name(scan.join("linked")), Some("linked".into()));
        assert_eq!(name(base.join("elsewhere/svc")), None);
        assert!(matches!(resolve(&scan, &scan), Resolved::NotSupervised));
        assert!(matches!(resolve(&scan.join("nope"), &scan), Resolved::Missing(_)));
        assert!(is_scan_dir(&scan.join("gateway-a/.."), &scan).unwrap());
        assert!(!is_scan_dir(&scan.join("gateway-a"), &scan).unwrap());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn pid1_errors_are_classified_by_code() {
        use control::ErrorCode;
        let nss = Response::error(ErrorCode::NoSuchService, "gateway-x: no such service");
        assert!(matches!(failed(nss), CallError::NotSupervised));
        // The text alone decides nothing.
        let refused = Response::error(ErrorCode::Refused, "no such service, says a hostile peer");
        assert!(matches!(failed(refused), CallError::Refused(m) if m.contains("hostile")));
    }
}
