//! Service directories in the scan directory: what is in one (native spec or s6 run script),
//! and publishing one atomically (built under a dot-prefixed name, then renamed; C-SVC-7).

use crate::config::{self, Invalid, SPEC_FILE, ServiceSpec};
use crate::fsx;
use std::collections::BTreeSet;
use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use tracing::warn;

/// How a service is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `hermesinit.yaml`: argv, user, env, cwd, log settings; no shell involved.
    Native(ServiceSpec),
    /// s6 format: `./run` (+ `finish`, `log/run`). Who runs them is decided at each start
    /// (`launch`), never cached here.
    S6 { finish: bool, logger: bool },
}

impl Kind {
    /// As the control protocol names it.
    pub fn wire(&self) -> crate::control::ServiceKind {
        match self {
            Kind::Native(_) => crate::control::ServiceKind::Native,
            Kind::S6 { .. } => crate::control::ServiceKind::S6,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDir {
    pub name: String,
    pub path: PathBuf,
    pub kind: Kind,
    /// A `down` file: registered but not started at boot/scan (s6 semantics).
    pub down_file: bool,
    /// The directory this slot was loaded from: a start from any other one is refused.
    pub inode: ((u32, u32), u64),
    /// Its owner (uid, gid), for files PID 1 writes on the slot's behalf (`None`: root).
    pub owner: Option<(u32, u32)>,
}

#[derive(Debug)]
pub enum LoadError {
    /// Not a service (yet): no spec and no run script. Silently skipped, as s6 does.
    NotAService,
    Invalid(Invalid),
}

/// What a failed load depended on: an unchanged bad slot is neither re-read nor re-reported
/// (C-SEC-5). The directory's mtime moves when an entry is added, removed or renamed; the
/// spec's when it is rewritten in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    dir: ((u32, u32), u64, (i64, u32)),
    spec: Option<(u64, (i64, u32), u64)>,
}

pub fn fingerprint(scan: BorrowedFd, name: &str) -> Option<Fingerprint> {
    let c = fsx::cname(OsStr::new(name)).ok()?;
    let d = fsx::lstat_at(scan, &c).ok()?;
    let dir = fsx::open_dir_at(scan, &c).ok()?;
    let spec = fsx::lstat_at(dir.as_fd(), c"hermesinit.yaml").ok().map(|s| (s.ino, s.mtime, s.size));
    Some(Fingerprint { dir: (d.dev, d.ino, d.mtime), spec })
}

fn program_present(dir: BorrowedFd, name: &CStr, shown: &str) -> Result<bool, String> {
    match fsx::lstat_at(dir, name) {
        Ok(st) if st.is_symlink() => Err(format!("refusing {shown}: a symlink")),
        Ok(st) => Ok(st.is_file() && st.mode & 0o111 != 0),
        Err(_) => Ok(false),
    }
}

/// Does a spec's `user:` name exactly who a non-root slot runs as anyway (the directory's owner,
/// with the group [`launch::identity_of_owner`](super::launch::identity_of_owner) gives it)?
/// Then ignoring it changes nothing and is not worth a warning: boot's own slots say
/// `user: hermes` in a hermes-owned directory. Any other user or group — `root`, `hermes:0`, a
/// name that does not resolve — is still reported.
fn names_owner(user: &str, uid: u32, gid: u32) -> bool {
    let owner = super::launch::identity_of_owner(uid, gid);
    crate::creds::Identity::resolve(user).is_ok_and(|id| id.uid == owner.uid && id.gid == owner.gid)
}

impl ServiceDir {
    /// Read the slot `name` of the scan directory `scan` without following any symlink; every
    /// file is read through the bounded reader (C-SEC-2, C-SEC-3).
    pub fn load(scan: BorrowedFd, scan_dir: &Path, name: &str) -> Result<ServiceDir, LoadError> {
        let path = scan_dir.join(name);
        let bad = |e: String| LoadError::Invalid(Invalid { file: path.clone(), errors: vec![e] });
        if !config::valid_service_name(name) {
            return Err(LoadError::NotAService);
        }
        let c = fsx::cname(OsStr::new(name)).map_err(|_| LoadError::NotAService)?;
        // A symlinked slot is never followed out of the scan directory.
        let dir = fsx::open_dir_at(scan, &c).map_err(|_| LoadError::NotAService)?;
        let st = fsx::fstat(dir.as_fd()).map_err(|e| bad(e.to_string()))?;
        let down_file = fsx::lstat_at(dir.as_fd(), c"down").is_ok();
        let spec_path = path.join(SPEC_FILE);
        let kind = match fsx::read_bounded_at(dir.as_fd(), c"hermesinit.yaml", config::MAX_SPEC_BYTES) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| bad(format!("{SPEC_FILE}: not UTF-8")))?;
                let spec = ServiceSpec::parse(&spec_path, &text).map_err(LoadError::Invalid)?;
                if let (Some(u), true) = (&spec.user, st.uid != 0) {
                    if !names_owner(u, st.uid, st.gid) {
                        warn!(
                            "service {name}: `user: {u}` ignored: the slot directory belongs to uid {}, \
                             so it runs as that uid",
                            st.uid
                        );
                    }
                }
                Kind::Native(spec)
            }
            Err(e) if fsx::is_missing(&e) => {
                if !program_present(dir.as_fd(), c"run", "run").map_err(bad)? {
                    return Err(LoadError::NotAService);
                }
                let finish = program_present(dir.as_fd(), c"finish", "finish").map_err(bad)?;
                let logger = match fsx::open_dir_at(dir.as_fd(), c"log") {
                    Ok(l) => program_present(l.as_fd(), c"run", "log/run").map_err(bad)?,
                    Err(e) if fsx::is_symlink_refusal(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => {
                        return Err(bad("refusing log: a symlink or not a directory".into()));
                    }
                    Err(_) => false,
                };
                Kind::S6 { finish, logger }
            }
            Err(e) if fsx::is_symlink_refusal(&e) => return Err(bad(format!("refusing {SPEC_FILE}: a symlink"))),
            Err(e) => return Err(bad(format!("{SPEC_FILE}: {e}"))),
        };
        let owner = (st.uid != 0).then_some((st.uid, st.gid));
        Ok(ServiceDir { name: name.to_string(), path, kind, down_file, inode: (st.dev, st.ino), owner })
    }
}

