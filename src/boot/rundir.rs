//! Runtime state under `/run`: the env snapshot (C-BOOT-1), `/run/s6/basedir` (C-S6-1) and the
//! scan directory. `/run` is not a tmpfs in Docker and survives `docker restart`, so each boot
//! rebuilds these from scratch. All of it is root-owned territory (hermes may only create slots
//! in the scan directory), so plain paths are safe here.

use std::ffi::OsString;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Remove whatever is at `p` (a symlink is removed, never followed).
fn remove_any(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn parent_dirs(p: &Path) -> io::Result<()> {
    match p.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => DirBuilder::new().recursive(true).mode(0o755).create(parent),
        _ => Ok(()),
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub written: usize,
    /// Names that cannot be an envdir entry: empty, containing `/` or NUL, or starting with `.`
    /// (s6-envdir and our `with-contenv` ignore dot-files, so writing them would be pointless).
    pub skipped: Vec<String>,
}

pub fn storable(name: &[u8]) -> bool {
    crate::envdir::storable(name) && !name.starts_with(b".")
}

/// Empty a real directory (kept, so one the image pre-created for a `--user` container still
/// works), or replace whatever else is there by a new directory with `mode`. Then make sure of
/// the mode (only changed when different: a non-root boot cannot chmod a root-owned one).
fn fresh_dir(dir: &Path, mode: u32) -> io::Result<usize> {
    fresh_dir_keeping(dir, mode, |_| false).map(|(removed, _)| removed)
}

/// [`fresh_dir`], but entries whose name `keep` accepts stay (their caller checks them): how
/// many were removed, and the names kept.
fn fresh_dir_keeping(
    dir: &Path,
    mode: u32,
    keep: impl Fn(&std::ffi::OsStr) -> bool,
) -> io::Result<(usize, std::collections::BTreeSet<OsString>)> {
    let mut removed = 0;
    let mut kept = std::collections::BTreeSet::new();
    if crate::logs::is_real_dir(dir) {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if keep(&e.file_name()) {
                kept.insert(e.file_name());
            } else {
                remove_any(&e.path())?;
                removed += 1;
            }
        }
    } else {
        remove_any(dir)?;
        parent_dirs(dir)?;
        DirBuilder::new().mode(mode).create(dir)?;
    }
    set_mode(dir, mode)?;
    Ok((removed, kept))
}

fn set_mode(p: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::symlink_metadata(p)?.mode() & 0o7777 != mode {
        std::fs::set_permissions(p, Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Write the snapshot: the directory emptied (`0750`, group `gid`), then one file per variable
/// (`0640`, group `gid`) holding the value verbatim — no trailing newline, as s6-overlay's
/// `s6-dumpenv` writes it. Empty values and dotted names (`a.b`) are kept.
///
/// `/run` survives `docker restart`, so a restart finds the last boot's snapshot: a file that is
/// already one of this boot's variables, and plainly ours (regular, one link, owned by us), is
/// kept and only rewritten, chmodded or chowned where it differs; everything else is removed
/// and created anew. On fuse-overlayfs, unlinking a file and creating it again costs a few
/// round trips to the daemon, over a millisecond; reading it, a fraction of that.
pub fn write(dir: &Path, vars: &[(OsString, OsString)], gid: Option<u32>) -> io::Result<Written> {
    let mut out = Written::default();
    // A name given twice: the first occurrence wins, as with getenv(3).
    let mut want: std::collections::BTreeMap<&std::ffi::OsStr, &[u8]> = std::collections::BTreeMap::new();
    for (k, v) in vars {
        if !storable(k.as_bytes()) {
            out.skipped.push(k.to_string_lossy().into_owned());
            continue;
        }
        want.entry(k.as_os_str()).or_insert(v.as_bytes());
    }
    let (_, found) = fresh_dir_keeping(dir, 0o750, |name| want.contains_key(name))?;
    if let Some(g) = gid {
        std::os::unix::fs::lchown(dir, Some(0), Some(g))?;
    }
    for (k, v) in want {
        let path = dir.join(k);
        if !(found.contains(k) && kept(&path, v, gid)?) {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o640)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)?;
            f.write_all(v)?;
            f.set_permissions(Permissions::from_mode(0o640))?;
            if let Some(g) = gid {
                std::os::unix::fs::fchown(&f, Some(0), Some(g))?;
            }
        }
        out.written += 1;
    }
    Ok(out)
}

/// A previous boot's file at `path`, made to hold `value` (`0640`, ours, group `gid`) when it
/// is plainly ours: a regular file with one link, owned by us. `Ok(false)` when there is none,
/// or something else was there (then removed, for the caller to create it).
fn kept(path: &Path, value: &[u8], gid: Option<u32>) -> io::Result<bool> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let me = nix::unistd::geteuid().as_raw();
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !m.is_file() || m.nlink() != 1 || m.uid() != me {
        remove_any(path)?;
        return Ok(false);
    }
    let f = OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    let st = crate::fsx::fstat(std::os::fd::AsFd::as_fd(&f))?;
    if st.ino != m.ino() {
        // Replaced since the lstat (only root could): start afresh.
        drop(f);
        remove_any(path)?;
        return Ok(false);
    }
    let same = st.size == value.len() as u64 && {
        let mut old = vec![0; value.len()];
        f.read_exact_at(&mut old, 0).is_ok() && old == value
    };
    if !same {
        f.set_len(0)?;
        f.write_all_at(value, 0)?;
    }
    if st.mode & 0o7777 != 0o640 {
        f.set_permissions(Permissions::from_mode(0o640))?;
    }
    if let Some(g) = gid.filter(|g| st.gid != *g) {
        std::os::unix::fs::fchown(&f, None, Some(g))?;
    }
    Ok(true)
}

