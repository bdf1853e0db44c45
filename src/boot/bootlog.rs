//! C-BOOT-9: `$HERMES_HOME/logs/container-boot.log`, one line per slot:
//! `<%Y-%m-%dT%H:%M:%S%z> profile=<p> prior_state=<state or None> action=<started|registered>`.
//! Written by the last boot step, named profiles first and the `profile=default` line last, in
//! one `write(2)`: once a reader sees `profile=default`, boot has finished (the readiness line).
//! Rotated to `container-boot.log.1` (replacing it) when it has reached 256 KiB, before
//! appending. Hermes-owned; never written through a symlink.

use super::reconcile::Slot;
use crate::fsx;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::SystemTime;
use tracing::warn;

pub const BOOT_LOG: &str = "logs/container-boot.log";
pub const ROTATE_BYTES: u64 = 256 * 1024;

/// A state as it may appear in the line: printable, bounded (it comes from a user file).
fn show_state(s: Option<&str>) -> String {
    match s {
        None => "None".into(),
        Some(s) => s.chars().take(64).map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect(),
    }
}

pub fn format_lines(slots: &[Slot], now: SystemTime) -> String {
    let ts = crate::logs::iso_seconds(now);
    let (default, named): (Vec<&Slot>, Vec<&Slot>) = slots.iter().partition(|s| s.profile == "default");
    named
        .into_iter()
        .chain(default)
        .map(|s| {
            format!(
                "{ts} profile={} prior_state={} action={}\n",
                s.profile,
                show_state(s.prior_state.as_deref()),
                s.action.as_str()
            )
        })
        .collect()
}

/// Append `lines` (rotating first). Returns the step summary.
pub fn append(home: &Path, lines: &str, owner: Option<(u32, u32)>) -> io::Result<String> {
    let home_fd = fsx::open_dir_path(home)?;
    let logs_path = home.join("logs");
    let logs = match fsx::open_dir_at(home_fd.as_fd(), c"logs") {
        Ok(fd) => fd,
        Err(e) if fsx::is_missing(&e) => {
            fsx::mkdir_at(home_fd.as_fd(), c"logs", 0o755)?;
            let fd = fsx::open_dir_at(home_fd.as_fd(), c"logs")?;
            if let Some((u, g)) = owner {
                fsx::fchown(fd.as_fd(), u, g)?;
            }
            fd
        }
        Err(e) if fsx::is_symlink_refusal(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => {
            warn!("boot: bootlog: refusing to write through symlink {}", logs_path.display());
            return Ok(format!("refused: {} is not a real directory", logs_path.display()));
        }
        Err(e) => return Err(e),
    };
    let path = home.join(BOOT_LOG);
    let mut rotated = false;
    match fsx::lstat_at(logs.as_fd(), c"container-boot.log") {
        Ok(st) if st.size >= ROTATE_BYTES && !st.is_symlink() => {
            // As upstream: a failed rotation is not worth losing the readiness line for.
            match fsx::rename_at(logs.as_fd(), c"container-boot.log", c"container-boot.log.1") {
                Ok(()) => rotated = true,
                Err(e) => warn!("boot: bootlog: cannot rotate {}: {e}; appending anyway", path.display()),
            }
        }
        Ok(_) => {}
        Err(e) if fsx::is_missing(&e) => {}
        Err(e) => return Err(e),
    }
    let mut f = match fsx::open_append_at(logs.as_fd(), c"container-boot.log", 0o644) {
        Ok(f) => f,
        Err(e) if fsx::is_symlink_refusal(&e) => {
            warn!("boot: bootlog: refusing to write through symlink {}", path.display());
            return Ok(format!("refused: {} is a symlink", path.display()));
        }
        Err(e) => return Err(e),
    };
    let st = fsx::fstat(f.as_fd())?;
    if !st.is_file() {
        warn!("boot: bootlog: {} is not a regular file; not writing", path.display());
        return Ok("refused: not a regular file".into());
    }
    if let Some((u, g)) = owner.filter(|(u, g)| !st.owned_by(*u, *g)) {
        fsx::fchown(f.as_fd(), u, g)?;
    }
    f.write_all(lines.as_bytes())?;
    Ok(format!(
        "appended {} lines to {}{}",
        lines.lines().count(),
        path.display(),
        if rotated { " (rotated the old one to container-boot.log.1)" } else { "" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::reconcile::Action;
    use crate::boot::testutil::{TempDir, is_root, owner};
    use std::time::{Duration, UNIX_EPOCH};

    fn slot(p: &str, s: Option<&str>, a: Action) -> Slot {
        Slot { profile: p.into(), prior_state: s.map(str::to_string), action: a }
    }

    /// C-BOOT-9: exact format, default last.
    #[test]
    fn c_boot_9_line_format_default_last() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let slots = vec![
            slot("default", Some("running"), Action::Started),
            slot("coder", None, Action::Registered),
            slot("x", Some("bad\nstate with spaces"), Action::Registered),
        ];
        assert_eq!(
            format_lines(&slots, t),
            "2026-11-18T11:06:40+0000 profile=coder prior_state=None action=registered\n\
             2026-11-18T11:06:40+0000 profile=x prior_state=bad?state?with?spaces action=registered\n\
             2026-11-18T11:06:40+0000 profile=default prior_state=running action=started\n"
        );
    }

    #[test]
    fn c_boot_9_appends_rotates_and_refuses_symlinks() {
        let t = TempDir::new("bootlog");
        let home = t.path().join("data");
        std::fs::create_dir_all(&home).unwrap();
        let o = is_root().then_some((10000, 10000));
        let line = "T profile=default prior_state=None action=registered\n";
        append(&home, line, o).unwrap();
        append(&home, line, o).unwrap();
        let log = home.join(BOOT_LOG);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), line.repeat(2));
        if is_root() {
            assert_eq!(owner(&log), (10000, 10000));
            assert_eq!(owner(&home.join("logs")), (10000, 10000));
        }
        std::fs::write(&log, vec![b'x'; ROTATE_BYTES as usize]).unwrap();
        let s = append(&home, line, o).unwrap();
        assert!(s.contains("rotated"), "{s}");
        assert_eq!(std::fs::metadata(home.join("logs/container-boot.log.1")).unwrap().len(), ROTATE_BYTES);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), line);
        std::fs::remove_file(&log).unwrap();
        std::fs::write(t.path().join("target"), "t").unwrap();
        std::os::unix::fs::symlink(t.path().join("target"), &log).unwrap();
        assert!(append(&home, line, o).unwrap().starts_with("refused"));
        assert_eq!(std::fs::read_to_string(t.path().join("target")).unwrap(), "t");
        // A rotation that cannot happen (a directory in the way) still appends.
        std::fs::remove_file(&log).unwrap();
        std::fs::remove_file(home.join("logs/container-boot.log.1")).unwrap();
        std::fs::create_dir_all(home.join("logs/container-boot.log.1/x")).unwrap();
        std::fs::write(&log, vec![b'x'; ROTATE_BYTES as usize]).unwrap();
        append(&home, line, o).unwrap();
        assert_eq!(std::fs::metadata(&log).unwrap().len(), ROTATE_BYTES + line.len() as u64);
    }
}
