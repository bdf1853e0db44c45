//! The supervisor runtime: owns every service's processes, pipes and log files, and executes
//! what each service's pure state machine (`machine`) decides. It never blocks: init's event
//! loop hands it readable pipes, exits and ticks.
//!
//! Pipes belong to PID 1 for the life of a slot, so a restarting service or logger never loses
//! a buffered line: native services write stdout+stderr into one pipe that PID 1 fans out to
//! the container's stdout and a timestamped rotated file; s6 services with `log/run` write
//! stdout into a pipe whose read end is the logger's stdin (PID 1 keeps both ends open).

pub mod machine;
pub mod servicedir;

use crate::config::Config;
use crate::control::{self, ServiceStatus};
use crate::creds::Identity;
use crate::logs::{LineSplitter, RotatingFile, Sink};
use crate::spawn::{self, Command};
use machine::{Action, Event, Exit, Machine, Policy, State, Target};
use servicedir::{Kind, LoadError, ServiceDir};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant, SystemTime};
use tracing::{error, info, warn};

/// Where a fan-out pipe's lines go on the container side.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// A pipe PID 1 reads: lines to a container stream and optionally to a rotated file.
struct Fanout {
    r: OwnedFd,
    w: OwnedFd,
    split: LineSplitter,
    file: Option<RotatingFile>,
    to: Option<Stream>,
}

struct Logger {
    m: Machine,
    /// The pipe between service and logger; PID 1 keeps both ends (w dropped at the end).
    r: OwnedFd,
    w: Option<OwnedFd>,
}

struct Slot {
    dir: ServiceDir,
    m: Machine,
    out: Fanout,
    /// s6 services: stderr separately (stdout goes to the logger or `out`).
    err: Option<Fanout>,
    logger: Option<Logger>,
    finish_pid: Option<i32>,
    removed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Service,
    Finish,
    Logger,
}

pub struct Supervisor {
    cfg: Config,
    slots: BTreeMap<String, Slot>,
    pids: BTreeMap<i32, (String, Role)>,
    pub stdout: Sink,
    pub stderr: Sink,
    /// The environment every child starts from (container env + snapshot + PATH with /command).
    base_env: Vec<(OsString, OsString)>,
    shutting_down: bool,
    dropped_reported: u64,
}

fn nonblocking_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    nix::fcntl::fcntl(r.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
    Ok((r, w))
}

fn exit_of(status: nix::sys::wait::WaitStatus) -> Option<Exit> {
    use nix::sys::wait::WaitStatus::*;
    match status {
        Exited(_, c) => Some(Exit::Code(c)),
        Signaled(_, s, _) => Some(Exit::Signal(s as i32)),
        _ => None,
    }
}

fn wall(since: Instant, wall_now: SystemTime, now: Instant) -> SystemTime {
    wall_now.checked_sub(now.saturating_duration_since(since)).unwrap_or(wall_now)
}

impl Supervisor {
    pub fn new(cfg: Config, base_env: Vec<(OsString, OsString)>) -> Supervisor {
        let cap = cfg.logs.stdout_buffer_bytes;
        Supervisor {
            cfg,
            slots: BTreeMap::new(),
            pids: BTreeMap::new(),
            stdout: Sink::open(1, cap),
            stderr: Sink::open(2, cap),
            base_env,
            shutting_down: false,
            dropped_reported: 0,
        }
    }

    fn policy(&self, dir: &ServiceDir) -> Policy {
        let (stay_down_codes, has_finish, stop) = match &dir.kind {
            Kind::Native(s) => (s.stay_down_exit_codes.clone(), false, s.stop_timeout_ms),
            // C-SVC-3 holds for gateway slots whichever form wrote them: a gateway that exits 0
            // (an intentional stop) or 78 (fatal config) stays down. Other s6 services follow s6.
            Kind::S6 { finish, .. } if dir.name.starts_with("gateway-") => (vec![0, 78], *finish, None),
            Kind::S6 { finish, .. } => (Vec::new(), *finish, None),
        };
        Policy {
            stay_down_codes,
            has_finish,
            stop_timeout: Duration::from_millis(stop.unwrap_or(self.cfg.stop_timeout_ms)),
            finish_timeout: Duration::from_secs(5),
            backoff: self.cfg.backoff,
        }
    }

