//! `API_SERVER_KEY`: Hermes' API server refuses to start without one. When `$HERMES_HOME/.env`
//! exists and sets no non-empty `API_SERVER_KEY=`, empty `API_SERVER_KEY=` lines are dropped
//! and a fresh 64-hex-digit key from the OS RNG (`getrandom`) is appended. The key itself is
//! never logged. Written atomically (temporary + rename, no symlink followed), hermes, 0600.

use super::{StepErr, atomic, soft};
use crate::fsx;
use std::os::fd::AsFd;
use std::path::Path;
use tracing::warn;

pub const ENV_FILE: &std::ffi::CStr = c".env";
const KEY: &[u8] = b"API_SERVER_KEY";
/// A `.env` larger than this is not ours to rewrite.
const MAX_ENV: u64 = 1 << 20;

/// The value of an assignment line `[export ]API_SERVER_KEY=value` (whitespace around the `=`
/// and matching quotes stripped, as dotenv reads it); `None` for any other line.
fn key_value(line: &[u8]) -> Option<&[u8]> {
    let l = line.trim_ascii();
    let l = l.strip_prefix(b"export ").map(<[u8]>::trim_ascii_start).unwrap_or(l);
    let rest = l.strip_prefix(KEY)?.trim_ascii_start();
    let v = rest.strip_prefix(b"=")?.trim_ascii();
    let v = match v {
        [q @ (b'"' | b'\''), inner @ .., last] if last == q => inner,
        _ => v,
    };
    // An inline comment after an unquoted empty value (`API_SERVER_KEY= # set me`).
    Some(if v.starts_with(b"#") { &[] } else { v })
}

/// The rewritten `.env`, or `None` when it already has a non-empty key.
pub fn with_key(text: &[u8], key_hex: &str) -> Option<Vec<u8>> {
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    if lines.iter().any(|l| key_value(l).is_some_and(|v| !v.is_empty())) {
        return None;
    }
    let mut out: Vec<u8> = Vec::with_capacity(text.len() + 100);
    for l in lines {
        if key_value(l).is_none() {
            out.extend_from_slice(l);
        }
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(KEY);
    out.push(b'=');
    out.extend_from_slice(key_hex.as_bytes());
    out.push(b'\n');
    Some(out)
}

/// 32 bytes from the kernel's RNG as 64 lowercase hex digits.
pub fn fresh_key() -> std::io::Result<String> {
    let mut buf = [0u8; 32];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: getrandom(2) into the unfilled rest of a valid buffer.
        let n = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn ensure(home: &Path, owner: Option<(u32, u32)>) -> Result<String, StepErr> {
    let Some(fd) = soft(format_args!("opening {}", home.display()), fsx::open_dir_path(home))? else {
        return Ok("skipped: no HERMES_HOME".into());
    };
    let shown = home.join(".env");
    let root = fsx::fstat(fd.as_fd()).map_err(|e| StepErr::new(format!("{}: {e}", home.display())))?;
    match fsx::lstat_at(fd.as_fd(), ENV_FILE) {
        Err(e) if fsx::is_missing(&e) => return Ok(format!("no {}", shown.display())),
        Err(e) => return Err(StepErr::new(format!("{}: {e}", shown.display()))),
        Ok(st) if st.is_symlink() => {
            warn!("boot: apikey: refusing to read or rewrite symlink {}", shown.display());
            return Ok("refused a symlinked .env".into());
        }
        Ok(st) if st.other_mount_than(&root) => {
            return Ok(format!("{} is mounted from elsewhere: left as it is", shown.display()));
        }
        Ok(_) => {}
    }
    let text = match fsx::read_bounded_at(fd.as_fd(), ENV_FILE, MAX_ENV) {
        Ok(t) => t,
        Err(e) => {
            warn!("boot: apikey: cannot read {}: {e}; not adding API_SERVER_KEY", shown.display());
            return Ok("not checked".into());
        }
    };
    let key = fresh_key().map_err(|e| StepErr::new(format!("getrandom: {e}")))?;
    let Some(new) = with_key(&text, &key) else {
        return Ok("API_SERVER_KEY is set".into());
    };
    let what = format!("writing {}", shown.display());
    Ok(match soft(what, atomic::write_at(fd.as_fd(), ENV_FILE, &new, 0o600, owner))? {
        Some(()) => format!("generated a new API_SERVER_KEY in {} (64 hex digits, not logged)", shown.display()),
        None => "API_SERVER_KEY missing, not written".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::testutil::TempDir;

    const K: &str = "ab";

    #[test]
    fn env_rewrite_keeps_a_set_key_and_replaces_empty_ones() {
        let s = |t: &str| with_key(t.as_bytes(), K).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(s("API_SERVER_KEY=x\n"), None);
        assert_eq!(s("A=1\nexport API_SERVER_KEY = \"x\"\n"), None);
        assert_eq!(s(""), Some("API_SERVER_KEY=ab\n".into()));
        assert_eq!(s("A=1"), Some("A=1\nAPI_SERVER_KEY=ab\n".into()));
        assert_eq!(
            s("# API_SERVER_KEY=commented\nA=1\nAPI_SERVER_KEY=\nB=2\nAPI_SERVER_KEY=\"\"\n API_SERVER_KEY= # todo\n"),
            Some("# API_SERVER_KEY=commented\nA=1\nB=2\nAPI_SERVER_KEY=ab\n".into())
        );
        assert_eq!(s("API_SERVER_KEYS=x\n"), Some("API_SERVER_KEYS=x\nAPI_SERVER_KEY=ab\n".into()));
        let k = fresh_key().unwrap();
        assert!(k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()), "{k}");
        assert_ne!(k, fresh_key().unwrap());
    }

    #[test]
    fn ensure_is_idempotent_private_and_refuses_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let t = TempDir::new("apikey");
        assert!(ensure(t.path(), None).unwrap().starts_with("no "));
        let env = t.path().join(".env");
        std::fs::write(&env, "A=1\nAPI_SERVER_KEY=\n").unwrap();
        assert!(ensure(t.path(), None).unwrap().starts_with("generated"));
        let text = std::fs::read_to_string(&env).unwrap();
        assert!(text.starts_with("A=1\nAPI_SERVER_KEY=") && text.len() == "A=1\nAPI_SERVER_KEY=\n".len() + 64);
        assert_eq!(std::fs::metadata(&env).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(ensure(t.path(), None).unwrap(), "API_SERVER_KEY is set");
        assert_eq!(std::fs::read_to_string(&env).unwrap(), text);
        std::fs::remove_file(&env).unwrap();
        std::fs::write(t.path().join("victim"), "API_SERVER_KEY=\n").unwrap();
        std::os::unix::fs::symlink(t.path().join("victim"), &env).unwrap();
        assert!(ensure(t.path(), None).unwrap().contains("refused"));
        assert_eq!(std::fs::read_to_string(t.path().join("victim")).unwrap(), "API_SERVER_KEY=\n");
    }
}
