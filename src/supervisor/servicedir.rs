//! Service directories in the scan directory: what is in one (native spec or s6 run script),
//! and publishing one atomically (built under a dot-prefixed name, then renamed; C-SVC-7).

use crate::config::{self, Invalid, SPEC_FILE, ServiceSpec};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How a service is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `hermesinit.yaml`: argv, user, env, cwd, log settings; no shell involved.
    Native(ServiceSpec),
    /// s6 format: `./run` (+ `finish`, `log/run`), run as the owner of `run`.
    S6 { run_uid: u32, run_gid: u32, finish: bool, logger: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDir {
    pub name: String,
    pub path: PathBuf,
    pub kind: Kind,
    /// A `down` file: registered but not started at boot/scan (s6 semantics).
    pub down_file: bool,
}

#[derive(Debug)]
pub enum LoadError {
    /// Not a service (yet): no spec and no run script. Silently skipped, as s6 does.
    NotAService,
    Invalid(Invalid),
}

fn executable(p: &Path) -> Option<std::fs::Metadata> {
    std::fs::metadata(p).ok().filter(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl ServiceDir {
    pub fn load(scan_dir: &Path, name: &str) -> Result<ServiceDir, LoadError> {
        let path = scan_dir.join(name);
        // Never follow a symlinked slot out of the scan directory.
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) || !config::valid_service_name(name) {
            return Err(LoadError::NotAService);
        }
        let down_file = path.join("down").exists();
        let spec_path = path.join(SPEC_FILE);
        let kind = match std::fs::read_to_string(&spec_path) {
            Ok(text) => Kind::Native(ServiceSpec::parse(&spec_path, &text).map_err(LoadError::Invalid)?),
            Err(_) => {
                let run = executable(&path.join("run")).ok_or(LoadError::NotAService)?;
                Kind::S6 {
                    run_uid: run.uid(),
                    run_gid: run.gid(),
                    finish: executable(&path.join("finish")).is_some(),
                    logger: executable(&path.join("log/run")).is_some(),
                }
            }
        };
        Ok(ServiceDir { name: name.to_string(), path, kind, down_file })
    }
}

/// Publish a native service directory: written under `.<name>.tmp`, then renamed into place,
/// replacing an older one. `owner` gets the directory (so the hermes user may remove it, as
/// Hermes' `profile delete` does).
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
    let live = scan_dir.join(name);
    let tmp = scan_dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let r = (|| {
        std::fs::write(tmp.join("type"), "longrun\n")?;
        std::fs::write(tmp.join(SPEC_FILE), spec.to_yaml())?;
        if down {
            std::fs::write(tmp.join("down"), "")?;
        }
        if let Some((u, g)) = owner {
            for e in std::fs::read_dir(&tmp)? {
                std::os::unix::fs::lchown(e?.path(), Some(u), Some(g))?;
            }
            std::os::unix::fs::lchown(&tmp, Some(u), Some(g))?;
        }
        if std::fs::symlink_metadata(&live).is_ok() {
            std::fs::remove_dir_all(&live)?;
        }
        std::fs::rename(&tmp, &live)
    })();
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    r.map(|()| live)
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
pub fn list(scan_dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(scan_dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> =
        rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| config::valid_service_name(n)).collect();
    v.sort();
    v
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
        let d = ServiceDir::load(&scan, "gateway-a").unwrap();
        assert!(d.down_file);
        assert!(matches!(&d.kind, Kind::Native(s) if s.command[1] == "9"));
        // republish replaces
        publish(&scan, "gateway-a", &spec, false, None).unwrap();
        assert!(!ServiceDir::load(&scan, "gateway-a").unwrap().down_file);
        // s6 format
        let s6 = scan.join("svc");
        std::fs::create_dir_all(s6.join("log")).unwrap();
        std::fs::write(s6.join("run"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(s6.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(ServiceDir::load(&scan, "svc").unwrap().kind, Kind::S6 { finish: false, logger: false, .. }));
        std::fs::create_dir_all(scan.join("empty")).unwrap();
        assert!(matches!(ServiceDir::load(&scan, "empty"), Err(LoadError::NotAService)));
        std::fs::create_dir_all(scan.join(".hidden")).unwrap();
        assert_eq!(list(&scan), vec!["empty", "gateway-a", "svc"]);
        assert!(publish(&scan, "../evil", &spec, false, None).is_err());
        std::fs::remove_dir_all(&scan).unwrap();
    }
}
