//! Log plumbing: line splitting, timestamps, s6-style rotated files, and non-blocking sinks for
//! the container's stdout/stderr (a stalled `docker logs` reader must never block PID 1).

use crate::creds::Identity;
use crate::fsx;
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longer lines are split into pieces of this size, never dropped.
pub const MAX_LINE: usize = 16 * 1024;

/// Accumulates bytes and hands out complete lines (without the newline), a line longer than
/// the limit cut into pieces of the limit. The one splitter of PID 1's fan-out and s6-log.
pub struct LineSplitter {
    buf: Vec<u8>,
    /// 0: no limit.
    limit: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter::with_limit(MAX_LINE)
    }
}

impl LineSplitter {
    /// Lines cut at `limit` bytes (0: never cut; s6-log's `-l`).
    pub fn with_limit(limit: usize) -> LineSplitter {
        LineSplitter { buf: Vec::new(), limit }
    }

    fn pieces(&self, line: &[u8], emit: &mut impl FnMut(&[u8])) {
        if line.is_empty() || self.limit == 0 {
            return emit(line);
        }
        for piece in line.chunks(self.limit) {
            emit(piece);
        }
    }

    /// Feed bytes; `emit` gets every complete line, and every limit-sized piece of a long one
    /// as soon as it is known to be longer.
    pub fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8])) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            if self.buf.is_empty() {
                self.pieces(&data[..i], &mut emit);
            } else {
                self.buf.extend_from_slice(&data[..i]);
                let line = std::mem::take(&mut self.buf);
                self.pieces(&line, &mut emit);
            }
            data = &data[i + 1..];
        }
        self.buf.extend_from_slice(data);
        while self.limit > 0 && self.buf.len() > self.limit {
            let rest = self.buf.split_off(self.limit);
            emit(&std::mem::replace(&mut self.buf, rest));
        }
    }

    /// Bytes of a partial line held back until its newline comes.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The partial last line, if any (at EOF).
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.pieces(&line, &mut emit);
        }
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// s6-log's `T` prefix (ISO 8601 with a space, UTC): `2026-11-23 08:38:33.876905781  `.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, mo, da) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}-{mo:02}-{da:02} {:02}:{:02}:{:02}.{:09}  ", s / 3600, s / 60 % 60, s % 60, d.subsec_nanos())
}

/// `%Y-%m-%dT%H:%M:%S+0000`, the boot log's format (UTC).
pub fn iso_seconds(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (y, mo, da) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}-{mo:02}-{da:02}T{:02}:{:02}:{:02}+0000", s / 3600, s / 60 % 60, s % 60)
}

/// s6's archive name: `@` + TAI64N label + `.s`. TAI runs 37 s ahead of UTC (10 s + 27 leap
/// seconds), as Debian's skalibs labels it.
pub fn tai64n_name(t: SystemTime) -> String {
    format!("{}.s", crate::tai::label(t.duration_since(UNIX_EPOCH).unwrap_or_default()))
}

/// `current` plus archives in one directory, rotated by rename like s6-log:
/// when the next line would push `current` past `max_bytes`, it becomes `@<tai64n>.s` and the
/// oldest archives beyond `keep` are deleted. No lock file: two writers never fail each other.
pub struct RotatingFile {
    pub dir: PathBuf,
    max_bytes: u64,
    keep: u32,
    /// Whose permissions every file operation has (C-SEC-2): the service's identity.
    writer: Option<Identity>,
    /// The log directory, reached without following any symlink, kept open while it works.
    dirfd: Option<OwnedFd>,
    file: Option<File>,
    /// Bytes in `current`, including what is still in `buf`.
    size: u64,
    buf: Vec<u8>,
    /// Set while an error episode lasts, so it is reported once.
    failing: bool,
}

impl RotatingFile {
    /// `writer`: create and write as this identity (see [`fsx::AsUser`]); `None` writes with
    /// our own.
    pub fn new(dir: PathBuf, max_bytes: u64, keep: u32, writer: Option<Identity>) -> RotatingFile {
        RotatingFile {
            dir,
            max_bytes: max_bytes.max(1),
            keep: keep.max(1),
            writer,
            dirfd: None,
            file: None,
            size: 0,
            buf: Vec::new(),
            failing: false,
        }
    }

