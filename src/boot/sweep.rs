//! C-BOOT-3: the ownership sweep of `HERMES_HOME`.
//!
//! What ends hermes-owned: `HERMES_HOME` itself (not its other contents), the hermes subtrees
//! ([`SUBTREES`], recursively) and the top-level state files ([`TOP_FILES`], [`TOP_PREFIXES`]).
//! Rules:
//! - only entries whose uid or gid is wrong are changed (`fchownat(AT_SYMLINK_NOFOLLOW)`);
//! - a symlink is never followed: one at a listed path (say a symlinked `auth.json`, or a
//!   symlinked `skills/`) is left alone with a `refusing` warning naming it; one inside a
//!   subtree is an ordinary entry whose own owner is fixed (`lchown`, which cannot reach the
//!   target), so a remap leaves no stale owners and no warning noise at every boot;
//! - another mount inside the tree (a bind mount, a second volume, a bind-mounted file) is never
//!   entered nor changed: its owner belongs to the host;
//! - the walk is fd-relative (`openat(O_NOFOLLOW)` + `statx`), so a directory swapped for a
//!   symlink mid-walk cannot redirect it.
//!
//! **Two parts** (readiness does not depend on the volume's size): the synchronous part, before
//! any service starts, heals what a service reads or writes when it starts — `HERMES_HOME`, its
//! state files, `platforms/`, `logs/` and its direct entries, and the small trees
//! ([`SYNC_TREES`]); the background part ([`BACKGROUND_TREES`], the bulk data) runs in a thread
//! after the services and the main program started, at idle I/O and CPU priority, and stops at
//! once when the container stops (a flag checked per directory). The background thread never reaps
//! and never touches signals (they stay blocked in it, as in every PID 1 thread); it walks with
//! the same fd-relative, no-follow, same-mount rules.
//!
//! Top-level files also get owner read+write (upstream: a `0444` `SOUL.md` broke config
//! migration), and `.env` (API keys) loses group/other permissions, as upstream's stage2-hook.

use crate::fsx::{self, Stat};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use tracing::{info, warn};

/// Directories hermes writes to, owned recursively. (`lazy-packages` and `backups` are from
/// upstream's current stage2-hook; the rest is C-BOOT-3's list.)
pub const SUBTREES: &[&str] = &[
    "profiles",
    "cron",
    "sessions",
    "logs",
    "hooks",
    "memories",
    "skills",
    "skins",
    "plans",
    "workspace",
    "home",
    "pairing",
    "platforms/pairing",
    "lazy-packages",
    "backups",
];

/// Small trees healed before any service starts (`logs/gateways`: the files PID 1 writes as
/// hermes). `profiles/` is healed like `HERMES_HOME` itself, one profile at a time (see
/// [`PROFILE_SYNC`]): a profile is a whole Hermes home, its bulk data included.
pub const SYNC_TREES: &[&str] = &["cron", "hooks", "pairing", "platforms/pairing", "logs/gateways"];

/// Inside each `profiles/<p>/`, before services start: the profile directory with its direct
/// entries (its config, credentials and state files), these small trees, and `logs` shallow.
/// The rest of the profile (its sessions, workspace, …) is healed in the background.
pub const PROFILE_SYNC: &[&str] = &["cron", "hooks", "pairing", "platforms/pairing", "logs/gateways"];

/// Directories healed with their direct entries only before services start (`logs/*.log`).
pub const SHALLOW: &[&str] = &["logs"];

/// Bulk data trees, healed in the background once services run (`logs` again in full: what
/// lies deeper than its direct entries, outside `gateways/`, is nobody's start-up file).
pub const BACKGROUND_TREES: &[&str] = &[
    "workspace",
    "sessions",
    "home",
    "skills",
    "memories",
    "plans",
    "skins",
    "backups",
    "lazy-packages",
    "logs",
    "profiles",
];

/// Which part of the sweep to walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything, in one walk (tests, and `HERMESINIT_SWEEP=sync`-less callers).
    All,
    /// Before services start.
    Sync,
    /// After services start.
    Background,
}

/// Shared with a background sweep: the stop flag (checked per directory) and progress.
#[derive(Default)]
pub struct Control {
    pub stop: std::sync::atomic::AtomicBool,
    pub seen: std::sync::atomic::AtomicU64,
    pub fixed: std::sync::atomic::AtomicU64,
    /// Log progress every 5 s (a background sweep), from whichever worker sees it is due.
    progress: Option<(std::time::Instant, std::sync::atomic::AtomicU64)>,
    /// Walk at idle I/O and CPU priority (every worker thread sets it for itself).
    idle: bool,
}

