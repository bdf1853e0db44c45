//! The two YAML files hermesinit reads: the global config and the native service spec
//! (`hermesinit.yaml` in a service directory). Both are validated key by key so that one run
//! reports every error at once, each naming the file and the key.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const CONFIG_PATH: &str = "/etc/hermesinit/config.yaml";
pub const SPEC_FILE: &str = "hermesinit.yaml";
pub const DEFAULT_SOCKET: &str = "/run/hermesinit/control.sock";

/// Global settings. Every key is optional; the defaults are what the image needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The scan directory: one subdirectory per service.
    pub scan_dir: PathBuf,
    pub control_socket: PathBuf,
    /// HERMES_HOME; the `HERMES_HOME` variable wins over this key.
    pub hermes_home: PathBuf,
    /// The unprivileged user everything drops to.
    pub user: String,
    /// TERM → KILL grace when stopping the container (`HERMESINIT_KILL_GRACE_MS` wins).
    pub kill_grace_ms: u64,
    /// TERM → KILL grace when one service is stopped.
    pub stop_timeout_ms: u64,
    pub backoff: Backoff,
    pub logs: LogDefaults,
    /// Pretend to be s6-svscan for Hermes' detection (`HERMESINIT_S6_COMPAT=0` turns it off).
    pub s6_compat: bool,
    /// s6's env snapshot directory (C-BOOT-1).
    pub env_dir: PathBuf,
    pub cont_init_dir: PathBuf,
    /// Periodic rescan; 0 (the default) means none: dnotify reports every entry created,
    /// removed or renamed in the scan directory, and a queue overflow arrives as SIGIO.
    pub rescan_interval_ms: u64,
    /// At most this many service slots (C-SEC-5); more are refused with one error line.
    pub max_services: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// Delay before the first restart after a crash.
    pub first_ms: u64,
    /// Delay before the second; doubles for each further crash.
    pub base_ms: u64,
    pub max_ms: u64,
    /// A run at least this long counts as stable and resets the backoff.
    pub reset_after_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { first_ms: 0, base_ms: 500, max_ms: 30_000, reset_after_ms: 60_000 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogDefaults {
    pub max_bytes: u64,
    pub keep: u32,
    /// Bytes buffered for a slow reader of the container's stdout before lines are dropped.
    pub stdout_buffer_bytes: usize,
    /// How long the container's stdout reader may take nothing before lines are dropped for
    /// stdout (until then, services are held back instead: their pipes fill, their writes block).
    pub stdout_stall_ms: u64,
}

impl Default for LogDefaults {
    fn default() -> Self {
        LogDefaults { max_bytes: 1_000_000, keep: 10, stdout_buffer_bytes: 256 << 10, stdout_stall_ms: 1000 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scan_dir: "/run/service".into(),
            control_socket: DEFAULT_SOCKET.into(),
            hermes_home: crate::routing::HERMES_HOME_DEFAULT.into(),
            user: "hermes".into(),
            kill_grace_ms: 3000,
            stop_timeout_ms: 5000,
            backoff: Backoff::default(),
            logs: LogDefaults::default(),
            s6_compat: true,
            env_dir: "/run/s6/container_environment".into(),
            cont_init_dir: "/etc/cont-init.d".into(),
            rescan_interval_ms: 0,
            max_services: 5000,
        }
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub file: PathBuf,
    pub errors: Vec<String>,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} error(s): {}", self.file.display(), self.errors.len(), self.errors.join("; "))
    }
}

impl std::error::Error for Invalid {}

/// Walks a YAML mapping key by key, collecting an error per bad key instead of stopping at the
/// first one.
struct Fields {
    map: Mapping,
    errors: Vec<String>,
}

impl Fields {
    fn parse(text: &str) -> Result<Fields, String> {
        // A byte-order mark some editors write is not a second document.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        match serde_norway::from_str::<Value>(text) {
            Ok(Value::Mapping(map)) => Ok(Fields { map, errors: Vec::new() }),
            Ok(Value::Null) => Ok(Fields { map: Mapping::new(), errors: Vec::new() }),
            Ok(_) => Err("the top level must be a mapping of keys to values".into()),
            Err(e) => Err(format!("not valid YAML: {}", clip(&e.to_string()))),
        }
    }

    fn take<T: DeserializeOwned>(&mut self, key: &str, slot: &mut T) {
        if let Some(v) = self.map.remove(key) {
            match serde_norway::from_value(v) {
                Ok(x) => *slot = x,
                Err(e) => self.errors.push(format!("{key}: {}", clip(&e.to_string()))),
            }
        }
    }

    fn take_opt<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let mut out = None;
        self.take(key, &mut out);
        out
    }

    fn finish(mut self, file: &Path) -> Result<(), Invalid> {
        for k in self.map.keys() {
            let name = k.as_str().map(clip).unwrap_or_else(|| clip(&format!("{k:?}")));
            self.errors.push(format!("{name}: unknown key"));
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            self.errors.sort();
            Err(Invalid { file: file.to_path_buf(), errors: self.errors })
        }
    }
}