    /// A new identity takes effect at the next open (the service's was decided again).
    pub fn set_writer(&mut self, writer: Option<Identity>) {
        if self.writer != writer {
            self.writer = writer;
            self.dirfd = None;
            self.file = None;
        }
    }

    fn as_writer(&self) -> fsx::AsUser {
        match &self.writer {
            Some(w) => fsx::AsUser::enter(w.uid, w.gid, &w.groups),
            None => fsx::AsUser::enter(0, 0, &[]),
        }
    }

    fn open(&mut self) -> std::io::Result<()> {
        let _as = self.as_writer();
        if self.dirfd.is_none() {
            let abs = if self.dir.is_absolute() { self.dir.clone() } else { std::env::current_dir()?.join(&self.dir) };
            let fd = fsx::open_dir_create(&abs).map_err(|(at, e)| {
                if fsx::is_symlink_refusal(&e) || e.raw_os_error() == Some(libc::ENOTDIR) {
                    std::io::Error::other(format!("refusing to follow {}: not a real directory", at.display()))
                } else {
                    std::io::Error::new(e.kind(), format!("{}: {e}", at.display()))
                }
            })?;
            self.dirfd = Some(fd);
        }
        let dir = self.dirfd.as_ref().expect("opened above").as_fd();
        let f = fsx::open_append_at(dir, c"current", 0o644).map_err(|e| {
            if fsx::is_symlink_refusal(&e) {
                std::io::Error::other(format!("refusing to follow {}/current: a symlink", self.dir.display()))
            } else {
                e
            }
        })?;
        let st = fsx::fstat(f.as_fd())?;
        // A FIFO or device named `current` would block or leak output somewhere else.
        if !st.is_file() {
            return Err(std::io::Error::other(format!("{}/current is not a regular file", self.dir.display())));
        }
        // Back to blocking writes: a regular file never blocks for long, and a short write on a
        // non-blocking description is not something a log file should see.
        nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_APPEND))?;
        self.size = st.size;
        self.file = Some(f);
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        {
            let _as = self.as_writer();
            let Some(dir) = self.dirfd.as_ref().map(|d| d.as_fd()) else { return self.open() };
            let archive = fsx::cname(std::ffi::OsStr::new(&tai64n_name(SystemTime::now())))?;
            match fsx::rename_at(dir, c"current", &archive) {
                // Another writer (a second container on the same volume) rotated first: fine.
                Err(e) if fsx::is_missing(&e) => {}
                r => r?,
            }
            let mut archives: Vec<std::ffi::CString> = fsx::list(dir)?
                .into_iter()
                .filter(|n| {
                    n.to_bytes().starts_with(b"@") && (n.to_bytes().ends_with(b".s") || n.to_bytes().ends_with(b".u"))
                })
                .collect();
            archives.sort();
            let excess = archives.len().saturating_sub(self.keep as usize);
            for old in &archives[..excess] {
                // unlinkat never follows a symlink: a planted one is removed, not its target.
                let _ = fsx::unlink_at(dir, old);
            }
        }
        self.open()
    }

    /// Append one line (a newline is added); it reaches the file at the next `flush` or when
    /// 64 KiB are buffered. Errors are reported once per failure episode: later failures in
    /// the same episode return Ok so the caller reports it only once.
    pub fn write_line(&mut self, prefix: &str, line: &[u8]) -> Result<(), std::io::Error> {
        let len = (prefix.len() + line.len() + 1) as u64;
        let r = (|| {
            if self.file.is_none() {
                self.open()?;
            }
            if self.size > 0 && self.size + len > self.max_bytes {
                self.write_out()?;
                self.rotate()?;
            }
            self.buf.extend_from_slice(prefix.as_bytes());
            self.buf.extend_from_slice(line);
            self.buf.push(b'\n');
            self.size += len;
            if self.buf.len() >= 64 * 1024 { self.write_out() } else { Ok(false) }
        })();
        self.episode(r)
    }

    /// Write what is buffered.
    pub fn flush(&mut self) -> Result<(), std::io::Error> {
        let r = self.write_out();
        self.episode(r)
    }

    /// Returns whether bytes reached the file.
    fn write_out(&mut self) -> std::io::Result<bool> {
        if self.buf.is_empty() {
            return Ok(false);
        }
        let f = match self.file.as_mut() {
            Some(f) => f,
            None => {
                self.open()?;
                self.file.as_mut().expect("opened above")
            }
        };
        let r = f.write_all(&self.buf);
        // On failure the lines are lost for the file (disk full…); the stdout copy still has them.
        self.buf.clear();
        r.map(|()| true)
    }

    /// An episode of failures ends only when bytes reach the file again.
    fn episode(&mut self, r: std::io::Result<bool>) -> Result<(), std::io::Error> {
        match r {
            Ok(wrote) => {
                if wrote {
                    self.failing = false;
                }
                Ok(())
            }
            Err(e) => {
                self.file = None;
                self.buf.clear();
                if std::mem::replace(&mut self.failing, true) { Ok(()) } else { Err(e) }
            }
        }
    }
}

