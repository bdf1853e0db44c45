//! A read-only data volume stops the container: Hermes cannot keep sessions, logs, memories or
//! auth there, and carrying on would only fail later, less clearly. The line names the mount.

use crate::fsx;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// The mount point holding `path`, from `/proc/self/mountinfo` (the longest mount point that
/// is a prefix of it); `path` itself when that cannot be told.
pub fn mount_of(mountinfo: &str, path: &Path) -> PathBuf {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
        .unwrap_or_else(|| path.to_path_buf())
}

/// `Err(reason)` when `HERMES_HOME` is on a read-only mount; a missing one is for later steps.
pub fn check(home: &Path) -> Result<String, String> {
    let Ok(fd) = fsx::open_dir_path(home) else {
        return Ok(format!("{} not there yet", home.display()));
    };
    if !fsx::read_only(fd.as_fd()) {
        return Ok(format!("{} is writable", home.display()));
    }
    let real = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
    let mount = mount_of(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(), &real);
    Err(format!(
        "HERMES_HOME {} is on the read-only mount {}: Hermes needs to write its data volume; mount it read-write \
         (drop `:ro` / `read_only: true`)",
        home.display(),
        mount.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_enclosing_mount_is_named() {
        let mi = "22 1 0:21 / / rw - overlay overlay rw\n\
                  23 22 0:22 / /opt/data ro,relatime - ext4 /dev/sda1 ro\n\
                  24 22 0:23 / /opt/data\\040x rw - tmpfs tmpfs rw\n\
                  25 22 0:23 / /opt rw - tmpfs tmpfs rw\n";
        assert_eq!(mount_of(mi, Path::new("/opt/data")), Path::new("/opt/data"));
        assert_eq!(mount_of(mi, Path::new("/opt/data/profiles")), Path::new("/opt/data"));
        assert_eq!(mount_of(mi, Path::new("/opt/data x/y")), Path::new("/opt/data x"));
        assert_eq!(mount_of(mi, Path::new("/srv")), Path::new("/"));
        assert_eq!(mount_of("", Path::new("/srv")), Path::new("/srv"));
    }
}
