//! PID 1: boot, supervise, run the main program, stop cleanly, exit with its code.
//!
//! One thread, one `poll` loop. Every signal arrives through a signalfd; every child — the main
//! program, services, hooks' orphans — is reaped here and nowhere else (boot runs before the
//! loop and waits only for its own hooks). Timers are deadlines folded into poll's timeout:
//! no fixed sleeps anywhere.

use crate::boot;
use crate::config::Config;
use crate::control::{BootState, server::Server};
use crate::creds::{self, Identity};
use crate::requests::{Ctx, Requests, Todo};
use crate::routing;
use crate::shutdown::{Action as StopAction, Event as StopEvent, Shutdown};
use crate::spawn::{self, Command};
use crate::supervisor::Supervisor;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// Forwarded to the main program's process group (C-INIT-4). TERM means stop.
const FORWARD: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGALRM,
];

struct Init {
    cfg: Config,
    sup: Supervisor,
    server: Option<Server>,
    sfd: SignalFd,
    /// The dnotify watch on the scan directory (its events arrive as `dnotify_sig()` on the
    /// signalfd); dropped once the stop has begun.
    scan_watch: Option<std::fs::File>,
    /// A SIGCHLD arrived since the last reap.
    sigchld: bool,
    main_pid: Option<Pid>,
    boot: BootState,
    /// Control requests and their pending waits.
    requests: Requests,
    /// The stop sequence (a pure machine; this loop executes what it decides).
    shutdown: Shutdown,
    /// Periodic rescan (only when `rescan_interval_ms` is set).
    next_rescan: Option<Instant>,
    /// A rescan is due then: dnotify signals coalesce into one (C-SEC-5).
    rescan_at: Option<Instant>,
    /// How long the last rescan took: bursts are spaced by a multiple of it.
    rescan_cost: Duration,
    last_rescan: Option<Instant>,
    is_pid1: bool,
    /// The background part of the ownership sweep, while it runs.
    sweep: Option<boot::sweep::Background>,
    /// It has finished (or there was none): what `svc wait --sweep` waits for.
    sweep_done: bool,
}

fn blocked_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in Signal::iterator() {
        if !matches!(
            s,
            Signal::SIGKILL
                | Signal::SIGSTOP
                | Signal::SIGSEGV
                | Signal::SIGBUS
                | Signal::SIGILL
                | Signal::SIGFPE
                | Signal::SIGABRT
                | Signal::SIGTRAP
        ) {
            set.add(s);
        }
    }
    let mut raw: libc::sigset_t = *set.as_ref();
    // SAFETY: sigaddset on a valid set.
    unsafe { libc::sigaddset(&mut raw, dnotify_sig()) };
    // SAFETY: a valid sigset_t built from a SigSet.
    unsafe { SigSet::from_sigset_t_unchecked(raw) }
}