/// A non-blocking writer onto one of the process's standard streams, with a bounded buffer.
/// Whole lines are queued or dropped (and counted): never a torn line, never a block.
pub struct Sink {
    target: Target,
    buf: VecDeque<u8>,
    cap: usize,
    pub dropped_lines: u64,
    /// When the reader last took data (or the buffer was empty).
    pub last_progress: std::time::Instant,
}

/// Where a sink writes, and how it avoids blocking there.
enum Target {
    /// The standard stream (1 or 2) not looked at yet: a sink that never writes holds nothing.
    Lazy(i32),
    /// The stream's own descriptor, shared with the main program and never made O_NONBLOCK
    /// (that would leak into it): a socket with MSG_DONTWAIT, a pipe or /dev/null with
    /// RWF_NOWAIT (on kernels whose pipes accept it), a regular file (never blocks) with plain
    /// writes.
    Shared(i32, How),
    /// A descriptor of our own: a private O_NONBLOCK description of the stream (a terminal, or
    /// a pipe on an older kernel that refuses RWF_NOWAIT with EOPNOTSUPP), or what a test
    /// handed us.
    Own(OwnedFd, How),
    /// Nowhere (nothing can be written, or the sink was handed on).
    Nowhere,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Write,
    Send,
    NoWait,
}

/// `pwritev2(fd, buf, RWF_NOWAIT)` at the file's position: EAGAIN instead of blocking, or
/// EOPNOTSUPP where the file cannot promise that. A raw system call: not every C library has it.
fn write_nowait(fd: i32, buf: &[u8]) -> isize {
    const RWF_NOWAIT: libc::c_int = 0x8;
    let iov = libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: one valid iovec over `buf`; offset -1 means "the file position", as write(2).
    unsafe { libc::syscall(libc::SYS_pwritev2, fd, &iov, 1, -1 as libc::c_long, 0, RWF_NOWAIT) as isize }
}

impl Sink {
    /// A sink onto fd `which` (1 or 2), looked at when it first has something to write.
    pub fn open(which: i32, cap: usize) -> Sink {
        Sink::to(Target::Lazy(which), cap)
    }

    fn to(target: Target, cap: usize) -> Sink {
        Sink { target, buf: VecDeque::new(), cap, dropped_lines: 0, last_progress: std::time::Instant::now() }
    }

    /// Decide how to write stream `which` without blocking, by what it is. `queued` is what
    /// waits to be written (never empty); returns how much of it the decision wrote.
    fn resolve(which: i32, queued: &[u8]) -> (Target, usize) {
        let kind = nix::sys::stat::fstat(which).map(|s| s.st_mode & libc::S_IFMT);
        match kind {
            Err(_) => return (Target::Nowhere, 0),
            Ok(libc::S_IFSOCK) => return (Target::Shared(which, How::Send), 0),
            Ok(libc::S_IFREG) => return (Target::Shared(which, How::Write), 0),
            Ok(_) => {}
        }
        // A pipe (or /dev/null) takes RWF_NOWAIT on current kernels. The probe is a real write
        // (the kernel checks the flag only for a non-empty one); any answer but "unsupported"
        // means it was accepted. Refused (a terminal, an older kernel): a private description.
        let n = write_nowait(which, queued);
        let refused = [nix::Error::EOPNOTSUPP, nix::Error::EINVAL, nix::Error::ENOSYS];
        if n >= 0 {
            return (Target::Shared(which, How::NoWait), n as usize);
        }
        if !refused.contains(&nix::Error::last()) {
            return (Target::Shared(which, How::NoWait), 0);
        }
        // SAFETY: `which` is open (fstat above succeeded) for the length of this call.
        let stream = unsafe { std::os::fd::BorrowedFd::borrow_raw(which) };
        let target = match fsx::reopen(stream, libc::O_WRONLY | libc::O_APPEND | libc::O_NONBLOCK | libc::O_NOCTTY) {
            Ok(f) => Target::Own(f, How::Write),
            // No /proc: a dup (which shares the blocking description; nothing better is left).
            Err(_) => match stream.try_clone_to_owned() {
                Ok(f) => Target::Own(f, How::Write),
                Err(_) => Target::Nowhere,
            },
        };
        (target, 0)
    }