impl Control {
    pub fn background() -> Control {
        Control { progress: Some((std::time::Instant::now(), 5000.into())), idle: true, ..Default::default() }
    }

    fn stopped(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn account(&self, seen: u64, fixed: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let seen = self.seen.fetch_add(seen, Relaxed) + seen;
        let fixed = self.fixed.fetch_add(fixed, Relaxed) + fixed;
        if let Some((t0, next)) = &self.progress {
            let ms = t0.elapsed().as_millis() as u64;
            let due = next.load(Relaxed);
            if ms >= due && next.compare_exchange(due, ms + 5000, Relaxed, Relaxed).is_ok() {
                info!("sweep: background: {seen} entries seen, {fixed} fixed so far ({:.1} s)", ms as f64 / 1000.0);
            }
        }
    }
}

/// The calling thread yields to everything else, for the disk (IOPRIO_CLASS_IDLE) and for the
/// CPU (nice 19): at nice 0 it would take half a CPU from the main program's and the services'
/// start whenever they share one (a small VM, a `--cpus 1` container). Both are per thread.
fn background_priority() {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    // SAFETY: plain syscalls with integer arguments, on the calling thread (who = its tid).
    unsafe {
        libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0 as libc::c_long, IOPRIO_CLASS_IDLE << 13);
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
}

/// Directories made hermes-owned themselves, not their contents.
pub const DIRS_ONLY: &[&str] = &["platforms"];

/// Top-level state files, by exact name.
pub const TOP_FILES: &[&str] = &[
    "auth.json",
    "auth.lock",
    ".env",
    "config.yaml",
    "SOUL.md",
    "gateway.pid",
    "gateway.lock",
    "gateway_state.json",
    "processes.json",
    "active_profile",
];

/// Top-level state files by prefix (`state.db`, `state.db-wal`, `state.db-shm`, …).
pub const TOP_PREFIXES: &[&str] = &["state.db", "hermes_state.db", "response_store.db"];

/// How many individual lines of one kind to log before only counting.
const LOG_LIMIT: usize = 20;
/// Deeper directories are not entered (each level of a pending walk holds a descriptor).
const MAX_DEPTH: usize = 256;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub scanned: u64,
    /// Entries whose owner (or, for top-level files, mode) was changed.
    pub changed: u64,
    /// Entries with a wrong owner (changed or not).
    pub wrong: u64,
    /// Symlinks refused: at a listed path, or a directory swapped for one mid-walk.
    pub refused: u64,
    /// Symlinks inside subtrees (never followed).
    pub symlinks: u64,
    pub mounts: u64,
    pub failed: u64,
    pub too_deep: u64,
}

impl Counts {
    pub fn summary(&self) -> String {
        format!(
            "scanned {} entries, {} not hermes-owned, changed {}, refused {} symlinks at listed paths, \
             {} symlinks inside (not followed), skipped {} other mounts, {} failures, {} too deep",
            self.scanned,
            self.wrong,
            self.changed,
            self.refused,
            self.symlinks,
            self.mounts,
            self.failed,
            self.too_deep
        )
    }
}

/// One worker's view: the fixed parameters, its own counts, and jobs it found.
struct Sweeper {
    uid: u32,
    gid: u32,
    /// Root: fix what is wrong. Otherwise only count it.
    fix: bool,
    root: Stat,
    c: Counts,
    logged_refusals: usize,
    logged_failures: usize,
    /// The first error that is not a rootless/read-only refusal: fatal at the end.
    hard: Option<String>,
    /// Directories found, to be shared with the other workers.
    out: Vec<Job>,
}

/// Work for the pool. A job holds its parent's descriptor (shared), so the walk never
/// resolves a path: a directory is opened relative to the one it was found in.
enum Job {
    /// Open `name` in `parent` (looked at as `expect`: dev, ino) and process its entries.
    Dir { parent: Arc<OwnedFd>, name: CString, path: PathBuf, expect: ((u32, u32), u64), depth: usize, inner: Visit },
    /// A slice of the entries of an open directory (a huge flat directory is shared out).
    Entries { dir: Arc<OwnedFd>, path: Arc<PathBuf>, names: Vec<CString>, depth: usize, inner: Visit },
}

