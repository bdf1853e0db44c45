//! Gateway state files: seeding them (C-BOOT-5 bootstrap, C-BOOT-8 legacy migration) and
//! reading them defensively for the reconcile (C-BOOT-7), plus the facts boot derives from the
//! container's CMD.

use super::{StepErr, soft};
use crate::fsx;
use std::ffi::CStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use tracing::{info, warn};

pub const STATE_FILE: &CStr = c"gateway_state.json";
/// A state file larger than this is not read (it is a few dozen bytes normally).
pub const MAX_STATE_BYTES: u64 = 1 << 20;

/// Hermes' own reading of `HERMES_GATEWAY_NO_SUPERVISE` (`.lower() in ("1","true","yes")`), so
/// the migration agrees with what `hermes gateway run` will do.
pub fn no_supervise(v: Option<&str>) -> bool {
    v.is_some_and(|v| ["1", "true", "yes"].contains(&v.to_ascii_lowercase().as_str()))
}

/// Hermes' `is_truthy_value` (`strip().lower() in {1,true,yes,on}`), for Hermes' own toggles.
pub fn py_truthy(v: Option<&str>) -> bool {
    v.is_some_and(|v| ["1", "true", "yes", "on"].contains(&v.trim().to_ascii_lowercase().as_str()))
}

/// The CMD without a leading `hermes` (`docker run … hermes gateway run`), as upstream strips it.
fn hermes_args(args: &[String]) -> &[String] {
    match args.first() {
        Some(a) if Path::new(a).file_name().is_some_and(|n| n == "hermes") => &args[1..],
        _ => args,
    }
}

/// C-BOOT-10: the container's main program is the dashboard.
pub fn is_dashboard_cmd(args: &[String]) -> bool {
    hermes_args(args).first().is_some_and(|a| a == "dashboard")
}

/// C-BOOT-8: the CMD is `gateway run …` without `--no-supervise`.
pub fn is_legacy_gateway_run(args: &[String]) -> bool {
    let a = hermes_args(args);
    a.len() >= 2 && a[0] == "gateway" && a[1] == "run" && !a.iter().any(|x| x == "--no-supervise")
}

pub const BOOTSTRAP_JSON: &str = "{\"gateway_state\":\"running\"}\n";

pub fn legacy_json(epoch: u64) -> String {
    format!(
        "{{\"gateway_state\":\"running\",\"desired_state\":\"running\",\"timestamp\":{epoch},\"migrated_from\":\"legacy-container-cmd\"}}\n"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Written,
    /// Something is already there (never overwritten).
    Exists,
    /// A symlink is there: refused.
    Refused,
}

/// Create `gateway_state.json` in `dir` with `content`, hermes-owned, unless anything exists.
pub fn create_state(dir: BorrowedFd, content: &str, owner: Option<(u32, u32)>) -> io::Result<Created> {
    match fsx::lstat_at(dir, STATE_FILE) {
        Ok(st) if st.is_symlink() => return Ok(Created::Refused),
        Ok(_) => return Ok(Created::Exists),
        Err(e) if fsx::is_missing(&e) => {}
        Err(e) => return Err(e),
    }
    let mut f = match fsx::create_excl_at(dir, STATE_FILE, 0o644) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(Created::Exists),
        Err(e) => return Err(e),
    };
    if let Some((u, g)) = owner {
        fsx::fchown(f.as_fd(), u, g)?;
    }
    fsx::fchmod(f.as_fd(), 0o644)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    Ok(Created::Written)
}

pub struct Seeded {
    pub legacy_migrated: bool,
    pub summary: String,
}

