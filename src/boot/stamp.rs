//! The stale install stamp: an older image wrote `$HERMES_HOME/.install_method` containing
//! `docker`; Hermes 0.19.0 reads its install method from beside its code (the image stamps
//! that itself), and a stamp in the data volume only misleads `hermes update`. Removed when its
//! content, whitespace stripped, is exactly `docker`; anything else is the user's and kept.

use super::{StepErr, soft};
use crate::fsx;
use std::os::fd::AsFd;
use std::path::Path;
use tracing::warn;

pub const NAME: &std::ffi::CStr = c".install_method";

/// Is this stamp content the stale one?
pub fn is_stale(content: &[u8]) -> bool {
    content.trim_ascii() == b"docker"
}

pub fn remove_stale(home: &Path) -> Result<String, StepErr> {
    let Some(fd) = soft(format_args!("opening {}", home.display()), fsx::open_dir_path(home))? else {
        return Ok("skipped: no HERMES_HOME".into());
    };
    let shown = home.join(".install_method");
    match fsx::lstat_at(fd.as_fd(), NAME) {
        Err(e) if fsx::is_missing(&e) => return Ok("no install stamp".into()),
        Err(e) => return Err(StepErr::new(format!("{}: {e}", shown.display()))),
        Ok(st) if st.is_symlink() => {
            warn!("boot: stamp: refusing to read symlink {}", shown.display());
            return Ok("refused a symlinked install stamp".into());
        }
        Ok(_) => {}
    }
    let content = match fsx::read_bounded_at(fd.as_fd(), NAME, 4096) {
        Ok(c) => c,
        Err(e) => {
            warn!("boot: stamp: cannot read {}: {e}; leaving it", shown.display());
            return Ok("install stamp left (unreadable)".into());
        }
    };
    if !is_stale(&content) {
        return Ok(format!("kept {} (not the stale `docker` stamp)", shown.display()));
    }
    Ok(match soft(format_args!("removing {}", shown.display()), fsx::unlink_at(fd.as_fd(), NAME))? {
        Some(()) => format!("removed the stale install stamp {}", shown.display()),
        None => "stale install stamp not removed".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::testutil::TempDir;

    #[test]
    fn only_the_docker_stamp_is_removed() {
        for (c, stale) in [
            ("docker", true),
            ("docker\n", true),
            ("  docker \r\n", true),
            ("pip", false),
            ("dockerx", false),
            ("", false),
        ] {
            assert_eq!(is_stale(c.as_bytes()), stale, "{c:?}");
        }
        let t = TempDir::new("stamp");
        let p = t.path().join(".install_method");
        std::fs::write(&p, "pip\n").unwrap();
        assert!(remove_stale(t.path()).unwrap().starts_with("kept"));
        std::fs::write(&p, " docker\n").unwrap();
        assert!(remove_stale(t.path()).unwrap().starts_with("removed"));
        assert!(!p.exists());
        assert_eq!(remove_stale(t.path()).unwrap(), "no install stamp");
        std::fs::write(t.path().join("elsewhere"), "docker").unwrap();
        std::os::unix::fs::symlink(t.path().join("elsewhere"), &p).unwrap();
        assert!(remove_stale(t.path()).unwrap().contains("refused"));
        assert!(t.path().join("elsewhere").exists() && p.symlink_metadata().is_ok());
    }
}
