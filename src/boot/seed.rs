//! C-BOOT-4: the hermes directories exist and are hermes-owned; the image's default files
//! (`/opt/hermes/defaults/*`, today `SOUL.md`) are copied into a fresh `HERMES_HOME`, never
//! overwriting, never through a symlink (`O_CREAT|O_EXCL|O_NOFOLLOW` relative to the
//! `HERMES_HOME` descriptor), created hermes-owned (`fchown` on the new descriptor) and fsynced
//! under a temporary name before they get theirs (`RENAME_NOREPLACE`), so none is ever torn.

use super::{StepErr, soft};
use crate::fsx;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use tracing::{info, warn};

/// Created when missing, in this order (parents first): `logs/gateways`, then the sweep's own
/// lists (C-BOOT-4 seeds exactly what C-BOOT-3 keeps hermes-owned), so the two cannot drift.
pub fn seed_dirs() -> impl Iterator<Item = &'static str> {
    ["logs", "logs/gateways"]
        .into_iter()
        .chain(super::sweep::DIRS_ONLY.iter().copied())
        .chain(super::sweep::SUBTREES.iter().copied().filter(|d| *d != "logs"))
}

/// Files whose mode is Hermes' own choice (secrets private, `config.yaml` group-readable):
/// seeded with it, and [`fix_modes`] restores the first two on every boot.
pub const MODES: &[(&str, u32)] = &[(".env", 0o600), ("config.yaml", 0o640), ("auth.json", 0o600)];

fn fixed_mode(name: &[u8]) -> Option<u32> {
    MODES.iter().find(|(n, _)| n.as_bytes() == name).map(|(_, m)| *m)
}

/// Every boot: `.env` is hermes and 0600, `config.yaml` hermes and 0640 (changed through a
/// descriptor opened without following; a symlink gets a `refusing` line).
pub fn fix_modes(home: &Path, owner: Option<(u32, u32)>) -> Result<String, StepErr> {
    let Some(fd) = soft(format_args!("opening {}", home.display()), fsx::open_dir_path(home))? else {
        return Ok("skipped: no HERMES_HOME".into());
    };
    let root = fsx::fstat(fd.as_fd()).map_err(|e| StepErr::new(format!("{}: {e}", home.display())))?;
    let mut fixed = Vec::new();
    for (name, mode) in &MODES[..2] {
        let shown = home.join(name);
        let Ok(cname) = fsx::cname(std::ffi::OsStr::new(name)) else { continue };
        let st = match fsx::lstat_at(fd.as_fd(), &cname) {
            Ok(st) => st,
            Err(e) if fsx::is_missing(&e) => continue,
            Err(e) => return Err(StepErr::new(format!("{}: {e}", shown.display()))),
        };
        if st.is_symlink() {
            warn!("boot: modes: refusing to change symlink {}", shown.display());
            continue;
        }
        if st.other_mount_than(&root) {
            continue; // a file bind-mounted from the host: the host's (C-BOOT-3)
        }
        if !st.is_file() || (st.mode & 0o7777 == *mode && owner.is_none_or(|(u, g)| st.owned_by(u, g))) {
            continue;
        }
        let r = fsx::open_read_at(fd.as_fd(), &cname).and_then(|f| {
            if let Some((u, g)) = owner {
                fsx::fchown(f.as_fd(), u, g)?;
            }
            fsx::fchmod(f.as_fd(), *mode)
        });
        if soft(format_args!("fixing {}", shown.display()), r)?.is_some() {
            fixed.push(format!("{name} {mode:04o}"));
        }
    }
    Ok(if fixed.is_empty() { "nothing to fix".into() } else { format!("fixed {}", fixed.join(", ")) })
}