/// Entries per job: big enough to amortise the queue, small enough to share a flat directory.
const CHUNK: usize = 1024;

/// The shared stack of jobs (LIFO: depth first, so few directories are open at once) and how
/// many workers are busy; when it is empty and nobody is busy, the walk is over.
struct Pool<'a> {
    state: Mutex<(Vec<Job>, usize)>,
    cv: Condvar,
    ctl: Option<&'a Control>,
}

impl Pool<'_> {
    fn worker(&self, mut s: Sweeper) -> Sweeper {
        if self.ctl.is_some_and(|c| c.idle) {
            background_priority();
        }
        loop {
            let job = {
                let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(j) = g.0.pop() {
                        g.1 += 1;
                        break j;
                    }
                    if g.1 == 0 {
                        self.cv.notify_all();
                        return s;
                    }
                    g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
                }
            };
            match self.ctl {
                // Stopping: the remaining jobs are dropped unread (each holds one descriptor).
                Some(c) if c.stopped() => drop(job),
                Some(c) => {
                    let before = (s.c.scanned, s.c.changed);
                    s.run(job);
                    c.account(s.c.scanned - before.0, s.c.changed - before.1);
                }
                None => s.run(job),
            }
            let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let found = !s.out.is_empty();
            g.0.append(&mut s.out);
            g.1 -= 1;
            if found || g.1 == 0 {
                self.cv.notify_all();
            }
        }
    }
}

/// How many threads walk the subtrees by default (the walk is bound by `statx`, one per entry).
pub fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4)
}

/// The real directories in `profiles/` (symlinks and files are left to its shallow visit).
fn profile_dirs(home: BorrowedFd) -> Vec<CString> {
    let Ok(dir) = fsx::open_dir_at(home, c"profiles") else { return Vec::new() };
    fsx::list(dir.as_fd())
        .unwrap_or_default()
        .into_iter()
        .filter(|n| fsx::lstat_at(dir.as_fd(), n).is_ok_and(|st| st.is_dir() && !st.is_symlink()))
        .collect()
}

fn is_top_file(name: &[u8]) -> bool {
    TOP_FILES.iter().any(|f| f.as_bytes() == name) || TOP_PREFIXES.iter().any(|p| name.starts_with(p.as_bytes()))
}

/// Sweep `home` with the default number of threads.
#[cfg(test)]
pub fn sweep(home: &Path, uid: u32, gid: u32, fix: bool) -> Result<Counts, String> {
    sweep_with(home, uid, gid, fix, workers())
}

/// Sweep `home`. `Err` is fatal (C-BOOT-6): `HERMES_HOME` cannot be opened, or an error that
/// is not a rootless/read-only refusal happened (reported after the walk finished).
pub fn sweep_with(home: &Path, uid: u32, gid: u32, fix: bool, threads: usize) -> Result<Counts, String> {
    walk(home, uid, gid, fix, threads, Part::All, None)
}

