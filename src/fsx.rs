//! Symlink-safe file operations relative to open directory descriptors (C-SEC-2, C-SEC-3).
//!
//! Everything under `HERMES_HOME` and the scan directory is writable by the hermes user, so
//! PID 1 (running as root) never resolves a path below them by name: it opens the trusted base
//! once, then walks down one component at a time with `O_NOFOLLOW`, and every stat, chown,
//! create, read or unlink is done with the `*at` calls on the parent's descriptor and
//! `AT_SYMLINK_NOFOLLOW`. A symlink planted by the hermes user can therefore never redirect a
//! root read, write or chown outside the tree. Reads from such places go through
//! [`read_bounded_at`]: regular files only, never blocking, never larger than a cap.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The errors that mean "not possible here" rather than "broken": built-in steps warn about
/// these and go on (C-BOOT-6). `EPERM`/`EACCES`: no capability (rootless, `--user`, NFS root
/// squash); `EROFS`: read-only mount; `EOPNOTSUPP`: a filesystem without ownership (a CIFS or
/// FAT volume); `EINVAL`: chown to an id not mapped in this user namespace (rootless Podman).
pub fn is_soft(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES | libc::EROFS | libc::EOPNOTSUPP | libc::EINVAL))
}

pub fn is_missing(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}

/// `ELOOP` (or `ENOTDIR` from `O_DIRECTORY|O_NOFOLLOW` on some kernels) is what opening a
/// symlink with `O_NOFOLLOW` gives.
pub fn is_symlink_refusal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EMLINK))
}

pub fn cname(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cpath(p: &Path) -> io::Result<CString> {
    cname(p.as_os_str())
}

/// Run a syscall again when a signal interrupted it (PID 1 handles signals through a signalfd,
/// but boot's sweep threads may still see EINTR from a stopped-and-continued process).
fn retry<T>(mut f: impl FnMut() -> nix::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(nix::Error::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

fn mode(m: u32) -> nix::sys::stat::Mode {
    nix::sys::stat::Mode::from_bits_truncate(m as libc::mode_t)
}

/// What boot needs from `statx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Hard links to the inode.
    pub nlink: u32,
    pub dev: (u32, u32),
    pub ino: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// Status change time (seconds, nanoseconds): set by the kernel on every write, chmod,
    /// chown, link or rename of the inode; no unprivileged caller can set it back.
    pub ctime: (i64, u32),
    /// The mount's id (Linux ≥ 5.8); `None` when the kernel does not report it.
    pub mnt_id: Option<u64>,
}

impl Stat {
    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }
    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }
    pub fn owned_by(&self, uid: u32, gid: u32) -> bool {
        self.uid == uid && self.gid == gid
    }
    /// Is this entry on another mount than `root` (a bind mount or volume inside the tree)?
    /// The mount id decides when both are known; `st_dev` is only compared for directories,
    /// because overlayfs may report a lower layer's device for plain files.
    pub fn other_mount_than(&self, root: &Stat) -> bool {
        match (self.mnt_id, root.mnt_id) {
            (Some(a), Some(b)) if a != b => true,
            _ => self.is_dir() && self.dev != root.dev,
        }
    }
}

/// What identifies one state of a file: any write, chmod, chown, rename or replacement moves
/// at least one of these (ctime is set by the kernel, never by a caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ident {
    dev: (u32, u32),
    ino: u64,
    size: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
}

impl From<&Stat> for Ident {
    fn from(st: &Stat) -> Ident {
        Ident { dev: st.dev, ino: st.ino, size: st.size, mtime: st.mtime, ctime: st.ctime }
    }
}

impl std::fmt::Display for Ident {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let Ident { dev: (ma, mi), ino, size, mtime: (ms, mn), ctime: (cs, cn) } = self;
        write!(f, "dev={ma}:{mi} ino={ino} size={size} mtime={ms}.{mn:09} ctime={cs}.{cn:09}")
    }
}