/// The `state` step: bootstrap state first (C-BOOT-5), then the legacy migration (C-BOOT-8);
/// the first one that writes the file wins, an existing file always wins.
pub fn seed_state(
    home: &Path,
    bootstrap: Option<&str>,
    main_args: &[String],
    no_supervise: bool,
    owner: Option<(u32, u32)>,
) -> Result<Seeded, StepErr> {
    let path = home.join("gateway_state.json");
    let mut out = Seeded { legacy_migrated: false, summary: String::new() };
    let want_bootstrap = match bootstrap {
        Some("running") => true,
        Some(v) if !v.is_empty() => {
            info!("boot: state: HERMES_GATEWAY_BOOTSTRAP_STATE={v:?} ignored (only \"running\" is honoured)");
            false
        }
        _ => false,
    };
    let legacy = !no_supervise && is_legacy_gateway_run(main_args);
    if !want_bootstrap && !legacy {
        out.summary = "nothing to seed".into();
        return Ok(out);
    }
    let Some(fd) = soft(format_args!("opening {}", home.display()), fsx::open_dir_path(home))? else {
        out.summary = "HERMES_HOME not available".into();
        return Ok(out);
    };
    let (content, why) = if want_bootstrap {
        (BOOTSTRAP_JSON.to_string(), "HERMES_GATEWAY_BOOTSTRAP_STATE=running")
    } else {
        let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        (legacy_json(epoch), "legacy `gateway run` container command")
    };
    let created = soft(format_args!("writing {}", path.display()), create_state(fd.as_fd(), &content, owner))?;
    out.summary = match created {
        Some(Created::Written) => {
            out.legacy_migrated = !want_bootstrap;
            format!("wrote {} ({why})", path.display())
        }
        Some(Created::Exists) => format!("{} exists; kept ({why} not applied)", path.display()),
        Some(Created::Refused) => {
            warn!("boot: state: refusing to write {} through a symlink", path.display());
            format!("refused symlinked {}", path.display())
        }
        None => {
            // Could not write (read-only volume): the legacy intent still counts for this boot,
            // as upstream returns "running" from the migration itself.
            out.legacy_migrated = legacy && !want_bootstrap;
            format!("could not write {}", path.display())
        }
    };
    Ok(out)
}

/// The recorded state of one profile's gateway: `desired_state` if present, else
/// `gateway_state` with `draining`/`degraded` read as `running` (as Hermes' container_boot does:
/// the mapping applies to the fallback only; an explicit `desired_state` is taken verbatim).
/// `Ok(None)`: no state recorded. `Err`: why the file counts as unknown.
pub fn parse_state(bytes: &[u8]) -> Result<Option<String>, String> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err("starts with a UTF-8 byte order mark".into());
    }
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let field = |k: &str| -> Result<Option<String>, String> {
        match obj.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            // The value is quoted only when short: a hostile 1 MiB array must not become a
            // 1 MiB warning line per profile.
            Some(other) => match other.to_string() {
                v if v.len() <= 64 => Err(format!("{k} is not a string: {v}")),
                _ => Err(format!("{k} is not a string (a long {})", json_kind(other))),
            },
        }
    };
    if let Some(d) = field("desired_state")? {
        return Ok(Some(d));
    }
    Ok(field("gateway_state")?.map(|s| if s == "draining" || s == "degraded" { "running".into() } else { s }))
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
        serde_json::Value::Number(_) => "number",
        _ => "value",
    }
}

