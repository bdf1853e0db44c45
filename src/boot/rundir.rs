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
    let mut removed = 0;
    if crate::logs::is_real_dir(dir) {
        for e in std::fs::read_dir(dir)? {
            remove_any(&e?.path())?;
            removed += 1;
        }
    } else {
        remove_any(dir)?;
        parent_dirs(dir)?;
        DirBuilder::new().mode(mode).create(dir)?;
    }
    set_mode(dir, mode)?;
    Ok(removed)
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
pub fn write(dir: &Path, vars: &[(OsString, OsString)], gid: Option<u32>) -> io::Result<Written> {
    fresh_dir(dir, 0o750)?;
    if let Some(g) = gid {
        std::os::unix::fs::lchown(dir, Some(0), Some(g))?;
    }
    let mut out = Written::default();
    let mut seen = std::collections::BTreeSet::new();
    // A name given twice: the first occurrence wins, as with getenv(3).
    for (k, v) in vars {
        if !storable(k.as_bytes()) {
            out.skipped.push(k.to_string_lossy().into_owned());
            continue;
        }
        if !seen.insert(k.clone()) {
            continue;
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join(k))?;
        f.write_all(v.as_bytes())?;
        f.set_permissions(Permissions::from_mode(0o640))?;
        if let Some(g) = gid {
            std::os::unix::fs::fchown(&f, Some(0), Some(g))?;
        }
        out.written += 1;
    }
    Ok(out)
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
