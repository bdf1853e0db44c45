//! The supervisor runtime: owns every service's processes, pipes and log files, and executes
//! what each service's pure state machine (`machine`) decides. It never blocks: init's event
//! loop hands it readable pipes, exits and ticks.
//!
//! Pipes belong to PID 1 for the life of a slot, so a restarting service or logger never loses
//! a buffered line: native services write stdout+stderr into one pipe that PID 1 fans out to
//! the container's stdout and a timestamped rotated file; s6 services with `log/run` write
//! stdout into a pipe whose read end is the logger's stdin (PID 1 keeps both ends open).

mod launch;
pub mod machine;
pub mod servicedir;
mod supervise;

use crate::config::Config;
use crate::control::{self, ErrorCode, Failure, ServiceStatus};
use crate::creds::Identity;
use crate::logs::{LineSplitter, RotatingFile, Sink};
use crate::spawn::{self, Command};
use launch::Program;
use machine::{Action, Event, Exit, Machine, Policy, State, Target};
use nix::sys::signal::Signal;
use servicedir::{Kind, LoadError, ServiceDir};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant, SystemTime};
use tracing::{error, info, warn};

/// Which of a slot's machines an action belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Unit {
    Service,
    Logger,
}

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
    /// The writer exited: the partial last line is flushed once the pipe is read empty (it may
    /// still hold data the container's stdout could not take yet).
    flush_when_empty: bool,
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
    /// s6's `supervise/` files, when the open-file budget allows them.
    supervise: Option<supervise::Supervise>,
}

pub struct Supervisor {
    cfg: Config,
    slots: BTreeMap<String, Slot>,
    pids: BTreeMap<i32, (String, Program)>,
    pub stdout: Sink,
    pub stderr: Sink,
    /// The environment every child starts from (container env + snapshot + PATH with /command).
    base_env: Vec<(OsString, OsString)>,
    shutting_down: bool,
    dropped_reported: u64,
    /// Lines are being dropped for a stalled reader (reported when it starts and when it ends).
    dropping: bool,
    /// Slots that failed to load, by what they looked like then (C-SEC-5).
    failed: HashMap<String, servicedir::Fingerprint>,
    over_limit_reported: usize,
    pipes_failing: bool,
    scan_unreadable: bool,
    /// `read_fds`' answer for a set of held-back streams, until the slot table changes.
    read_fds: Option<(u8, ReadFds)>,
    supervise_failing: bool,
    /// Descriptors the slots hold, and PID 1's limit on open files.
    fds: usize,
    nofile: usize,
}

/// Descriptors kept free of slots: the control socket's connections, spawns, boot, logs.
const FD_RESERVE: usize = 256;

/// Fds to poll, each with its slot's name; `true` marks a `supervise/control` FIFO.
pub type ReadFds = std::rc::Rc<[(RawFd, String, bool)]>;

