//! C-BOOT-7: the profile reconcile, in Rust (what Hermes' `container_boot` did in Python):
//! a `gateway-<profile>` native slot for the root profile (`gateway-default`, always) and for
//! every `profiles/<name>/` holding a `SOUL.md`, published up or down by the recorded state.
//! Also the service specs of the gateway slots (C-SVC-2) and of the dashboard (C-SVC-1).

use super::state::read_state;
use super::{StepErr, soft};
use crate::config::{LogDefaults, LogSpec, ServiceSpec, valid_profile_name};
use crate::fsx;
use crate::routing::HERMES_REAL;
use crate::supervisor::servicedir;
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// Stale runtime files of a dead container's process namespace, removed before the slot is
/// published (their pids mean other processes now).
pub const STALE_FILES: &[&CStr] = &[c"gateway.pid", c"processes.json"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Published up.
    Started,
    /// Published with a `down` file.
    Registered,
    /// No slot (dashboard container, or the reconcile was skipped): only in the boot log.
    Skipped,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Started => "started",
            Action::Registered => "registered",
            Action::Skipped => "skipped",
        }
    }
}

/// One profile's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub profile: String,
    pub prior_state: Option<String>,
    pub action: Action,
}

/// Only `running` autostarts; `autostart_allowed` is false for named profiles when the root
/// gateway multiplexes every profile (`GATEWAY_MULTIPLEX_PROFILES`).
pub fn decide(prior: Option<&str>, autostart_allowed: bool) -> Action {
    if autostart_allowed && prior == Some("running") { Action::Started } else { Action::Registered }
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The venv the real CLI lives in (upstream's run script sourced its `activate`).
fn venv() -> &'static str {
    HERMES_REAL.strip_suffix("/bin/hermes").unwrap_or("/opt/hermes/.venv")
}

/// C-SVC-2: `hermes [-p <profile>] gateway run --replace` as hermes, `HOME` = `home_env` (init
/// passes `HERMES_HOME`, as for the main program; upstream's run script hard-coded
/// `/opt/data`, the same in the image), cwd `HERMES_HOME`, the supervised-child markers, logs to
/// stdout and to `$HERMES_HOME/logs/gateways/<profile>/current`; exits 0 and 78 stay down
/// (C-SVC-3).
pub fn gateway_spec(
    profile: &str,
    hermes_home: &Path,
    home_env: &Path,
    user: Option<&str>,
    logs: &LogDefaults,
) -> ServiceSpec {
    let mut command = vec![HERMES_REAL.to_string()];
    if profile != "default" {
        command.extend(["-p".to_string(), profile.to_string()]);
    }
    command.extend(["gateway", "run", "--replace"].map(String::from));
    let hh = hermes_home.to_string_lossy();
    let home = home_env.to_string_lossy();
    ServiceSpec {
        command,
        user: user.map(str::to_string),
        env: env(&[
            ("HOME", &home),
            // Explicit, so `-p` resolves profiles under this root even if the container env lacks it.
            ("HERMES_HOME", &hh),
            ("HERMES_S6_SUPERVISED_CHILD", "1"),
            ("HERMES_SUPERVISED_CHILD", "1"),
            ("VIRTUAL_ENV", venv()),
        ]),
        cwd: Some(hermes_home.to_path_buf()),
        log: LogSpec {
            stdout: true,
            dir: Some(hermes_home.join("logs/gateways").join(profile)),
            max_bytes: Some(logs.max_bytes),
            keep: Some(logs.keep),
        },
        stay_down_exit_codes: vec![0, 78],
        stop_timeout_ms: None,
    }
}

/// C-SVC-1: `hermes dashboard --host ${HERMES_DASHBOARD_HOST:-127.0.0.1} --port
/// ${HERMES_DASHBOARD_PORT:-9119} --no-open`, never `--insecure`; its output goes to the
/// container's stdout only (the dashboard keeps its own log files under `HERMES_HOME/logs`).
pub fn dashboard_spec(
    get: impl Fn(&str) -> Option<String>,
    hermes_home: &Path,
    home_env: &Path,
    user: Option<&str>,
) -> ServiceSpec {
    let or = |k: &str, d: &str| get(k).filter(|v| !v.is_empty()).unwrap_or_else(|| d.to_string());
    let host = or("HERMES_DASHBOARD_HOST", "127.0.0.1");
    let port = or("HERMES_DASHBOARD_PORT", "9119");
    ServiceSpec {
        command: [HERMES_REAL, "dashboard", "--host", &host, "--port", &port, "--no-open"].map(String::from).to_vec(),
        user: user.map(str::to_string),
        env: env(&[
            ("HOME", &home_env.to_string_lossy()),
            ("HERMES_HOME", &hermes_home.to_string_lossy()),
            ("VIRTUAL_ENV", venv()),
        ]),
        cwd: Some(hermes_home.to_path_buf()),
        log: LogSpec { stdout: true, dir: None, max_bytes: None, keep: None },
        stay_down_exit_codes: vec![0, 78],
        stop_timeout_ms: None,
    }
}

pub struct Reconciler<'a> {
    pub hermes_home: &'a Path,
    pub scan_dir: &'a Path,
    pub logs: &'a LogDefaults,
    /// The user services drop to; `None` when boot is not root (nothing to drop from).
    pub user: Option<&'a str>,
    pub home_env: &'a Path,
    pub owner: Option<(u32, u32)>,
    pub multiplex: bool,
    pub legacy_migrated: bool,
}

