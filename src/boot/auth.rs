//! `auth.json` from the environment.
//!
//! - `HERMES_AUTH_JSON_BOOTSTRAP` (non-empty) with no `$HERMES_HOME/auth.json`: its value is
//!   written byte for byte, hermes, 0600, atomically. Never when the file exists: a restart must
//!   not clobber a rotated refresh token. The value never appears in a log line, and boot keeps
//!   both variables of this file out of the env snapshot (see [`SECRET_VARS`]).
//! - `HERMES_AUTH_JSON_REBOOTSTRAP` with an existing `auth.json`: the narrow recovery of a dead
//!   Nous session. hermes-agent 0.19.0's wheel ships nothing for this (upstream's image runs a
//!   stand-alone script from its source tree), so it is done here with the documented rules:
//!   the seed is the variable's own value when it is a JSON document (upstream's form), or the
//!   `HERMES_AUTH_JSON_BOOTSTRAP` value when it is C-TRUE truthy. Its `providers.nous` must be
//!   the VPS bootstrap client (`client_id` `hermes-cli-vps`) with non-empty access and refresh
//!   tokens. Only `providers.nous` of the local file is replaced, and only when the local entry
//!   is terminal (`last_auth_error.relogin_required` with no token left) or older (the seed's
//!   `obtained_at` is later than the local one). Anything else — healthy, newer, unparsable —
//!   is a no-op; nothing here can fail the boot.

use super::{StepErr, atomic, soft};
use crate::fsx;
use serde_json::{Map, Value};
use std::os::fd::AsFd;
use std::path::Path;
use tracing::warn;

pub const BOOTSTRAP: &str = "HERMES_AUTH_JSON_BOOTSTRAP";
pub const REBOOTSTRAP: &str = "HERMES_AUTH_JSON_REBOOTSTRAP";
/// Variables that hold credentials: never written to the world-listable env snapshot.
pub const SECRET_VARS: [&str; 2] = [BOOTSTRAP, REBOOTSTRAP];
const NAME: &std::ffi::CStr = c"auth.json";
const MAX_AUTH: u64 = 4 << 20;
const BOOTSTRAP_CLIENT: &str = "hermes-cli-vps";

pub fn run(
    home: &Path,
    bootstrap: Option<&[u8]>,
    rebootstrap: Option<&[u8]>,
    owner: Option<(u32, u32)>,
) -> Result<String, StepErr> {
    let bootstrap = bootstrap.filter(|v| !v.is_empty());
    let rebootstrap = rebootstrap.filter(|v| !v.is_empty());
    if bootstrap.is_none() && rebootstrap.is_none() {
        return Ok("nothing asked".into());
    }
    let Some(fd) = soft(format_args!("opening {}", home.display()), fsx::open_dir_path(home))? else {
        return Ok("skipped: no HERMES_HOME".into());
    };
    let shown = home.join("auth.json");
    match fsx::lstat_at(fd.as_fd(), NAME) {
        Ok(st) if st.is_symlink() => {
            warn!("boot: auth: refusing to use symlink {}", shown.display());
            Ok("refused a symlinked auth.json".into())
        }
        Err(e) if fsx::is_missing(&e) => match bootstrap {
            None => Ok(format!("no {} and no {BOOTSTRAP}", shown.display())),
            Some(v) => Ok(
                match soft(
                    format_args!("writing {}", shown.display()),
                    atomic::write_at(fd.as_fd(), NAME, v, 0o600, owner),
                )? {
                    Some(()) => format!("wrote {} from {BOOTSTRAP} ({} bytes)", shown.display(), v.len()),
                    None => "auth.json not written".into(),
                },
            ),
        },
        Err(e) => Err(StepErr::new(format!("{}: {e}", shown.display()))),
        Ok(_) => {
            let Some(rb) = rebootstrap else {
                return Ok(format!("kept the existing {}", shown.display()));
            };
            let seed = if crate::routing::truthy(std::str::from_utf8(rb).ok()) { bootstrap } else { Some(rb) };
            let Some(seed) = seed else {
                warn!("boot: auth: {REBOOTSTRAP} is truthy but {BOOTSTRAP} is empty: nothing to re-seed from");
                return Ok("rebootstrap: no seed".into());
            };
            let local = match fsx::read_bounded_at(fd.as_fd(), NAME, MAX_AUTH) {
                Ok(t) => t,
                Err(e) => {
                    warn!("boot: auth: cannot read {}: {e}; not re-seeding", shown.display());
                    return Ok("rebootstrap: auth.json unreadable".into());
                }
            };
            let (status, new) = reseed(&local, seed);
            let Some(new) = new else { return Ok(format!("rebootstrap: no-op ({status})")) };
            Ok(
                match soft(
                    format_args!("writing {}", shown.display()),
                    atomic::write_at(fd.as_fd(), NAME, &new, 0o600, owner),
                )? {
                    Some(()) => format!("rebootstrap: {status}: replaced providers.nous in {}", shown.display()),
                    None => "rebootstrap: not written".into(),
                },
            )
        }
    }
}

/// The seed's Nous entry, when it is the bootstrap client with both tokens.
fn seed_nous(seed: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(seed).ok()?;
    let nous = v.get("providers")?.get("nous")?;
    let tok = |k: &str| nous.get(k).and_then(Value::as_str).is_some_and(|s| !s.trim().is_empty());
    (nous.get("client_id").and_then(Value::as_str) == Some(BOOTSTRAP_CLIENT)
        && tok("access_token")
        && tok("refresh_token"))
    .then(|| nous.clone())
}