    /// A sink that writes to a given fd (tests, benchmarks).
    pub fn from_fd(fd: OwnedFd, cap: usize) -> Sink {
        Sink::to(Target::Own(fd, How::Write), cap)
    }

    /// A sink that writes nowhere (what is left in a slot after its sink was handed on).
    pub fn none() -> Sink {
        Sink::to(Target::Nowhere, 0)
    }

    pub fn raw_fd(&self) -> Option<i32> {
        match &self.target {
            Target::Shared(fd, _) => Some(*fd),
            Target::Own(f, _) => Some(f.as_raw_fd()),
            Target::Lazy(_) | Target::Nowhere => None,
        }
    }

    pub fn pending(&self) -> bool {
        !self.buf.is_empty()
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes that can still be queued without dropping anything.
    pub fn free(&self) -> usize {
        self.cap.saturating_sub(self.buf.len())
    }

    /// The reader has taken nothing for `limit` while data waits for it.
    pub fn stalled(&self, now: std::time::Instant, limit: std::time::Duration) -> bool {
        !self.buf.is_empty() && now.saturating_duration_since(self.last_progress) >= limit
    }

    /// Queue one line (newline added) and try to write.
    pub fn line(&mut self, line: &[u8]) {
        self.record(&[line, b"\n"]);
    }

    /// Queue one record made of parts, all or nothing; written by the next `flush` (or at once
    /// when the buffer is full).
    pub fn record(&mut self, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if self.buf.len() + len > self.cap {
            self.flush();
            if self.buf.len() + len > self.cap {
                self.dropped_lines += 1;
                return;
            }
        }
        if self.buf.is_empty() {
            // The stall clock starts when data starts waiting, not when the buffer last emptied.
            self.last_progress = std::time::Instant::now();
        }
        for p in parts {
            self.buf.extend(p.iter());
        }
    }

    /// Write as much as the reader takes now.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            self.last_progress = std::time::Instant::now();
            return;
        }
        if let Target::Lazy(which) = self.target {
            let (target, wrote) = Sink::resolve(which, self.buf.as_slices().0);
            self.target = target;
            if wrote > 0 {
                self.buf.drain(..wrote);
                self.last_progress = std::time::Instant::now();
            }
        }
        let (fd, how) = match &self.target {
            Target::Shared(fd, how) => (*fd, *how),
            Target::Own(f, how) => (f.as_raw_fd(), *how),
            Target::Lazy(_) | Target::Nowhere => {
                self.buf.clear();
                return;
            }
        };
        while !self.buf.is_empty() {
            let (a, _) = self.buf.as_slices();
            // SAFETY (each): a valid buffer and descriptor.
            let n = match how {
                How::Send => unsafe {
                    libc::send(fd, a.as_ptr().cast(), a.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                },
                How::NoWait => write_nowait(fd, a),
                How::Write => unsafe { libc::write(fd, a.as_ptr().cast(), a.len()) },
            };
            if n > 0 {
                self.buf.drain(..n as usize);
                self.last_progress = std::time::Instant::now();
                continue;
            }
            let err = nix::Error::last();
            if n < 0 && err == nix::Error::EINTR {
                continue;
            }
            if n < 0 && err != nix::Error::EAGAIN {
                // The reader is gone (EPIPE) or the fd is broken: nothing more can be delivered.
                self.buf.clear();
            }
            return;
        }
    }
}