/// `HERMES_HOME` itself: created (with missing parents, root-owned) if missing; a directory we
/// create is given to `owner`.
pub fn ensure_home(home: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    if std::fs::metadata(home).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    std::fs::create_dir_all(home)?;
    if let Some((u, g)) = owner {
        std::os::unix::fs::lchown(home, Some(u), Some(g))?;
    }
    info!("boot: created {}", home.display());
    Ok(())
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seeded {
    pub dirs_created: usize,
    pub dirs_fixed: usize,
    pub files_seeded: Vec<String>,
    pub files_kept: usize,
    pub refused: usize,
}

impl Seeded {
    pub fn summary(&self) -> String {
        format!(
            "created {} directories, re-owned {}, seeded {} default files{}, kept {} existing, refused {}",
            self.dirs_created,
            self.dirs_fixed,
            self.files_seeded.len(),
            if self.files_seeded.is_empty() { String::new() } else { format!(" ({})", self.files_seeded.join(", ")) },
            self.files_kept,
            self.refused
        )
    }
}

pub fn seed(home: &Path, defaults: &Path, owner: Option<(u32, u32)>) -> Result<Seeded, StepErr> {
    let mut s = Seeded::default();
    let Some(fd) = soft(format_args!("opening {}", home.display()), fsx::open_dir_path(home))? else {
        return Ok(s);
    };
    if fsx::read_only(fd.as_fd()) {
        warn!("boot: seed: {} is on a read-only mount: nothing can be created there", home.display());
        return Ok(s);
    }
    for rel in seed_dirs() {
        seed_dir(fd.as_fd(), home, Path::new(rel), owner, &mut s)?;
    }
    seed_defaults(fd.as_fd(), home, defaults, owner, &mut s)?;
    Ok(s)
}

fn seed_dir(
    home_fd: BorrowedFd,
    home: &Path,
    rel: &Path,
    owner: Option<(u32, u32)>,
    s: &mut Seeded,
) -> Result<(), StepErr> {
    let path = home.join(rel);
    let (parent, name) = match fsx::walk_parent(home_fd, rel) {
        Ok(x) => x,
        // A parent that is a symlink was already refused; one that could not be created is
        // already warned about.
        Err((_, e))
            if fsx::is_missing(&e) || fsx::is_symlink_refusal(&e) || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Ok(());
        }
        Err((comp, e)) => {
            soft(format_args!("opening {}", home.join(comp).display()), Err::<(), _>(e))?;
            return Ok(());
        }
    };
    let dir = parent.as_ref().map(|p| p.as_fd()).unwrap_or(home_fd);
    match fsx::lstat_at(dir, &name) {
        Ok(st) if st.is_symlink() => {
            s.refused += 1;
            warn!("boot: seed: refusing to use symlink {} as a directory", path.display());
        }
        Ok(st) if st.is_dir() => {
            if let Some((u, g)) = owner.filter(|(u, g)| !st.owned_by(*u, *g)) {
                if soft(format_args!("chown {}", path.display()), fsx::chown_at(dir, &name, u, g))?.is_some() {
                    s.dirs_fixed += 1;
                }
            }
        }
        Ok(_) => warn!("boot: seed: {} exists and is not a directory; leaving it", path.display()),
        Err(e) if fsx::is_missing(&e) => {
            if soft(format_args!("mkdir {}", path.display()), mkdir_owned(dir, &name, owner))?.is_some() {
                s.dirs_created += 1;
            }
        }
        Err(e) => return Err(StepErr::new(format!("{}: {e}", path.display()))),
    }
    Ok(())
}

fn mkdir_owned(dir: BorrowedFd, name: &CStr, owner: Option<(u32, u32)>) -> io::Result<()> {
    match fsx::mkdir_at(dir, name, 0o755) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(()),
        r => r?,
    }
    if let Some((u, g)) = owner {
        // Through a descriptor opened without following: the new directory, nothing else.
        let fd = fsx::open_dir_at(dir, name)?;
        fsx::fchown(fd.as_fd(), u, g)?;
    }
    Ok(())
}

fn seed_defaults(
    home_fd: BorrowedFd,
    home: &Path,
    defaults: &Path,
    owner: Option<(u32, u32)>,
    s: &mut Seeded,
) -> Result<(), StepErr> {
    let entries = match std::fs::read_dir(defaults) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return soft(format_args!("reading {}", defaults.display()), Err::<(), _>(e)).map(drop),
    };
    let mut files: Vec<_> = entries.filter_map(Result::ok).collect();
    files.sort_by_key(|e| e.file_name());
    for e in files {
        let src = e.path();
        let Ok(meta) = std::fs::metadata(&src) else { continue };
        if !meta.is_file() {
            continue;
        }
        let name_os = e.file_name();
        let Ok(name) = fsx::cname(&name_os) else { continue };
        let shown = home.join(&name_os);
        match fsx::lstat_at(home_fd, &name) {
            Ok(st) if st.is_symlink() => {
                s.refused += 1;
                warn!("boot: seed: refusing to seed {} through a symlink", shown.display());
                continue;
            }
            Ok(_) => {
                s.files_kept += 1;
                continue;
            }
            Err(e) if fsx::is_missing(&e) => {}
            Err(e) => return Err(StepErr::new(format!("{}: {e}", shown.display()))),
        }
        let mode = fixed_mode(name_os.as_bytes()).unwrap_or(meta.mode() & 0o777 | 0o600);
        let r = copy_new(home_fd, &name, &src, mode, owner);
        match r {
            Ok(true) => s.files_seeded.push(name_os.to_string_lossy().into_owned()),
            Ok(false) => s.files_kept += 1,
            Err(e) => {
                soft(format_args!("seeding {}", shown.display()), Err::<(), _>(e))?;
            }
        }
    }
    Ok(())
}

