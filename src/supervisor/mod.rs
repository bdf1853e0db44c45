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
mod output;
pub mod servicedir;
mod status;
mod supervise;

pub use output::ReadFds;
use output::{Fanout, Stream};

use crate::config::Config;
use crate::control::{self, ErrorCode, Failure, ServiceStatus};
use crate::creds::Identity;
use crate::logs::{LineSplitter, RotatingFile, Sink};
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
    /// Rescans done (waits that named an unknown slot wait for the next one).
    rescans: u64,
    /// Descriptors the slots hold, and PID 1's limit on open files.
    fds: usize,
    nofile: usize,
}

/// Descriptors kept free of slots: the control socket's connections, spawns, boot, logs.
const FD_RESERVE: usize = 256;

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

impl Supervisor {
    pub fn new(cfg: Config, base_env: Vec<(OsString, OsString)>) -> Supervisor {
        let cap = cfg.logs.stdout_buffer_bytes;
        Supervisor {
            cfg,
            slots: BTreeMap::new(),
            pids: BTreeMap::new(),
            stdout: Sink::open(1, cap),
            stderr: crate::logs::take_stderr(cap),
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
            rescans: 0,
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
        self.rescans += 1;
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
                        Some((uid, gid)) => Some(launch::identity_of_owner(uid, gid)),
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
        info!("service {name}: registered ({}, {})", dir.kind.wire(), if wanted { "starting" } else { "down" });
        let writer = dir.owner.map(|(u, g)| launch::identity_of_owner(u, g));
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

    // ---- control -------------------------------------------------------------------------

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
}