/// Read `gateway_state.json` in a profile directory without following a symlink, bounded in
/// size. Anything odd is a warning and "no state" (the slot is registered down).
pub fn read_state(dir: BorrowedFd, dir_path: &Path) -> Option<String> {
    let path = dir_path.join("gateway_state.json");
    let unknown = |why: String| {
        warn!("boot: reconcile: {}: {why}; treating the gateway's state as unknown", path.display());
        None
    };
    let buf = match fsx::read_bounded_at(dir, STATE_FILE, MAX_STATE_BYTES) {
        Ok(b) => b,
        Err(e) if fsx::is_missing(&e) => return None,
        Err(e) if fsx::is_symlink_refusal(&e) => return unknown("refusing to follow a symlink".into()),
        Err(e) => return unknown(e.to_string()),
    };
    parse_state(&buf).unwrap_or_else(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::testutil::{TempDir, is_root, owner};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn c_boot_8_and_10_cmd_detection() {
        assert!(is_legacy_gateway_run(&s(&["gateway", "run"])));
        assert!(is_legacy_gateway_run(&s(&["hermes", "gateway", "run", "-v"])));
        assert!(is_legacy_gateway_run(&s(&["/opt/hermes/bin/hermes", "gateway", "run"])));
        assert!(!is_legacy_gateway_run(&s(&["gateway", "run", "--no-supervise"])));
        assert!(!is_legacy_gateway_run(&s(&["gateway", "start"])));
        assert!(!is_legacy_gateway_run(&s(&["-p", "coder", "gateway", "run"])));
        assert!(!is_legacy_gateway_run(&s(&["gateway"])));
        assert!(!is_legacy_gateway_run(&[]));
        assert!(is_dashboard_cmd(&s(&["dashboard"])));
        assert!(is_dashboard_cmd(&s(&["hermes", "dashboard", "--port", "1"])));
        assert!(!is_dashboard_cmd(&s(&["sleep", "dashboard"])));
        assert!(!is_dashboard_cmd(&[]));
        assert!(no_supervise(Some("TRUE")) && no_supervise(Some("yes")) && !no_supervise(Some("on")));
        assert!(py_truthy(Some(" On ")) && !py_truthy(Some("2")) && !py_truthy(None));
    }

    /// C-BOOT-7's table: what each state file means for the reconcile.
    #[test]
    fn c_boot_7_state_file_table() {
        let ok = |j: &str| parse_state(j.as_bytes());
        let cases: &[(&str, Option<&str>)] = &[
            (r#"{"gateway_state":"running"}"#, Some("running")),
            (r#"{"gateway_state":"stopped"}"#, Some("stopped")),
            (r#"{"gateway_state":"draining"}"#, Some("running")),
            (r#"{"gateway_state":"degraded"}"#, Some("running")),
            (r#"{"gateway_state":"startup_failed"}"#, Some("startup_failed")),
            (r#"{"gateway_state":"starting"}"#, Some("starting")),
            (r#"{"desired_state":"stopped","gateway_state":"running"}"#, Some("stopped")),
            (r#"{"desired_state":"running","gateway_state":"startup_failed"}"#, Some("running")),
            (r#"{"desired_state":null,"gateway_state":"draining"}"#, Some("running")),
            (r#"{"desired_state":"draining"}"#, Some("draining")),
            (r#"{}"#, None),
            (r#"{"pid":12}"#, None),
        ];
        for (j, want) in cases {
            assert_eq!(ok(j), Ok(want.map(str::to_string)), "{j}");
        }
        for bad in [
            "",
            "garbage",
            "{\"gateway_state\":",
            "[\"running\"]",
            "\"running\"",
            "42",
            "null",
            r#"{"gateway_state":5}"#,
            r#"{"desired_state":["running"]}"#,
        ] {
            assert!(ok(bad).is_err(), "{bad:?}");
        }
        assert!(parse_state(b"\xEF\xBB\xBF{\"gateway_state\":\"running\"}").is_err());
        assert!(parse_state(b"{\"gateway_state\":\"\xff\"}").is_err());
    }

    #[test]
    fn c_boot_7_state_file_read_defensively() {
        let t = TempDir::new("state-read");
        let d = t.path();
        let fd = fsx::open_dir_path(d).unwrap();
        let read = || read_state(fd.as_fd(), d);
        assert_eq!(read(), None);
        std::fs::write(d.join("gateway_state.json"), r#"{"gateway_state":"running"}"#).unwrap();
        assert_eq!(read().as_deref(), Some("running"));
        let mut huge = b"{\"gateway_state\":\"running\",\"pad\":\"".to_vec();
        huge.resize(MAX_STATE_BYTES as usize + 10, b'x');
        huge.extend_from_slice(b"\"}");
        std::fs::write(d.join("gateway_state.json"), &huge).unwrap();
        assert_eq!(read(), None);
        std::fs::remove_file(d.join("gateway_state.json")).unwrap();
        std::fs::write(d.join("real.json"), r#"{"gateway_state":"running"}"#).unwrap();
        std::os::unix::fs::symlink(d.join("real.json"), d.join("gateway_state.json")).unwrap();
        assert_eq!(read(), None, "a symlinked state file is not followed");
        std::fs::remove_file(d.join("gateway_state.json")).unwrap();
        nix::unistd::mkfifo(&d.join("gateway_state.json"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(read(), None, "a FIFO neither blocks nor counts");
    }

    /// C-BOOT-5 / C-BOOT-8: exact JSON, hermes-owned, never overwriting, symlink refused.
    #[test]
    fn c_boot_5_and_8_state_seeding() {
        let t = TempDir::new("state-seed");
        let home = t.path().join("data");
        std::fs::create_dir_all(&home).unwrap();
        let o = is_root().then_some((10000, 10000));
        let f = home.join("gateway_state.json");
        let r = seed_state(&home, Some("running"), &s(&["gateway", "run"]), false, o).unwrap();
        assert!(!r.legacy_migrated);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "{\"gateway_state\":\"running\"}\n");
        if is_root() {
            assert_eq!(owner(&f), (10000, 10000));
        }
        std::fs::write(&f, "{\"gateway_state\":\"stopped\"}").unwrap();
        seed_state(&home, Some("running"), &[], false, o).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "{\"gateway_state\":\"stopped\"}");
        std::fs::remove_file(&f).unwrap();
        let r = seed_state(&home, None, &s(&["gateway", "run"]), false, o).unwrap();
        assert!(r.legacy_migrated);
        let text = std::fs::read_to_string(&f).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(text, legacy_json(v["timestamp"].as_u64().unwrap()));
        assert!(text.starts_with(r#"{"gateway_state":"running","desired_state":"running","timestamp":"#));
        std::fs::remove_file(&f).unwrap();
        for (args, nosup) in [(s(&["gateway", "run", "--no-supervise"]), false), (s(&["gateway", "run"]), true)] {
            let r = seed_state(&home, Some("stopped"), &args, nosup, o).unwrap();
            assert!(!r.legacy_migrated && !f.exists());
        }
        std::fs::write(t.path().join("target"), "t").unwrap();
        std::os::unix::fs::symlink(t.path().join("target"), &f).unwrap();
        let r = seed_state(&home, Some("running"), &[], false, o).unwrap();
        assert!(r.summary.contains("refused"), "{}", r.summary);
        assert_eq!(std::fs::read_to_string(t.path().join("target")).unwrap(), "t");
    }

    /// Property tests (issue 10) for `gateway_state.json`, which the hermes user writes: here
    /// rather than in tests/props.rs because `boot::state` is private to the crate.
    mod props {
        use super::*;
        use proptest::prelude::*;

        fn cfg() -> ProptestConfig {
            ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() }
        }

        const VOCAB: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"gateway_state\"",
            "\"desired_state\"",
            "\"running\"",
            "\"draining\"",
            "\"stopped\"",
            "null",
            "true",
            "1e400",
            "-0",
            "18446744073709551616",
            "\"\\ud800\"",
            "\"\\u0000\"",
            " ",
            "\n",
            "\u{feff}",
            "\"pid\"",
            "12",
        ];

        proptest! {
            #![proptest_config(cfg())]

            #[test]
            fn parse_state_is_total(b in prop::collection::vec(any::<u8>(), 0..1024)) {
                let _ = parse_state(&b);
            }

            #[test]
            fn parse_state_survives_json_shaped_garbage(t in prop::collection::vec(prop::sample::select(VOCAB), 0..48)) {
                let _ = parse_state(t.concat().as_bytes());
            }

            /// C-BOOT-7's rule for any string values and any extra keys.
            #[test]
            fn parse_state_follows_the_table(
                desired in prop::option::of(".{0,12}"),
                gateway in prop::option::of(prop_oneof![Just("draining".to_string()), Just("degraded".to_string()), ".{0,12}"]),
                extra in prop::collection::btree_map("[a-z_]{1,8}", any::<i64>(), 0..4),
            ) {
                let mut obj = serde_json::Map::new();
                for (k, v) in extra {
                    obj.insert(k, v.into());
                }
                if let Some(d) = &desired {
                    obj.insert("desired_state".into(), d.clone().into());
                }
                if let Some(g) = &gateway {
                    obj.insert("gateway_state".into(), g.clone().into());
                }
                let text = serde_json::to_vec(&serde_json::Value::Object(obj)).unwrap();
                let want = desired.or(gateway.map(|g| if g == "draining" || g == "degraded" { "running".into() } else { g }));
                prop_assert_eq!(parse_state(&text), Ok(want));
            }
        }

        #[test]
        fn hostile_state_files_are_unknown_quickly() {
            let deep = |open: &str| open.repeat(500_000).into_bytes();
            for (what, b) in [
                ("[ x500k", deep("[")),
                ("{\"a\": x500k", deep("{\"a\":")),
                ("NUL", b"\0".to_vec()),
                ("CRLF", b"{\"gateway_state\":\r\n\"running\"}\r\n".to_vec()),
                ("number out of range", b"{\"gateway_state\":1e400}".to_vec()),
                ("1 MiB string value", [&b"{\"desired_state\":\""[..], &vec![b'x'; 1 << 20], b"\"}"].concat()),
            ] {
                let t = std::time::Instant::now();
                let r = parse_state(&b);
                assert!(t.elapsed() < std::time::Duration::from_secs(5), "{what}: {:?}", t.elapsed());
                match what {
                    "CRLF" => assert_eq!(r, Ok(Some("running".into()))),
                    "1 MiB string value" => assert_eq!(r.map(|s| s.map(|s| s.len())), Ok(Some(1 << 20))),
                    _ => assert!(r.is_err(), "{what}"),
                }
            }
            // A wrong-typed value is quoted only when short.
            let big = [&b"{\"gateway_state\":["[..], &b"1,".repeat(100_000), b"1]}"].concat();
            assert_eq!(parse_state(&big), Err("gateway_state is not a string (a long array)".into()));
            assert_eq!(parse_state(b"{\"gateway_state\":5}"), Err("gateway_state is not a string: 5".into()));
        }
    }
}