/// nix has no `statx`, and only statx reports the mount id (other mounts are never entered).
fn statx_raw(dir: libc::c_int, name: &CStr, flags: libc::c_int) -> io::Result<Stat> {
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    retry(|| {
        // SAFETY: `name` is NUL-terminated and `sx` is a properly sized, writable statx.
        let r = unsafe {
            libc::statx(
                dir,
                name.as_ptr(),
                flags | libc::AT_STATX_SYNC_AS_STAT,
                libc::STATX_BASIC_STATS | libc::STATX_MNT_ID,
                &mut sx,
            )
        };
        nix::errno::Errno::result(r)
    })?;
    Ok(Stat {
        mode: u32::from(sx.stx_mode),
        uid: sx.stx_uid,
        gid: sx.stx_gid,
        size: sx.stx_size,
        nlink: sx.stx_nlink,
        dev: (sx.stx_dev_major, sx.stx_dev_minor),
        ino: sx.stx_ino,
        mtime: (sx.stx_mtime.tv_sec, sx.stx_mtime.tv_nsec),
        ctime: (sx.stx_ctime.tv_sec, sx.stx_ctime.tv_nsec),
        mnt_id: (sx.stx_mask & libc::STATX_MNT_ID != 0).then_some(sx.stx_mnt_id),
    })
}

/// `lstat` of `name` in `dir`: a symlink is reported as a symlink, never followed.
pub fn lstat_at(dir: BorrowedFd, name: &CStr) -> io::Result<Stat> {
    statx_raw(dir.as_raw_fd(), name, libc::AT_SYMLINK_NOFOLLOW)
}

pub fn fstat(fd: BorrowedFd) -> io::Result<Stat> {
    statx_raw(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

/// `stat` of a path of the image that only root writes (`/etc/passwd`), a symlink followed as
/// any reader of it would.
pub fn stat_path(p: &Path) -> io::Result<Stat> {
    statx_raw(libc::AT_FDCWD, &cpath(p)?, 0)
}

fn open_raw(dir: libc::c_int, name: &CStr, flags: libc::c_int, m: libc::mode_t) -> io::Result<OwnedFd> {
    let flags = nix::fcntl::OFlag::from_bits_retain(flags | libc::O_CLOEXEC);
    let fd = retry(|| nix::fcntl::openat(Some(dir), name, flags, mode(m)))?;
    // SAFETY: openat returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat` with the caller's flags (`O_CLOEXEC` is always added).
pub fn open_raw_at(dir: BorrowedFd, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    open_raw(dir.as_raw_fd(), name, flags, mode as libc::mode_t)
}

/// A new open file description of our own descriptor `fd` (`O_CLOEXEC` added), through its
/// `/proc/self/fd` entry: the one link this layer follows on purpose. It is procfs's, not a
/// file hermes can plant, and it can only name what PID 1 already holds.
pub fn reopen(fd: BorrowedFd, flags: libc::c_int) -> io::Result<OwnedFd> {
    let link = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(io::Error::other)?;
    open_raw(libc::AT_FDCWD, &link, flags, 0)
}

/// Open a directory by path, following symlinks in the path (for HERMES_HOME itself, which is
/// configuration, not hermes-controlled).
pub fn open_dir_path(p: &Path) -> io::Result<OwnedFd> {
    open_raw(libc::AT_FDCWD, &cpath(p)?, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// Open the directory `name` in `dir`; a symlink fails with `ELOOP` (or `ENOTDIR`).
pub fn open_dir_at(dir: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    open_raw(dir.as_raw_fd(), name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)
}

/// Open a file for reading without following a symlink or blocking on a FIFO.
pub fn open_read_at(dir: BorrowedFd, name: &CStr) -> io::Result<File> {
    open_raw(dir.as_raw_fd(), name, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0).map(File::from)
}

/// Read all of the regular file `name` in `dir` (C-SEC-3): a symlink is refused (`ELOOP`), a
/// FIFO, socket or device is refused without blocking, and a file larger than `max` bytes is
/// refused before anything is read (`EFBIG`), so no input hermes can plant costs PID 1 more
/// than `max` bytes or a wait.
pub fn read_bounded_at(dir: BorrowedFd, name: &CStr, max: u64) -> io::Result<Vec<u8>> {
    let f = open_read_at(dir, name)?;
    let st = fstat(f.as_fd())?;
    if !st.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    read_capped(f, &st, max)
}

/// Read all of `f`, whose `fstat` is `st`: refused before reading when larger than `max`, and
/// when it grew past `max` since.
pub fn read_capped(f: File, st: &Stat, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    if st.size > max {
        return Err(too_large(max));
    }
    let mut buf = Vec::with_capacity(st.size as usize);
    // The file may grow after the fstat: read one byte past the cap to notice.
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(too_large(max));
    }
    Ok(buf)
}

/// Can boot believe what this file or directory says? Only when root owns it (or, in a
/// container whose PID 1 is not root, PID 1's own user) and nobody else may write it.
pub fn trusted(st: &Stat) -> bool {
    let me = nix::unistd::geteuid().as_raw();
    (st.uid == 0 || st.uid == me) && st.mode & 0o022 == 0
}

/// Read the regular file `name` of the directory `dir` (a path of the image, such as
/// `/opt/hermes`, or root's own state) only when both are [`trusted`]: a symlink is not
/// followed, a FIFO not waited for, nothing larger than `max` read.
pub fn read_trusted(dir: &Path, name: &CStr, max: u64) -> io::Result<Vec<u8>> {
    let d = open_dir_path(dir)?;
    let dst = fstat(d.as_fd())?;
    if !dst.is_dir() || !trusted(&dst) {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, "its directory may be written by others"));
    }
    let f = open_read_at(d.as_fd(), name)?;
    let st = fstat(f.as_fd())?;
    if !st.is_file() || !trusted(&st) {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, "not a regular file only root may write"));
    }
    read_capped(f, &st, max)
}

