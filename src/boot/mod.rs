//! Boot (C-BOOT): what runs once, before any service and the main program start.
//!
//! Init calls [`run`] as root (or as the hermes user under `docker run --user 10000:10000`),
//! synchronously, before its event loop. Boot is a fixed list of named steps; each logs one
//! line saying what it did (with counts and its duration) and the whole boot logs its duration.
//! Boot is idempotent: a second boot on the same volume (`docker restart`) changes nothing that
//! is already right.
//!
//! | step | contract | what |
//! |---|---|---|
//! | `env` | C-BOOT-1, C-S6-1 | container environment → `/run/s6/container_environment/` (one file per variable, value verbatim, no trailing newline; dir `root:hermes 0750`, files `0640`); `/run/s6/basedir/` made a directory |
//! | `remap` | C-BOOT-2 | `HERMES_UID`/`HERMES_GID` (else `PUID`/`PGID`) written into the hermes lines of `/etc/passwd` and `/etc/group` (atomic rewrite, everything else byte-for-byte) |
//! | `groups` | | hermes joins the group of the Docker socket and of each `/dev/dri/*` node (reusing the group that has the gid, else creating `hostdocker`/`hostdri`; never gid 0) |
//! | `scandir` | C-SVC-7 | the scan directory (`/run/service`) emptied (it is runtime state; `/run` survives `docker restart`), `hermes 0755` |
//! | `volume` | | a read-only `HERMES_HOME` is fatal, naming the mount |
//! | `sweep` | C-BOOT-3 | ownership of `HERMES_HOME`, its hermes subtrees and top-level state files healed to hermes; symlinks never followed (a listed path that is a symlink gets a `refusing` line and is left alone), other mounts never entered nor changed, only wrong entries changed |
//! | `seed` | C-BOOT-4 | the hermes directories created hermes-owned; files of `/opt/hermes/defaults/` copied in when missing, never overwriting |
//! | `stamp` | | a stale `.install_method` (`docker`) removed |
//! | `apikey` | | a fresh `API_SERVER_KEY` in `.env` when it has none (never logged) |
//! | `auth` | | `auth.json` from `HERMES_AUTH_JSON_BOOTSTRAP` when missing; `HERMES_AUTH_JSON_REBOOTSTRAP` re-seeds a dead Nous session |
//! | `migrate` | | hermes-agent's `migrate_config` as hermes (`HERMES_SKIP_CONFIG_MIGRATION` skips it); not run for the image's proven defaults nor, as root, for files unchanged since a run that left them alone (`migrate.rs`) |
//! | `skills` | | hermes-agent's `tools.skills_sync` as hermes, when the image has bundled skills |
//! | `modes` | | `.env` hermes 0600, `config.yaml` hermes 0640 |
//! | `state` | C-BOOT-5, C-BOOT-8 | `gateway_state.json` from `HERMES_GATEWAY_BOOTSTRAP_STATE=running`, or the legacy `gateway run` migration; never overwriting |
//! | `reconcile` | C-BOOT-7, C-BOOT-10, C-SVC-2 | a `gateway-<profile>` slot per profile (`gateway-default` always), up or down by its recorded state; stale `gateway.pid`/`processes.json` removed; none in a dashboard container |
//! | `dashboard` | C-SVC-1 | the `dashboard` slot, up only when `HERMES_DASHBOARD` is truthy |
//! | `hooks` | C-BOOT-6 | executables in `/etc/cont-init.d/`, lexical order, as root, with the env snapshot (re-read before each hook); a failing hook stops the container with its exit code (1 if killed by a signal) |
//! | `bootlog` | C-BOOT-9 | one line per slot appended to `$HERMES_HOME/logs/container-boot.log` (rotated to `.1` at 256 KiB), the `profile=default` line last: the readiness line. With no slots (dashboard container, `reconcile` skipped) a single `profile=default prior_state=None action=skipped` line |
//!
//! Environment read by boot:
//!
//! - `HERMESINIT_SKIP` — comma- or space-separated step names to skip, for debugging
//!   (e.g. `HERMESINIT_SKIP=sweep,remap`). Unknown names are warned about.
//! - `HERMESINIT_SWEEP_THREADS` — threads walking the subtrees in the sweep (1–16; default:
//!   the CPUs, at most 4). The walk is bound by one `statx` per entry; 1 may suit a spinning
//!   disk.
//! - `HERMES_UID`, `HERMES_GID`, `PUID`, `PGID` — the remap (C-BOOT-2). Digits only, 1–65534.
//!   An empty value counts as unset; a non-empty invalid `HERMES_UID` is ignored with a warning
//!   and does *not* fall back to `PUID` (as upstream's stage2-hook).
//! - `HERMES_GATEWAY_BOOTSTRAP_STATE` — `running` seeds `gateway_state.json` on a fresh volume.
//! - `HERMES_GATEWAY_NO_SUPERVISE` — `1`/`true`/`yes` (any case, as Hermes reads it) disables the
//!   legacy `gateway run` migration.
//! - `GATEWAY_MULTIPLEX_PROFILES` — truthy (`1`/`true`/`yes`/`on`, any case, as Hermes reads
//!   it): named profile slots are registered but never autostarted (the root gateway owns every
//!   profile's connections).
//! - `HERMES_DASHBOARD` (C-TRUE), `HERMES_DASHBOARD_HOST` (default `127.0.0.1`),
//!   `HERMES_DASHBOARD_PORT` (default `9119`) — the dashboard slot.
//! - `HERMES_HOME` (through the config) — the data volume.
//! - `HERMES_AUTH_JSON_BOOTSTRAP`, `HERMES_AUTH_JSON_REBOOTSTRAP` — `auth.json` seeds (kept out
//!   of the env snapshot); `HERMES_SKIP_CONFIG_MIGRATION` (C-TRUE) — skip `migrate`;
//!   `HERMES_BUNDLED_SKILLS` — where `skills` finds the bundled skills (as Hermes reads it).
//!
//! Failure policy (C-BOOT-6): a built-in step that cannot work in a rootless or read-only
//! setting (`EPERM`, `EACCES`, `EROFS`, `EOPNOTSUPP`, and `EINVAL` from a chown to an unmapped
//! id) logs a warning with the reason and goes on; any other failure of a built-in step (code
//! 1), and any failing hook, returns [`Fatal`]; init then logs
//! `fatal: stopping the container: <reason>` and exits with its code. A failed boot writes no
//! readiness line.