    /// Bring the slot table in line with the scan directory. New directories are started (unless
    /// they have a `down` file); with `prune`, or when the directory is gone for good, removed
    /// ones are stopped and dropped.
    pub fn rescan(&mut self, now: Instant) {
        let names = servicedir::list(&self.cfg.scan_dir);
        for name in &names {
            if self.slots.get(name).is_some_and(|s| !s.removed) {
                continue;
            }
            if let Some(old) = self.slots.get(name) {
                // Re-created while the old one is still stopping: wait until it is gone.
                if !old.m.is_idle() {
                    continue;
                }
                self.drop_slot(name);
            }
            match ServiceDir::load(&self.cfg.scan_dir, name) {
                Ok(dir) => self.add(dir, now),
                Err(LoadError::NotAService) => {}
                Err(LoadError::Invalid(e)) => error!("service {name} not started: {e}"),
            }
        }
        let gone: Vec<String> =
            self.slots.iter().filter(|(n, s)| !s.removed && !names.contains(n)).map(|(n, _)| n.clone()).collect();
        for name in gone {
            info!("service {name}: directory removed, stopping it");
            if let Some(s) = self.slots.get_mut(&name) {
                s.removed = true;
            }
            self.event(&name, Event::Down, now);
        }
        self.collect_garbage();
    }

    fn add(&mut self, dir: ServiceDir, now: Instant) {
        let name = dir.name.clone();
        let policy = self.policy(&dir);
        let pipes = (|| -> std::io::Result<(Fanout, Option<Fanout>, Option<Logger>)> {
            let (r, w) = nonblocking_pipe()?;
            let (file, logger, err) = match &dir.kind {
                Kind::Native(spec) => {
                    let owner = self.identity_for(&dir).map(|i| (i.uid, i.gid));
                    let file = spec.log.dir.clone().map(|d| {
                        RotatingFile::new(
                            d,
                            spec.log.max_bytes.unwrap_or(self.cfg.logs.max_bytes),
                            spec.log.keep.unwrap_or(self.cfg.logs.keep),
                            owner,
                        )
                    });
                    (file, None, None)
                }
                Kind::S6 { logger, .. } => {
                    let logger = if *logger {
                        // Blocking pipe: the logger reads it as its stdin.
                        let (lr, lw) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                        Some(Logger { m: Machine::new(self.policy_logger(), true, now), r: lr, w: Some(lw) })
                    } else {
                        None
                    };
                    let (er, ew) = nonblocking_pipe()?;
                    let err =
                        Fanout { r: er, w: ew, split: LineSplitter::default(), file: None, to: Some(Stream::Stderr) };
                    (None, logger, Some(err))
                }
            };
            let to = match &dir.kind {
                Kind::Native(spec) => spec.log.stdout.then_some(Stream::Stdout),
                Kind::S6 { .. } => Some(Stream::Stdout),
            };
            Ok((Fanout { r, w, split: LineSplitter::default(), file, to }, err, logger))
        })();
        let (out, err, logger) = match pipes {
            Ok(p) => p,
            Err(e) => {
                error!("service {name} not started: cannot create its pipes: {e}");
                return;
            }
        };
        let wanted = !dir.down_file && !self.shutting_down;
        info!("service {name}: registered ({}, {})", kind_name(&dir.kind), if wanted { "starting" } else { "down" });
        let slot =
            Slot { m: Machine::new(policy, wanted, now), dir, out, err, logger, finish_pid: None, removed: false };
        self.slots.insert(name.clone(), slot);
        if let Some(slot) = self.slots.get_mut(&name) {
            if let Some(l) = slot.logger.as_mut() {
                let a = l.m.start();
                self.run_logger_actions(&name, a, now);
            }
        }
        let a = self.slots.get_mut(&name).map(|s| s.m.start()).unwrap_or_default();
        self.run_actions(&name, a, now);
    }