impl Reconciler<'_> {
    /// Every slot, `default` first, then named profiles in byte order of their names.
    pub fn run(&self) -> Result<Vec<Slot>, StepErr> {
        let home = self.hermes_home;
        let Some(home_fd) = soft(format_args!("opening {}", home.display()), fsx::open_dir_path(home))? else {
            return Ok(Vec::new());
        };
        let mut slots = Vec::new();
        let prior = if self.legacy_migrated { Some("running".to_string()) } else { read_state(home_fd.as_fd(), home) };
        slots.push(self.slot(home_fd.as_fd(), home, "default", prior, true)?);
        let profiles = home.join("profiles");
        let pfd = match fsx::open_dir_at(home_fd.as_fd(), c"profiles") {
            Ok(fd) => fd,
            Err(e) if fsx::is_missing(&e) => return Ok(slots),
            Err(e) if fsx::is_symlink_refusal(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => {
                if fsx::lstat_at(home_fd.as_fd(), c"profiles").is_ok_and(|s| s.is_symlink()) {
                    warn!("boot: reconcile: refusing to follow symlink {}; no named profiles", profiles.display());
                }
                return Ok(slots);
            }
            Err(e) => {
                soft(format_args!("opening {}", profiles.display()), Err::<(), _>(e))?;
                return Ok(slots);
            }
        };
        let names = soft(format_args!("listing {}", profiles.display()), fsx::list(pfd.as_fd()))?.unwrap_or_default();
        for cname in names {
            let name = String::from_utf8_lossy(cname.to_bytes()).into_owned();
            let path = profiles.join(&name);
            let st = match fsx::lstat_at(pfd.as_fd(), &cname) {
                Ok(st) => st,
                Err(_) => continue,
            };
            if st.is_symlink() {
                warn!("boot: reconcile: refusing to follow symlink {}; not a profile slot", path.display());
                continue;
            }
            if !st.is_dir() {
                continue;
            }
            let Ok(dfd) = fsx::open_dir_at(pfd.as_fd(), &cname) else { continue };
            // SOUL.md marks a real profile (`hermes profile create` always writes it).
            if fsx::lstat_at(dfd.as_fd(), c"SOUL.md").is_err() {
                continue;
            }
            if name == "default" {
                warn!(
                    "boot: reconcile: {} exists; skipped: `default` is the root profile's reserved slot",
                    path.display()
                );
                continue;
            }
            if !valid_profile_name(&name) {
                warn!(
                    "boot: reconcile: {}: invalid profile name (C-S6-6: ^[a-z0-9][a-z0-9_-]*$, 1-251 characters); skipped",
                    path.display()
                );
                continue;
            }
            let prior = read_state(dfd.as_fd(), &path);
            slots.push(self.slot(dfd.as_fd(), &path, &name, prior, !self.multiplex)?);
        }
        Ok(slots)
    }

    fn slot(
        &self,
        dir: BorrowedFd,
        dir_path: &Path,
        profile: &str,
        prior: Option<String>,
        autostart_allowed: bool,
    ) -> Result<Slot, StepErr> {
        for f in STALE_FILES {
            if fsx::lstat_at(dir, f).is_err() {
                continue; // nothing there (unlink would say EROFS on a read-only volume)
            }
            match fsx::unlink_at(dir, f) {
                Ok(()) => {
                    info!("boot: reconcile: removed stale {}", dir_path.join(f.to_string_lossy().as_ref()).display())
                }
                Err(e) if fsx::is_missing(&e) || e.raw_os_error() == Some(libc::EISDIR) => {}
                Err(e) => {
                    let p: PathBuf = dir_path.join(f.to_string_lossy().as_ref());
                    soft(format_args!("removing {}", p.display()), Err::<(), _>(e))?;
                }
            }
        }
        let action = decide(prior.as_deref(), autostart_allowed);
        let spec = gateway_spec(profile, self.hermes_home, self.home_env, self.user, self.logs);
        let name = format!("gateway-{profile}");
        let published = soft(
            format_args!("publishing {name} in {}", self.scan_dir.display()),
            servicedir::publish(self.scan_dir, &name, &spec, action != Action::Started, self.owner),
        )?;
        if published.is_none() {
            return Ok(Slot { profile: profile.into(), prior_state: prior, action: Action::Skipped });
        }
        Ok(Slot { profile: profile.into(), prior_state: prior, action })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::testutil::{TempDir, is_root, owner};
    use crate::supervisor::servicedir::{Kind, ServiceDir};

    #[test]
    fn c_boot_7_decisions() {
        assert_eq!(decide(Some("running"), true), Action::Started);
        assert_eq!(decide(Some("running"), false), Action::Registered);
        for s in [Some("stopped"), Some("startup_failed"), Some("starting"), Some("draining"), Some(""), None] {
            assert_eq!(decide(s, true), Action::Registered, "{s:?}");
        }
    }

    #[test]
    fn c_svc_1_and_2_specs() {
        let logs = LogDefaults::default();
        let h = Path::new("/opt/data");
        let d = gateway_spec("default", h, h, Some("hermes"), &logs);
        assert_eq!(d.command, [HERMES_REAL, "gateway", "run", "--replace"]);
        let c = gateway_spec("coder", h, h, Some("hermes"), &logs);
        assert_eq!(c.command, [HERMES_REAL, "-p", "coder", "gateway", "run", "--replace"]);
        assert_eq!(c.env["HERMES_S6_SUPERVISED_CHILD"], "1");
        assert_eq!(c.env["HERMES_SUPERVISED_CHILD"], "1");
        assert_eq!(c.env["HOME"], "/opt/data");
        assert_eq!(c.cwd.as_deref(), Some(h));
        assert_eq!(c.log.dir.as_deref(), Some(Path::new("/opt/data/logs/gateways/coder")));
        assert_eq!((c.log.max_bytes, c.log.keep), (Some(1_000_000), Some(10)));
        assert_eq!(c.stay_down_exit_codes, [0, 78]);
        // The spec survives the YAML round trip the supervisor reads.
        assert_eq!(ServiceSpec::parse(Path::new("s"), &c.to_yaml()).unwrap(), c);
        let none = |_: &str| None;
        let dash = dashboard_spec(none, h, h, Some("hermes"));
        assert_eq!(dash.command, [HERMES_REAL, "dashboard", "--host", "127.0.0.1", "--port", "9119", "--no-open"]);
        let set = |k: &str| match k {
            "HERMES_DASHBOARD_HOST" => Some("0.0.0.0".to_string()),
            "HERMES_DASHBOARD_PORT" => Some(String::new()),
            _ => None,
        };
        let dash = dashboard_spec(set, h, h, None);
        assert_eq!(dash.command[3], "0.0.0.0");
        assert_eq!(dash.command[5], "9119", "empty counts as unset, as ${{X:-d}}");
        assert!(!dash.command.iter().any(|a| a == "--insecure"));
        assert_eq!(dash.user, None);
    }

    /// C-BOOT-7 end to end on a temporary volume: every state in the table, stale files,
    /// `profiles/default`, invalid names, dirs without SOUL.md, symlinked profiles.
    #[test]
    fn c_boot_7_reconcile_table() {
        let t = TempDir::new("reconcile");
        let home = t.path().join("data");
        let scan = t.path().join("service");
        std::fs::create_dir_all(&scan).unwrap();
        let prof = |n: &str, state: Option<&[u8]>| {
            let d = home.join("profiles").join(n);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("SOUL.md"), "soul").unwrap();
            std::fs::write(d.join("gateway.pid"), "123").unwrap();
            if let Some(s) = state {
                std::fs::write(d.join("gateway_state.json"), s).unwrap();
            }
        };
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("gateway_state.json"), r#"{"gateway_state":"running"}"#).unwrap();
        std::fs::write(home.join("processes.json"), "[]").unwrap();
        prof("running", Some(br#"{"gateway_state":"running"}"#));
        prof("stopped", Some(br#"{"gateway_state":"stopped"}"#));
        prof("draining", Some(br#"{"gateway_state":"draining"}"#));
        prof("degraded", Some(br#"{"gateway_state":"degraded"}"#));
        prof("failed", Some(br#"{"gateway_state":"startup_failed"}"#));
        prof("desired", Some(br#"{"desired_state":"stopped","gateway_state":"running"}"#));
        prof("missing", None);
        prof("garbage", Some(b"{not json"));
        prof("bom", Some(b"\xEF\xBB\xBF{\"gateway_state\":\"running\"}"));
        prof("wrongtype", Some(br#"["running"]"#));
        prof("default", Some(br#"{"gateway_state":"running"}"#));
        prof("Bad_Name", Some(br#"{"gateway_state":"running"}"#));
        std::fs::create_dir_all(home.join("profiles/nosoul")).unwrap();
        std::os::unix::fs::symlink(home.join("profiles/running"), home.join("profiles/linked")).unwrap();
        let logs = LogDefaults::default();
        let o = is_root().then_some((10000, 10000));
        let r = Reconciler {
            hermes_home: &home,
            scan_dir: &scan,
            logs: &logs,
            user: Some("hermes"),
            home_env: Path::new("/opt/data"),
            owner: o,
            multiplex: false,
            legacy_migrated: false,
        };
        let slots = r.run().unwrap();
        let got: Vec<(&str, Option<&str>, Action)> =
            slots.iter().map(|s| (s.profile.as_str(), s.prior_state.as_deref(), s.action)).collect();
        use Action::*;
        assert_eq!(
            got,
            vec![
                ("default", Some("running"), Started),
                ("bom", None, Registered),
                ("degraded", Some("running"), Started),
                ("desired", Some("stopped"), Registered),
                ("draining", Some("running"), Started),
                ("failed", Some("startup_failed"), Registered),
                ("garbage", None, Registered),
                ("missing", None, Registered),
                ("running", Some("running"), Started),
                ("stopped", Some("stopped"), Registered),
                ("wrongtype", None, Registered),
            ]
        );
        assert!(!home.join("processes.json").exists());
        assert!(!home.join("profiles/stopped/gateway.pid").exists());
        assert!(home.join("profiles/default/gateway.pid").exists(), "skipped profiles are not touched");
        let scan_fd = crate::fsx::open_dir_path(&scan).unwrap();
        let scan_fd = std::os::fd::AsFd::as_fd(&scan_fd);
        for s in &slots {
            let d = ServiceDir::load(scan_fd, &scan, &format!("gateway-{}", s.profile)).unwrap();
            assert_eq!(d.down_file, s.action == Registered, "{}", s.profile);
            assert!(matches!(d.kind, Kind::Native(_)));
            if is_root() {
                assert_eq!(owner(&d.path), (10000, 10000));
            }
        }
        assert_eq!(crate::supervisor::servicedir::list(scan_fd).len(), slots.len());
        // Multiplexing: named profiles never autostart; the root one still does.
        let r = Reconciler { multiplex: true, ..r };
        let slots = r.run().unwrap();
        assert_eq!(slots.iter().filter(|s| s.action == Started).count(), 1);
    }
}