/// [`read_trusted`] of the file `path` names.
pub fn read_trusted_file(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => read_trusted(dir, &cname(name)?, max),
        _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    }
}

fn too_large(max: u64) -> io::Error {
    io::Error::new(io::ErrorKind::FileTooLarge, format!("larger than {max} bytes"))
}

/// Create a new file; fails if anything (a symlink included) already has the name.
pub fn create_excl_at(dir: BorrowedFd, name: &CStr, mode: u32) -> io::Result<File> {
    open_raw(
        dir.as_raw_fd(),
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        mode as libc::mode_t,
    )
    .map(File::from)
}

/// Open for appending, creating it if missing; a symlink fails with `ELOOP`.
pub fn open_append_at(dir: BorrowedFd, name: &CStr, mode: u32) -> io::Result<File> {
    open_raw(
        dir.as_raw_fd(),
        name,
        libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        mode as libc::mode_t,
    )
    .map(File::from)
}

pub fn mkdir_at(dir: BorrowedFd, name: &CStr, m: u32) -> io::Result<()> {
    retry(|| nix::sys::stat::mkdirat(Some(dir.as_raw_fd()), name, mode(m)))
}

/// `lchown` relative to `dir`: changes the entry itself, never a symlink's target.
pub fn chown_at(dir: BorrowedFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    let (u, g) = (Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)));
    retry(|| nix::unistd::fchownat(Some(dir.as_raw_fd()), name, u, g, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW))
}

pub fn fchown(fd: BorrowedFd, uid: u32, gid: u32) -> io::Result<()> {
    let (u, g) = (Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)));
    retry(|| nix::unistd::fchown(fd.as_raw_fd(), u, g))
}

pub fn fchmod(fd: BorrowedFd, m: u32) -> io::Result<()> {
    retry(|| nix::sys::stat::fchmod(fd.as_raw_fd(), mode(m)))
}

/// Unlink a non-directory entry (a symlink is removed itself).
pub fn unlink_at(dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    retry(|| nix::unistd::unlinkat(Some(dir.as_raw_fd()), name, nix::unistd::UnlinkatFlags::NoRemoveDir))
}

pub fn rename_at(dir: BorrowedFd, from: &CStr, to: &CStr) -> io::Result<()> {
    retry(|| nix::fcntl::renameat(Some(dir.as_raw_fd()), from, Some(dir.as_raw_fd()), to))
}