pub fn main(args: Vec<OsString>) -> i32 {
    // First of all: from here on no signal can stop PID 1 (SIGPIPE included: a write to a
    // closed stderr fails instead); they are read from the signalfd once the loop runs.
    let mask = blocked_signals();
    let blocked = mask.thread_block();
    crate::logs::init_tracing();
    // The start's lines are written together once the main program runs (or before boot waits
    // on anything): each write wakes the log reader on the way to the main program's exec.
    crate::logs::hold_stderr();
    crate::logs::write_out_on_panic();
    if let Err(e) = blocked {
        error!("fatal: stopping the container: cannot block signals: {e}");
        return 1;
    }
    // Decisions (routing, boot's legacy check) read the arguments as text; the main program
    // gets them byte for byte.
    let raw_args: Vec<Vec<u8>> = args.into_iter().map(OsStringExt::into_vec).collect();
    let args: Vec<String> = raw_args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let is_pid1 = std::process::id() == 1;
    if !is_pid1 {
        // C-INIT-6: keep working as a subreaper under another init.
        // SAFETY: prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        warn!(
            "not running as PID 1 (pid {}); {}",
            std::process::id(),
            if r == 0 {
                "acting as a child subreaper"
            } else {
                "and could not become a subreaper: orphans will not be reaped here"
            }
        );
    }
    // PID 1 holds pipes for every service; children get the container's limit back.
    crate::spawn::raise_nofile();
    // PID 1 never changes a disposition from here on.
    crate::spawn::learn_ignored_signals();
    let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => {
            error!("fatal: stopping the container: signalfd: {e}");
            return 1;
        }
    };
    let mut cfg = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            error!("fatal: stopping the container: invalid configuration: {e}");
            return 1;
        }
    };
    let uid = creds::current_uid();
    if let Err(e) = crate::users::groups() {
        warn!("{e}; supplementary groups will not be set");
    }
    let Ok(hermes) = resolve_user(&cfg, uid) else { return 1 };
    // C-MAIN-8: root, or the hermes user itself; anything else cannot own the volume.
    if uid != 0 && hermes.as_ref().is_none_or(|h| h.uid != uid) {
        crate::logs::release_stderr();
        eprintln!(
            "hermesinit: refusing to start as uid {uid}: an arbitrary --user is not supported; run the container \
             as root (the default) or as {0} (--user {1}:{2}); to match host file ownership set HERMES_UID/HERMES_GID \
             (or PUID/PGID) instead of --user",
            cfg.user,
            hermes.as_ref().map_or(10000, |h| h.uid),
            hermes.as_ref().map_or(10000, |h| h.gid),
        );
        return 1;
    }
    // Not root and /run unusable: say so, and move runtime state where the user can make it.
    crate::boot::runtime_fallback(&mut cfg, uid);
    if cfg.s6_compat {
        // C-S6-1: Hermes detects s6 by /proc/1/comm.
        // SAFETY: prctl with a valid NUL-terminated name.
        unsafe { libc::prctl(libc::PR_SET_NAME, c"s6-svscan".as_ptr(), 0, 0, 0) };
    }
    let mut server = match Server::bind(&cfg.control_socket) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(
                "control socket {} unavailable: {e} (hermesinit svc and s6 tools will not work)",
                cfg.control_socket.display()
            );
            None
        }
    };
    let t0 = Instant::now();
    // The bulk trees of the ownership sweep are healed in the background, once services run.
    boot::sweep::SPLIT.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Err(f) = boot::run(&boot::Context { config: &cfg, main_args: &args }) {
        error!("fatal: stopping the container: {}", f.reason);
        return if f.code == 0 { 1 } else { f.code };
    }
    // Boot may have changed the user's ids: resolve again (boot forgets the cached files when
    // a step that can rewrite them ran).
    let Ok(hermes) = resolve_user(&cfg, uid) else { return 1 };
    if let Some(s) = server.as_mut() {
        s.allow(hermes.as_ref().map(|h| h.uid), &cfg.user);
    }
    let base_env = child_env(&cfg);
    let scan_watch = watch(&cfg.scan_dir);
    if scan_watch.is_none() && cfg.rescan_interval_ms == 0 {
        cfg.rescan_interval_ms = 5000;
    }
    let grace = Duration::from_millis(cfg.kill_grace_ms);
    let mut init = Init {
        sup: Supervisor::new(cfg.clone(), base_env.clone()),
        cfg,
        server,
        sfd,
        scan_watch,
        sigchld: false,
        main_pid: None,
        boot: BootState::Running,
        requests: Requests::default(),
        shutdown: Shutdown::new(grace),
        next_rescan: None,
        rescan_at: None,
        rescan_cost: Duration::ZERO,
        last_rescan: None,
        is_pid1,
        sweep: None,
        sweep_done: false,
    };
    // The main program first, then the services: registering a slot is a dozen file operations
    // in /run (each a round trip to the storage driver's daemon on fuse-overlayfs), and nothing
    // the main program can ask of them is answered before the loop runs, after the rescan.
    let spawned = spawn_main(&args, &raw_args, &base_env, hermes.as_ref().filter(|_| uid == 0), &init.cfg);
    // The start's held lines, now that the main program has exec'd: before it can print much.
    init.sup.writable();
    // Before the boot's last log lines: they fault the formatting code back in now, which the
    // stop path needs for its own two lines (its page faults per stop went from 9 to 2).
    unmap_boot_text();
    match spawned {
        Ok((pid, shown)) => {
            info!("started the main program (pid {pid}): {shown}");
            init.main_pid = Some(pid);
        }
        Err((code, msg)) => {
            error!("{msg}");
            init.stop(StopEvent::MainExited(code), Instant::now());
        }
    }
    let ready = t0.elapsed();
    if !init.shutdown.stopping() {
        init.rescan(Instant::now());
    }
    init.boot = BootState::Done;
    info!("ready in {} ms", ready.as_millis());
    init.start_sweep();
    let code = init.run();
    // Nothing is left to close or free by hand: the kernel does it as the process ends.
    std::process::exit(code)
}