/// PID 1's own diagnostics: `hermesinit: LEVEL message` on stderr, never blocking.
/// fd 2 has one writer at a time. Until PID 1's loop runs (and in every other role) it is this
/// sink, written by tracing directly. Then the supervisor takes it over ([`take_stderr`]) and
/// tracing only queues whole records here, which the supervisor moves into the same sink: the
/// container's stderr never sees a service line and a diagnostic interleaved mid-line.
static STDERR: Mutex<Stderr> =
    Mutex::new(Stderr { sink: None, held: false, owner: None, queue: VecDeque::new(), queued: 0, wake: None });

struct Stderr {
    sink: Option<Sink>,
    /// PID 1's start: records collect in the sink instead of being written one by one
    /// ([`hold_stderr`]).
    held: bool,
    /// The thread that took fd 2 over (PID 1's loop).
    owner: Option<std::thread::ThreadId>,
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    /// An eventfd, bumped when another thread (the background sweep) queues a record, so the
    /// loop wakes. It exists only while such a thread runs ([`other_writers`]), and is one
    /// descriptor, not a pipe's two: each is one more thing PID 1's exit closes.
    wake: Option<OwnedFd>,
}

/// Records queued for the owner at most (a stalled stderr must not grow PID 1 without bound).
const MAX_QUEUED: usize = 1 << 20;

/// The buffer of fd 2's sink while nobody has taken it over.
const STDERR_CAP: usize = 256 * 1024;

impl Stderr {
    /// The sink fd 2 is written through while nobody has taken it over.
    fn sink(&mut self) -> &mut Sink {
        self.sink.get_or_insert_with(|| Sink::open(2, STDERR_CAP))
    }

    /// Move the queued records into the sink and write what the reader takes.
    fn drain_queue(&mut self) {
        let queue = std::mem::take(&mut self.queue);
        self.queued = 0;
        let sink = self.sink();
        for rec in &queue {
            sink.record(&[rec]);
        }
        sink.flush();
    }
}

fn stderr_state() -> std::sync::MutexGuard<'static, Stderr> {
    STDERR.lock().unwrap_or_else(|p| p.into_inner())
}

struct StderrWriter;

impl Write for StderrWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut st = stderr_state();
        if let Some(owner) = st.owner {
            if st.queued + buf.len() <= MAX_QUEUED {
                st.queued += buf.len() + 12;
                let mut rec = b"hermesinit: ".to_vec();
                rec.extend_from_slice(buf);
                st.queue.push_back(rec);
                if owner != std::thread::current().id() {
                    if let Some(w) = &st.wake {
                        let _ = nix::unistd::write(w, &1u64.to_ne_bytes());
                    }
                }
            }
        } else {
            let held = st.held;
            let sink = st.sink();
            sink.record(&[b"hermesinit: ", buf]);
            if !held {
                sink.flush();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// PID 1's start: hold the diagnostics in the sink (bounded: a full sink writes) instead of
/// writing each line. Every write into the container's log pipe wakes its reader, which then
/// takes the CPU from PID 1 on its way to starting the main program (row 3: ~90 µs for the two
/// lines of a boot with every step skipped, ~6 %). What is held is written once the main program
/// has exec'd ([`take_stderr`] takes it along to the loop's sink), by [`release_stderr`] when
/// boot reaches its first step that touches the volume, and at an exit through `main`.
pub fn hold_stderr() {
    stderr_state().held = true;
}

/// PID 1's diagnostics survive a panic (a bug; the release build aborts): what is held, or
/// queued for the loop, is written before std's own message. Best effort and never blocking:
/// skipped when the panicking thread holds the lock itself.
pub fn write_out_on_panic() {
    let std_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let st = match STDERR.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(mut st) = st {
            st.drain_queue();
        }
        std_hook(info);
    }));
}

/// Write what is held and stop holding (boot is about to wait on something: its lines so far
/// must be visible while it does).
pub fn release_stderr() {
    stderr_state().held = false;
    flush_stderr();
}

/// Become fd 2's one writer: the sink (with whatever it still holds), sized `cap`. Tracing
/// records are queued from now on; [`take_logged`] hands them over.
pub fn take_stderr(cap: usize) -> Sink {
    let mut st = stderr_state();
    st.held = false;
    st.owner = Some(std::thread::current().id());
    let mut sink = st.sink.take().unwrap_or_else(|| Sink::open(2, cap));
    sink.cap = sink.cap.max(cap);
    sink
}