/// An error quotes at most this much of the input: a hostile spec must not become a huge log line.
const MAX_QUOTE: usize = 200;

fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTE) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn invalid(file: &Path, e: impl Into<String>) -> Invalid {
    Invalid { file: file.to_path_buf(), errors: vec![e.into()] }
}

impl Config {
    pub fn parse(file: &Path, text: &str) -> Result<Config, Invalid> {
        let mut f = Fields::parse(text).map_err(|e| invalid(file, e))?;
        let mut c = Config::default();
        f.take("scan_dir", &mut c.scan_dir);
        f.take("control_socket", &mut c.control_socket);
        f.take("hermes_home", &mut c.hermes_home);
        f.take("user", &mut c.user);
        f.take("kill_grace_ms", &mut c.kill_grace_ms);
        f.take("stop_timeout_ms", &mut c.stop_timeout_ms);
        f.take("backoff", &mut c.backoff);
        f.take("logs", &mut c.logs);
        f.take("s6_compat", &mut c.s6_compat);
        f.take("env_dir", &mut c.env_dir);
        f.take("cont_init_dir", &mut c.cont_init_dir);
        f.take("rescan_interval_ms", &mut c.rescan_interval_ms);
        f.take("max_services", &mut c.max_services);
        if c.logs.keep == 0 || c.logs.max_bytes < 4096 {
            f.errors.push("logs: keep must be at least 1 and max_bytes at least 4096".into());
        }
        // A whole long line (16 KiB) must always fit, or a reader that keeps up would still lose it.
        if c.logs.stdout_buffer_bytes < 64 << 10 {
            f.errors.push("logs: stdout_buffer_bytes must be at least 65536".into());
        }
        if !(1..=3_600_000).contains(&c.logs.stdout_stall_ms) {
            f.errors.push("logs: stdout_stall_ms must be between 1 and 3600000".into());
        }
        f.finish(file)?;
        Ok(c)
    }

    /// The config file (`HERMESINIT_CONFIG` or /etc/hermesinit/config.yaml; a missing file
    /// means defaults), then the environment overrides.
    /// The config as a client (`svc`, the s6 tools) sees it, read once per process: a broken
    /// file falls back to the defaults with the environment's overrides — a client's job is
    /// to reach PID 1, not to judge its config.
    pub fn for_client() -> &'static Config {
        static CFG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
        CFG.get_or_init(|| {
            Config::load().unwrap_or_else(|_| {
                let mut c = Config::default();
                c.apply_env(|k| std::env::var(k).ok());
                c
            })
        })
    }

    /// How to reach PID 1: the configured socket and, unless `HERMESINIT_SOCKET` names one, the
    /// fallback a non-root PID 1 uses when `/run` is not writable (boot::rundir), trusted only
    /// when owned by the hermes user.
    pub fn client(&self) -> crate::control::Client {
        let fallback = if std::env::var_os("HERMESINIT_SOCKET").is_some() {
            None
        } else {
            crate::users::user_by_name(&self.user).ok().flatten().and_then(|u| crate::boot::fallback_socket(u.uid))
        };
        crate::control::Client { socket: self.control_socket.clone(), fallback }
    }

    pub fn load() -> Result<Config, Invalid> {
        let file = std::env::var_os("HERMESINIT_CONFIG").map(PathBuf::from).unwrap_or_else(|| CONFIG_PATH.into());
        let mut c = match std::fs::read_to_string(&file) {
            Ok(text) => Config::parse(&file, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => return Err(invalid(&file, e.to_string())),
        };
        c.apply_env(|k| std::env::var(k).ok());
        Ok(c)
    }

    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(h) = get("HERMES_HOME").filter(|h| h.starts_with('/')) {
            self.hermes_home = h.into();
        }
        if let Some(ms) = get("HERMESINIT_KILL_GRACE_MS").and_then(|v| v.parse().ok()) {
            self.kill_grace_ms = ms;
        }
        if let Some(v) = get("HERMESINIT_S6_COMPAT") {
            self.s6_compat = crate::routing::truthy(Some(&v));
        }
        if let Some(p) = get("HERMESINIT_SCAN_DIR") {
            self.scan_dir = p.into();
        }
        if let Some(p) = get("HERMESINIT_SOCKET") {
            self.control_socket = p.into();
        }
    }
}