/// PID 1 lives as long as the container, but most of its (static) text ran once, at boot.
/// Unmap those pages from PID 1 (its resident size drops by about a third; the loop's hot pages
/// fault back in) while they stay in the page cache: MADV_DONTNEED, not MADV_PAGEOUT, which
/// evicts them when PID 1 is their only user, so the stop path, the next `svc`/`hermes` exec and
/// the next container start read the binary back from disk (a namespace start+stop took 13.4 ms
/// with PAGEOUT, 8.3 ms without: `perf stat -r 30`). Text is read-only, so dropping it loses
/// nothing.
fn unmap_boot_text() {
    // SAFETY: declarations of the linker's own symbols, with their real types (never read,
    // only their addresses taken).
    unsafe extern "C" {
        static __executable_start: u8;
        static etext: u8;
    }
    // SAFETY: linker-defined symbols bounding our own text; madvise only advises.
    unsafe {
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as usize;
        let start = (&raw const __executable_start as usize) & !(page - 1);
        let end = &raw const etext as usize;
        if end > start {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// The unprivileged user. As root we must be able to drop to it: never run the main program as
/// root by accident, so failing to resolve it is fatal then (and logged here).
fn resolve_user(cfg: &Config, uid: u32) -> Result<Option<Identity>, ()> {
    match Identity::resolve(&cfg.user) {
        Ok(h) => Ok(Some(h)),
        Err(e) if uid == 0 => {
            error!("fatal: stopping the container: cannot resolve the {} user: {e}", cfg.user);
            Err(())
        }
        Err(_) => Ok(None),
    }
}

/// The environment of every child: the container env, overlaid with the boot snapshot (hooks
/// may add variables there, C-MAIN-7), with /command on PATH (C-IMG-4).
fn child_env(cfg: &Config) -> Vec<(OsString, OsString)> {
    let own: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let snap = crate::envdir::read(&cfg.env_dir).unwrap_or_default();
    let mut env = crate::envdir::merge(own, &snap);
    let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
    let path = routing::path_with_command(path.as_deref());
    env.retain(|(k, _)| k != "PATH");
    env.push(("PATH".into(), path.into()));
    env
}

fn spawn_main(
    args: &[String],
    raw_args: &[Vec<u8>],
    env: &[(OsString, OsString)],
    drop_to: Option<&Identity>,
    cfg: &Config,
) -> Result<(Pid, String), (i32, String)> {
    let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.to_string_lossy().into_owned()).unwrap_or_default();
    let argv = routing::route_main(args, &path);
    // Run the resolved file, but keep argv[0] as the user typed it.
    let program = argv[0].clone();
    let mut exec_argv: Vec<Vec<u8>> = Vec::with_capacity(raw_args.len() + 1);
    if argv[0] == routing::HERMES_REAL {
        exec_argv.push(routing::HERMES_REAL.as_bytes().to_vec());
    }
    exec_argv.extend_from_slice(raw_args);
    let mut overlay = vec![("HOME".into(), cfg.hermes_home.clone().into_os_string())];
    if let Some(name) = drop_to.and_then(|h| h.name.clone()) {
        overlay.push(("USER".into(), name.clone().into()));
        overlay.push(("LOGNAME".into(), name.into()));
    }
    let mut cmd = Command::new(&exec_argv);
    cmd.program(&program);
    cmd.env(crate::envdir::merge(env.iter().cloned(), &overlay));
    cmd.identity = drop_to.cloned();
    // C-INIT-5: own process group, in the terminal's foreground when there is one.
    let tty = nix::unistd::isatty(0).unwrap_or(false).then_some(0);
    cmd.group = spawn::Group::Own { tty };
    let pid = cmd.spawn().map_err(|e| {
        let code = if e.errno == nix::Error::ENOENT { 127 } else { 126 };
        (code, format!("cannot start the main program {program}: {e}"))
    })?;
    // Logged by the caller once it runs: the line is not on the way to its exec.
    Ok((pid, argv.join(" ")))
}

/// The real-time signal dnotify raises for scan-directory changes. Asked of the C library once
/// (a call into a page PID 1 has otherwise dropped, on the way to forwarding a SIGTERM).
fn dnotify_sig() -> i32 {
    static SIG: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *SIG.get_or_init(|| libc::SIGRTMIN() + 2)
}

/// Watch the scan directory for entries created, deleted or renamed (C-SVC-7). dnotify rather
/// than inotify: tearing down an inotify instance waits for an SRCU grace period (7–16 ms
/// here) inside PID 1's exit, on every container stop; dnotify marks live in one global group,
/// and dropping one hands that grace period to a kernel worker instead of waiting for it.
fn watch(dir: &std::path::Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = || std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(dir);
    let f = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = std::fs::create_dir_all(dir);
            open().ok()?
        }
        Err(_) => return None,
    };
    let fd = f.as_raw_fd();
    // <fcntl.h> values the libc crate does not export (stable Linux ABI).
    const F_SETSIG: i32 = 10;
    const DN_DELETE: i32 = 0x8;
    const DN_RENAME: i32 = 0x10;
    const DN_CREATE: i32 = 0x4;
    const DN_MULTISHOT: i32 = 0x8000_0000u32 as i32;
    // SAFETY: fcntl on an fd we own, with integer arguments.
    let ok = unsafe {
        libc::fcntl(fd, F_SETSIG, dnotify_sig()) == 0
            && libc::fcntl(fd, libc::F_NOTIFY, DN_CREATE | DN_DELETE | DN_RENAME | DN_MULTISHOT) == 0
    };
    if !ok {
        warn!("cannot watch {} for changes: {}; rescanning periodically", dir.display(), nix::Error::last());
        return None;
    }
    Some(f)
}