/// Walk one part of the sweep. `ctl`: a background walk's stop flag and progress.
pub fn walk(
    home: &Path,
    uid: u32,
    gid: u32,
    fix: bool,
    threads: usize,
    part: Part,
    ctl: Option<&Control>,
) -> Result<Counts, String> {
    let fd = match fsx::open_dir_path(home) {
        Ok(fd) => Arc::new(fd),
        Err(e) if fsx::is_soft(&e) => {
            warn!("boot: sweep: cannot open {}: {e}; not sweeping", home.display());
            return Ok(Counts::default());
        }
        Err(e) => return Err(format!("cannot open {}: {e}", home.display())),
    };
    let root = fsx::fstat(fd.as_fd()).map_err(|e| format!("cannot stat {}: {e}", home.display()))?;
    let fix = if fix && fsx::read_only(fd.as_fd()) {
        warn!("boot: sweep: {} is on a read-only mount: ownership is checked, not fixed", home.display());
        false
    } else {
        fix
    };
    let new = || Sweeper {
        uid,
        gid,
        fix,
        root,
        c: Counts::default(),
        logged_refusals: 0,
        logged_failures: 0,
        hard: None,
        out: Vec::new(),
    };
    let mut s = new();
    if part != Part::Background {
        s.top(&fd, home, root);
    }
    let trees: Vec<(PathBuf, Visit)> = match part {
        Part::All => DIRS_ONLY
            .iter()
            .map(|r| (r.into(), Visit::DirOnly))
            .chain(SUBTREES.iter().map(|r| (r.into(), Visit::Subtree)))
            .collect(),
        Part::Sync => {
            let mut v: Vec<(PathBuf, Visit)> = DIRS_ONLY
                .iter()
                .map(|r| (r.into(), Visit::DirOnly))
                .chain(SHALLOW.iter().map(|r| (r.into(), Visit::Shallow)))
                .chain(SYNC_TREES.iter().map(|r| (r.into(), Visit::Subtree)))
                .collect();
            v.push(("profiles".into(), Visit::Shallow));
            for p in profile_dirs(fd.as_fd()) {
                let base = Path::new("profiles").join(std::ffi::OsStr::from_bytes(p.to_bytes()));
                v.push((base.clone(), Visit::Shallow));
                v.push((base.join("logs"), Visit::Shallow));
                v.extend(PROFILE_SYNC.iter().map(|t| (base.join(t), Visit::Subtree)));
            }
            v
        }
        Part::Background => BACKGROUND_TREES.iter().map(|r| (r.into(), Visit::Subtree)).collect(),
    };
    for (r, how) in trees {
        let rel = r.as_path();
        match fsx::walk_parent(fd.as_fd(), rel) {
            Ok((parent, name)) => {
                let dir = parent.map(Arc::new).unwrap_or_else(|| fd.clone());
                let dir_path = home.join(rel.parent().unwrap_or(Path::new("")));
                s.visit(&dir, &dir_path, &name, how, 0);
            }
            Err((_, e)) if fsx::is_missing(&e) => {}
            Err((comp, e)) if fsx::is_symlink_refusal(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => {
                s.refuse(&home.join(comp), true)
            }
            Err((comp, e)) => s.failure(&home.join(comp), e),
        }
    }
    // The subtrees' contents, shared out over a few threads (all joined before returning: the
    // synchronous part leaves PID 1 single-threaded again when it forks hooks and services).
    let pool = Pool { state: Mutex::new((std::mem::take(&mut s.out), 0)), cv: Condvar::new(), ctl };
    let mut done = vec![s];
    std::thread::scope(|sc| {
        let helpers: Vec<_> = (1..threads.max(1))
            .filter_map(|i| {
                let (pool, w) = (&pool, new());
                std::thread::Builder::new().name(format!("sweep-{i}")).spawn_scoped(sc, move || pool.worker(w)).ok()
            })
            .collect();
        done.push(pool.worker(new()));
        done.extend(helpers.into_iter().filter_map(|h| h.join().ok()));
    });
    let mut c = Counts::default();
    let mut hard = None;
    for w in done {
        c.scanned += w.c.scanned;
        c.changed += w.c.changed;
        c.wrong += w.c.wrong;
        c.refused += w.c.refused;
        c.symlinks += w.c.symlinks;
        c.mounts += w.c.mounts;
        c.failed += w.c.failed;
        c.too_deep += w.c.too_deep;
        hard = hard.or(w.hard);
    }
    if let Some(h) = hard {
        return Err(h);
    }
    if c.failed > 0 {
        warn!("boot: sweep: {} entries could not be changed (rootless or read-only?)", c.failed);
    }
    Ok(c)
}

/// What the synchronous part left for the background, taken by init once services run.
pub struct Pending {
    pub home: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub fix: bool,
    pub threads: usize,
}

static PENDING: Mutex<Option<Pending>> = Mutex::new(None);

/// Set by PID 1 (init) before boot: split the sweep. Other callers sweep everything at once.
pub static SPLIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Leave the background part for [`take_pending`] (the boot step, after the synchronous part).
pub fn set_pending(p: Pending) {
    *PENDING.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
}

/// The background part boot left, if any (none when the sweep step was skipped or failed).
pub fn take_pending() -> Option<Pending> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// A background sweep running in its own thread. Its end (or its stop) closes `done`'s write
/// end, so PID 1's poll loop sees the read end hang up.
pub struct Background {
    pub ctl: Arc<Control>,
    /// The read end: POLLHUP once the thread is done.
    pub done: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Start it. The thread logs one line at the end, `boot: sweep=done: …` with its counts and
    /// duration. (`container-boot.log` is not written: C-BOOT-9 fixes its format, one line per
    /// slot per boot, and that line is written before the background part ends.)
    pub fn start(p: Pending) -> io::Result<Background> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let ctl = Arc::new(Control::background());
        let c2 = ctl.clone();
        let thread = std::thread::Builder::new().name("sweep".into()).spawn(move || {
            let t0 = std::time::Instant::now();
            let r = walk(&p.home, p.uid, p.gid, p.fix, p.threads, Part::Background, Some(&c2));
            let secs = t0.elapsed().as_secs_f64();
            match r {
                _ if c2.stopped() => info!(
                    "sweep: background: stopped (the container is stopping) after {} entries, {} fixed ({secs:.1} s)",
                    c2.seen.load(std::sync::atomic::Ordering::Relaxed),
                    c2.fixed.load(std::sync::atomic::Ordering::Relaxed)
                ),
                Ok(c) => info!("boot: sweep=done: background part: {} ({secs:.1} s)", c.summary()),
                Err(e) => warn!("sweep: background: {e} ({secs:.1} s)"),
            }
            drop(w);
        })?;
        Ok(Background { ctl, done: r, thread: Some(thread) })
    }

    /// Ask it to stop (the container is stopping): it drops the directories it has not opened.
    pub fn stop(&self) {
        self.ctl.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Wait for the thread (after `done` hung up: it has finished).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    /// A listed top-level file: owner, and mode fixes.
    TopFile,
    /// A listed directory, itself only.
    DirOnly,
    /// A listed directory and everything in it.
    Subtree,
    /// A listed directory and its direct entries.
    Shallow,
    /// An entry inside a subtree.
    Inner,
    /// A direct entry of a `Shallow` directory: as `Inner`, never descended into.
    Flat,
}

impl Sweeper {
    /// `HERMES_HOME` itself and its listed state files.
    fn top(&mut self, fd: &Arc<OwnedFd>, home: &Path, root: Stat) {
        self.c.scanned += 1;
        if !root.owned_by(self.uid, self.gid) {
            self.c.wrong += 1;
            if self.fix {
                match fsx::fchown(fd.as_fd(), self.uid, self.gid) {
                    Ok(()) => self.c.changed += 1,
                    Err(e) => self.failure(home, e),
                }
            }
        }
        // Top-level state files: one listing of HERMES_HOME, matched against the lists.
        match fsx::list(fd.as_fd()) {
            Ok(names) => {
                for name in names.iter().filter(|n| is_top_file(n.to_bytes())) {
                    self.visit(fd, home, name, Visit::TopFile, 0);
                }
            }
            Err(e) => self.failure(home, e),
        }
    }

    fn refuse(&mut self, path: &Path, listed: bool) {
        self.c.refused += 1;
        if listed || self.logged_refusals < LOG_LIMIT {
            warn!("boot: sweep: refusing to follow or change symlink {}", path.display());
            if !listed {
                self.logged_refusals += 1;
            }
        }
    }

    fn failure(&mut self, path: &Path, e: io::Error) {
        if fsx::is_missing(&e) {
            return; // removed while we looked: nothing to fix
        }
        self.c.failed += 1;
        if !fsx::is_soft(&e) && self.hard.is_none() {
            self.hard = Some(format!("{}: {e}", path.display()));
        }
        if self.logged_failures < LOG_LIMIT {
            self.logged_failures += 1;
            warn!("boot: sweep: cannot fix {}: {e}", path.display());
        }
    }

    /// Check (and fix) one entry of `dir`; a directory to descend into becomes a job.
    fn visit(&mut self, dir: &Arc<OwnedFd>, dir_path: &Path, name: &CStr, how: Visit, depth: usize) {
        let path = || dir_path.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        let st = match fsx::lstat_at(dir.as_fd(), name) {
            Ok(st) => st,
            Err(e) => return self.failure(&path(), e),
        };
        self.c.scanned += 1;
        if st.is_symlink() {
            if !matches!(how, Visit::Inner | Visit::Flat) {
                // A listed path that is a symlink (a symlinked auth.json): left alone entirely.
                self.refuse(&path(), true);
                return;
            }
            // Inside a subtree a symlink is never followed; the link itself is re-owned if
            // wrong (lchown cannot reach its target), so a remap leaves no stale owners.
            self.c.symlinks += 1;
        }
        if st.other_mount_than(&self.root) {
            self.c.mounts += 1;
            info!("boot: sweep: not entering or changing {}: another mount", path().display());
            return;
        }
        if how == Visit::TopFile && !st.is_file() {
            return; // a directory called auth.json is not ours to judge
        }
        if !st.owned_by(self.uid, self.gid) {
            self.c.wrong += 1;
            if self.fix {
                match fsx::chown_at(dir.as_fd(), name, self.uid, self.gid) {
                    Ok(()) => self.c.changed += 1,
                    Err(e) => self.failure(&path(), e),
                }
            }
        }
        if how == Visit::TopFile {
            self.fix_mode(dir.as_fd(), name, &st, &path());
            return;
        }
        if !st.is_dir() || st.is_symlink() || matches!(how, Visit::DirOnly | Visit::Flat) {
            return;
        }
        if depth >= MAX_DEPTH {
            self.c.too_deep += 1;
            warn!("boot: sweep: not descending below {}: more than {MAX_DEPTH} levels", path().display());
            return;
        }
        self.out.push(Job::Dir {
            parent: dir.clone(),
            name: name.to_owned(),
            path: path(),
            expect: (st.dev, st.ino),
            depth: depth + 1,
            inner: if how == Visit::Shallow { Visit::Flat } else { Visit::Inner },
        });
    }

    fn run(&mut self, job: Job) {
        match job {
            Job::Dir { parent, name, path, expect, depth, inner } => {
                let fd = match fsx::open_dir_at(parent.as_fd(), &name) {
                    Ok(fd) => fd,
                    Err(e) if fsx::is_symlink_refusal(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => {
                        return self.refuse(&path, false);
                    }
                    Err(e) => return self.failure(&path, e),
                };
                drop(parent);
                // The directory we opened must be the one we looked at (not swapped in between).
                match fsx::fstat(fd.as_fd()) {
                    Ok(now) if (now.dev, now.ino) == expect => {}
                    Ok(_) => return self.refuse(&path, false),
                    Err(e) => return self.failure(&path, e),
                }
                let mut names = match fsx::list(fd.as_fd()) {
                    Ok(n) => n,
                    Err(e) => return self.failure(&path, e),
                };
                let dir = Arc::new(fd);
                let path = Arc::new(path);
                while names.len() > CHUNK {
                    let rest = names.split_off(names.len() - CHUNK);
                    self.out.push(Job::Entries { dir: dir.clone(), path: path.clone(), names: rest, depth, inner });
                }
                self.entries(&dir, &path, &names, depth, inner);
            }
            Job::Entries { dir, path, names, depth, inner } => self.entries(&dir, &path, &names, depth, inner),
        }
    }

    fn entries(&mut self, dir: &Arc<OwnedFd>, path: &Path, names: &[CString], depth: usize, inner: Visit) {
        for name in names {
            self.visit(dir, path, name, inner, depth);
        }
    }

    /// Top-level files: owner read+write; `.env` private.
    fn fix_mode(&mut self, dir: BorrowedFd, name: &CStr, st: &Stat, path: &Path) {
        let mode = st.mode & 0o7777;
        let mut want = mode | 0o600;
        if name == c".env" {
            want &= !0o077;
        }
        if want == mode || !(self.fix || st.uid == nix::unistd::geteuid().as_raw()) {
            return;
        }
        let r = fsx::open_read_at(dir, name).and_then(|f| {
            // Re-check: the file we opened is the one we judged.
            let now = fsx::fstat(f.as_fd())?;
            if now.ino != st.ino || !now.is_file() {
                return Err(io::Error::from_raw_os_error(libc::ESTALE));
            }
            fsx::fchmod(f.as_fd(), want)
        });
        match r {
            Ok(()) => self.c.changed += 1,
            Err(e) => self.failure(path, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::testutil::{TempDir, is_root, owner};
    use std::os::unix::fs::{PermissionsExt, symlink};

    const H: (u32, u32) = (10000, 10000);

    /// A background worker runs at nice 19 and in the idle I/O class, and only its own thread
    /// does: the thread that started it keeps its priority.
    #[test]
    fn a_background_worker_yields_the_cpu_and_the_disk_to_everything_else() {
        // SAFETY: read-only queries of the calling thread's scheduling state.
        let state = || unsafe {
            *libc::__errno_location() = 0;
            let nice = libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t);
            let ioprio = libc::syscall(libc::SYS_ioprio_get, 1 as libc::c_long, 0 as libc::c_long);
            (nice, ioprio >> 13)
        };
        let before = state();
        if before == (19, 3) {
            eprintln!("skipped: the test runs at nice 19 in the idle I/O class already");
            return;
        }
        let worker = std::thread::spawn(move || {
            background_priority();
            state()
        })
        .join()
        .unwrap();
        assert_eq!(worker, (19, 3), "nice, I/O class");
        assert_eq!(state(), before, "the caller's own priority is untouched");
    }

    fn chown(p: &Path, o: (u32, u32)) {
        std::os::unix::fs::lchown(p, Some(o.0), Some(o.1)).unwrap();
    }

    /// C-BOOT-3: root-owned files in the subtrees and a root-owned auth.json are healed; the
    /// symlinked state file and a symlink pointing outside are never followed; files outside
    /// the lists are not touched; a second sweep changes nothing.
    #[test]
    fn c_boot_3_sweep_heals_and_never_follows_symlinks() {
        if !is_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let t = TempDir::new("sweep");
        let home = t.path().join("data");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(home.join("profiles/coder/sessions")).unwrap();
        std::fs::create_dir_all(home.join("skills/a")).unwrap();
        std::fs::create_dir_all(home.join("platforms/pairing")).unwrap();
        std::fs::create_dir_all(home.join("host-bind")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        for f in ["auth.json", "state.db-wal", "config.yaml", ".env", "notes.txt"] {
            std::fs::write(home.join(f), "x").unwrap();
        }
        std::fs::set_permissions(home.join(".env"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(home.join("config.yaml"), std::fs::Permissions::from_mode(0o444)).unwrap();
        std::fs::write(home.join("profiles/coder/sessions/s1.json"), "{}").unwrap();
        std::fs::write(home.join("platforms/pairing/approved.json"), "{}").unwrap();
        std::fs::write(home.join("platforms/other.json"), "{}").unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        symlink(&outside, home.join("skills/a/escape")).unwrap();
        symlink(outside.join("secret"), home.join("gateway_state.json")).unwrap();
        // Everything root-owned, as an old root `docker exec` left it; then a few right.
        for p in walk(t.path()) {
            chown(&p, (0, 0));
        }
        chown(&home.join("skills/a"), H);
        let c = sweep(&home, H.0, H.1, true).unwrap();
        for p in [
            "",
            "auth.json",
            "state.db-wal",
            "config.yaml",
            ".env",
            "profiles",
            "profiles/coder/sessions/s1.json",
            "platforms",
            "platforms/pairing/approved.json",
            "skills",
        ] {
            assert_eq!(owner(&home.join(p)), H, "{p}");
        }
        assert_eq!(owner(&home.join("skills/a/escape")), H, "the link itself is re-owned");
        for p in ["notes.txt", "platforms/other.json", "host-bind", "gateway_state.json"] {
            assert_eq!(owner(&home.join(p)), (0, 0), "{p} must not be touched");
        }
        assert_eq!(owner(&outside), (0, 0));
        assert_eq!(owner(&outside.join("secret")), (0, 0));
        let mode = |p: &str| std::fs::metadata(home.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(".env"), mode("config.yaml")), (0o600, 0o644));
        // One refusal: the listed gateway_state.json; the link inside skills is not followed.
        assert_eq!((c.refused, c.symlinks, c.mounts, c.failed, c.too_deep), (1, 1, 0, 0, 0), "{c:?}");
        assert_eq!(c.changed, c.wrong + 2, "owner changes plus two mode fixes: {c:?}");
        let again = sweep(&home, H.0, H.1, true).unwrap();
        assert_eq!((again.changed, again.wrong, again.scanned), (0, 0, c.scanned), "{again:?}");
    }

    #[test]
    fn c_boot_3_symlinked_subtree_root_is_refused() {
        let t = TempDir::new("sweep-link");
        let home = t.path().join("data");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(outside.join("deep")).unwrap();
        symlink(&outside, home.join("logs")).unwrap();
        std::fs::create_dir_all(home.join("platforms")).unwrap();
        symlink(&outside, home.join("platforms/pairing")).unwrap();
        let me = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
        let c = sweep(&home, me.0 + 1, me.1 + 1, false).unwrap();
        assert_eq!(c.refused, 2, "{c:?}");
        assert_eq!(c.changed, 0);
    }

    /// The pool: a flat directory bigger than a chunk and a deep chain, shared over 4 workers,
    /// gives the same result as 1 worker.
    #[test]
    fn c_boot_3_parallel_walk_counts_every_entry_once() {
        if !is_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let t = TempDir::new("sweep-pool");
        let home = t.path().join("data");
        let flat = home.join("sessions");
        std::fs::create_dir_all(&flat).unwrap();
        for i in 0..(3 * CHUNK + 7) {
            std::fs::write(flat.join(format!("s{i}.json")), "").unwrap();
        }
        let mut deep = home.join("skills");
        for i in 0..40 {
            deep = deep.join(format!("l{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("leaf"), "").unwrap();
        let all = walk(&home);
        for (i, p) in all.iter().enumerate() {
            chown(p, if i % 7 == 0 { (0, 0) } else { H });
        }
        let wrong = all.iter().filter(|p| owner(p) != H).count() as u64;
        let c = sweep_with(&home, H.0, H.1, true, 4).unwrap();
        assert_eq!((c.scanned, c.wrong, c.changed), (all.len() as u64, wrong, wrong), "{c:?}");
        assert!(all.iter().all(|p| owner(p) == H));
        let again = sweep_with(&home, H.0, H.1, true, 1).unwrap();
        assert_eq!((again.scanned, again.changed), (all.len() as u64, 0));
    }

    /// The synchronous part heals what services read at start (state files, profiles, the
    /// logs directory's direct entries, gateway logs) and nothing of the bulk trees; a stopped
    /// background walk opens no directory; a running one heals the rest and counts progress.
    #[test]
    fn c_boot_3_split_sweep_heals_start_up_files_first_and_stops_when_asked() {
        if !is_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let t = TempDir::new("sweep-split");
        let home = t.path().join("data");
        for d in
            ["profiles/p/sessions", "profiles/p/cron", "logs/deep", "logs/gateways/default", "sessions", "workspace/a"]
        {
            std::fs::create_dir_all(home.join(d)).unwrap();
        }
        let files = [
            "auth.json",
            "profiles/p/config.yaml",
            "profiles/p/cron/jobs.json",
            "profiles/p/sessions/s.json",
            "logs/agent.log",
            "logs/deep/x.log",
            "logs/gateways/default/current",
            "sessions/s.json",
            "workspace/a/b",
        ];
        for f in files {
            std::fs::write(home.join(f), "x").unwrap();
        }
        for p in walk(&home) {
            chown(&p, (0, 0));
        }
        super::walk(&home, H.0, H.1, true, 2, Part::Sync, None).unwrap();
        for p in [
            "",
            "auth.json",
            "profiles/p/config.yaml",
            "profiles/p/cron/jobs.json",
            "logs",
            "logs/agent.log",
            "logs/deep",
        ] {
            assert_eq!(owner(&home.join(p)), H, "healed before services start: {p}");
        }
        assert_eq!(owner(&home.join("logs/gateways/default/current")), H);
        for p in ["logs/deep/x.log", "sessions", "sessions/s.json", "workspace/a/b", "profiles/p/sessions/s.json"] {
            assert_eq!(owner(&home.join(p)), (0, 0), "left for the background: {p}");
        }
        let stopped = Control::background();
        stopped.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        super::walk(&home, H.0, H.1, true, 2, Part::Background, Some(&stopped)).unwrap();
        assert_eq!(owner(&home.join("sessions/s.json")), (0, 0), "a stopped walk opens no directory");
        let ctl = Control::background();
        let c = super::walk(&home, H.0, H.1, true, 2, Part::Background, Some(&ctl)).unwrap();
        assert!(walk(&home).iter().all(|p| owner(p) == H));
        // sessions/ and workspace/ themselves were healed by the stopped walk (tree roots are
        // looked at before any directory is opened).
        assert_eq!(c.changed, 5, "{c:?}");
        assert!(ctl.seen.load(std::sync::atomic::Ordering::Relaxed) > 0);
    }

    fn walk(p: &Path) -> Vec<PathBuf> {
        let mut v = vec![p.to_path_buf()];
        if std::fs::symlink_metadata(p).unwrap().is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                v.extend(walk(&e.unwrap().path()));
            }
        }
        v
    }
}