/// Publish a native service directory, for boot: before the supervisor reads the scan directory
/// (and before any service or the main program could), so a free name is built in place — a
/// stat, a second stat and a rename fewer than staging, each a round trip to the daemon on
/// fuse-overlayfs. A taken name is replaced: the new directory is built under `.<name>.tmp`
/// and renamed over it. `owner` gets the directory (so the hermes user may remove it, as
/// Hermes' `profile delete` does). Never while a supervisor scans: it could read a slot
/// half-built.
pub fn publish(
    scan_dir: &Path,
    name: &str,
    spec: &ServiceSpec,
    down: bool,
    owner: Option<(u32, u32)>,
) -> std::io::Result<PathBuf> {
    if !config::valid_service_name(name) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("invalid service name '{name}'")));
    }
    // The scan directory belongs to hermes: everything below it is reached through descriptors,
    // never by a path hermes could redirect with a symlink (C-SEC-2).
    let scan = fsx::open_dir_path(scan_dir)?;
    let live = fsx::cname(OsStr::new(name))?;
    let yaml = spec.to_yaml();
    // `down` first: a slot is never, even half-built, one that would start.
    let mut files: Vec<(&CStr, &[u8])> = Vec::new();
    if down {
        files.push((c"down", b""));
    }
    files.extend([(c"type", &b"longrun\n"[..]), (c"hermesinit.yaml", yaml.as_bytes())]);
    match fsx::mkdir_at(scan.as_fd(), &live, 0o755) {
        Ok(()) => {
            let r = fill(scan.as_fd(), &live, &files, owner);
            if r.is_err() {
                let _ = std::fs::remove_dir_all(scan_dir.join(name));
            }
            return r.map(|()| scan_dir.join(name));
        }
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e),
    }
    let tmp_name = format!(".{name}.tmp");
    let tmp = fsx::cname(OsStr::new(&tmp_name))?;
    // std's remove_dir_all never follows a symlink, at any depth.
    let _ = std::fs::remove_dir_all(scan_dir.join(&tmp_name));
    fsx::mkdir_at(scan.as_fd(), &tmp, 0o755)?;
    let r = fill(scan.as_fd(), &tmp, &files, owner).and_then(|()| {
        if fsx::lstat_at(scan.as_fd(), &live).is_ok() {
            std::fs::remove_dir_all(scan_dir.join(name)).or_else(|_| fsx::unlink_at(scan.as_fd(), &live))?;
        }
        fsx::rename_at(scan.as_fd(), &tmp, &live)
    });
    if r.is_err() {
        let _ = std::fs::remove_dir_all(scan_dir.join(&tmp_name));
    }
    r.map(|()| scan_dir.join(name))
}

/// Fill the new directory `name` of `scan` with `files`, all given to `owner`.
fn fill(scan: BorrowedFd, name: &CStr, files: &[(&CStr, &[u8])], owner: Option<(u32, u32)>) -> std::io::Result<()> {
    let dir = fsx::open_dir_at(scan, name)?;
    for (n, body) in files {
        let mut f = fsx::create_excl_at(dir.as_fd(), n, 0o644)?;
        std::io::Write::write_all(&mut f, body)?;
        if let Some((u, g)) = owner {
            fsx::fchown(f.as_fd(), u, g)?;
        }
    }
    if let Some((u, g)) = owner {
        fsx::fchown(dir.as_fd(), u, g)?;
    }
    Ok(())
}