    fn policy_logger(&self) -> Policy {
        Policy {
            stay_down_codes: Vec::new(),
            has_finish: false,
            stop_timeout: Duration::from_millis(self.cfg.stop_timeout_ms),
            finish_timeout: Duration::from_secs(5),
            backoff: self.cfg.backoff,
        }
    }

    /// The identity a service runs as: the spec's user (native), or the owner of `run` (s6).
    /// An s6 `run` owned by root runs as root, as under s6; one written by the hermes user runs
    /// as hermes, so a slot created by Hermes can never run code as root.
    fn identity_for(&self, dir: &ServiceDir) -> Option<Identity> {
        match &dir.kind {
            Kind::Native(spec) => spec.user.as_deref().and_then(|u| match Identity::resolve(u) {
                Ok(i) => Some(i),
                Err(e) => {
                    warn!("service {}: user {u}: {e}", dir.name);
                    None
                }
            }),
            Kind::S6 { run_uid: 0, .. } => None,
            Kind::S6 { run_uid, run_gid, .. } => {
                let mut id = Identity::resolve(&run_uid.to_string()).unwrap_or(Identity {
                    uid: *run_uid,
                    gid: *run_gid,
                    groups: vec![*run_gid],
                    name: None,
                    home: None,
                });
                if id.name.is_none() {
                    id.gid = *run_gid;
                    id.groups = vec![*run_gid];
                }
                Some(id)
            }
        }
    }