mod apikey;
mod atomic;
mod auth;
mod bootlog;
mod groups;
mod hooks;
mod migrate;
mod pyrun;
mod reconcile;
mod remap;
mod rundir;
mod seed;
mod skills;
mod stamp;
mod state;
pub mod sweep;
#[cfg(test)]
pub(crate) mod testutil;
mod volume;

pub use bootlog::{BOOT_LOG, ROTATE_BYTES};
pub use reconcile::{Action, Slot};
pub use rundir::{fallback_socket, runtime_fallback};

use crate::config::Config;
use crate::fsx;
use std::ffi::OsString;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::{info, warn};

/// Files the image ships for a fresh `HERMES_HOME` (today `SOUL.md`), copied when missing.
pub const DEFAULTS_DIR: &str = "/opt/hermes/defaults";
/// Hermes' s6 detection needs this to be a directory (C-S6-1).
pub const S6_BASEDIR: &str = "/run/s6/basedir";

/// What init hands to boot.
pub struct Context<'a> {
    pub config: &'a Config,
    /// The container's CMD as given to init (before routing).
    pub main_args: &'a [String],
}

/// A boot failure that stops the container (C-BOOT-6), with the exit code to use.
#[derive(Debug)]
pub struct Fatal {
    pub code: i32,
    pub reason: String,
}

/// Locations boot uses that are not in [`Config`]; tests point them at a temporary tree.
#[derive(Debug, Clone)]
pub struct Paths {
    pub passwd: PathBuf,
    pub group: PathBuf,
    pub s6_basedir: PathBuf,
    pub defaults_dir: PathBuf,
    /// The image build's proof that the defaults need no migration ([`migrate::PROOF`]).
    pub migrate_proof: PathBuf,
    /// Root's memo of the last migration ([`migrate::MEMO_DIR`]).
    pub migrate_memo_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            passwd: crate::users::PASSWD.into(),
            group: crate::users::GROUP.into(),
            s6_basedir: S6_BASEDIR.into(),
            defaults_dir: DEFAULTS_DIR.into(),
            migrate_proof: migrate::PROOF.into(),
            migrate_memo_dir: migrate::MEMO_DIR.into(),
        }
    }
}