/// After a GID remap: give the snapshot the new group.
pub fn regroup(dir: &Path, gid: u32) -> io::Result<usize> {
    let mut n = 0;
    std::os::unix::fs::lchown(dir, None, Some(gid))?;
    for e in std::fs::read_dir(dir)? {
        std::os::unix::fs::lchown(e?.path(), None, Some(gid))?;
        n += 1;
    }
    Ok(n)
}

/// `/run/s6/basedir` must be a directory readable by everyone (C-S6-1).
pub fn ensure_basedir(p: &Path) -> io::Result<()> {
    if !crate::logs::is_real_dir(p) {
        remove_any(p)?;
        parent_dirs(p)?;
        DirBuilder::new().recursive(true).mode(0o755).create(p)?;
    }
    set_mode(p, 0o755)
}

/// Empty the scan directory (creating it if missing), `0755`, owned by `owner` so the hermes
/// user can publish and remove slots. Returns how many stale entries were removed.
pub fn fresh_scan_dir(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<usize> {
    let removed = fresh_dir(dir, 0o755)?;
    if let Some((u, g)) = owner {
        std::os::unix::fs::lchown(dir, Some(u), Some(g))?;
    }
    Ok(removed)
}

/// Where runtime state goes when `/run` cannot hold it (see [`runtime_fallback`]).
pub fn fallback_dir(uid: u32) -> std::path::PathBuf {
    format!("/tmp/hermesinit-{uid}").into()
}

/// Can a process of this uid create (or use) the directory `p`?
fn usable(p: &Path) -> bool {
    use nix::unistd::{AccessFlags, access};
    let rwx = AccessFlags::W_OK | AccessFlags::X_OK;
    match std::fs::symlink_metadata(p) {
        Ok(m) => m.is_dir() && access(p, rwx).is_ok(),
        Err(_) => {
            let mut q = p;
            // The nearest existing ancestor decides whether the missing part can be made.
            while let Some(parent) = q.parent() {
                if parent.exists() {
                    return parent.is_dir() && access(parent, rwx).is_ok();
                }
                q = parent;
            }
            false
        }
    }
}

/// Make (or accept) `/tmp/hermesinit-<uid>`: a real directory, owned by `uid`, mode 0700. An
/// existing one that is a symlink or someone else's is refused: a client trusts a socket
/// there only because nobody but `uid` (and root) can have put it there.
fn own_private_dir(dir: &Path, uid: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = std::fs::symlink_metadata(dir)?;
    if !m.is_dir() || m.uid() != uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} exists and is not a directory owned by uid {uid}", dir.display()),
        ));
    }
    set_mode(dir, 0o700)
}