/// Remove staging leftovers (`.<name>.tmp*`) of an interrupted publish.
pub fn remove_stale_staging(scan_dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(scan_dir) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with('.') && n.contains(".tmp")))
        .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
        .count()
}

/// The names in the scan directory that may be services (dot-prefixed entries are ignored).
pub fn list(scan: BorrowedFd) -> BTreeSet<String> {
    let Ok(names) = fsx::list(scan) else { return BTreeSet::new() };
    names.into_iter().filter_map(|n| n.into_string().ok()).filter(|n| config::valid_service_name(n)).collect()
}

/// The (device, inode) of the directory `name` in the scan directory, if it is one.
pub fn inode_of(scan: BorrowedFd, name: &str) -> Option<((u32, u32), u64)> {
    let st = fsx::lstat_at(scan, &fsx::cname(OsStr::new(name)).ok()?).ok()?;
    st.is_dir().then_some((st.dev, st.ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_then_load_native_and_s6_dirs() {
        let scan = std::env::temp_dir().join(format!("hi-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scan);
        std::fs::create_dir_all(scan.join(".gateway-x.tmp")).unwrap();
        assert_eq!(remove_stale_staging(&scan), 1);
        let spec = ServiceSpec { command: vec!["/bin/sleep".into(), "9".into()], ..Default::default() };
        publish(&scan, "gateway-a", &spec, true, None).unwrap();
        let fd = fsx::open_dir_path(&scan).unwrap();
        let load = |n: &str| ServiceDir::load(fd.as_fd(), &scan, n);
        let d = load("gateway-a").unwrap();
        assert!(d.down_file);
        assert!(matches!(&d.kind, Kind::Native(s) if s.command[1] == "9"));
        // republish replaces
        publish(&scan, "gateway-a", &spec, false, None).unwrap();
        assert!(!load("gateway-a").unwrap().down_file);
        // s6 format
        let s6 = scan.join("svc");
        std::fs::create_dir_all(s6.join("log")).unwrap();
        std::fs::write(s6.join("run"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(s6.join("run"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        assert!(matches!(load("svc").unwrap().kind, Kind::S6 { finish: false, logger: false, .. }));
        std::fs::create_dir_all(scan.join("empty")).unwrap();
        assert!(matches!(load("empty"), Err(LoadError::NotAService)));
        std::fs::create_dir_all(scan.join(".hidden")).unwrap();
        assert_eq!(list(fd.as_fd()).into_iter().collect::<Vec<_>>(), vec!["empty", "gateway-a", "svc"]);
        assert!(publish(&scan, "../evil", &spec, false, None).is_err());
        std::fs::remove_dir_all(&scan).unwrap();
    }

    /// A slot published for an owner is theirs, directory and files, in a hermes-owned
    /// scan directory (boot's) or a root-owned one, built in place or replacing one.
    #[test]
    fn published_slots_belong_to_their_owner() {
        use std::os::unix::fs::MetadataExt;
        if !crate::boot::testutil::is_root() {
            return;
        }
        let t = crate::boot::testutil::TempDir::new("publish-owner");
        let spec = ServiceSpec { command: vec!["/bin/true".into()], ..Default::default() };
        for (scan_owner, tag) in [(10000, "hermes-owned"), (0, "root-owned")] {
            let scan = t.path().join(tag);
            std::fs::create_dir(&scan).unwrap();
            std::os::unix::fs::lchown(&scan, Some(scan_owner), Some(scan_owner)).unwrap();
            // In place (a free name, as at boot), then replaced (a taken one), either way.
            for _ in 0..2 {
                let p = publish(&scan, "gateway-x", &spec, true, Some((10000, 10000))).unwrap();
                for f in ["", "type", "hermesinit.yaml", "down"] {
                    let m = std::fs::symlink_metadata(p.join(f)).unwrap();
                    assert_eq!((m.uid(), m.gid()), (10000, 10000), "{tag} {f}");
                    assert_eq!(m.mode() & 0o777, if f.is_empty() { 0o755 } else { 0o644 }, "{tag} {f}");
                }
                assert_eq!(std::fs::read_dir(&scan).unwrap().count(), 1, "{tag}: no staging left");
            }
            let p = publish(&scan, "gateway-x", &spec, false, None).unwrap();
            assert!(!p.join("down").exists(), "{tag}: replaced, not merged");
        }
    }

    /// `user:` naming the directory's owner is not worth a warning; any other user or group is.
    #[test]
    fn user_naming_the_owner_is_not_reported() {
        assert!(names_owner("root", 0, 0));
        assert!(names_owner("54321", 54321, 54321), "an unlisted uid runs with gid = uid");
        assert!(names_owner("54321:54321", 54321, 54321));
        assert!(!names_owner("54321:0", 54321, 54321), "another group");
        assert!(!names_owner("root", 54321, 54321));
        assert!(!names_owner("54322", 54321, 54321));
        assert!(!names_owner("no-such-user-hermesinit", 54321, 54321));
    }
}