/// The boot steps, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    Env,
    Remap,
    Groups,
    ScanDir,
    Volume,
    Sweep,
    Seed,
    Stamp,
    ApiKey,
    Auth,
    Migrate,
    Skills,
    Modes,
    State,
    Reconcile,
    Dashboard,
    Hooks,
    BootLog,
}

impl Step {
    pub const ALL: [Step; 18] = [
        Step::Env,
        Step::Remap,
        Step::Groups,
        Step::ScanDir,
        Step::Volume,
        Step::Sweep,
        Step::Seed,
        Step::Stamp,
        Step::ApiKey,
        Step::Auth,
        Step::Migrate,
        Step::Skills,
        Step::Modes,
        Step::State,
        Step::Reconcile,
        Step::Dashboard,
        Step::Hooks,
        Step::BootLog,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Env => "env",
            Step::Remap => "remap",
            Step::Groups => "groups",
            Step::ScanDir => "scandir",
            Step::Volume => "volume",
            Step::Sweep => "sweep",
            Step::Seed => "seed",
            Step::Stamp => "stamp",
            Step::ApiKey => "apikey",
            Step::Auth => "auth",
            Step::Migrate => "migrate",
            Step::Skills => "skills",
            Step::Modes => "modes",
            Step::State => "state",
            Step::Reconcile => "reconcile",
            Step::Dashboard => "dashboard",
            Step::Hooks => "hooks",
            Step::BootLog => "bootlog",
        }
    }
}

/// `HERMESINIT_SKIP`: the steps to skip, and the names that are not steps.
pub fn parse_skip(v: &str) -> (Vec<Step>, Vec<String>) {
    let mut steps = Vec::new();
    let mut unknown = Vec::new();
    for w in v.split([',', ' ', '\t']).map(str::trim).filter(|w| !w.is_empty()) {
        match Step::ALL.iter().find(|s| s.name().eq_ignore_ascii_case(w)) {
            Some(s) => steps.push(*s),
            None => unknown.push(w.to_string()),
        }
    }
    (steps, unknown)
}

/// What a finished boot produced (for tests and for init's status output).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The gateway slots, `default` first (empty in a dashboard container).
    pub slots: Vec<Slot>,
    pub dashboard_container: bool,
}

/// Run every boot step in order. Ok means services and the main program may start.
pub fn run(ctx: &Context) -> Result<(), Fatal> {
    let r = run_with(ctx, &Paths::default(), std::env::vars_os().collect()).map(drop);
    // The auth.json seeds have been used: the main program and the services (an agent whose
    // tools can print their environment) never inherit them.
    for name in auth::SECRET_VARS {
        if std::env::var_os(name).is_some() {
            // SAFETY: boot runs before init starts any thread that reads the environment (the
            // sweep's workers have been joined), so nothing reads it concurrently.
            unsafe { std::env::remove_var(name) };
        }
    }
    r
}