/// Other threads may log from now on (`true`: the owner's loop must hear of their records and
/// polls [`logged_wake_fd`]), or no longer (`false`, once they have been joined). Without the
/// wake descriptor a record from another thread would wait for the loop's next wake-up.
pub fn other_writers(on: bool) {
    let mut st = stderr_state();
    st.wake = if on {
        // SAFETY: eventfd(2) with flags only; a valid result is a new descriptor we own.
        match unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) } {
            fd if fd >= 0 => Some(unsafe { OwnedFd::from_raw_fd(fd) }),
            _ => None,
        }
    } else {
        None
    };
}

/// Give fd 2 back (PID 1 is exiting): queued records go into the sink, and from now on tracing
/// writes directly again, so nothing logged after the loop is lost.
pub fn return_stderr(sink: Sink) {
    let mut st = stderr_state();
    st.sink = Some(sink);
    st.drain_queue();
    st.owner = None;
}

/// The diagnostics queued since the last call, as whole records (each ends with a newline).
pub fn take_logged() -> Vec<Vec<u8>> {
    let mut st = stderr_state();
    st.queued = 0;
    st.queue.drain(..).collect()
}

/// The descriptor that becomes readable when another thread queued a record.
pub fn logged_wake_fd() -> Option<i32> {
    stderr_state().wake.as_ref().map(|w| w.as_raw_fd())
}

/// Reset the wake counter (its value carries no data).
pub fn clear_logged_wake() {
    let st = stderr_state();
    if let Some(w) = &st.wake {
        let mut b = [0u8; 8];
        let _ = nix::unistd::read(w.as_raw_fd(), &mut b);
    }
}

/// Flush what the stderr sink still holds while nobody has taken it over (boot, other roles).
pub fn flush_stderr() -> bool {
    let mut st = stderr_state();
    st.sink.as_mut().map(|s| {
        s.flush();
        s.pending()
    }) == Some(true)
}

/// Install the diagnostics subscriber (level from `HERMESINIT_LOG`, default info).
pub fn init_tracing() {
    let max = match std::env::var("HERMESINIT_LOG").as_deref() {
        Ok("debug") => tracing::Level::DEBUG,
        Ok("trace") => tracing::Level::TRACE,
        Ok("warn") => tracing::Level::WARN,
        Ok("error") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    let _ = tracing::subscriber::set_global_default(Diagnostics { max });
}

/// PID 1's diagnostics as `LEVEL message` lines into [`StderrWriter`]: what tracing-subscriber's
/// formatter printed without time, target or colour, with none of its machinery. Its registry
/// allocated 32 KB of span slab on the first event (8 page faults on PID 1's way to starting
/// the main program, `perf record -e exceptions:page_fault_user --call-graph dwarf`), and
/// hermesinit has no spans to track.
struct Diagnostics {
    max: tracing::Level,
}

impl tracing::Subscriber for Diagnostics {
    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        *meta.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::from_level(self.max))
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = String::with_capacity(160);
        line.push_str(match *event.metadata().level() {
            tracing::Level::ERROR => "ERROR ",
            tracing::Level::WARN => " WARN ",
            tracing::Level::INFO => " INFO ",
            tracing::Level::DEBUG => "DEBUG ",
            tracing::Level::TRACE => "TRACE ",
        });
        let mut fields = Fields::default();
        event.record(&mut fields);
        line.push_str(&fields.message);
        line.push_str(&fields.rest);
        line.push('\n');
        let _ = StderrWriter.write(line.as_bytes());
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// An event's message, and its other fields as ` name=value` (printed after the message).
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = if field.name() == "message" {
            write!(self.message, "{value:?}")
        } else {
            write!(self.rest, " {}={value:?}", field.name())
        };
    }
}