/// A native service: everything needed to run a program without a shell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// argv; the first element is an absolute path or a name looked up on PATH.
    pub command: Vec<String>,
    /// User (or `user:group`, uid, `uid:gid`) to run as; root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Added to (and overriding) the container environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    #[serde(default)]
    pub log: LogSpec,
    /// Exit codes after which the service stays down (C-SVC-3).
    #[serde(default = "default_stay_down")]
    pub stay_down_exit_codes: Vec<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_ms: Option<u64>,
}

fn default_stay_down() -> Vec<i32> {
    vec![0, 78]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSpec {
    /// Copy each line to the container's stdout.
    #[serde(default = "yes")]
    pub stdout: bool,
    /// Directory of the timestamped, rotated `current` file; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
}

fn yes() -> bool {
    true
}

impl Default for LogSpec {
    fn default() -> Self {
        LogSpec { stdout: true, dir: None, max_bytes: None, keep: None }
    }
}

/// A spec larger than this is refused unread (C-SEC-3): real ones are a few hundred bytes.
pub const MAX_SPEC_BYTES: u64 = 64 * 1024;
/// Deeper nesting is refused before the YAML parser sees it: a spec has at most three levels,
/// and a deep input makes the parser's time grow with the square of its depth.
const MAX_SPEC_DEPTH: usize = 32;

/// How deep `text` nests, counting flow brackets and block indentation levels. An estimate
/// (brackets inside quoted strings count too) that only ever errs towards "deeper".
fn yaml_depth(text: &str) -> usize {
    let (mut deepest, mut flow) = (0usize, 0usize);
    let mut indents: Vec<usize> = Vec::new();
    for line in text.lines() {
        let body = line.trim_start_matches([' ', '-']);
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let n = line.len() - body.len();
        while indents.last().is_some_and(|&top| top >= n) {
            indents.pop();
        }
        indents.push(n);
        for b in body.bytes() {
            match b {
                b'[' | b'{' => flow += 1,
                b']' | b'}' => flow = flow.saturating_sub(1),
                _ => {}
            }
            deepest = deepest.max(flow + indents.len());
        }
    }
    deepest
}

impl ServiceSpec {
    pub fn parse(file: &Path, text: &str) -> Result<ServiceSpec, Invalid> {
        if text.len() as u64 > MAX_SPEC_BYTES {
            return Err(invalid(file, format!("larger than {MAX_SPEC_BYTES} bytes")));
        }
        if yaml_depth(text) > MAX_SPEC_DEPTH {
            return Err(invalid(file, format!("nested deeper than {MAX_SPEC_DEPTH} levels")));
        }
        let mut f = Fields::parse(text).map_err(|e| invalid(file, e))?;
        let mut s = ServiceSpec { stay_down_exit_codes: default_stay_down(), ..Default::default() };
        f.take("command", &mut s.command);
        s.user = f.take_opt("user");
        f.take("env", &mut s.env);
        s.cwd = f.take_opt("cwd");
        f.take("log", &mut s.log);
        f.take("stay_down_exit_codes", &mut s.stay_down_exit_codes);
        s.stop_timeout_ms = f.take_opt("stop_timeout_ms");
        if s.command.is_empty() || s.command[0].is_empty() {
            f.errors.push("command: must be a non-empty list (the program and its arguments)".into());
        }
        if let Some(c) = &s.cwd {
            if !c.is_absolute() {
                f.errors.push("cwd: must be an absolute path".into());
            }
        }
        if let Some(d) = &s.log.dir {
            if !d.is_absolute() {
                f.errors.push("log: dir must be an absolute path".into());
            }
        }
        if s.env.keys().any(|k| k.is_empty() || k.contains('=')) {
            f.errors.push("env: names must be non-empty and contain no '='".into());
        }
        f.finish(file)?;
        Ok(s)
    }

    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).unwrap_or_default()
    }
}