/// Create `name` from `src`, never replacing anything: written and fsynced as
/// `.<name>.hermesinit-tmp`, then moved to `name` only if nothing has that name. A crash or a
/// kill at any point leaves the default whole or absent (then the next boot seeds it), never
/// torn: boot never overwrites an existing file, so a torn one would be kept for good.
/// `Ok(false)`: something appeared there.
fn copy_new(dir: BorrowedFd, name: &CStr, src: &Path, mode: u32, owner: Option<(u32, u32)>) -> io::Result<bool> {
    let mut from = std::fs::File::open(src)?;
    let (tmp, mut to) = super::atomic::temporary(dir, name, mode, owner)?;
    let r = io::copy(&mut from, &mut to)
        .and_then(|_| to.sync_all())
        .and_then(|()| fsx::rename_noreplace_at(dir, &tmp, name));
    if !matches!(r, Ok(true)) {
        let _ = fsx::unlink_at(dir, &tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::testutil::{TempDir, is_root, owner};
    use std::os::unix::fs::{PermissionsExt, symlink};

    /// C-BOOT-4: directories and defaults seeded hermes-owned, existing files never
    /// overwritten, a symlinked name refused with its target untouched; idempotent.
    #[test]
    fn c_boot_4_seeds_dirs_and_defaults_without_overwriting() {
        let t = TempDir::new("seed");
        let home = t.path().join("data");
        let defaults = t.path().join("defaults");
        std::fs::create_dir_all(&defaults).unwrap();
        std::fs::write(defaults.join("SOUL.md"), "default soul\n").unwrap();
        std::fs::write(defaults.join(".env"), "KEY=\n").unwrap();
        std::fs::write(defaults.join("config.yaml"), "model: x\n").unwrap();
        std::fs::write(defaults.join("hooks.txt"), "h").unwrap();
        std::fs::set_permissions(defaults.join("SOUL.md"), std::fs::Permissions::from_mode(0o444)).unwrap();
        std::fs::create_dir_all(defaults.join("subdir")).unwrap();
        std::fs::create_dir_all(home.join("logs")).unwrap();
        std::fs::write(home.join("config.yaml"), "mine\n").unwrap();
        std::fs::write(t.path().join("target"), "untouched").unwrap();
        symlink(t.path().join("target"), home.join("hooks.txt")).unwrap();
        let o = is_root().then_some((10000, 10000));
        if is_root() {
            std::os::unix::fs::lchown(home.join("logs"), Some(0), Some(0)).unwrap();
        }
        ensure_home(&home, o).unwrap();
        let s = seed(&home, &defaults, o).unwrap();
        assert_eq!(s.dirs_created, seed_dirs().count() - 1, "{s:?}");
        assert_eq!(s.files_seeded, vec![".env", "SOUL.md"]);
        assert_eq!((s.files_kept, s.refused), (1, 1));
        assert_eq!(std::fs::read_to_string(home.join("config.yaml")).unwrap(), "mine\n");
        assert_eq!(std::fs::read_to_string(home.join("SOUL.md")).unwrap(), "default soul\n");
        assert_eq!(std::fs::read_to_string(t.path().join("target")).unwrap(), "untouched");
        let mode = |p: &str| std::fs::metadata(home.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(".env"), mode("SOUL.md"), mode("platforms/pairing")), (0o600, 0o644, 0o755));
        if is_root() {
            assert_eq!(s.dirs_fixed, 1);
            for p in ["logs", "logs/gateways", "platforms", "platforms/pairing", "SOUL.md", ".env"] {
                assert_eq!(owner(&home.join(p)), (10000, 10000), "{p}");
            }
        }
        let again = seed(&home, &defaults, o).unwrap();
        assert_eq!((again.dirs_created, again.dirs_fixed, again.files_seeded.len()), (0, 0, 0), "{again:?}");
        assert!(!std::fs::read_dir(&home).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with("-tmp")));
    }

    /// A default is moved into place whole, and never over something that appeared meanwhile;
    /// a temporary an interrupted boot left is replaced.
    #[test]
    fn c_boot_4_defaults_appear_whole_and_never_replace() {
        let t = TempDir::new("seed-whole");
        std::fs::write(t.path().join("src"), "default\n").unwrap();
        std::fs::write(t.path().join(".f.hermesinit-tmp"), "torn").unwrap();
        let d = fsx::open_dir_path(t.path()).unwrap();
        assert!(copy_new(d.as_fd(), c"f", &t.path().join("src"), 0o640, None).unwrap());
        assert_eq!(std::fs::read_to_string(t.path().join("f")).unwrap(), "default\n");
        assert!(!t.path().join(".f.hermesinit-tmp").exists());
        std::fs::write(t.path().join("g"), "mine").unwrap();
        assert!(!copy_new(d.as_fd(), c"g", &t.path().join("src"), 0o640, None).unwrap());
        assert_eq!(std::fs::read_to_string(t.path().join("g")).unwrap(), "mine");
        symlink(t.path().join("nowhere"), t.path().join("h")).unwrap();
        assert!(!copy_new(d.as_fd(), c"h", &t.path().join("src"), 0o640, None).unwrap(), "a dangling link counts");
        assert!(!t.path().join("nowhere").exists());
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 4, "no temporary left");
    }

    #[test]
    fn c_boot_4_symlinked_dir_is_refused() {
        let t = TempDir::new("seed-link");
        let home = t.path().join("data");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(t.path().join("elsewhere")).unwrap();
        symlink(t.path().join("elsewhere"), home.join("logs")).unwrap();
        let s = seed(&home, &t.path().join("no-defaults"), None).unwrap();
        assert_eq!(s.refused, 1, "{s:?}");
        assert!(!t.path().join("elsewhere/gateways").exists(), "logs/gateways never created through the link");
    }
}
