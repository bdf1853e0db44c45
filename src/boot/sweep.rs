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
    Dir { parent: Arc<OwnedFd>, name: CString, path: PathBuf, expect: ((u32, u32), u64), depth: usize },
    /// A slice of the entries of an open directory (a huge flat directory is shared out).
    Entries { dir: Arc<OwnedFd>, path: Arc<PathBuf>, names: Vec<CString>, depth: usize },
}

/// Entries per job: big enough to amortise the queue, small enough to share a flat directory.
const CHUNK: usize = 1024;

/// The shared stack of jobs (LIFO: depth first, so few directories are open at once) and how
/// many workers are busy; when it is empty and nobody is busy, the walk is over.
struct Pool {
    state: Mutex<(Vec<Job>, usize)>,
    cv: Condvar,
}

impl Pool {
    fn worker(&self, mut s: Sweeper) -> Sweeper {
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
            s.run(job);
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
    s.c.scanned += 1;
    if !root.owned_by(uid, gid) {
        s.c.wrong += 1;
        if fix {
            match fsx::fchown(fd.as_fd(), uid, gid) {
                Ok(()) => s.c.changed += 1,
                Err(e) => s.failure(home, e),
            }
        }
    }
    // Top-level state files: one listing of HERMES_HOME, matched against the lists.
    match fsx::list(fd.as_fd()) {
        Ok(names) => {
            for name in names.iter().filter(|n| is_top_file(n.to_bytes())) {
                s.visit(&fd, home, name, Visit::TopFile, 0);
            }
        }
        Err(e) => s.failure(home, e),
    }
    for (r, how) in DIRS_ONLY.iter().map(|r| (r, Visit::DirOnly)).chain(SUBTREES.iter().map(|r| (r, Visit::Subtree))) {
        let rel = Path::new(r);
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
    // The subtrees' contents, shared out over a few threads (all joined before returning, so
    // PID 1 is single-threaded again when it forks hooks and services).
    let pool = Pool { state: Mutex::new((std::mem::take(&mut s.out), 0)), cv: Condvar::new() };
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    /// A listed top-level file: owner, and mode fixes.
    TopFile,
    /// A listed directory, itself only.
    DirOnly,
    /// A listed directory and everything in it.
    Subtree,
    /// An entry inside a subtree.
    Inner,
}

impl Sweeper {
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
            if how != Visit::Inner {
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
        if !st.is_dir() || st.is_symlink() || how == Visit::DirOnly {
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
        });
    }

    fn run(&mut self, job: Job) {
        match job {
            Job::Dir { parent, name, path, expect, depth } => {
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
                    self.out.push(Job::Entries { dir: dir.clone(), path: path.clone(), names: rest, depth });
                }
                self.entries(&dir, &path, &names, depth);
            }
            Job::Entries { dir, path, names, depth } => self.entries(&dir, &path, &names, depth),
        }
    }

    fn entries(&mut self, dir: &Arc<OwnedFd>, path: &Path, names: &[CString], depth: usize) {
        for name in names {
            self.visit(dir, path, name, Visit::Inner, depth);
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