/// Move `from` to `to` in `dir` only if nothing has the name `to` (a symlink included):
/// `Ok(false)` when something does. `renameat2(RENAME_NOREPLACE)`; on a filesystem without it,
/// a hard link and an unlink, which fail the same way on an existing name.
pub fn rename_noreplace_at(dir: BorrowedFd, from: &CStr, to: &CStr) -> io::Result<bool> {
    let fd = dir.as_raw_fd();
    // The raw syscall: nix wraps renameat2 for glibc only, and the crate also builds for musl.
    let noreplace = || {
        // SAFETY: renameat2(2) with a valid descriptor and NUL-terminated names.
        let r =
            unsafe { libc::syscall(libc::SYS_renameat2, fd, from.as_ptr(), fd, to.as_ptr(), libc::RENAME_NOREPLACE) };
        nix::errno::Errno::result(r).map(drop)
    };
    let r = match retry(noreplace) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let r = retry(|| nix::unistd::linkat(Some(fd), from, Some(fd), to, nix::fcntl::AtFlags::empty()));
            r.and_then(|()| unlink_at(dir, from))
        }
        r => r,
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Is the filesystem of `fd` mounted read-only?
pub fn read_only(fd: BorrowedFd) -> bool {
    nix::sys::statvfs::fstatvfs(fd).is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// The names in a directory, without `.` and `..`, in byte order.
///
/// getdents64 on the descriptor itself, from its start: a `DIR` stream would cost five more
/// syscalls per directory (a duplicate descriptor, its checks, its close), and the sweep lists
/// every directory of the volume.
pub fn list(dir: BorrowedFd) -> io::Result<Vec<CString>> {
    let fd = dir.as_raw_fd();
    // SAFETY: lseek on a descriptor we borrow.
    if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // u64s: the kernel's records are 8-byte aligned within an aligned buffer. Left
    // uninitialised: only the bytes the kernel wrote are read.
    let mut buf: Vec<u64> = Vec::with_capacity(4096);
    let mut names = Vec::new();
    loop {
        // SAFETY: getdents64 writes at most the buffer's length into it.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.capacity() * 8) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            break;
        }
        // SAFETY: the first n bytes hold whole records the kernel wrote.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
        let mut at = 0;
        // linux_dirent64: ino u64, off i64, reclen u16, type u8, then the NUL-terminated name.
        while at + 19 < bytes.len() {
            let reclen = usize::from(u16::from_ne_bytes([bytes[at + 16], bytes[at + 17]]));
            if reclen < 20 || at + reclen > bytes.len() {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let name = CStr::from_bytes_until_nul(&bytes[at + 19..at + reclen])
                .map_err(|_| io::Error::from_raw_os_error(libc::EIO))?;
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
            at += reclen;
        }
    }
    names.sort();
    Ok(names)
}

/// Walk down from `base` through the relative path `rel` one component at a time with
/// `O_NOFOLLOW`. Returns the parent directory's fd and the last component's name.
/// `Err((component_path, error))` names the component that failed.
pub fn walk_parent(
    base: BorrowedFd,
    rel: &Path,
) -> Result<(Option<OwnedFd>, CString), (std::path::PathBuf, io::Error)> {
    let comps: Vec<&OsStr> = rel.iter().collect();
    let Some((last, dirs)) = comps.split_last() else {
        return Err((rel.to_path_buf(), io::Error::from_raw_os_error(libc::EINVAL)));
    };
    let mut cur: Option<OwnedFd> = None;
    let mut so_far = std::path::PathBuf::new();
    for c in dirs {
        so_far.push(c);
        let name = cname(c).map_err(|e| (so_far.clone(), e))?;
        let fd = {
            let parent = cur.as_ref().map(|f| f.as_fd()).unwrap_or(base);
            open_dir_at(parent, &name).map_err(|e| (so_far.clone(), e))?
        };
        cur = Some(fd);
    }
    Ok((cur, cname(last).map_err(|e| (rel.to_path_buf(), e))?))
}

/// Open the absolute directory `path` one component at a time from `/`, with `O_NOFOLLOW` for
/// every component, creating missing ones (mode 0755). A symlinked component fails with the
/// path walked so far, so the caller can log a `refusing` line naming it. Used for directories
/// a hermes-written spec names (a log dir): PID 1 never lets a planted symlink redirect it.
pub fn open_dir_create(path: &Path) -> Result<OwnedFd, (std::path::PathBuf, io::Error)> {
    if !path.is_absolute() {
        return Err((path.to_path_buf(), io::Error::from_raw_os_error(libc::EINVAL)));
    }
    let mut cur = open_dir_path(Path::new("/")).map_err(|e| (std::path::PathBuf::from("/"), e))?;
    let mut so_far = std::path::PathBuf::from("/");
    for c in path.iter().skip(1) {
        so_far.push(c);
        let name = cname(c).map_err(|e| (so_far.clone(), e))?;
        let next = match open_dir_at(cur.as_fd(), &name) {
            Err(e) if is_missing(&e) => match mkdir_at(cur.as_fd(), &name, 0o755) {
                Ok(()) => open_dir_at(cur.as_fd(), &name),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => open_dir_at(cur.as_fd(), &name),
                Err(e) => Err(e),
            },
            r => r,
        };
        cur = next.map_err(|e| (so_far.clone(), e))?;
    }
    Ok(cur)
}

/// For as long as it lives, this thread's filesystem identity is `uid`/`gid`/`groups`: files it
/// creates belong to them, and every permission check is theirs (root's capabilities to
/// override file permissions are gone meanwhile). PID 1 writes a hermes service's log files
/// this way, so a hard link or a directory hermes points it at is only as writable as it is
/// for hermes. A no-op unless we are root and `uid` is not.
///
/// Raw syscalls on purpose: the kernel's credentials are per thread, and glibc's `setgroups`
/// would broadcast the change to every thread of the process (boot's sweep threads).
pub struct AsUser {
    saved_groups: Option<Vec<libc::gid_t>>,
}

impl AsUser {
    pub fn enter(uid: u32, gid: u32, groups: &[u32]) -> AsUser {
        if uid == 0 || !nix::unistd::geteuid().is_root() {
            return AsUser { saved_groups: None };
        }
        let mut saved = vec![0 as libc::gid_t; 256];
        // SAFETY: getgroups writes at most `saved.len()` entries into the buffer.
        let n = unsafe { libc::getgroups(saved.len() as libc::c_int, saved.as_mut_ptr()) };
        saved.truncate(n.max(0) as usize);
        // SAFETY: per-thread credential syscalls with valid pointers and lengths.
        unsafe {
            libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr());
            libc::syscall(libc::SYS_setfsgid, gid);
            libc::syscall(libc::SYS_setfsuid, uid);
        }
        AsUser { saved_groups: Some(saved) }
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        if let Some(g) = self.saved_groups.take() {
            // SAFETY: as in `enter`; the fs uid goes back first, which restores the capabilities
            // that setting the groups needs.
            unsafe {
                libc::syscall(libc::SYS_setfsuid, 0);
                libc::syscall(libc::SYS_setfsgid, 0);
                libc::syscall(libc::SYS_setgroups, g.len(), g.as_ptr());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofollow_operations_refuse_symlinks() {
        let t = crate::boot::testutil::TempDir::new("fsx");
        std::fs::create_dir(t.path().join("real")).unwrap();
        std::os::unix::fs::symlink(t.path().join("real"), t.path().join("link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent-target", t.path().join("dangling")).unwrap();
        let root = open_dir_path(t.path()).unwrap();
        let r = root.as_fd();
        assert!(lstat_at(r, c"link").unwrap().is_symlink());
        assert!(lstat_at(r, c"real").unwrap().is_dir());
        let e = open_dir_at(r, c"link").unwrap_err();
        assert!(is_symlink_refusal(&e) || e.raw_os_error() == Some(libc::ENOTDIR), "{e}");
        // O_EXCL|O_NOFOLLOW: a dangling symlink is "taken", its target is never created.
        assert_eq!(create_excl_at(r, c"dangling", 0o644).unwrap_err().raw_os_error(), Some(libc::EEXIST));
        assert!(!Path::new("/nonexistent-target").exists());
        assert!(is_symlink_refusal(&open_append_at(r, c"dangling", 0o644).unwrap_err()));
        assert_eq!(list(r).unwrap(), vec![c"dangling".to_owned(), c"link".to_owned(), c"real".to_owned()]);
        let (parent, last) = walk_parent(r, Path::new("real/x")).unwrap();
        assert_eq!(last.as_c_str(), c"x");
        assert!(parent.is_some());
        let (bad, _) = walk_parent(r, Path::new("link/x")).unwrap_err();
        assert_eq!(bad, Path::new("link"));
        let root_st = fstat(r).unwrap();
        assert!(!lstat_at(r, c"real").unwrap().other_mount_than(&root_st));
    }

    #[test]
    fn list_reads_past_one_buffer_from_the_start_every_time() {
        let t = crate::boot::testutil::TempDir::new("fsx-list");
        // Long names: 3,000 records of ~120 bytes need several 32 KiB getdents64 reads.
        let mut want: Vec<CString> =
            (0..3000).map(|i| CString::new(format!("{i:05}-{}", "n".repeat(100))).unwrap()).collect();
        for n in &want {
            std::fs::write(t.path().join(n.to_str().unwrap()), b"").unwrap();
        }
        want.sort();
        let d = open_dir_path(t.path()).unwrap();
        assert_eq!(list(d.as_fd()).unwrap(), want);
        // The descriptor's offset is at the end now: a second listing starts over.
        assert_eq!(list(d.as_fd()).unwrap().len(), 3000);
        let f = File::open(t.path().join(want[0].to_str().unwrap())).unwrap();
        assert_eq!(list(f.as_fd()).unwrap_err().raw_os_error(), Some(libc::ENOTDIR));
    }
}