/// Not root, and `/run` (say a root-owned `--tmpfs /run` under `--user 10000`) cannot hold the
/// control socket, the scan directory or the env snapshot: say so loudly, and move each
/// unusable one into `/tmp/hermesinit-<uid>/` (0700, owned by the user), where `hermesinit
/// svc` also looks (control::request, [`fallback_socket`]). Hermes' own s6 paths
/// (`/run/service`, `/run/s6/basedir`) cannot move: Hermes then runs gateways in the
/// foreground as it does without s6, while hermesinit still supervises its native slots.
pub fn runtime_fallback(cfg: &mut crate::config::Config, uid: u32) {
    use tracing::{error, warn};
    if uid == 0 {
        return;
    }
    let sock_dir = cfg.control_socket.parent().map(Path::to_path_buf).unwrap_or_default();
    let bad: Vec<&str> =
        [("control socket", &sock_dir), ("scan directory", &cfg.scan_dir), ("env snapshot", &cfg.env_dir)]
            .into_iter()
            .filter(|(_, p)| !usable(p))
            .map(|(what, _)| what)
            .collect();
    if bad.is_empty() {
        return;
    }
    let dir = fallback_dir(uid);
    if let Err(e) = own_private_dir(&dir, uid) {
        error!(
            "running as uid {uid} and {} cannot be created under /run, nor the fallback {}: {e}; \
             `hermesinit svc` and the s6 tools will not work. Mount a writable /run (an emptyDir, \
             or a tmpfs with mode=1777) or start the container as root",
            bad.join(", "),
            dir.display()
        );
        return;
    }
    if !usable(&sock_dir) {
        cfg.control_socket = dir.join("control.sock");
    }
    if !usable(&cfg.scan_dir) {
        cfg.scan_dir = dir.join("service");
    }
    if !usable(&cfg.env_dir) {
        cfg.env_dir = dir.join("container_environment");
    }
    warn!(
        "running as uid {uid} and /run is not writable for it (a root-owned tmpfs?): {} moved to {} \
         (found there by `hermesinit svc`). Hermes' s6 paths (/run/service, /run/s6) stay missing: \
         `hermes gateway start` will not work, native gateway slots still do. Fix: a writable /run \
         (Kubernetes emptyDir, `--tmpfs /run:mode=1777`) or start as root",
        bad.join(", "),
        dir.display()
    );
}