#[derive(Clone, Copy)]
enum Token {
    Signal,
    Listener,
    Conn(u64),
    Pipe(usize),
    /// The container's stdout or stderr can take more.
    Output,
    /// Another thread queued a diagnostic.
    Logged,
    Sweep,
}

impl Init {
    fn run(&mut self) -> i32 {
        loop {
            let now = Instant::now();
            if self.shutdown.stopping() {
                let ours_left = self.main_pid.is_some() || !self.sup.idle();
                // Asked only when it decides something: while ours run, the machine waits for them.
                let tick = StopEvent::Tick { ours_left, children_left: !ours_left && has_children() };
                if let Some(code) = self.stop(tick, now) {
                    self.sup.flush_out(now + Duration::from_secs(1));
                    return code;
                }
            }
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let mut tokens: Vec<Token> = Vec::new();
            let mut add = |fd: RawFd, events: libc::c_short, t: Token| {
                fds.push(libc::pollfd { fd, events, revents: 0 });
                tokens.push(t);
            };
            add(self.sfd.as_raw_fd(), libc::POLLIN, Token::Signal);
            if let Some(s) = &self.server {
                for (fd, events, id) in s.conn_fds() {
                    add(fd, events, Token::Conn(id));
                }
                // After the connections: a connection is read before new accepts can evict it.
                if let Some(fd) = s.listen_fd(now) {
                    add(fd, libc::POLLIN, Token::Listener);
                }
            }
            if let Some(b) = &self.sweep {
                add(b.done.as_raw_fd(), libc::POLLIN, Token::Sweep);
            }
            let paused = self.sup.paused_until(now);
            let pipes = self.sup.read_fds(now);
            for (i, (fd, _, _)) in pipes.iter().enumerate() {
                add(*fd, libc::POLLIN, Token::Pipe(i));
            }
            for fd in self.sup.out_fds() {
                add(fd, libc::POLLOUT, Token::Output);
            }
            if let Some(fd) = crate::logs::logged_wake_fd() {
                add(fd, libc::POLLIN, Token::Logged);
            }
            if self.shutdown.stopping() {
                // No rescans while stopping. Dropping the watch hands its teardown to kernel
                // workers: done here, as the loop goes to sleep, they run while PID 1 waits for
                // its children rather than inside its exit.
                self.scan_watch = None;
            }
            let deadline = match (self.next_deadline(now), paused) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // SAFETY: fds is a valid array of pollfd for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, poll_timeout(now, deadline)) };
            if n < 0 {
                continue; // EINTR
            }
            let now = Instant::now();
            for (pfd, tok) in fds.iter().zip(tokens.iter()) {
                if pfd.revents == 0 {
                    continue;
                }
                match *tok {
                    Token::Signal => self.signals(now),
                    Token::Listener => {
                        if let Some(s) = self.server.as_mut() {
                            s.accept(now);
                        }
                    }
                    Token::Conn(id) => self.conn_event(id, pfd.revents, now),
                    Token::Pipe(i) if pipes[i].2 => self.sup.control_input(&pipes[i].1, now),
                    Token::Pipe(i) => self.sup.drain(&pipes[i].1),
                    Token::Output => self.sup.writable(),
                    // Queued diagnostics move into the stderr sink at the next pass.
                    Token::Logged => crate::logs::clear_logged_wake(),
                    Token::Sweep => self.sweep_finished(),
                }
            }
            // After a SIGCHLD only, and then every zombie there is: one SIGCHLD can stand for
            // many exits (standard signals coalesce), and an exit after this reap raises another.
            if std::mem::take(&mut self.sigchld) {
                self.reap(now);
            }
            self.sup.tick(now);
            let periodic = self.next_rescan.is_some_and(|t| now >= t);
            if !self.shutdown.stopping() && (periodic || self.rescan_at.is_some_and(|t| now >= t)) {
                self.rescan(now);
            }
            if let Some(s) = self.server.as_mut() {
                s.expire(now);
            }
            self.answer_waits(now);
        }
    }

    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let mut d = self.sup.deadline();
        let mut fold = |x: Option<Instant>| {
            if let Some(x) = x {
                d = Some(d.map_or(x, |y| y.min(x)));
            }
        };
        fold(self.requests.deadline());
        fold(self.server.as_ref().and_then(|s| s.deadline()));
        if self.shutdown.stopping() {
            fold(self.shutdown.deadline());
        } else {
            fold(self.next_rescan.map(|t| t.max(now)));
            fold(self.rescan_at.map(|t| t.max(now)));
        }
        d
    }

    fn rescan(&mut self, now: Instant) {
        self.sup.rescan(now);
        self.rescan_cost = now.elapsed();
        self.last_rescan = Some(now);
        self.rescan_at = None;
        if self.cfg.rescan_interval_ms > 0 {
            self.next_rescan = Some(now + Duration::from_millis(self.cfg.rescan_interval_ms.max(100)));
        }
    }

    /// A burst of changes is one rescan: the first change schedules it a little later, and a
    /// long rescan (thousands of slots) spaces the next ones so they take at most ~20% of a core.
    fn schedule_rescan(&mut self, now: Instant) {
        if self.rescan_at.is_none() && !self.shutdown.stopping() {
            self.rescan_at = Some(now + (self.rescan_cost * 4).max(Duration::from_millis(10)));
        }
    }

    fn signals(&mut self, now: Instant) {
        // SAFETY: signalfd_siginfo is plain integers; all zeroes is a valid value.
        let mut infos: [libc::signalfd_siginfo; 16] = unsafe { std::mem::zeroed() };
        loop {
            // Every pending signal in one read; a short read means none is left (no second
            // read just to hear EAGAIN).
            // SAFETY: read(2) into a buffer of exactly that many bytes.
            let n = unsafe { libc::read(self.sfd.as_raw_fd(), infos.as_mut_ptr().cast(), size_of_val(&infos)) };
            let Ok(n) = usize::try_from(n) else { return };
            let count = n / size_of::<libc::signalfd_siginfo>();
            for info in &infos[..count] {
                self.signal(info.ssi_signo as i32, now);
            }
            if count < infos.len() {
                return;
            }
        }
    }

    fn signal(&mut self, signo: i32, now: Instant) {
        // The scan directory changed (or the RT queue overflowed into SIGIO): rescan.
        if signo == dnotify_sig() || signo == libc::SIGIO {
            self.schedule_rescan(now);
            return;
        }
        let Ok(sig) = Signal::try_from(signo) else { return };
        match sig {
            Signal::SIGCHLD => self.sigchld = true,
            Signal::SIGPIPE => {}
            Signal::SIGTERM if !self.shutdown.stopping() => {
                // The signals go out first, the log line after. Debug only: a stop the operator
                // asked for needs no echo, and each line wakes the log reader (`docker logs`'
                // shim) while the container is stopping — on row 1 of bench/run, ~40 µs a line.
                self.stop(StopEvent::Stop, now);
                debug!("SIGTERM: stopping the container");
            }
            s if FORWARD.contains(&s) => match self.main_pid {
                Some(pid) => {
                    let _ = nix::sys::signal::killpg(pid, s);
                }
                None if s == Signal::SIGINT => {
                    self.stop(StopEvent::Stop, now);
                }
                None => {}
            },
            _ => {}
        }
    }

    fn reap(&mut self, now: Instant) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(st) => {
                    let Some(pid) = st.pid() else { return };
                    if Some(pid) == self.main_pid {
                        let code = routing::exit_code(st).unwrap_or(1);
                        // Said when it is the reason the container stops; after a stop it is
                        // only the expected end of one (debug, as the SIGTERM line above).
                        if self.shutdown.stopping() {
                            debug!("main program exited with code {code}");
                        } else {
                            info!("main program exited with code {code}");
                        }
                        self.main_pid = None;
                        self.stop(StopEvent::MainExited(code), now);
                    } else if !self.sup.on_exit(pid.as_raw(), st, now) {
                        // An orphan: reaped, nothing more to do.
                    }
                }
            }
        }
    }

    fn ctx(&mut self) -> Option<Ctx<'_>> {
        let stopping = self.shutdown.stopping();
        let main_pid = self.main_pid.map(|p| p.as_raw());
        let sweep_done = self.sweep_done;
        Some(Ctx { sup: &mut self.sup, server: self.server.as_mut()?, boot: self.boot, stopping, main_pid, sweep_done })
    }

    /// The bulk trees are healed after services and the main program started (what they read
    /// at start was healed before, synchronously): in a thread, at idle I/O and CPU priority.
    fn start_sweep(&mut self) {
        let Some(p) = boot::sweep::take_pending() else {
            self.sweep_done = true;
            return;
        };
        // The sweep thread logs: its records must wake this loop.
        crate::logs::other_writers(true);
        match boot::sweep::Background::start(p) {
            Ok(b) if !self.shutdown.stopping() => self.sweep = Some(b),
            Ok(b) => b.stop(),
            Err(e) => {
                crate::logs::other_writers(false);
                warn!("boot: sweep: cannot start the background part: {e}");
                self.sweep_done = true;
            }
        }
    }

    /// The sweep thread closed its end: it has finished (or stopped).
    fn sweep_finished(&mut self) {
        if let Some(b) = self.sweep.take() {
            let stopped = b.ctl.stop.load(std::sync::atomic::Ordering::Relaxed);
            b.join();
            // Its last records are queued already; the next pass takes them.
            crate::logs::other_writers(false);
            self.sweep_done = !stopped;
        }
    }

    fn conn_event(&mut self, id: u64, revents: libc::c_short, now: Instant) {
        let mut requests = std::mem::take(&mut self.requests);
        let todo = self.ctx().map(|cx| requests.on_conn(cx, id, revents, now));
        self.requests = requests;
        if todo == Some(Todo::Rescan) {
            // At once, unless requests ask faster than rescans cost (a flood of them must not
            // keep PID 1 busy reading the scan directory): then one is scheduled.
            let spaced = self.last_rescan.is_none_or(|t| now >= t + self.rescan_cost * 4);
            if spaced {
                self.rescan(now);
            } else {
                self.schedule_rescan(now);
            }
        }
    }

    fn answer_waits(&mut self, now: Instant) {
        let mut requests = std::mem::take(&mut self.requests);
        if let Some(cx) = self.ctx() {
            requests.answer_waits(cx, now);
        }
        self.requests = requests;
    }

    /// Everything left but our own: as PID 1, every other process of the namespace (orphans,
    /// stray daemons); otherwise — a shared PID namespace, another init — only the children we
    /// inherited as a subreaper, never anyone else's processes (C-INIT-6).
    fn signal_rest(&self, sig: Signal) {
        if self.is_pid1 {
            let _ = nix::sys::signal::kill(Pid::from_raw(-1), sig);
        } else {
            signal_children(sig as i32);
        }
    }

    /// Feed the stop sequence and carry out what it decides (C-INIT-3). Returns the exit code
    /// once it is time to exit.
    fn stop(&mut self, ev: StopEvent, now: Instant) -> Option<i32> {
        for action in self.shutdown.on(ev, now) {
            match action {
                StopAction::TermOurs => {
                    // The background sweep stops at once: a `docker stop` never waits for it.
                    if let Some(b) = &self.sweep {
                        b.stop();
                    }
                    if let Some(pid) = self.main_pid {
                        let _ = nix::sys::signal::killpg(pid, Signal::SIGTERM);
                        let _ = nix::sys::signal::killpg(pid, Signal::SIGCONT);
                    }
                    self.sup.shutdown(now);
                }
                StopAction::TermRest => self.signal_rest(Signal::SIGTERM),
                StopAction::KillAll => {
                    warn!("grace period over: killing what is left");
                    if let Some(pid) = self.main_pid {
                        let _ = nix::sys::signal::killpg(pid, Signal::SIGKILL);
                    }
                    for pg in self.sup.pgids() {
                        let _ = nix::sys::signal::killpg(Pid::from_raw(pg), Signal::SIGKILL);
                    }
                    self.signal_rest(Signal::SIGKILL);
                }
                StopAction::Exit { code, forced } => {
                    if forced {
                        warn!("processes still present after SIGKILL; exiting anyway");
                    }
                    return Some(code);
                }
            }
        }
        None
    }
}

