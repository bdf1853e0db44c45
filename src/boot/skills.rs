//! Bundled skills: hermes-agent's own `tools.skills_sync` (run as a module, as upstream's boot
//! runs its `skills_sync.py`) copies new and updated bundled skills into
//! `$HERMES_HOME/skills`, keeping user-modified ones, so a fresh volume has them. Run as hermes;
//! its `Done: …` summary goes to the log (the per-skill lines at debug level, and the last of
//! them as warnings when it fails). A failure or timeout is a warning.

use std::os::unix::ffi::OsStrExt;

pub const ARGS: [&str; 2] = ["-m", "tools.skills_sync"];
pub const PREFIX: &str = "[skills-sync]";
pub const TIMEOUT_SECS: u64 = 120;

/// Is this output line the summary?
pub fn is_summary(line: &str) -> bool {
    line.trim_start().starts_with("Done:")
}

/// What the image build found (`docker/image-stamp.py`): the venv's bundled skills directory,
/// or `none`.
pub const STAMP: &str = "/opt/hermes/bundled-skills";

/// Where hermes-agent 0.19.0 looks for its bundled skills (`hermes_constants.
/// get_bundled_skills_dir`): `HERMES_BUNDLED_SKILLS`, else a `skills` data directory of the
/// venv (the `data`, `purelib` and `platlib` install paths). The first that exists; `None` when
/// there is none — the 0.19.0 wheel ships no skills, and upstream's boot also syncs only when
/// its `skills/` directory exists.
///
/// Without the override, the image's `stamp` (root's file, see [`STAMP`]) answers when there is
/// one: looking into `site-packages` costs a few milliseconds on fuse-overlayfs (its first
/// lookup there loads the whole directory), and boot would be the first to look.
pub fn bundled_dir(
    override_dir: Option<&str>,
    venv: &std::path::Path,
    stamp: &std::path::Path,
) -> Option<std::path::PathBuf> {
    if let Some(d) = override_dir.map(str::trim).filter(|d| !d.is_empty()) {
        return Some(d.into()).filter(|p: &std::path::PathBuf| p.is_dir());
    }
    let stamped = crate::fsx::read_trusted_file(stamp, 4096).ok();
    match stamped.as_deref().map(|t| t.strip_suffix(b"\n").unwrap_or(t)) {
        Some(b"none") => return None,
        Some(p) if p.starts_with(b"/") && !p.contains(&b'\n') => {
            let p = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(p));
            return p.is_dir().then_some(p);
        }
        _ => {}
    }
    let mut candidates = vec![venv.join("skills")];
    if let Ok(rd) = std::fs::read_dir(venv.join("lib")) {
        let mut libs: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path().join("site-packages/skills")).collect();
        libs.sort();
        candidates.extend(libs);
    }
    candidates.into_iter().find(|p| p.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::testutil::TempDir;

    #[test]
    fn bundled_skills_are_found_where_hermes_looks() {
        let t = TempDir::new("skills");
        let venv = t.path().join("venv");
        let no_stamp = t.path().join("no-stamp");
        let bundled_dir = |o: Option<&str>, v: &std::path::Path| super::bundled_dir(o, v, &no_stamp);
        std::fs::create_dir_all(venv.join("lib/python3.13/site-packages")).unwrap();
        assert_eq!(bundled_dir(None, &venv), None);
        assert_eq!(bundled_dir(Some(""), &venv), None);
        std::fs::create_dir_all(venv.join("lib/python3.13/site-packages/skills")).unwrap();
        assert_eq!(bundled_dir(None, &venv), Some(venv.join("lib/python3.13/site-packages/skills")));
        std::fs::create_dir_all(venv.join("skills")).unwrap();
        assert_eq!(bundled_dir(None, &venv), Some(venv.join("skills")));
        assert_eq!(bundled_dir(Some(t.path().to_str().unwrap()), &venv), Some(t.path().to_path_buf()));
        assert_eq!(bundled_dir(Some("/nonexistent"), &venv), None);
        assert!(is_summary("Done: 1 new, 0 updated, 3 unchanged. 4 total bundled.") && !is_summary("Syncing"));
    }

    /// The image's stamp answers without looking into the venv; the override still wins, and
    /// a stamp anyone but root could have written is not believed.
    #[test]
    fn the_image_stamp_answers_first() {
        use std::os::unix::fs::PermissionsExt;
        let t = TempDir::new("skills-stamp");
        let venv = t.path().join("venv");
        let found = venv.join("lib/python3.13/site-packages/skills");
        std::fs::create_dir_all(&found).unwrap();
        let stamp = t.path().join("bundled-skills");
        std::fs::write(&stamp, "none\n").unwrap();
        assert_eq!(bundled_dir(None, &venv, &stamp), None, "the stamp says none");
        assert_eq!(bundled_dir(Some(t.path().to_str().unwrap()), &venv, &stamp), Some(t.path().to_path_buf()));
        std::fs::write(&stamp, format!("{}\n", t.path().display())).unwrap();
        assert_eq!(bundled_dir(None, &venv, &stamp), Some(t.path().to_path_buf()));
        std::fs::write(&stamp, "/nonexistent\n").unwrap();
        assert_eq!(bundled_dir(None, &venv, &stamp), None);
        std::fs::write(&stamp, "none\n").unwrap();
        std::fs::set_permissions(&stamp, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(bundled_dir(None, &venv, &stamp), Some(found), "an untrusted stamp: the venv is searched");
    }
}