/// C-S6-6: a service (slot) name is `^[a-z0-9][a-z0-9_-]*$`, 1–251 characters for profiles;
/// service names add the `gateway-` prefix and are otherwise held to the same alphabet (plus
/// `.`-free, `/`-free), so no name can point outside the scan directory.
pub fn valid_profile_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=251).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// A scan-directory entry we will supervise: 1–255 printable ASCII bytes, no slash, not
/// dot-prefixed (those are staging or s6's own entries).
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains('/')
        && name.bytes().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_env_overrides() {
        let mut c = Config::parse(Path::new("c.yaml"), "kill_grace_ms: 1500\nbackoff: {max_ms: 1000}\n").unwrap();
        assert_eq!(c.kill_grace_ms, 1500);
        assert_eq!(c.backoff.max_ms, 1000);
        assert_eq!(c.backoff.base_ms, Backoff::default().base_ms);
        c.apply_env(|k| match k {
            "HERMES_HOME" => Some("/data".into()),
            "HERMESINIT_KILL_GRACE_MS" => Some("200".into()),
            "HERMESINIT_S6_COMPAT" => Some("0".into()),
            _ => None,
        });
        assert_eq!((c.hermes_home, c.kill_grace_ms, c.s6_compat), (PathBuf::from("/data"), 200, false));
        assert_eq!(Config::parse(Path::new("c"), "").unwrap(), Config::default());
    }

    #[test]
    fn config_reports_every_error_at_once() {
        let e =
            Config::parse(Path::new("/etc/c.yaml"), "kill_grace_ms: soon\nbogus: 1\nbackoff: {max: 2}\n").unwrap_err();
        assert_eq!(e.errors.len(), 3, "{e}");
        assert!(e.to_string().starts_with("/etc/c.yaml: 3 error(s): "));
        assert!(e.errors.iter().any(|x| x.starts_with("bogus: unknown key")));
        assert!(Config::parse(Path::new("c"), "- a list").is_err());
        assert!(Config::parse(Path::new("c"), "a: [unclosed").is_err());
    }

    #[test]
    fn stdout_stall_limit_is_a_validated_log_default() {
        let c = Config::parse(Path::new("c"), "logs: {stdout_stall_ms: 250}\n").unwrap();
        assert_eq!((c.logs.stdout_stall_ms, c.logs.keep), (250, LogDefaults::default().keep));
        assert_eq!(Config::default().logs.stdout_stall_ms, 1000);
        let e = Config::parse(Path::new("c"), "logs: {stdout_stall_ms: 0, stdout_buffer_bytes: 100}\n").unwrap_err();
        assert_eq!(e.errors.len(), 2, "{e}");
    }

    #[test]
    fn service_spec_round_trips_and_validates() {
        let spec = ServiceSpec {
            command: vec!["/opt/hermes/.venv/bin/hermes".into(), "gateway".into(), "run".into()],
            user: Some("hermes".into()),
            env: [("HERMES_SUPERVISED_CHILD".to_string(), "1".to_string())].into(),
            cwd: Some("/opt/data".into()),
            log: LogSpec { dir: Some("/opt/data/logs/gateways/default".into()), ..Default::default() },
            stay_down_exit_codes: vec![0, 78],
            stop_timeout_ms: None,
        };
        let back = ServiceSpec::parse(Path::new("s"), &spec.to_yaml()).unwrap();
        assert_eq!(back, spec);
        let e = ServiceSpec::parse(Path::new("s"), "command: []\ncwd: rel\nlog: {dir: x, color: 1}\nuser: [1]\n")
            .unwrap_err();
        assert_eq!(e.errors.len(), 4, "{e}");
    }

    #[test]
    fn c_sec_3_huge_or_deep_specs_are_refused_before_parsing() {
        let p = Path::new("x.yaml");
        let deep = format!("command: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = ServiceSpec::parse(p, &deep).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let deep = format!("command: {}{}", "[".repeat(1000), "]".repeat(1000));
        assert!(ServiceSpec::parse(p, &deep).unwrap_err().to_string().contains("nested deeper"));
        let mut block = String::from("command: [/bin/true]\nenv:\n");
        for i in 1..200 {
            block.push_str(&format!("{}a{i}:\n", " ".repeat(i)));
        }
        assert!(ServiceSpec::parse(p, &block).unwrap_err().to_string().contains("nested deeper"));
        // A real spec is far from the limits.
        let ok = "command: [/bin/sleep, '9']\nlog: {stdout: true, dir: /tmp/x}\nenv: {A: '1'}\n";
        assert_eq!(yaml_depth(ok), 2);
        ServiceSpec::parse(p, ok).unwrap();
    }

    #[test]
    fn c_s6_6_profile_names() {
        for ok in ["coder", "a", "0x", "my_bot-2", &"a".repeat(251)] {
            assert!(valid_profile_name(ok), "{ok}");
        }
        for bad in ["", "-x", "_x", "Coder", "a b", "a/b", "..", ".x", "é", &"a".repeat(252)] {
            assert!(!valid_profile_name(bad), "{bad}");
        }
        assert!(valid_service_name("gateway-coder"));
        for bad in ["", ".gateway-x.tmp", "a/b", "a b"] {
            assert!(!valid_service_name(bad), "{bad}");
        }
    }
}