    fn env_for(&self, extra: &BTreeMap<String, String>, home: Option<&str>) -> Vec<(OsString, OsString)> {
        let mut overlay: Vec<(OsString, OsString)> = Vec::new();
        if let Some(h) = home {
            overlay.push(("HOME".into(), h.into()));
        }
        overlay.extend(extra.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))));
        crate::envdir::merge(self.base_env.iter().cloned(), &overlay)
    }

    fn spawn_service(&mut self, name: &str) -> Result<i32, String> {
        let slot = self.slots.get(name).ok_or("no such slot")?;
        let dir = &slot.dir;
        let id = self.identity_for(dir);
        if matches!(&dir.kind, Kind::Native(s) if s.user.is_some()) && id.is_none() {
            return Err("its user cannot be resolved".into());
        }
        let home = id.as_ref().filter(|i| !i.is_root()).map(|_| self.cfg.hermes_home.to_string_lossy().into_owned());
        let mut cmd = match &dir.kind {
            Kind::Native(spec) => {
                let mut argv = spec.command.clone();
                let path = self.path_var();
                if !argv[0].contains('/') {
                    match crate::routing::which(&argv[0], &path) {
                        Some(p) => argv[0] = p.to_string_lossy().into_owned(),
                        None => return Err(format!("{}: not found on PATH", argv[0])),
                    }
                }
                let mut c = Command::new(&argv);
                let spec_home = spec.env.get("HOME").cloned();
                c.env(self.env_for(&spec.env, spec_home.as_deref().or(home.as_deref())));
                c.cwd(spec.cwd.as_deref().unwrap_or(std::path::Path::new("/")));
                c.stdio = [None, Some(slot.out.w.as_raw_fd()), Some(slot.out.w.as_raw_fd())];
                c
            }
            Kind::S6 { .. } => {
                let mut c = Command::new(&[dir.path.join("run").as_os_str().as_encoded_bytes()]);
                c.env(self.env_for(&BTreeMap::new(), home.as_deref()));
                c.cwd(&dir.path);
                let out = slot.logger.as_ref().and_then(|l| l.w.as_ref()).unwrap_or(&slot.out.w).as_raw_fd();
                c.stdio = [None, Some(out), slot.err.as_ref().map(|e| e.w.as_raw_fd())];
                c
            }
        };
        cmd.identity = id;
        cmd.group = spawn::Group::Session;
        let devnull = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        cmd.stdio[0] = Some(devnull.as_raw_fd());
        cmd.spawn().map(|p| p.as_raw()).map_err(|e| e.to_string())
    }

    fn spawn_aux(&mut self, name: &str, role: Role, args: &[String]) -> Result<i32, String> {
        let slot = self.slots.get(name).ok_or("no such slot")?;
        let (cwd, id) = match role {
            Role::Logger => {
                let p = slot.dir.path.join("log");
                let id = std::fs::metadata(p.join("run"))
                    .ok()
                    .filter(|m| std::os::unix::fs::MetadataExt::uid(m) != 0)
                    .and_then(|m| Identity::resolve(&std::os::unix::fs::MetadataExt::uid(&m).to_string()).ok());
                (p, id)
            }
            _ => (slot.dir.path.clone(), self.identity_for(&slot.dir)),
        };
        let script = cwd.join(if role == Role::Finish { "finish" } else { "run" });
        let mut argv = vec![script.to_string_lossy().into_owned()];
        argv.extend_from_slice(args);
        let mut c = Command::new(&argv);
        let home = id.as_ref().filter(|i| !i.is_root()).map(|_| self.cfg.hermes_home.to_string_lossy().into_owned());
        c.env(self.env_for(&BTreeMap::new(), home.as_deref()));
        c.cwd(&cwd);
        c.identity = id;
        let devnull = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        c.stdio = match role {
            // The logger's stdout is the container's stdout; s6-log writes it without blocking.
            Role::Logger => {
                [slot.logger.as_ref().map(|l| l.r.as_raw_fd()), None, slot.err.as_ref().map(|e| e.w.as_raw_fd())]
            }
            _ => [Some(devnull.as_raw_fd()), Some(slot.out.w.as_raw_fd()), slot.err.as_ref().map(|e| e.w.as_raw_fd())],
        };
        c.spawn().map(|p| p.as_raw()).map_err(|e| e.to_string())
    }

    fn path_var(&self) -> String {
        self.base_env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.to_string_lossy().into_owned())
            .unwrap_or_else(|| crate::routing::path_with_command(None))
    }

    fn run_actions(&mut self, name: &str, actions: Vec<Action>, now: Instant) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            let more = match a {
                Action::Spawn => {
                    let r = self.spawn_service(name);
                    let Some(slot) = self.slots.get_mut(name) else { return };
                    match r {
                        Ok(pid) => {
                            self.pids.insert(pid, (name.to_string(), Role::Service));
                            slot.m.spawned(Some(pid), now)
                        }
                        Err(e) => {
                            warn!("service {name}: cannot start: {e}");
                            slot.m.spawned(None, now)
                        }
                    }
                }
                Action::SpawnFinish { code, signal } => {
                    let r = self.spawn_aux(name, Role::Finish, &[code.to_string(), signal.to_string()]);
                    let Some(slot) = self.slots.get_mut(name) else { return };
                    match r {
                        Ok(pid) => {
                            self.pids.insert(pid, (name.to_string(), Role::Finish));
                            slot.finish_pid = Some(pid);
                            slot.m.finish_spawned(Some(pid), now)
                        }
                        Err(e) => {
                            warn!("service {name}: cannot run finish: {e}");
                            slot.m.finish_spawned(None, now)
                        }
                    }
                }
                Action::Kill(target, sig) => {
                    let Some(slot) = self.slots.get(name) else { return };
                    let pid = match target {
                        Target::Service => slot.m.pid(),
                        Target::Finish => slot.finish_pid,
                    };
                    if let Some(pid) = pid.filter(|p| *p > 1) {
                        // The whole process group, so grandchildren go too (C-SVC-8).
                        // SAFETY: plain kill(2).
                        unsafe { libc::kill(-pid, sig) };
                    }
                    Vec::new()
                }
            };
            queue.extend(more);
        }
    }

    fn run_logger_actions(&mut self, name: &str, actions: Vec<Action>, now: Instant) {
        for a in actions {
            match a {
                Action::Spawn => {
                    let r = self.spawn_aux(name, Role::Logger, &[]);
                    let Some(l) = self.slots.get_mut(name).and_then(|s| s.logger.as_mut()) else { return };
                    let more = match r {
                        Ok(pid) => {
                            self.pids.insert(pid, (name.to_string(), Role::Logger));
                            l.m.spawned(Some(pid), now)
                        }
                        Err(e) => {
                            warn!("service {name}/log: cannot start: {e}");
                            l.m.spawned(None, now)
                        }
                    };
                    self.run_logger_actions(name, more, now);
                }
                Action::Kill(_, sig) => {
                    if let Some(pid) = self.slots.get(name).and_then(|s| s.logger.as_ref()).and_then(|l| l.m.pid()) {
                        // SAFETY: plain kill(2).
                        unsafe { libc::kill(-pid, sig) };
                    }
                }
                Action::SpawnFinish { .. } => {}
            }
        }
    }

    fn event(&mut self, name: &str, ev: Event, now: Instant) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        let a = slot.m.handle(ev, now);
        self.run_actions(name, a, now);
    }

    /// A child exited. Returns false when it is not one of ours (an orphan).
    pub fn on_exit(&mut self, pid: i32, status: nix::sys::wait::WaitStatus, now: Instant) -> bool {
        let Some((name, role)) = self.pids.remove(&pid) else { return false };
        let Some(exit) = exit_of(status) else { return true };
        match role {
            Role::Service => {
                self.drain(&name);
                if let Some(s) = self.slots.get_mut(&name) {
                    let flush = |f: &mut Fanout, out: &mut Sink, err: &mut Sink| {
                        let to = f.to;
                        let file = &mut f.file;
                        let ts = crate::logs::timestamp(SystemTime::now());
                        f.split.flush(|l| deliver(&ts, l, to, file, out, err));
                    };
                    flush(&mut s.out, &mut self.stdout, &mut self.stderr);
                    if let Some(e) = s.err.as_mut() {
                        flush(e, &mut self.stdout, &mut self.stderr);
                    }
                    if let Some(f) = s.out.file.as_mut() {
                        let _ = f.flush();
                    }
                }
                match exit {
                    Exit::Code(c) => info!("service {name}: exited with code {c}"),
                    Exit::Signal(s) => info!("service {name}: killed by signal {s}"),
                }
                self.event(&name, Event::Exited(exit), now);
            }
            Role::Finish => {
                if let Some(s) = self.slots.get_mut(&name) {
                    s.finish_pid = None;
                }
                self.event(&name, Event::FinishResult(exit), now);
            }
            Role::Logger => {
                let Some(l) = self.slots.get_mut(&name).and_then(|s| s.logger.as_mut()) else { return true };
                // A logger whose service is gone for good may stop; otherwise it always restarts.
                if l.w.is_none() {
                    l.m.wanted_up = false;
                }
                let a = l.m.handle(Event::Exited(exit), now);
                self.run_logger_actions(&name, a, now);
            }
        }
        self.collect_garbage();
        true
    }

    /// Drop slots that are removed (or everything, at shutdown) once nothing of them runs; close
    /// the logger pipe's write end once the service is down for good, so the logger sees EOF.
    fn collect_garbage(&mut self) {
        let mut dead = Vec::new();
        for (name, s) in self.slots.iter_mut() {
            if !(s.removed || self.shutting_down) || !s.m.is_idle() || s.finish_pid.is_some() {
                continue;
            }
            match s.logger.as_mut() {
                Some(l) if !l.m.is_idle() => {
                    l.w = None;
                    l.m.wanted_up = false;
                }
                _ => dead.push(name.clone()),
            }
        }
        for name in dead {
            if self.slots.get(&name).is_some_and(|s| s.removed) {
                self.drop_slot(&name);
            }
        }
    }

    fn drop_slot(&mut self, name: &str) {
        self.drain(name);
        if let Some(mut s) = self.slots.remove(name) {
            if let Some(f) = s.out.file.as_mut() {
                let _ = f.flush();
            }
            info!("service {name}: dropped");
        }
    }

    pub fn tick(&mut self, now: Instant) {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for name in names {
            self.event(&name, Event::Tick, now);
            let la = self.slots.get_mut(&name).and_then(|s| s.logger.as_mut()).map(|l| l.m.handle(Event::Tick, now));
            if let Some(a) = la {
                self.run_logger_actions(&name, a, now);
            }
        }
        self.collect_garbage();
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.slots
            .values()
            .flat_map(|s| [s.m.deadline(), s.logger.as_ref().and_then(|l| l.m.deadline())])
            .flatten()
            .min()
    }

    /// Stop everything for container shutdown. Loggers are left to drain until their service is
    /// down (then they see EOF).
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for name in names {
            self.event(&name, Event::Down, now);
        }
        self.collect_garbage();
    }

    /// Nothing of any service runs any more.
    pub fn idle(&self) -> bool {
        self.pids.is_empty()
    }

    /// Every process group we know, for the final SIGKILL.
    pub fn pgids(&self) -> Vec<i32> {
        self.pids.keys().copied().collect()
    }

    /// Backpressure on the container's stdout: while its buffer is over half full and the reader
    /// is still taking data (progress within `STALL`), service pipes are not read, so services
    /// block briefly as under s6-log instead of losing lines. A reader stuck for longer than
    /// `STALL` no longer holds anyone back: lines are then dropped for stdout (and counted).
    /// Returns the moment reading resumes by itself, when paused.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        const STALL: Duration = Duration::from_secs(1);
        let busy = |s: &Sink| s.buffered() * 2 > s.capacity() && now < s.last_progress + STALL;
        [&self.stdout, &self.stderr].into_iter().filter(|s| busy(s)).map(|s| s.last_progress + STALL).max()
    }

    /// Read what every slot's pipes hold now (at exit: nothing written before the stop is lost).
    pub fn drain_all(&mut self) {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for n in names {
            self.drain(&n);
        }
    }

    /// The fds to poll for reading, each with the slot it belongs to.
    pub fn read_fds(&self) -> Vec<(RawFd, String)> {
        let mut v = Vec::new();
        for (n, s) in &self.slots {
            v.push((s.out.r.as_raw_fd(), n.clone()));
            if let Some(e) = &s.err {
                v.push((e.r.as_raw_fd(), n.clone()));
            }
        }
        v
    }

    /// Read what a slot's pipes hold now, and deliver whole lines.
    pub fn drain(&mut self, name: &str) {
        let Some(s) = self.slots.get_mut(name) else { return };
        let mut buf = [0u8; 65536];
        for f in std::iter::once(&mut s.out).chain(s.err.as_mut()) {
            // Bounded rounds per call so one chatty service cannot starve the loop.
            for _ in 0..16 {
                match nix::unistd::read(f.r.as_raw_fd(), &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let to = f.to;
                        let file = &mut f.file;
                        let (out, err) = (&mut self.stdout, &mut self.stderr);
                        let ts = crate::logs::timestamp(SystemTime::now());
                        f.split.feed(&buf[..n], |l| deliver(&ts, l, to, file, out, err));
                        if n < buf.len() {
                            break;
                        }
                    }
                }
            }
            if let Some(file) = f.file.as_mut() {
                if let Err(e) = file.flush() {
                    error!("service {name}: cannot write its log file in {}: {e}", file.dir.display());
                }
            }
        }
        self.stdout.flush();
        self.stderr.flush();
        let dropped = self.stdout.dropped_lines + self.stderr.dropped_lines;
        if dropped > self.dropped_reported {
            warn!(
                "container stdout is not being read fast enough: {dropped} line(s) dropped there so far (log files keep them)"
            );
            self.dropped_reported = dropped;
        }
    }

    // ---- control -------------------------------------------------------------------------

    pub fn status(&self, names: &[String]) -> Result<Vec<ServiceStatus>, String> {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let pick: Vec<&String> = if names.is_empty() { self.slots.keys().collect() } else { names.iter().collect() };
        pick.into_iter()
            .map(|n| {
                let s = self.slots.get(n).filter(|s| !s.removed).ok_or_else(|| format!("{n}: no such service"))?;
                Ok(status_of(n, s, now, wall_now))
            })
            .collect()
    }

    /// Apply a control verb to services (all when `names` is empty).
    pub fn command(&mut self, names: &[String], ev: Event, now: Instant) -> Result<(), String> {
        if names.iter().any(|n| self.slots.get(n).is_none_or(|s| s.removed)) {
            self.rescan(now);
        }
        let pick: Vec<String> = if names.is_empty() { self.slots.keys().cloned().collect() } else { names.to_vec() };
        if let Some(bad) = pick.iter().find(|n| self.slots.get(*n).is_none_or(|s| s.removed)) {
            return Err(format!("{bad}: no such service in {}", self.cfg.scan_dir.display()));
        }
        if self.shutting_down && matches!(ev, Event::Up | Event::Once | Event::Restart) {
            return Err("the container is stopping".into());
        }
        for n in pick {
            self.event(&n, ev, now);
        }
        Ok(())
    }

    pub fn wait_met(&self, names: &[String], until: control::WaitFor, any: bool) -> bool {
        let pick: Vec<&Slot> = if names.is_empty() {
            self.slots.values().filter(|s| !s.removed).collect()
        } else {
            names.iter().filter_map(|n| self.slots.get(n)).collect()
        };
        let ok = |s: &&Slot| match until {
            control::WaitFor::Up => matches!(s.m.state, State::Up { .. }),
            // s6's "down": the process is gone (a stopping one still counts as up).
            control::WaitFor::Down => s.m.pid().is_none(),
            control::WaitFor::Finished => s.m.is_idle() && s.finish_pid.is_none(),
            control::WaitFor::Boot => true,
        };
        // A named service that is gone counts as down/finished.
        let missing = names.iter().filter(|n| !self.slots.contains_key(*n)).count();
        let missing_ok = matches!(until, control::WaitFor::Down | control::WaitFor::Finished);
        if any {
            pick.iter().any(ok) || (missing > 0 && missing_ok)
        } else {
            pick.iter().all(ok) && (missing == 0 || missing_ok)
        }
    }
}

fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::Native(_) => "native",
        Kind::S6 { .. } => "s6",
    }
}

/// One line to its stream and file. `ts` is taken once per read: the lines of one read arrived
/// together, and formatting a timestamp per line was a third of PID 1's time on a burst.
fn deliver(ts: &str, line: &[u8], to: Option<Stream>, file: &mut Option<RotatingFile>, out: &mut Sink, err: &mut Sink) {
    match to {
        Some(Stream::Stdout) => out.line(line),
        Some(Stream::Stderr) => err.line(line),
        None => {}
    }
    if let Some(f) = file {
        if let Err(e) = f.write_line(ts, line) {
            error!("cannot write log file in {}: {e} (lines still go to stdout)", f.dir.display());
        }
    }
}

fn status_of(name: &str, s: &Slot, now: Instant, wall_now: SystemTime) -> ServiceStatus {
    let since = wall(s.m.since, wall_now, now);
    ServiceStatus {
        name: name.to_string(),
        state: s.m.state.name().to_string(),
        pid: s.m.pid(),
        since_ms: since.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64,
        wanted_up: s.m.wanted_up,
        normally_up: !s.dir.down_file,
        restarts: s.m.failures,
        last_exit: s.m.last_exit.map(|e| match e {
            Exit::Code(c) => control::Exit { code: Some(c), signal: None },
            Exit::Signal(g) => control::Exit { code: None, signal: Some(g) },
        }),
        restart_in_ms: match s.m.state {
            State::Backoff { until } => Some(until.saturating_duration_since(now).as_millis() as u64),
            _ => None,
        },
        kind: kind_name(&s.dir.kind).to_string(),
        has_logger: s.logger.is_some(),
        failing_since_ms: s.m.failing_since.map(|t| {
            wall(t, wall_now, now).duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
        }),
        log_dir: match &s.dir.kind {
            Kind::Native(spec) => spec.log.dir.as_ref().map(|d| d.display().to_string()),
            _ => None,
        },
    }
}