/// [`run`] with explicit paths and environment.
pub fn run_with(ctx: &Context, paths: &Paths, env: Vec<(OsString, OsString)>) -> Result<Outcome, Fatal> {
    let started = Instant::now();
    let env = Env(env);
    let (skip, unknown) = parse_skip(env.get("HERMESINIT_SKIP").unwrap_or(""));
    if !unknown.is_empty() {
        let names: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
        warn!("boot: HERMESINIT_SKIP names unknown steps {:?}; the steps are {}", unknown, names.join(","));
    }
    let root = nix::unistd::geteuid().is_root();
    let hermes = Hermes::lookup(&paths.passwd, &ctx.config.user).map_err(|reason| Fatal { code: 1, reason })?;
    let mut b = Boot {
        config: ctx.config,
        main_args: ctx.main_args,
        paths,
        env,
        root,
        hermes,
        env_written: false,
        seeded: Vec::new(),
        legacy_migrated: false,
        outcome: Outcome::default(),
        reconciled: false,
    };
    if !root {
        warn!(
            "boot: running as uid {} (not root): steps that need root (remap, ownership fixes) are skipped",
            nix::unistd::geteuid()
        );
    }
    if !skip.is_empty() {
        let names: Vec<&str> = Step::ALL.iter().filter(|s| skip.contains(s)).map(|s| s.name()).collect();
        info!("boot: skipping {} (HERMESINIT_SKIP)", names.join(", "));
    }
    for step in Step::ALL {
        if skip.contains(&step) {
            continue;
        }
        if step >= Step::Volume {
            // Every step from here on touches the volume or starts a program (hooks, Hermes'
            // Python, which print to the same stderr): lines go out as they come, so a hung mount
            // shows where and a program's output never precedes the steps before it.
            crate::logs::release_stderr();
        }
        let t = Instant::now();
        let r = match step {
            Step::Env => b.step_env(),
            Step::Remap => b.step_remap(),
            Step::Groups => b.step_groups(),
            Step::ScanDir => b.step_scandir(),
            Step::Volume => volume::check(b.home()).map_err(StepErr::new),
            Step::Sweep => b.step_sweep(),
            Step::Seed => b.step_seed(),
            Step::Stamp => stamp::remove_stale(b.home()),
            Step::ApiKey => apikey::ensure(b.home(), b.owner()),
            Step::Auth => b.step_auth(),
            Step::Migrate => b.step_migrate(),
            Step::Skills => b.step_skills(),
            Step::Modes => seed::fix_modes(b.home(), b.owner()),
            Step::State => b.step_state(),
            Step::Reconcile => b.step_reconcile(),
            Step::Dashboard => b.step_dashboard(),
            Step::Hooks => b.step_hooks(),
            Step::BootLog => b.step_bootlog(),
        };
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if matches!(step, Step::Remap | Step::Groups | Step::Hooks) {
            crate::users::forget();
        }
        match r {
            Ok(summary) => info!("boot: {}: {summary} ({ms:.1} ms)", step.name()),
            // Init logs `fatal: stopping the container: <reason>`; nothing more to say here.
            Err(e) => return Err(Fatal { code: e.code, reason: format!("boot step {}: {}", step.name(), e.reason) }),
        }
    }
    info!("boot: finished in {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    Ok(b.outcome)
}

/// The container environment boot was started with.
pub(crate) struct Env(Vec<(OsString, OsString)>);

impl Env {
    /// A variable's value (the first, as getenv(3)); non-UTF-8 values count as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.to_str())
    }
    pub fn vars(&self) -> &[(OsString, OsString)] {
        &self.0
    }
    /// A variable's raw bytes (the first).
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        use std::os::unix::ffi::OsStrExt;
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_bytes())
    }
    /// The environment without the credential variables (for the snapshot and boot's children).
    pub fn public_vars(&self) -> Vec<(OsString, OsString)> {
        self.0.iter().filter(|(k, _)| !auth::SECRET_VARS.iter().any(|s| k == s)).cloned().collect()
    }
}

/// The hermes user's ids as `/etc/passwd` has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hermes {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl Hermes {
    fn lookup(passwd: &Path, user: &str) -> Result<Hermes, String> {
        let text = crate::users::read(passwd).map_err(|e| e.to_string())?;
        let u = remap::entries(text.as_bytes(), true)
            .into_iter()
            .find(|u| u.name == user)
            .ok_or_else(|| format!("no user '{user}' in {}", passwd.display()))?;
        Ok(Hermes { name: u.name, uid: u.id, gid: u.gid.unwrap_or(u.id) })
    }
}

/// Why a step stops the container.
#[derive(Debug)]
pub(crate) struct StepErr {
    pub code: i32,
    pub reason: String,
}

impl StepErr {
    pub fn new(reason: impl Into<String>) -> StepErr {
        StepErr { code: 1, reason: reason.into() }
    }
}

type StepResult = Result<String, StepErr>;

/// C-BOOT-6's rule for one operation: a rootless/read-only refusal warns and gives `None`, any
/// other error is the step's fatal error.
pub(crate) fn soft<T>(what: impl Display, r: std::io::Result<T>) -> Result<Option<T>, StepErr> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if fsx::is_soft(&e) => {
            warn!("boot: {what}: {e} (rootless or read-only container?); continuing");
            Ok(None)
        }
        Err(e) => Err(StepErr::new(format!("{what}: {e}"))),
    }
}