/// Does this path exist as a real directory (not through a symlink)?
pub fn is_real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn lines(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |l| out.push(l.to_vec()));
        }
        s.flush(|l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn splitter_joins_chunks_splits_long_lines_and_flushes_the_tail() {
        assert_eq!(lines(&[b"ab", b"c\nd\n\ne"]), vec![b"abc".to_vec(), b"d".to_vec(), b"".to_vec(), b"e".to_vec()]);
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let got = lines(&[&long, b"\n"]);
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), vec![MAX_LINE, MAX_LINE, 5]);
        let mut one = long.clone();
        one.push(b'\n');
        assert_eq!(lines(&[&one]).iter().map(Vec::len).collect::<Vec<_>>(), vec![MAX_LINE, MAX_LINE, 5]);
    }

    /// The child half of the next test, which runs it as a process of its own: hold a line, panic.
    #[test]
    #[ignore = "the panicking child of a_panic_writes_the_held_lines_before_its_message, run by it"]
    fn held_line_then_panic_child() {
        // Only as that test's child: a plain `cargo test -- --ignored` must not see a failure.
        if std::env::var_os("HERMESINIT_TEST_PANIC_CHILD").is_none() {
            return;
        }
        write_out_on_panic();
        hold_stderr();
        let _ = StderrWriter.write(b" INFO the line before the bug\n");
        panic!("a bug, deliberately");
    }

    #[test]
    fn a_panic_writes_the_held_lines_before_its_message() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "logs::tests::held_line_then_panic_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("HERMESINIT_TEST_PANIC_CHILD", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.find("hermesinit:  INFO the line before the bug\n").unwrap_or_else(|| panic!("lost: {err}"));
        let msg = err.find("a bug, deliberately").unwrap_or_else(|| panic!("no panic message: {err}"));
        assert!(line < msg, "{err}");
    }

    #[test]
    fn timestamps_match_s6_log_and_iso() {
        let t = UNIX_EPOCH + Duration::new(1_795_423_113, 876_905_781);
        assert_eq!(timestamp(t), "2026-11-23 08:38:33.876905781  ");
        assert_eq!(iso_seconds(t), "2026-11-23T08:38:33+0000");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29 00:00:00.000000000  ");
        assert_eq!(tai64n_name(UNIX_EPOCH + Duration::new(1, 2)), "@400000000000002600000002.s");
    }

    #[test]
    fn rotation_keeps_n_archives_and_never_exceeds_the_size() {
        let dir = std::env::temp_dir().join(format!("hi-rot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut f = RotatingFile::new(dir.clone(), 100, 3, None);
        for i in 0..40 {
            f.write_line("", format!("line {i:03} ........").as_bytes()).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_micros(50));
        }
        let mut names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(names[3], "current");
        for n in &names {
            assert!(std::fs::metadata(dir.join(n)).unwrap().len() <= 100);
        }
        let cur = std::fs::read_to_string(dir.join("current")).unwrap();
        assert!(cur.ends_with("line 039 ........\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sink_reports_free_space_and_a_stall_only_while_data_waits() {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::fcntl::fcntl(w.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
        let mut s = Sink::from_fd(w, 100_000);
        let limit = Duration::from_millis(20);
        assert_eq!(s.free(), 100_000);
        std::thread::sleep(limit * 2);
        // An empty buffer is never a stall, however long ago the reader last took data.
        assert!(!s.stalled(std::time::Instant::now(), limit));
        for _ in 0..2000 {
            s.line(&[b'a'; 99]); // 200 kB: the 64 kB pipe fills, the rest waits here
            s.flush();
        }
        assert!(s.free() < 100_000 && s.pending());
        assert!(!s.stalled(std::time::Instant::now(), limit), "data has just started waiting");
        std::thread::sleep(limit * 2);
        assert!(s.stalled(std::time::Instant::now(), limit));
        drop(r);
    }

    #[test]
    fn a_sink_looks_at_its_stream_on_the_first_write_and_writes_a_pipe_itself_without_blocking() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut s = Sink::open(w.as_raw_fd(), 1 << 20);
        s.flush();
        assert!(s.raw_fd().is_none(), "nothing written, nothing looked at");
        s.line(b"one");
        s.flush();
        assert_eq!(s.raw_fd(), Some(w.as_raw_fd()), "the pipe itself: no descriptor of our own");
        let mut got = [0u8; 16];
        assert_eq!(nix::unistd::read(r.as_raw_fd(), &mut got), Ok(4));
        assert_eq!(&got[..4], b"one\n");
        // The shared description stays blocking: the main program writes it too.
        let fl = nix::fcntl::fcntl(w.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(fl & libc::O_NONBLOCK, 0);
        // 200 kB into a 64 kB pipe nobody reads: the rest waits here, nothing blocks.
        for _ in 0..2000 {
            s.line(&[b'a'; 99]);
            s.flush();
        }
        assert!(s.pending() && s.buffered() > 100_000);
    }

    #[test]
    fn a_terminal_gets_a_private_non_blocking_description() {
        // SAFETY: plain libc pty calls on descriptors this test owns.
        let slave = unsafe {
            let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(m >= 0 && libc::grantpt(m) == 0 && libc::unlockpt(m) == 0);
            let mut name = [0 as libc::c_char; 64];
            assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
            let sl = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
            assert!(sl >= 0);
            (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(sl))
        };
        let mut s = Sink::open(slave.1.as_raw_fd(), 4096);
        s.line(b"to the terminal");
        s.flush();
        let own = s.raw_fd().expect("opened");
        assert_ne!(own, slave.1.as_raw_fd(), "RWF_NOWAIT is refused on a terminal: a copy of our own");
        let fl = nix::fcntl::fcntl(own, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_ne!(fl & libc::O_NONBLOCK, 0);
        assert!(!s.pending(), "written");
    }

    #[test]
    fn once_taken_fd_2_has_one_writer_and_diagnostics_queue_for_it() {
        let sink = take_stderr(4096);
        // A diagnostic no longer writes fd 2 itself: it waits, whole, for the owner's sink.
        StderrWriter.write_all(b" INFO one\n").unwrap();
        StderrWriter.write_all(b" INFO two\n").unwrap();
        assert_eq!(take_logged(), vec![b"hermesinit:  INFO one\n".to_vec(), b"hermesinit:  INFO two\n".to_vec()]);
        // No other thread logs yet: nothing to wake the loop with.
        assert!(logged_wake_fd().is_none());
        // Another thread's diagnostic wakes the owner's loop: its eventfd turns readable, once,
        // and clearing it makes it quiet again.
        other_writers(true);
        let wake = logged_wake_fd().expect("a wake descriptor");
        let readable = || {
            let mut p = libc::pollfd { fd: wake, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd, no wait.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        assert!(!readable());
        std::thread::spawn(|| StderrWriter.write_all(b" WARN from the sweep\n").unwrap()).join().unwrap();
        assert!(readable());
        clear_logged_wake();
        assert!(!readable());
        assert_eq!(take_logged(), vec![b"hermesinit:  WARN from the sweep\n".to_vec()]);
        // Events become the lines tracing-subscriber's formatter made (no time, no target),
        // below the level nothing at all.
        tracing::subscriber::with_default(Diagnostics { max: tracing::Level::INFO }, || {
            tracing::info!("ready in {} ms", 3);
            tracing::warn!(slot = "a", "refused");
            tracing::debug!("not at this level");
            tracing::error!("fatal: {}", "x");
        });
        let want: [&[u8]; 3] = [
            b"hermesinit:  INFO ready in 3 ms\n",
            b"hermesinit:  WARN refused slot=\"a\"\n",
            b"hermesinit: ERROR fatal: x\n",
        ];
        assert_eq!(take_logged(), want.map(<[u8]>::to_vec));
        // Flooded, the queue stays bounded.
        for _ in 0..100_000 {
            StderrWriter.write_all(&[b'x'; 100]).unwrap();
        }
        assert!(take_logged().iter().map(Vec::len).sum::<usize>() <= MAX_QUEUED);
        // The other thread is gone: the wake descriptor with it.
        other_writers(false);
        assert!(logged_wake_fd().is_none());
        // Given back at exit: tracing writes directly again.
        return_stderr(sink);
        StderrWriter.write_all(b" INFO three\n").unwrap();
        assert!(take_logged().is_empty());
    }

    #[test]
    fn sink_drops_whole_lines_when_the_reader_stalls() {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::fcntl::fcntl(w.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
        let mut s = Sink::from_fd(w, 1000);
        let line = [b'a'; 99];
        for _ in 0..2000 {
            s.line(&line); // 200 kB into a 64 kB pipe that nobody reads: must not block
            s.flush();
        }
        assert!(s.dropped_lines > 0);
        assert!(s.pending());
        drop(r);
    }
}