fn terminal(nous: &Value) -> bool {
    let truthy = |v: Option<&Value>| match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    };
    nous.is_object()
        && truthy(nous.get("last_auth_error").and_then(|e| e.as_object()).and_then(|e| e.get("relogin_required")))
        && !truthy(nous.get("access_token"))
        && !truthy(nous.get("refresh_token"))
}

/// An RFC 3339 timestamp with an explicit zone, as seconds (and nanoseconds) since the epoch.
pub fn parse_time(s: &str) -> Option<(i64, u32)> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = b.get(r)?;
        d.iter().all(u8::is_ascii_digit).then(|| d.iter().fold(0i64, |a, c| a * 10 + i64::from(c - b'0')))
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    if b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start).min(9)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == i + 6 && b[i + 3] == b':' => {
            let o = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset, nanos))
}

/// The re-seed decision: a status word and the new file, if any.
pub fn reseed(local: &[u8], seed: &[u8]) -> (&'static str, Option<Vec<u8>>) {
    let Some(seed) = seed_nous(seed) else { return ("bad_seed", None) };
    let Ok(Value::Object(mut store)) = serde_json::from_slice::<Value>(local) else {
        return ("auth_unreadable", None);
    };
    let providers = store.entry("providers").or_insert_with(|| Value::Object(Map::new()));
    if !providers.is_object() {
        *providers = Value::Object(Map::new());
    }
    let local_nous = providers.get("nous").cloned().unwrap_or(Value::Null);
    let time = |v: &Value| v.get("obtained_at").and_then(Value::as_str).and_then(parse_time);
    let is_terminal = terminal(&local_nous);
    let newer = matches!((time(&local_nous), time(&seed)), (Some(l), Some(s)) if s > l);
    if !is_terminal && !newer {
        return ("not_terminal", None);
    }
    providers.as_object_mut().expect("made an object above").insert("nous".into(), seed);
    let out = serde_json::to_vec_pretty(&Value::Object(store)).ok();
    (if is_terminal { "reseeded" } else { "reseeded_newer" }, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::testutil::TempDir;

    const SEED: &str = r#"{"version":1,"providers":{"nous":{"client_id":"hermes-cli-vps","access_token":"A2","refresh_token":"R2","obtained_at":"2026-11-27T10:00:00Z"}}}"#;

    #[test]
    fn timestamps_compare_across_zones() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some((0, 0)));
        assert_eq!(parse_time("2000-03-01T00:00:00.5Z"), Some((951_868_800, 500_000_000)));
        for bad in ["", "2026-11-27", "2026-11-27T10:00:00", "2026-13-01T00:00:00Z", "x026-11-27T10:00:00Z"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn reseed_only_a_terminal_or_older_nous_entry() {
        let dead =
            r#"{"version":1,"providers":{"nous":{"last_auth_error":{"relogin_required":true}},"openai":{"k":1}}}"#;
        let (st, new) = reseed(dead.as_bytes(), SEED.as_bytes());
        assert_eq!(st, "reseeded");
        let v: Value = serde_json::from_slice(&new.unwrap()).unwrap();
        assert_eq!(v["providers"]["nous"]["refresh_token"], "R2");
        assert_eq!(v["providers"]["openai"]["k"], 1, "other providers untouched");
        let healthy = r#"{"providers":{"nous":{"refresh_token":"R1","obtained_at":"2026-11-27T11:00:00Z"}}}"#;
        assert_eq!(reseed(healthy.as_bytes(), SEED.as_bytes()), ("not_terminal", None));
        let older = r#"{"providers":{"nous":{"refresh_token":"R1","obtained_at":"2026-11-27T09:00:00+00:00"}}}"#;
        assert_eq!(reseed(older.as_bytes(), SEED.as_bytes()).0, "reseeded_newer");
        let live_but_flagged =
            r#"{"providers":{"nous":{"refresh_token":"R1","last_auth_error":{"relogin_required":true}}}}"#;
        assert_eq!(reseed(live_but_flagged.as_bytes(), SEED.as_bytes()).0, "not_terminal");
        assert_eq!(reseed(dead.as_bytes(), b"{}").0, "bad_seed");
        assert_eq!(reseed(dead.as_bytes(), SEED.replace("hermes-cli-vps", "other").as_bytes()).0, "bad_seed");
        assert_eq!(reseed(b"not json", SEED.as_bytes()).0, "auth_unreadable");
    }

    #[test]
    fn bootstrap_writes_only_a_missing_file_byte_for_byte() {
        use std::os::unix::fs::PermissionsExt;
        let t = TempDir::new("auth");
        let p = t.path().join("auth.json");
        let value = b"{\"x\": \"s3cret\"}\n\xff";
        let r = run(t.path(), Some(value), None, None).unwrap();
        assert!(r.starts_with("wrote") && !r.contains("s3cret"), "{r}");
        assert_eq!(std::fs::read(&p).unwrap(), value);
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(run(t.path(), Some(b"other"), None, None).unwrap().starts_with("kept"));
        assert_eq!(std::fs::read(&p).unwrap(), value);
        // Truthy rebootstrap re-seeds a dead session from the bootstrap value.
        std::fs::write(&p, r#"{"providers":{"nous":{"last_auth_error":{"relogin_required":true}}}}"#).unwrap();
        let r = run(t.path(), Some(SEED.as_bytes()), Some(b"1"), None).unwrap();
        assert!(r.contains("reseeded"), "{r}");
        assert!(std::fs::read_to_string(&p).unwrap().contains("R2"));
        assert!(run(t.path(), None, Some(SEED.as_bytes()), None).unwrap().contains("no-op"));
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(t.path().join("victim"), &p).unwrap();
        assert!(run(t.path(), Some(b"v"), None, None).unwrap().contains("refused"));
        assert!(!t.path().join("victim").exists());
    }
}
