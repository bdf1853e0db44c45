//! One atomic, no-follow file replacement inside a directory descriptor (`HERMES_HOME`): a
//! temporary `.<name>.hermesinit-tmp` created `O_EXCL|O_NOFOLLOW`, given its owner and mode on
//! the descriptor, written, fsynced, then renamed over `name` (a symlink planted at `name` is
//! replaced, never followed). The fsync before the rename is what keeps a crash from leaving
//! an empty or torn file under the name, which boot would then keep (it never overwrites a
//! `.env` with a key, nor an `auth.json`).

use crate::fsx;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};

pub fn write_at(dir: BorrowedFd, name: &CStr, data: &[u8], mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    let (tmp, mut f) = temporary(dir, name, mode, owner)?;
    let r = f.write_all(data).and_then(|()| f.sync_all()).and_then(|()| fsx::rename_at(dir, &tmp, name));
    if r.is_err() {
        let _ = fsx::unlink_at(dir, &tmp);
    }
    r
}

/// The new, empty temporary for `name` (`.<name>.hermesinit-tmp`) with its owner and `mode`
/// set on the descriptor; a stale one of an interrupted boot (or anything planted there) goes
/// first. The caller fills it, fsyncs it and renames it, or unlinks it.
pub fn temporary(dir: BorrowedFd, name: &CStr, mode: u32, owner: Option<(u32, u32)>) -> io::Result<(CString, File)> {
    let mut tmp = b".".to_vec();
    tmp.extend_from_slice(name.to_bytes());
    tmp.extend_from_slice(b".hermesinit-tmp");
    let tmp = CString::new(tmp).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    match fsx::unlink_at(dir, &tmp) {
        Err(e) if !fsx::is_missing(&e) => return Err(e),
        _ => {}
    }
    let f = (|| {
        let f = fsx::create_excl_at(dir, &tmp, mode & 0o600)?;
        if let Some((u, g)) = owner {
            fsx::fchown(f.as_fd(), u, g)?;
        }
        fsx::fchmod(f.as_fd(), mode)?;
        Ok(f)
    })();
    match f {
        Ok(f) => Ok((tmp, f)),
        Err(e) => {
            let _ = fsx::unlink_at(dir, &tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::testutil::TempDir;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn replaces_a_planted_symlink_without_following_it() {
        let t = TempDir::new("atomic");
        std::fs::write(t.path().join("target"), "keep").unwrap();
        symlink(t.path().join("target"), t.path().join("f")).unwrap();
        let d = fsx::open_dir_path(t.path()).unwrap();
        write_at(d.as_fd(), c"f", b"new", 0o600, None).unwrap();
        assert_eq!(std::fs::read_to_string(t.path().join("target")).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(t.path().join("f")).unwrap(), "new");
        let m = std::fs::symlink_metadata(t.path().join("f")).unwrap();
        assert!(m.is_file() && m.permissions().mode() & 0o777 == 0o600);
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 2, "no temporary left");
    }
}
