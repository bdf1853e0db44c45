//! Bundled skills: hermes-agent's own `tools.skills_sync` (run as a module, as upstream's boot
//! runs its `skills_sync.py`) copies new and updated bundled skills into
//! `$HERMES_HOME/skills`, keeping user-modified ones, so a fresh volume has them. Run as hermes;
//! its `Done: …` summary goes to the log (the per-skill lines at debug level, and the last of
//! them as warnings when it fails). A failure or timeout is a warning.

pub const ARGS: [&str; 2] = ["-m", "tools.skills_sync"];
pub const PREFIX: &str = "[skills-sync]";
pub const TIMEOUT_SECS: u64 = 120;

/// Is this output line the summary?
pub fn is_summary(line: &str) -> bool {
    line.trim_start().starts_with("Done:")
}

/// Where hermes-agent 0.19.0 looks for its bundled skills (`hermes_constants.
/// get_bundled_skills_dir`): `HERMES_BUNDLED_SKILLS`, else a `skills` data directory of the
/// venv (the `data`, `purelib` and `platlib` install paths). The first that exists; `None` when
/// there is none — the 0.19.0 wheel ships no skills, and upstream's boot also syncs only when
/// its `skills/` directory exists.
pub fn bundled_dir(override_dir: Option<&str>, venv: &std::path::Path) -> Option<std::path::PathBuf> {
    if let Some(d) = override_dir.map(str::trim).filter(|d| !d.is_empty()) {
        return Some(d.into()).filter(|p: &std::path::PathBuf| p.is_dir());
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
}
