//! Each slot's `supervise/` directory as s6-supervise keeps it, so Debian's own `s6-svstat`,
//! `s6-svc` and `s6-svok` work on a hermesinit slot: a `lock` file PID 1 holds a write lock on
//! (s6-svok's "is a supervisor running?"), a `control` FIFO PID 1 reads command letters from,
//! and a `status` record rewritten atomically on every change.
//!
//! All of it lives in a directory the slot's owner can write (Hermes pre-creates `supervise/`
//! as uid 10000): it is reached through descriptors with `O_NOFOLLOW`, every entry is checked
//! for its type on the descriptor, and for a non-root slot everything is done with the owner's
//! filesystem identity ([`fsx::AsUser`]), so nothing here can touch a file the owner could not.

use crate::creds::Identity;
use crate::fsx;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Descriptors one slot's `supervise/` keeps open: the lock and the control FIFO.
pub const FDS: usize = 2;

pub struct Supervise {
    /// Held with a POSIX write lock for as long as the slot lives.
    _lock: File,
    /// Opened read-write, so it never reports EOF when a writer leaves.
    control: File,
    writer: Option<Identity>,
    last: Option<[u8; crate::s6::status::STATUS_SIZE]>,
}

fn as_writer(w: &Option<Identity>) -> fsx::AsUser {
    match w {
        Some(w) => fsx::AsUser::enter(w.uid, w.gid, &w.groups),
        None => fsx::AsUser::enter(0, 0, &[]),
    }
}

/// `supervise/` of slot `name`, created when missing.
fn open_dir(scan_dir: &Path, name: &str, inode: ((u32, u32), u64)) -> io::Result<OwnedFd> {
    let scan = fsx::open_dir_path(scan_dir)?;
    let slot = fsx::open_dir_at(scan.as_fd(), &fsx::cname(OsStr::new(name))?)?;
    let st = fsx::fstat(slot.as_fd())?;
    if (st.dev, st.ino) != inode {
        return Err(io::Error::other("the slot directory was replaced"));
    }
    match fsx::mkdir_at(slot.as_fd(), c"supervise", 0o700) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
        _ => {}
    }
    fsx::open_dir_at(slot.as_fd(), c"supervise")
}

impl Supervise {
    pub fn open(scan_dir: &Path, name: &str, inode: ((u32, u32), u64), writer: Option<Identity>) -> io::Result<Self> {
        let _as = as_writer(&writer);
        let dir = open_dir(scan_dir, name, inode)?;
        let lock = File::from(fsx::open_raw_at(
            dir.as_fd(),
            c"lock",
            libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0o644,
        )?);
        if !fsx::fstat(lock.as_fd())?.is_file() {
            return Err(io::Error::other("supervise/lock is not a regular file"));
        }
        let fl = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        // SAFETY: fcntl on an open descriptor with a valid flock struct.
        if unsafe { libc::fcntl(lock.as_raw_fd(), libc::F_SETLK, &fl) } < 0 {
            return Err(io::Error::other(format!(
                "supervise/lock: {} (another supervisor?)",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: mkfifoat with a valid descriptor and name; EEXIST (Hermes made it) is fine.
        unsafe { libc::mkfifoat(dir.as_raw_fd(), c"control".as_ptr(), 0o600) };
        let control = File::from(fsx::open_raw_at(
            dir.as_fd(),
            c"control",
            libc::O_RDWR | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0,
        )?);
        if fsx::fstat(control.as_fd())?.mode & libc::S_IFMT != libc::S_IFIFO {
            return Err(io::Error::other("supervise/control is not a FIFO"));
        }
        Ok(Supervise { _lock: lock, control, writer, last: None })
    }

    pub fn control_fd(&self) -> RawFd {
        self.control.as_raw_fd()
    }

    /// Command letters written into `control` since the last call (at most a pipe's worth).
    pub fn commands(&mut self) -> Vec<u8> {
        let mut buf = [0u8; 256];
        match nix::unistd::read(self.control.as_raw_fd(), &mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(_) => Vec::new(),
        }
    }

    /// Write `status` (via `status.new` and a rename, as s6-supervise does) when it changed.
    pub fn write_status(&mut self, scan_dir: &Path, name: &str, inode: ((u32, u32), u64), rec: [u8; 35]) {
        if self.last == Some(rec) {
            return;
        }
        let _as = as_writer(&self.writer);
        let r = (|| -> io::Result<()> {
            let dir = open_dir(scan_dir, name, inode)?;
            let _ = fsx::unlink_at(dir.as_fd(), c"status.new");
            let mut f = fsx::create_excl_at(dir.as_fd(), c"status.new", 0o644)?;
            io::Write::write_all(&mut f, &rec)?;
            fsx::rename_at(dir.as_fd(), c"status.new", c"status")
        })();
        // A failure here is the slot owner's doing (or a full disk): s6 tools then read an
        // older record, nothing else depends on it.
        if r.is_ok() {
            self.last = Some(rec);
        }
    }
}