/// A stream whose sink has less room than this is held back (its pipes are not read): one read
/// then always has room for at least a few bytes beyond a partial line (< MAX_LINE).
const HOLD_BELOW: usize = crate::logs::MAX_LINE + 128;

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
            dropping: false,
            failed: HashMap::new(),
            over_limit_reported: 0,
            pipes_failing: false,
            scan_unreadable: false,
            read_fds: None,
            supervise_failing: false,
            fds: 0,
            nofile: nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or(1024, |(soft, _)| soft.min(usize::MAX as u64) as usize),
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
    /// they have a `down` file); removed or replaced ones are stopped and dropped. O(N) in the
    /// number of entries, and a slot that failed to load is not read again until it changes.
    pub fn rescan(&mut self, now: Instant) {
        let scan = match crate::fsx::open_dir_path(&self.cfg.scan_dir) {
            Ok(fd) => fd,
            Err(e) => {
                if !self.scan_unreadable {
                    error!("cannot read the scan directory {}: {e}", self.cfg.scan_dir.display());
                    self.scan_unreadable = true;
                }
                return;
            }
        };
        self.scan_unreadable = false;
        let names = servicedir::list(scan.as_fd());
        self.failed.retain(|n, _| names.contains(n));
        let mut over_limit = 0usize;
        for name in &names {
            if let Some(old) = self.slots.get(name) {
                if !old.removed {
                    // The same name, another directory (renamed over it): the old slot goes.
                    if servicedir::inode_of(scan.as_fd(), name).is_some_and(|i| i != old.dir.inode) {
                        info!("service {name}: directory replaced, stopping the old one");
                        if let Some(s) = self.slots.get_mut(name) {
                            s.removed = true;
                        }
                        self.event(name, Event::Down, now);
                    }
                    continue;
                }
                // Re-created while the old one is still stopping: wait until it is gone.
                if !old.m.is_idle() || old.finish_pid.is_some() {
                    continue;
                }
                self.drop_slot(name);
            }
            let fp = servicedir::fingerprint(scan.as_fd(), name);
            if fp.is_some() && self.failed.get(name) == fp.as_ref() {
                continue;
            }
            if self.slots.len() >= self.cfg.max_services {
                over_limit += 1;
                continue;
            }
            match ServiceDir::load(scan.as_fd(), &self.cfg.scan_dir, name) {
                Ok(dir) => {
                    self.failed.remove(name);
                    self.add(dir, now);
                }
                Err(LoadError::NotAService) => {}
                Err(LoadError::Invalid(e)) => {
                    error!("service {name} not started: {e}");
                    if let Some(fp) = fp {
                        self.failed.insert(name.clone(), fp);
                    }
                }
            }
        }
        if over_limit != self.over_limit_reported {
            if over_limit > 0 {
                error!(
                    "{over_limit} service(s) not started: at most {} services (max_services in the config)",
                    self.cfg.max_services
                );
            }
            self.over_limit_reported = over_limit;
        }
        let gone: Vec<String> =
            self.slots.iter().filter(|(n, s)| !s.removed && !names.contains(*n)).map(|(n, _)| n.clone()).collect();
        for name in gone {
            info!("service {name}: directory removed, stopping it");
            if let Some(s) = self.slots.get_mut(&name) {
                s.removed = true;
            }
            self.event(&name, Event::Down, now);
        }
        self.collect_garbage();
    }

    /// Descriptors a slot holds for its life: its pipes, its log file and directory, and (when
    /// kept) the `supervise/` lock and control FIFO.
    fn fds_of(dir: &ServiceDir) -> usize {
        match &dir.kind {
            Kind::Native(spec) => 2 + if spec.log.dir.is_some() { 2 } else { 0 },
            Kind::S6 { logger, .. } => 4 + if *logger { 2 } else { 0 },
        }
    }

    fn add(&mut self, dir: ServiceDir, now: Instant) {
        let name = dir.name.clone();
        let policy = self.policy(&dir);
        // The open-file budget (C-SEC-5): what the slots hold, plus a reserve for the control
        // socket, spawns and boot, stays under PID 1's limit, so a flood of slots can never
        // starve the rest of PID 1 of descriptors.
        let need = Self::fds_of(&dir);
        if self.fds + need + FD_RESERVE > self.nofile {
            if !std::mem::replace(&mut self.pipes_failing, true) {
                error!(
                    "service {name} not started: the open-file limit ({}) is reached (further slots not reported)",
                    self.nofile
                );
            }
            return;
        }
        // supervise/ files come second: they are kept only while pipes for every slot still
        // allowed (`max_services`) fit after them.
        let room_for_rest = 2 * self.cfg.max_services.saturating_sub(self.slots.len() + 1);
        let keep_supervise = self.fds + need + supervise::FDS + FD_RESERVE + room_for_rest <= self.nofile;
        let pipes = (|| -> std::io::Result<(Fanout, Option<Fanout>, Option<Logger>)> {
            let (r, w) = nonblocking_pipe()?;
            let (file, logger, err) = match &dir.kind {
                Kind::Native(spec) => {
                    // PID 1 writes the log as the slot's owner (or the user a root slot names).
                    let writer = match dir.owner {
                        Some(uid) => launch::owner_uid_identity(uid),
                        None => spec.user.as_deref().and_then(|u| Identity::resolve(u).ok()),
                    };
                    let file = spec.log.dir.clone().map(|d| {
                        RotatingFile::new(
                            d,
                            spec.log.max_bytes.unwrap_or(self.cfg.logs.max_bytes),
                            spec.log.keep.unwrap_or(self.cfg.logs.keep),
                            writer,
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
                    let err = Fanout {
                        r: er,
                        w: ew,
                        split: LineSplitter::default(),
                        file: None,
                        to: Some(Stream::Stderr),
                        flush_when_empty: false,
                    };
                    (None, logger, Some(err))
                }
            };
            let to = match &dir.kind {
                Kind::Native(spec) => spec.log.stdout.then_some(Stream::Stdout),
                Kind::S6 { .. } => Some(Stream::Stdout),
            };
            Ok((Fanout { r, w, split: LineSplitter::default(), file, to, flush_when_empty: false }, err, logger))
        })();
        let (out, err, logger) = match pipes {
            Ok(p) => p,
            Err(e) => {
                // Reported once per episode: a flood of slots must not flood stderr too.
                if !std::mem::replace(&mut self.pipes_failing, true) {
                    error!("service {name} not started: cannot create its pipes: {e} (further failures not reported)");
                }
                return;
            }
        };
        self.pipes_failing = false;
        let wanted = !dir.down_file && !self.shutting_down;
        info!("service {name}: registered ({}, {})", kind_name(&dir.kind), if wanted { "starting" } else { "down" });
        let writer = dir.owner.and_then(launch::owner_uid_identity);
        let opened = if keep_supervise {
            supervise::Supervise::open(&self.cfg.scan_dir, &name, dir.inode, writer)
        } else {
            Err(std::io::Error::other("the open-file limit is reached"))
        };
        let sv = match opened {
            Ok(sv) => Some(sv),
            Err(e) => {
                if !std::mem::replace(&mut self.supervise_failing, true) {
                    warn!(
                        "service {name}: no s6 supervise/ files (s6's own tools will not see it): {e} (not reported again)"
                    );
                }
                None
            }
        };
        let slot = Slot {
            m: Machine::new(policy, wanted, now),
            dir,
            out,
            err,
            logger,
            finish_pid: None,
            removed: false,
            supervise: sv,
        };
        self.fds += Self::fds_of(&slot.dir) + if slot.supervise.is_some() { supervise::FDS } else { 0 };
        self.slots.insert(name.clone(), slot);
        self.read_fds = None;
        if let Some(slot) = self.slots.get_mut(&name) {
            if let Some(l) = slot.logger.as_mut() {
                let a = l.m.start();
                self.run_actions(&name, Unit::Logger, a, now);
            }
        }
        let a = self.slots.get_mut(&name).map(|s| s.m.start()).unwrap_or_default();
        self.run_actions(&name, Unit::Service, a, now);
        self.publish_status(&name, now);
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

    fn env_for(&self, extra: &BTreeMap<String, String>, home: Option<&str>) -> Vec<(OsString, OsString)> {
        let mut overlay: Vec<(OsString, OsString)> = Vec::new();
        if let Some(h) = home {
            overlay.push(("HOME".into(), h.into()));
        }
        overlay.extend(extra.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))));
        crate::envdir::merge(self.base_env.iter().cloned(), &overlay)
    }

    /// Start one program of a slot: identity and file decided now, from the directory itself
    /// (`launch`), for services, finish scripts and loggers alike.
    fn spawn(&mut self, name: &str, program: Program, args: &[String]) -> Result<i32, String> {
        let slot = self.slots.get(name).ok_or("no such slot")?;
        let l = launch::prepare(&self.cfg.scan_dir, &slot.dir, program)?;
        let home = l.identity.as_ref().map(|_| self.cfg.hermes_home.to_string_lossy().into_owned());
        let devnull = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        let err_w = slot.err.as_ref().map(|e| e.w.as_raw_fd());
        let mut c = match (&l.spec, program) {
            (Some(spec), _) => {
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
                c.stdio = [Some(devnull.as_raw_fd()), Some(slot.out.w.as_raw_fd()), Some(slot.out.w.as_raw_fd())];
                c
            }
            (None, p) => {
                let script = if p == Program::Finish { "./finish" } else { "./run" };
                let mut argv = vec![script.to_string()];
                argv.extend_from_slice(args);
                let mut c = Command::new(&argv);
                c.env(self.env_for(&BTreeMap::new(), home.as_deref()));
                c.cwd_fd = Some(l.cwd.as_raw_fd());
                c.stdio = match p {
                    // The logger's stdout is the container's stdout; s6-log writes it without blocking.
                    Program::Logger => [slot.logger.as_ref().map(|l| l.r.as_raw_fd()), None, err_w],
                    Program::Service => {
                        let out = slot.logger.as_ref().and_then(|l| l.w.as_ref()).unwrap_or(&slot.out.w).as_raw_fd();
                        [Some(devnull.as_raw_fd()), Some(out), err_w]
                    }
                    Program::Finish => [Some(devnull.as_raw_fd()), Some(slot.out.w.as_raw_fd()), err_w],
                };
                c
            }
        };
        c.exec = l.exec;
        c.identity = l.identity.clone();
        if program == Program::Service {
            c.group = spawn::Group::Session;
        }
        let r = c.spawn().map(|p| p.as_raw()).map_err(|e| e.to_string());
        // The log file follows whoever the service runs as now.
        if let (Some(f), Some(_)) = (self.slots.get_mut(name).and_then(|s| s.out.file.as_mut()), &l.spec) {
            f.set_writer(l.identity);
        }
        r
    }

    fn path_var(&self) -> String {
        self.base_env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.to_string_lossy().into_owned())
            .unwrap_or_else(|| crate::routing::path_with_command(None))
    }

    /// One of a slot's two machines: its service's, or its logger's.
    fn machine(&mut self, name: &str, unit: Unit) -> Option<&mut Machine> {
        let s = self.slots.get_mut(name)?;
        match unit {
            Unit::Service => Some(&mut s.m),
            Unit::Logger => s.logger.as_mut().map(|l| &mut l.m),
        }
    }

    /// The one executor of machine actions, for services, their finish scripts and loggers
    /// alike. What an action leads to (a failed spawn, say) is queued, never recursed into.
    fn run_actions(&mut self, name: &str, unit: Unit, actions: Vec<Action>, now: Instant) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            let more = match a {
                Action::Spawn => {
                    let program = if unit == Unit::Logger { Program::Logger } else { Program::Service };
                    let r = self.spawn(name, program, &[]);
                    match &r {
                        Ok(pid) => {
                            self.pids.insert(*pid, (name.to_string(), program));
                        }
                        Err(e) => {
                            warn!("service {name}{}: cannot start: {e}", if unit == Unit::Logger { "/log" } else { "" })
                        }
                    }
                    let Some(m) = self.machine(name, unit) else { return };
                    m.spawned(r.ok(), now)
                }
                Action::SpawnFinish { code, signal } => {
                    let r = self.spawn(name, Program::Finish, &[code.to_string(), signal.to_string()]);
                    let Some(slot) = self.slots.get_mut(name) else { return };
                    match r {
                        Ok(pid) => {
                            self.pids.insert(pid, (name.to_string(), Program::Finish));
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
                    let pid = match (unit, target) {
                        (Unit::Logger, _) => slot.logger.as_ref().and_then(|l| l.m.pid()),
                        (Unit::Service, Target::Service) => slot.m.pid(),
                        (Unit::Service, Target::Finish) => slot.finish_pid,
                    };
                    if let (Some(pid), Ok(sig)) = (pid.filter(|p| *p > 1), Signal::try_from(sig)) {
                        // The whole process group, so grandchildren go too (C-SVC-8).
                        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig);
                    }
                    Vec::new()
                }
            };
            queue.extend(more);
        }
    }

    fn event(&mut self, name: &str, ev: Event, now: Instant) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        let a = slot.m.handle(ev, now);
        self.run_actions(name, Unit::Service, a, now);
        self.publish_status(name, now);
    }

    /// Keep `supervise/status` in step with the machine (rewritten only when it changed).
    fn publish_status(&mut self, name: &str, now: Instant) {
        let scan_dir = &self.cfg.scan_dir;
        let Some(s) = self.slots.get_mut(name) else { return };
        if s.supervise.is_none() || s.removed {
            return;
        }
        let st = status_of(name, s, now, SystemTime::now());
        let rec = crate::s6::status::Snapshot::from_status(&st, st.normally_up, false).pack();
        if let Some(sv) = s.supervise.as_mut() {
            sv.write_status(scan_dir, name, s.dir.inode, rec);
        }
    }

    /// Command letters from `supervise/control`, as s6-supervise reads them (what Debian's own
    /// `s6-svc` writes there).
    pub fn control_input(&mut self, name: &str, now: Instant) {
        let Some(letters) = self.slots.get_mut(name).and_then(|s| s.supervise.as_mut()).map(|sv| sv.commands()) else {
            return;
        };
        for c in letters {
            let ev = match c {
                b'u' | b'U' => Event::Up,
                b'd' | b'D' => Event::Down,
                b'o' | b'O' | b'Q' => Event::Once,
                b'r' | b't' => Event::Signal(libc::SIGTERM),
                b'a' => Event::Signal(libc::SIGALRM),
                b'b' => Event::Signal(libc::SIGABRT),
                b'q' => Event::Signal(libc::SIGQUIT),
                b'h' => Event::Signal(libc::SIGHUP),
                b'k' => Event::Signal(libc::SIGKILL),
                b'i' => Event::Signal(libc::SIGINT),
                b'1' => Event::Signal(libc::SIGUSR1),
                b'2' => Event::Signal(libc::SIGUSR2),
                b'p' => Event::Signal(libc::SIGSTOP),
                b'c' => Event::Signal(libc::SIGCONT),
                b'y' => Event::Signal(libc::SIGWINCH),
                _ => continue, // 'x' (exit the supervisor) and anything unknown
            };
            if self.shutting_down && matches!(ev, Event::Up | Event::Once) {
                continue;
            }
            self.event(name, ev, now);
        }
    }

    /// A child exited. Returns false when it is not one of ours (an orphan).
    pub fn on_exit(&mut self, pid: i32, status: nix::sys::wait::WaitStatus, now: Instant) -> bool {
        let Some((name, role)) = self.pids.remove(&pid) else { return false };
        let Some(exit) = exit_of(status) else { return true };
        match role {
            Program::Service => {
                // The partial last line goes out once the pipe is read empty: with a slow
                // container stdout, the pipe may still hold what the service wrote before it.
                if let Some(s) = self.slots.get_mut(&name) {
                    s.out.flush_when_empty = true;
                    if let Some(e) = s.err.as_mut() {
                        e.flush_when_empty = true;
                    }
                }
                self.drain(&name);
                match exit {
                    Exit::Code(c) => info!("service {name}: exited with code {c}"),
                    Exit::Signal(s) => info!("service {name}: killed by signal {s}"),
                }
                self.event(&name, Event::Exited(exit), now);
            }
            Program::Finish => {
                if let Some(s) = self.slots.get_mut(&name) {
                    s.finish_pid = None;
                }
                self.event(&name, Event::FinishResult(exit), now);
            }
            Program::Logger => {
                let Some(l) = self.slots.get_mut(&name).and_then(|s| s.logger.as_mut()) else { return true };
                // A logger whose service is gone for good may stop; otherwise it always restarts.
                if l.w.is_none() {
                    l.m.wanted_up = false;
                }
                let a = l.m.handle(Event::Exited(exit), now);
                self.run_actions(&name, Unit::Logger, a, now);
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
        if let Some(s) = self.slots.get_mut(name) {
            s.out.flush_when_empty = true;
            if let Some(e) = s.err.as_mut() {
                e.flush_when_empty = true;
            }
        }
        // Its last words are read whatever the container's stdout can take (the file gets all).
        self.drain_inner(name, Instant::now(), true);
        self.read_fds = None;
        if let Some(mut s) = self.slots.remove(name) {
            self.fds -= Self::fds_of(&s.dir) + if s.supervise.is_some() { supervise::FDS } else { 0 };
            if let Some(f) = s.out.file.as_mut() {
                let _ = f.flush();
            }
            info!("service {name}: dropped");
        }
    }

    /// Deliver timer events to the slots whose deadline has come (O(N) to find, nothing
    /// allocated for the others: thousands of idle slots cost little per loop pass).
    pub fn tick(&mut self, now: Instant) {
        let due = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        let names: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| due(s.m.deadline()) || due(s.logger.as_ref().and_then(|l| l.m.deadline())))
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            self.event(&name, Event::Tick, now);
            let la = self.slots.get_mut(&name).and_then(|s| s.logger.as_mut()).map(|l| l.m.handle(Event::Tick, now));
            if let Some(a) = la {
                self.run_actions(&name, Unit::Logger, a, now);
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

    /// How long the container's stdout reader may take nothing before lines are dropped.
    fn stall_limit(&self) -> Duration {
        Duration::from_millis(self.cfg.logs.stdout_stall_ms)
    }

    /// The sink of `stream`, if the pipes feeding it must not be read now: its free space is
    /// below what one read may need and its reader is still alive (took data within the stall
    /// limit). Services writing there then block on their full pipe, as under s6-log.
    fn held_back(&self, stream: Stream, now: Instant) -> bool {
        let s = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        s.free() < HOLD_BELOW && !s.stalled(now, self.stall_limit())
    }

    /// How many bytes of `f`'s pipe may be read now without the sink having to drop a line:
    /// the sink's free space minus the partial line already held, minus one byte per piece a
    /// long line may be cut into. Unlimited for a file-only pipe or a stalled reader.
    fn budget(to: Option<Stream>, pending: usize, out: &Sink, err: &Sink, now: Instant, stall: Duration) -> usize {
        let s = match to {
            None => return usize::MAX,
            Some(Stream::Stdout) => out,
            Some(Stream::Stderr) => err,
        };
        if s.stalled(now, stall) {
            return usize::MAX;
        }
        let avail = s.free().saturating_sub(pending);
        avail.saturating_sub(avail / (crate::logs::MAX_LINE / 2) + 2)
    }

    /// Backpressure on the container's stdout: while a stream is held back (see `held_back`),
    /// the pipes that feed it are left out of `read_fds`. Returns when a held-back stream's
    /// reader reaches the stall limit (then reading resumes and lines are dropped for that
    /// stream only), so the loop wakes then.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        let stall = self.stall_limit();
        [(Stream::Stdout, &self.stdout), (Stream::Stderr, &self.stderr)]
            .into_iter()
            .filter(|(w, _)| self.held_back(*w, now))
            .map(|(_, s)| s.last_progress + stall)
            .min()
    }

    /// Read what every slot's pipes hold now (at exit: nothing written before the stop is lost).
    /// Waits for the container's stdout to take what it holds until `deadline`; what is still
    /// in a pipe then is read anyway (dropped for a stdout that did not take it, kept in files).
    pub fn drain_all(&mut self, deadline: Instant) {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        let mut left: Vec<String> = names;
        while !left.is_empty() {
            let now = Instant::now();
            let force = now >= deadline;
            left.retain(|n| self.drain_inner(n, now, force));
            if left.is_empty() || force {
                break;
            }
            let fds: Vec<i32> = [&self.stdout, &self.stderr]
                .into_iter()
                .filter(|s| s.free() < HOLD_BELOW)
                .filter_map(|s| s.raw_fd())
                .collect();
            let mut p: Vec<libc::pollfd> =
                fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLOUT, revents: 0 }).collect();
            let ms = deadline.saturating_duration_since(Instant::now()).as_millis().clamp(1, 1000) as i32;
            // SAFETY: a valid pollfd array (possibly empty: then it only sleeps, never longer
            // than the deadline).
            unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, if p.is_empty() { 1 } else { ms }) };
        }
        self.report_drops(Instant::now());
    }

    /// The fds to poll for reading, each with the slot it belongs to: every pipe, except those
    /// feeding a held-back stream, and every `supervise/control` FIFO (see
    /// [`Supervisor::control_input`]). Built again only when the slot table or that set changed.
    pub fn read_fds(&mut self, now: Instant) -> ReadFds {
        let mask = u8::from(self.held_back(Stream::Stdout, now)) | u8::from(self.held_back(Stream::Stderr, now)) << 1;
        if let Some((m, v)) = &self.read_fds {
            if *m == mask {
                return v.clone();
            }
        }
        let held = |to: Option<Stream>| match to {
            Some(Stream::Stdout) => mask & 1 != 0,
            Some(Stream::Stderr) => mask & 2 != 0,
            None => false,
        };
        let mut v = Vec::new();
        for (n, s) in &self.slots {
            if !held(s.out.to) {
                v.push((s.out.r.as_raw_fd(), n.clone(), false));
            }
            if let Some(e) = s.err.as_ref().filter(|e| !held(e.to)) {
                v.push((e.r.as_raw_fd(), n.clone(), false));
            }
            if let Some(sv) = &s.supervise {
                v.push((sv.control_fd(), n.clone(), true));
            }
        }
        let v: ReadFds = v.into();
        self.read_fds = Some((mask, v.clone()));
        v
    }

    /// Read what a slot's pipes hold now, as far as the container's stdout can take it, and
    /// deliver whole lines.
    pub fn drain(&mut self, name: &str) {
        let now = Instant::now();
        self.drain_inner(name, now, false);
        self.report_drops(now);
    }

    /// Returns whether data may be left in the slot's pipes (held back, or rounds used up).
    /// `force` reads regardless of what the container's stdout can take.
    fn drain_inner(&mut self, name: &str, now: Instant, force: bool) -> bool {
        let stall = self.stall_limit();
        let Some(s) = self.slots.get_mut(name) else { return false };
        let mut buf = [0u8; 65536];
        let mut left = false;
        for f in std::iter::once(&mut s.out).chain(s.err.as_mut()) {
            let mut empty = false;
            // Bounded rounds per call so one chatty service cannot starve the loop.
            let mut rounds = 0;
            loop {
                if rounds == 16 {
                    left = true;
                    break;
                }
                rounds += 1;
                let budget = if force {
                    usize::MAX
                } else {
                    Self::budget(f.to, f.split.pending(), &self.stdout, &self.stderr, now, stall)
                };
                if budget == 0 {
                    left = true;
                    break;
                }
                let want = budget.min(buf.len());
                match nix::unistd::read(f.r.as_raw_fd(), &mut buf[..want]) {
                    Ok(0) => break,
                    Err(nix::Error::EINTR) => continue,
                    Err(nix::Error::EAGAIN) => {
                        empty = true;
                        break;
                    }
                    Err(_) => break,
                    Ok(n) => {
                        let to = f.to;
                        let file = &mut f.file;
                        let (out, err) = (&mut self.stdout, &mut self.stderr);
                        let ts = crate::logs::timestamp(SystemTime::now());
                        f.split.feed(&buf[..n], |l| deliver(&ts, l, to, file, out, err));
                        if n < want {
                            empty = true;
                            break;
                        }
                        if to.is_some() {
                            // Let the reader take what is queued before the next budget.
                            let sink = if to == Some(Stream::Stdout) { &mut self.stdout } else { &mut self.stderr };
                            sink.flush();
                        }
                    }
                }
            }
            if empty && std::mem::take(&mut f.flush_when_empty) {
                let to = f.to;
                let file = &mut f.file;
                let (out, err) = (&mut self.stdout, &mut self.stderr);
                let ts = crate::logs::timestamp(SystemTime::now());
                f.split.flush(|l| deliver(&ts, l, to, file, out, err));
            }
            if let Some(file) = f.file.as_mut() {
                if let Err(e) = file.flush() {
                    error!("service {name}: cannot write its log file in {}: {e}", file.dir.display());
                }
            }
        }
        self.stdout.flush();
        self.stderr.flush();
        left
    }

    /// Dropped lines are reported when dropping starts (the reader reached the stall limit)
    /// and, with their count, when it ends (the reader takes data again) — not once per line.
    fn report_drops(&mut self, now: Instant) {
        let dropped = self.stdout.dropped_lines + self.stderr.dropped_lines;
        let stall = self.stall_limit();
        if dropped > self.dropped_reported && !self.dropping {
            self.dropping = true;
            warn!(
                "container stdout took nothing for {} ms: dropping lines there until it reads again (log files keep them)",
                stall.as_millis()
            );
        }
        let stalled = self.stdout.stalled(now, stall) || self.stderr.stalled(now, stall);
        if self.dropping && (!stalled || self.shutting_down) && dropped > self.dropped_reported {
            warn!(
                "container stdout: {} line(s) dropped while its reader was stalled ({dropped} in all; log files keep them)",
                dropped - self.dropped_reported
            );
            self.dropped_reported = dropped;
            self.dropping = false;
        }
    }

    // ---- control -------------------------------------------------------------------------

    pub fn status(&self, names: &[String]) -> Result<Vec<ServiceStatus>, Failure> {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let pick: Vec<&String> = if names.is_empty() { self.slots.keys().collect() } else { names.iter().collect() };
        pick.into_iter()
            .map(|n| {
                let s = self
                    .slots
                    .get(n)
                    .filter(|s| !s.removed)
                    .ok_or_else(|| Failure::new(ErrorCode::NoSuchService, format!("{n}: no such service")))?;
                Ok(status_of(n, s, now, wall_now))
            })
            .collect()
    }

    /// Apply a control verb to services (all when `names` is empty).
    pub fn command(&mut self, names: &[String], ev: Event, now: Instant) -> Result<(), Failure> {
        if names.iter().any(|n| self.slots.get(n).is_none_or(|s| s.removed)) {
            self.rescan(now);
        }
        let pick: Vec<String> = if names.is_empty() { self.slots.keys().cloned().collect() } else { names.to_vec() };
        if let Some(bad) = pick.iter().find(|n| self.slots.get(*n).is_none_or(|s| s.removed)) {
            return Err(Failure::new(
                ErrorCode::NoSuchService,
                format!("{bad}: no such service in {}", self.cfg.scan_dir.display()),
            ));
        }
        if self.shutting_down && matches!(ev, Event::Up | Event::Once | Event::Restart) {
            return Err(Failure::new(ErrorCode::Stopping, "the container is stopping"));
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
            control::WaitFor::Boot | control::WaitFor::Sweep => true,
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
        state: s.m.state.wire(),
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
        kind: match s.dir.kind {
            Kind::Native(_) => control::ServiceKind::Native,
            Kind::S6 { .. } => control::ServiceKind::S6,
        },
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