/// poll's timeout in ms for a deadline: rounded up (never wake early and spin), -1 for none,
/// clamped to i32::MAX (~24.8 days: poll just returns early and the loop computes again).
fn poll_timeout(now: Instant, deadline: Option<Instant>) -> i32 {
    let Some(d) = deadline else { return -1 };
    let left = d.saturating_duration_since(now);
    let ms = left.as_millis() + u128::from(left.subsec_nanos() % 1_000_000 != 0);
    i32::try_from(ms).unwrap_or(i32::MAX)
}

/// Are there children left to reap (known or orphans)? Asks without reaping.
/// Signal each process whose parent is us (not PID 1: the orphans we inherited as a child
/// subreaper). Read from /proc; a pid that exits and is reused in between would have to be
/// re-parented to us again to be signalled, which only our own descendants can be.
fn signal_children(sig: libc::c_int) {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else { return };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // pid (comm) state ppid …: comm may hold spaces and parentheses; split after the last ')'.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(me) {
            // SAFETY: kill(2) on a child of ours.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

fn has_children() -> bool {
    // SAFETY: waitid with a valid out-pointer; WNOWAIT leaves any status in place.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeout_rounds_up_and_never_overflows() {
        let now = Instant::now();
        assert_eq!(poll_timeout(now, None), -1);
        assert_eq!(poll_timeout(now, Some(now)), 0);
        assert_eq!(poll_timeout(now + Duration::from_secs(1), Some(now)), 0, "a past deadline");
        assert_eq!(poll_timeout(now, Some(now + Duration::from_micros(1500))), 2);
        // 2^31 ms and beyond (24.8 days) do not fit poll's int.
        for far in [Duration::from_millis(1 << 31), Duration::from_millis((1 << 31) - 1) + Duration::from_nanos(1)] {
            assert_eq!(poll_timeout(now, Some(now + far)), i32::MAX);
        }
        let huge = now.checked_add(Duration::from_millis(u64::MAX));
        if let Some(h) = huge {
            assert_eq!(poll_timeout(now, Some(h)), i32::MAX);
        }
    }
}