struct Boot<'a> {
    config: &'a Config,
    main_args: &'a [String],
    paths: &'a Paths,
    env: Env,
    root: bool,
    hermes: Hermes,
    env_written: bool,
    /// The default files this boot's `seed` copied in.
    seeded: Vec<String>,
    legacy_migrated: bool,
    outcome: Outcome,
    reconciled: bool,
}

impl Boot<'_> {
    /// The owner to give what boot creates: hermes when we can chown, else whoever we are.
    fn owner(&self) -> Option<(u32, u32)> {
        self.root.then_some((self.hermes.uid, self.hermes.gid))
    }

    fn home(&self) -> &Path {
        &self.config.hermes_home
    }

    fn step_env(&mut self) -> StepResult {
        let gid = self.root.then_some(self.hermes.gid);
        let dir = &self.config.env_dir;
        let mut parts = Vec::new();
        // The auth.json seeds stay out of the snapshot (C-BOOT-1 keeps everything else).
        let vars = self.env.public_vars();
        match soft(format_args!("env snapshot in {}", dir.display()), rundir::write(dir, &vars, gid))? {
            Some(r) => {
                self.env_written = true;
                for name in &r.skipped {
                    warn!("boot: env: not writing variable {name:?}: not storable as a file name");
                }
                parts.push(format!("wrote {} variables to {} ({} skipped)", r.written, dir.display(), r.skipped.len()));
            }
            None => parts.push(format!("no snapshot in {}", dir.display())),
        }
        let base = &self.paths.s6_basedir;
        if soft(format_args!("creating {}", base.display()), rundir::ensure_basedir(base))?.is_some() {
            parts.push(format!("{} is a directory", base.display()));
        }
        Ok(parts.join("; "))
    }

    fn step_remap(&mut self) -> StepResult {
        let want = remap::wanted(|k| self.env.get(k).map(str::to_string));
        for w in &want.warnings {
            warn!("boot: remap: {w}");
        }
        if want.uid.is_none() && want.gid.is_none() {
            return Ok(format!("nothing asked; hermes is {}:{}", self.hermes.uid, self.hermes.gid));
        }
        if !self.root {
            warn!(
                "boot: remap: HERMES_UID/HERMES_GID (or PUID/PGID) need the container to start as root; not remapping"
            );
            return Ok("skipped: not root".into());
        }
        let paths = remap::Files { passwd: &self.paths.passwd, group: &self.paths.group };
        let Some(done) = soft("remap of /etc/passwd and /etc/group", remap::apply(&paths, &self.hermes.name, &want))?
        else {
            return Ok("not applied".into());
        };
        let old_gid = self.hermes.gid;
        self.hermes = Hermes::lookup(&self.paths.passwd, &self.config.user).map_err(StepErr::new)?;
        if self.env_written && self.hermes.gid != old_gid {
            soft("regrouping the env snapshot", rundir::regroup(&self.config.env_dir, self.hermes.gid))?;
        }
        Ok(match (done.uid, done.gid) {
            (None, None) => format!("hermes already is {}:{}; nothing changed", self.hermes.uid, self.hermes.gid),
            _ => format!("hermes is now {}:{}", self.hermes.uid, self.hermes.gid),
        })
    }

    fn step_groups(&mut self) -> StepResult {
        let devices = groups::wanted(&groups::DOCKER_SOCKETS, Path::new(groups::DRI_DIR));
        if devices.is_empty() {
            return Ok("no docker socket or /dev/dri node".into());
        }
        let shown: Vec<String> = devices.iter().map(|(g, _, p)| format!("{} (gid {g})", p.display())).collect();
        if !self.root {
            return Ok(format!("skipped: not root; devices {}", shown.join(", ")));
        }
        let want: Vec<(u32, &str)> = devices.iter().map(|(g, n, _)| (*g, *n)).collect();
        let path = &self.paths.group;
        let text = std::fs::read(path).map_err(|e| StepErr::new(format!("cannot read {}: {e}", path.display())))?;
        let (new, said) = groups::join(&text, &self.hermes.name, self.hermes.gid, &want);
        let Some(new) = new else {
            return Ok(format!("{} already in the groups of {}", self.hermes.name, shown.join(", ")));
        };
        if soft(format_args!("rewriting {}", path.display()), remap::write_atomic(path, &new))?.is_none() {
            return Ok("groups not changed".into());
        }
        for line in &said {
            info!("boot: groups: {line}");
        }
        Ok(format!("joined {} groups for {}", said.len(), shown.join(", ")))
    }

    /// The environment of boot's own Python children: the snapshot (or boot's environment
    /// without the credentials), `HOME` and `HERMES_HOME` the data volume.
    fn child_env(&self) -> Vec<(OsString, OsString)> {
        let mut vars = match self.env_written.then(|| crate::envdir::read(&self.config.env_dir)) {
            Some(Ok(v)) => v,
            _ => self.env.public_vars(),
        };
        vars.retain(|(k, _)| k != "HOME" && k != "HERMES_HOME" && !auth::SECRET_VARS.iter().any(|s| k == s));
        vars.push(("HOME".into(), self.home().into()));
        vars.push(("HERMES_HOME".into(), self.home().into()));
        vars
    }

    /// Run hermes-agent's Python as hermes; `Ok(None)` when the image has no Python.
    fn hermes_python(
        &self,
        args: &[&str],
        timeout_secs: u64,
        mut line: impl FnMut(&str),
    ) -> Result<Option<pyrun::Ended>, StepErr> {
        if !Path::new(pyrun::PYTHON).exists() {
            return Ok(None);
        }
        let identity = match self.root.then(|| crate::creds::Identity::resolve(&self.hermes.name)) {
            Some(Ok(id)) => Some(id),
            Some(Err(e)) => {
                warn!("boot: cannot resolve {}: {e}; not running Python", self.hermes.name);
                return Ok(None);
            }
            None => None,
        };
        let mut argv = vec![pyrun::PYTHON.to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        let run = pyrun::Run {
            argv,
            env: self.child_env(),
            cwd: self.home(),
            identity,
            timeout: std::time::Duration::from_secs(timeout_secs),
        };
        pyrun::run(&run, &mut line).map(Some)
    }

    fn step_auth(&mut self) -> StepResult {
        let (b, rb) = (self.env.get_bytes(auth::BOOTSTRAP), self.env.get_bytes(auth::REBOOTSTRAP));
        auth::run(self.home(), b, rb, self.owner())
    }

    fn step_migrate(&mut self) -> StepResult {
        if crate::routing::truthy(self.env.get("HERMES_SKIP_CONFIG_MIGRATION")) {
            return Ok("skipped (HERMES_SKIP_CONFIG_MIGRATION)".into());
        }
        match std::fs::symlink_metadata(self.home().join("config.yaml")) {
            Ok(m) if m.file_type().is_symlink() => {
                warn!("boot: migrate: refusing to migrate symlink {}", self.home().join("config.yaml").display());
                return Ok("refused a symlinked config.yaml".into());
            }
            Ok(m) if m.is_file() => {}
            _ => return Ok("no config.yaml".into()),
        }
        let seeded = ["config.yaml", ".env"].iter().all(|f| self.seeded.iter().any(|s| s == f));
        let w = migrate::Where {
            home: self.home(),
            defaults: &self.paths.defaults_dir,
            proof: &self.paths.migrate_proof,
            memo_dir: self.root.then_some(self.paths.migrate_memo_dir.as_path()),
            seeded,
        };
        let memo = match migrate::decide(&w, |n| tracing::debug!("boot: migrate: {n}")) {
            migrate::Decision::Skip(why) => return Ok(why),
            migrate::Decision::Run { memo } => memo,
        };
        let (mut last, mut lines) = (String::new(), 0);
        let ended = self.hermes_python(&["-c", migrate::CODE], migrate::TIMEOUT_SECS, |l| {
            if !l.is_empty() {
                info!("{} {l}", migrate::PREFIX);
                last = l.to_string();
                lines += 1;
            }
        })?;
        Ok(match ended {
            None => format!("skipped: no {}", pyrun::PYTHON),
            Some(pyrun::Ended::Code(0)) => {
                // Remembered only when it said nothing but its summary and changed nothing.
                let kept = match memo.filter(|_| lines == 1).map(|p| migrate::remember(&w, &p)) {
                    Some(Ok(true)) => "; remembered",
                    Some(Err(e)) => {
                        tracing::debug!("boot: migrate: not remembered: {e}");
                        ""
                    }
                    _ => "",
                };
                format!("done: {last}{kept}")
            }
            Some(e) => {
                warn!("{} config migration failed ({e:?}); continuing with the config as it is", migrate::PREFIX);
                format!("failed ({e:?}), continuing")
            }
        })
    }

    fn step_skills(&mut self) -> StepResult {
        let venv = Path::new(pyrun::PYTHON).parent().and_then(Path::parent).unwrap_or(Path::new("/"));
        let stamp = Path::new(skills::STAMP);
        let Some(dir) = skills::bundled_dir(self.env.get("HERMES_BUNDLED_SKILLS"), venv, stamp) else {
            return Ok("skipped: this hermes-agent ships no bundled skills directory".into());
        };
        info!("boot: skills: syncing bundled skills from {}", dir.display());
        let mut summary = String::new();
        let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let ended = self.hermes_python(&skills::ARGS, skills::TIMEOUT_SECS, |l| {
            if skills::is_summary(l) {
                info!("{} {}", skills::PREFIX, l.trim());
                summary = l.trim().to_string();
            } else if !l.trim().is_empty() {
                tracing::debug!("{} {l}", skills::PREFIX);
                if tail.len() == 20 {
                    tail.pop_front();
                }
                tail.push_back(l.to_string());
            }
        })?;
        Ok(match ended {
            None => format!("skipped: no {}", pyrun::PYTHON),
            Some(pyrun::Ended::Code(0)) => summary,
            Some(e) => {
                for l in &tail {
                    warn!("{} {l}", skills::PREFIX);
                }
                warn!("{} bundled skills sync failed ({e:?}); continuing", skills::PREFIX);
                format!("failed ({e:?}), continuing")
            }
        })
    }

    fn step_scandir(&mut self) -> StepResult {
        let dir = &self.config.scan_dir;
        let r = soft(
            format_args!("preparing the scan directory {}", dir.display()),
            rundir::fresh_scan_dir(dir, self.owner()),
        )?;
        Ok(match r {
            Some(n) => format!("{} ready (removed {n} stale entries)", dir.display()),
            None => format!("{} not prepared", dir.display()),
        })
    }

    fn step_sweep(&mut self) -> StepResult {
        let home = self.home().to_path_buf();
        let Some(()) = soft(format_args!("creating {}", home.display()), seed::ensure_home(&home, self.owner()))?
        else {
            return Ok("skipped: no HERMES_HOME".into());
        };
        let threads = match self.env.get("HERMESINIT_SWEEP_THREADS").map(str::parse::<usize>) {
            Some(Ok(n @ 1..=16)) => n,
            Some(_) => {
                warn!("boot: sweep: HERMESINIT_SWEEP_THREADS must be 1-16; using the default");
                sweep::workers()
            }
            None => sweep::workers(),
        };
        let (uid, gid, fix) = (self.hermes.uid, self.hermes.gid, self.root);
        let split = sweep::SPLIT.load(std::sync::atomic::Ordering::Relaxed);
        let part = if split { sweep::Part::Sync } else { sweep::Part::All };
        let c = sweep::walk(&home, uid, gid, fix, threads, part, None).map_err(StepErr::new)?;
        if split {
            sweep::set_pending(sweep::Pending { home: home.clone(), uid, gid, fix, threads });
        }
        if !self.root && c.wrong > 0 {
            warn!(
                "boot: sweep: {} entries under {} are not hermes-owned and cannot be fixed without root",
                c.wrong,
                home.display()
            );
        }
        Ok(if split { format!("{} (bulk trees next, in the background)", c.summary()) } else { c.summary() })
    }

    fn step_seed(&mut self) -> StepResult {
        let home = self.home().to_path_buf();
        let Some(()) = soft(format_args!("creating {}", home.display()), seed::ensure_home(&home, self.owner()))?
        else {
            return Ok("skipped: no HERMES_HOME".into());
        };
        let s = seed::seed(&home, &self.paths.defaults_dir, self.owner())?;
        self.seeded = s.files_seeded.clone();
        Ok(s.summary())
    }

    fn step_state(&mut self) -> StepResult {
        let home = self.home().to_path_buf();
        let bootstrap = self.env.get("HERMES_GATEWAY_BOOTSTRAP_STATE");
        let no_supervise = state::no_supervise(self.env.get("HERMES_GATEWAY_NO_SUPERVISE"));
        let r = state::seed_state(&home, bootstrap, self.main_args, no_supervise, self.owner())?;
        self.legacy_migrated = r.legacy_migrated;
        Ok(r.summary)
    }

    fn step_reconcile(&mut self) -> StepResult {
        self.reconciled = true;
        if state::is_dashboard_cmd(self.main_args) {
            self.outcome.dashboard_container = true;
            return Ok("dashboard container: no gateway slots (C-BOOT-10)".into());
        }
        let r = reconcile::Reconciler {
            hermes_home: self.home(),
            scan_dir: &self.config.scan_dir,
            logs: &self.config.logs,
            user: self.root.then_some(self.hermes.name.as_str()),
            home_env: self.home(),
            owner: self.owner(),
            multiplex: state::py_truthy(self.env.get("GATEWAY_MULTIPLEX_PROFILES")),
            legacy_migrated: self.legacy_migrated,
        };
        let slots = r.run()?;
        let started = slots.iter().filter(|s| s.action == Action::Started).count();
        let summary = format!(
            "{} gateway slots ({} started, {} registered down): {}",
            slots.len(),
            started,
            slots.len() - started,
            slots.iter().map(|s| s.profile.as_str()).collect::<Vec<_>>().join(",")
        );
        self.outcome.slots = slots;
        Ok(summary)
    }

    fn step_dashboard(&mut self) -> StepResult {
        let on = crate::routing::truthy(self.env.get("HERMES_DASHBOARD"));
        let spec = reconcile::dashboard_spec(
            |k| self.env.get(k).map(str::to_string),
            self.home(),
            self.home(),
            self.root.then_some(self.hermes.name.as_str()),
        );
        let what = format!("publishing the dashboard slot in {}", self.config.scan_dir.display());
        let r = soft(
            what,
            crate::supervisor::servicedir::publish(&self.config.scan_dir, "dashboard", &spec, !on, self.owner()),
        )?;
        Ok(match (r, on) {
            (None, _) => "not registered".into(),
            (Some(_), true) => format!("registered up: {}", spec.command[1..].join(" ")),
            (Some(_), false) => "registered down (HERMES_DASHBOARD is not truthy)".into(),
        })
    }

    fn step_hooks(&mut self) -> StepResult {
        let env_dir = self.env_written.then_some(self.config.env_dir.as_path());
        hooks::run_all(&self.config.cont_init_dir, env_dir, self.env.vars())
    }

    fn step_bootlog(&mut self) -> StepResult {
        let lines = if self.reconciled && !self.outcome.dashboard_container {
            bootlog::format_lines(&self.outcome.slots, std::time::SystemTime::now())
        } else {
            // The readiness line is written on every boot, even when no slot was reconciled.
            let skipped = Slot { profile: "default".into(), prior_state: None, action: Action::Skipped };
            bootlog::format_lines(std::slice::from_ref(&skipped), std::time::SystemTime::now())
        };
        let home = self.home().to_path_buf();
        match soft(format_args!("boot log under {}", home.display()), bootlog::append(&home, &lines, self.owner()))? {
            Some(r) => Ok(r),
            None => Ok("not written".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_seeds_are_kept_out_of_the_snapshot_and_children() {
        let env = Env(vec![
            ("HERMES_AUTH_JSON_BOOTSTRAP".into(), "{\"secret\":1}".into()),
            ("HERMES_AUTH_JSON_REBOOTSTRAP".into(), "1".into()),
            ("EMPTY".into(), "".into()),
            ("HERMES_HOME".into(), "/opt/data".into()),
        ]);
        let names: Vec<_> = env.public_vars().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["EMPTY", "HERMES_HOME"]);
        assert_eq!(env.get_bytes("HERMES_AUTH_JSON_BOOTSTRAP"), Some(&b"{\"secret\":1}"[..]));
    }

    #[test]
    fn every_step_has_a_unique_name_in_order() {
        let names: Vec<_> = Step::ALL.iter().map(|s| s.name()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert_eq!(parse_skip("migrate, skills").0, [Step::Migrate, Step::Skills]);
        assert!(Step::ALL.windows(2).all(|w| w[0] < w[1]));
    }
}