/// The fallback control socket of a PID 1 running as `uid`, if one is there and trustworthy:
/// its directory is a real directory owned by `uid` that nobody else may write to, and
/// the socket is owned by `uid` too. (Only `uid` or root could have made it so; when PID 1 runs
/// as `uid`, that is PID 1's own trust level.)
pub fn fallback_socket(uid: u32) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = fallback_dir(uid);
    let d = std::fs::symlink_metadata(&dir).ok()?;
    if !d.is_dir() || d.uid() != uid || d.mode() & 0o022 != 0 {
        return None;
    }
    let sock = dir.join("control.sock");
    let s = std::fs::symlink_metadata(&sock).ok()?;
    (s.file_type().is_socket() && s.uid() == uid).then_some(sock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::testutil::{TempDir, is_root};
    use std::os::unix::fs::MetadataExt;

    fn os(a: &str, b: &str) -> (OsString, OsString) {
        (a.into(), b.into())
    }

    /// C-BOOT-1: one file per variable, verbatim values, empty and dotted names kept; what the
    /// lead's envdir reader gets back is exactly the environment.
    #[test]
    fn c_boot_1_env_snapshot_round_trips() {
        let t = TempDir::new("envsnap");
        let dir = t.path().join("s6/container_environment");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("STALE"), "x").unwrap();
        let vars = vec![
            os("PATH", "/bin"),
            os("EMPTY", ""),
            os("my.dotted", "v"),
            os("MULTI", "a\nb\n"),
            os(".hidden", "no"),
            os("a/b", "no"),
            os("PATH", "/second"),
        ];
        let w = write(&dir, &vars, is_root().then_some(10000)).unwrap();
        assert_eq!(w.written, 4);
        assert_eq!(w.skipped, vec![".hidden", "a/b"]);
        assert_eq!(std::fs::read(dir.join("MULTI")).unwrap(), b"a\nb\n");
        assert_eq!(std::fs::read(dir.join("PATH")).unwrap(), b"/bin");
        let back = crate::envdir::read(&dir).unwrap();
        assert_eq!(back, vec![os("EMPTY", ""), os("MULTI", "a\nb\n"), os("PATH", "/bin"), os("my.dotted", "v")]);
        let dm = std::fs::metadata(&dir).unwrap();
        assert_eq!(dm.mode() & 0o7777, 0o750);
        let fm = std::fs::metadata(dir.join("EMPTY")).unwrap();
        assert_eq!(fm.mode() & 0o7777, 0o640);
        if is_root() {
            assert_eq!((dm.uid(), dm.gid(), fm.uid(), fm.gid()), (0, 10000, 0, 10000));
            assert_eq!(regroup(&dir, 1234).unwrap(), 4);
            assert_eq!(std::fs::metadata(dir.join("EMPTY")).unwrap().gid(), 1234);
        }
    }

    /// A restart finds the last boot's snapshot: files that are plainly ours are kept (and
    /// corrected), anything else is replaced, stale variables go.
    #[test]
    fn c_boot_1_a_restart_keeps_what_is_right_and_replaces_the_rest() {
        use std::os::unix::fs::PermissionsExt;
        let t = TempDir::new("envsnap-restart");
        let dir = t.path().join("container_environment");
        let gid = is_root().then_some(10000);
        write(&dir, &[os("SAME", "v"), os("CHANGED", "old value"), os("GONE", "x"), os("MODE", "m")], gid).unwrap();
        std::fs::set_permissions(dir.join("MODE"), std::fs::Permissions::from_mode(0o666)).unwrap();
        // Held open across the rewrite: an inode number alone could be reused by a new file.
        let held: Vec<(&str, std::fs::File)> =
            ["SAME", "CHANGED", "MODE"].into_iter().map(|n| (n, std::fs::File::open(dir.join(n)).unwrap())).collect();
        // What a hook (root) may leave: a symlink, a hard link, a directory under a variable's name.
        std::fs::write(t.path().join("target"), "keep").unwrap();
        std::os::unix::fs::symlink(t.path().join("target"), dir.join("LINKED")).unwrap();
        std::fs::hard_link(t.path().join("target"), dir.join("HARD")).unwrap();
        std::fs::create_dir(dir.join("ADIR")).unwrap();
        let vars = [
            os("SAME", "v"),
            os("CHANGED", "new"),
            os("MODE", "m"),
            os("LINKED", "l"),
            os("HARD", "h"),
            os("ADIR", "d"),
        ];
        assert_eq!(write(&dir, &vars, gid).unwrap().written, 6);
        let back = crate::envdir::read(&dir).unwrap();
        assert_eq!(
            back,
            vec![
                os("ADIR", "d"),
                os("CHANGED", "new"),
                os("HARD", "h"),
                os("LINKED", "l"),
                os("MODE", "m"),
                os("SAME", "v")
            ]
        );
        for (n, f) in &held {
            let (m, now) = (f.metadata().unwrap(), std::fs::symlink_metadata(dir.join(n)).unwrap());
            assert!(m.nlink() == 1 && (m.dev(), m.ino()) == (now.dev(), now.ino()), "{n}: kept, rewritten in place");
            let mut value = String::new();
            std::io::Read::read_to_string(&mut &*f, &mut value).unwrap();
            assert_eq!(value, std::fs::read_to_string(dir.join(n)).unwrap(), "{n}: the kept file holds the new value");
        }
        assert_eq!(std::fs::read_to_string(t.path().join("target")).unwrap(), "keep", "never written through a link");
        for n in ["SAME", "CHANGED", "MODE", "LINKED", "HARD", "ADIR"] {
            let m = std::fs::symlink_metadata(dir.join(n)).unwrap();
            assert!(m.is_file() && m.nlink() == 1 && m.mode() & 0o7777 == 0o640, "{n}");
            if is_root() {
                assert_eq!((m.uid(), m.gid()), (0, 10000), "{n}");
            }
        }
    }

    #[test]
    fn scan_dir_is_emptied_and_basedir_made_a_directory() {
        let t = TempDir::new("scandir");
        let scan = t.path().join("run/service");
        std::fs::create_dir_all(scan.join("gateway-x/supervise")).unwrap();
        std::fs::create_dir_all(scan.join(".s6-svscan")).unwrap();
        std::fs::write(scan.join("junk"), "").unwrap();
        let owner = is_root().then_some((10000, 10000));
        assert_eq!(fresh_scan_dir(&scan, owner).unwrap(), 3);
        assert_eq!(std::fs::read_dir(&scan).unwrap().count(), 0);
        assert_eq!(fresh_scan_dir(&scan, owner).unwrap(), 0);
        let m = std::fs::metadata(&scan).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o755);
        if is_root() {
            assert_eq!(m.uid(), 10000);
        }
        // A symlinked scan dir is replaced, its target untouched.
        let target = t.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), "").unwrap();
        let linked = t.path().join("run/linked");
        std::os::unix::fs::symlink(&target, &linked).unwrap();
        fresh_scan_dir(&linked, owner).unwrap();
        assert!(crate::logs::is_real_dir(&linked));
        assert!(target.join("keep").exists());
        let base = t.path().join("run/s6/basedir");
        ensure_basedir(&base).unwrap();
        ensure_basedir(&base).unwrap();
        assert!(crate::logs::is_real_dir(&base));
    }
}
