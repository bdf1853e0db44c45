//! The output side of the supervisor: PID-1-owned pipes, their fan-out to the container's
//! stdout/stderr and to rotated files, and the backpressure that keeps `docker logs` lossless
//! while its reader reads (a pipe is read only for what its sink can take).

use super::*;

/// Where a fan-out pipe's lines go on the container side.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

/// A pipe PID 1 reads: lines to a container stream and optionally to a rotated file.
pub(super) struct Fanout {
    pub(super) r: OwnedFd,
    pub(super) w: OwnedFd,
    pub(super) split: LineSplitter,
    pub(super) file: Option<RotatingFile>,
    pub(super) to: Option<Stream>,
    /// The writer exited: the partial last line is flushed once the pipe is read empty (it may
    /// still hold data the container's stdout could not take yet).
    pub(super) flush_when_empty: bool,
}

/// Fds to poll, each with its slot's name; `true` marks a `supervise/control` FIFO.
pub type ReadFds = std::rc::Rc<[(RawFd, String, bool)]>;

/// A stream whose sink has less room than this is held back (its pipes are not read): one read
/// then always has room for at least a few bytes beyond a partial line (< MAX_LINE).
pub(super) const HOLD_BELOW: usize = crate::logs::MAX_LINE + 128;

impl Supervisor {
    /// The container's stdout and stderr descriptors that hold unwritten data (for POLLOUT),
    /// after moving PID 1's own queued diagnostics into the stderr sink.
    pub fn out_fds(&mut self) -> Vec<RawFd> {
        let logged = crate::logs::take_logged();
        for rec in &logged {
            self.stderr.record(&[rec]);
        }
        if !logged.is_empty() {
            // Written at once when fd 2 takes it (it never blocks): no poll round per line.
            self.stderr.flush();
        }
        [&self.stdout, &self.stderr].into_iter().filter(|s| s.pending()).filter_map(|s| s.raw_fd()).collect()
    }

    /// The container's stdout or stderr can take data.
    pub fn writable(&mut self) {
        self.stdout.flush();
        self.stderr.flush();
    }

    /// C-INIT-3: what services wrote before the stop reaches `docker logs`. Waits for a slow
    /// reader until `deadline`, then reports what could not be delivered.
    pub fn flush_out(&mut self, deadline: Instant) {
        self.drain_all(deadline);
        loop {
            self.writable();
            let pending = self.out_fds();
            let left = deadline.saturating_duration_since(Instant::now());
            if pending.is_empty() || left.is_zero() {
                break;
            }
            let mut fds: Vec<libc::pollfd> =
                pending.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLOUT, revents: 0 }).collect();
            // SAFETY: a valid pollfd array.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, left.as_millis().max(1) as i32) };
        }
        let lost = self.stdout.buffered() + self.stderr.buffered();
        // fd 2 goes back to tracing's own writer: what is logged from here on still gets out.
        crate::logs::return_stderr(std::mem::replace(&mut self.stderr, Sink::none()));
        if lost > 0 {
            warn!("exiting with {lost} bytes of service output the container's stdout/stderr did not take");
        }
        crate::logs::flush_stderr();
    }

    /// How long the container's stdout reader may take nothing before lines are dropped.
    fn stall_limit(&self) -> Duration {
        Duration::from_millis(self.cfg.logs.stdout_stall_ms)
    }

    /// The sink of `stream`, if the pipes feeding it must not be read now: its free space is
    /// below what one read may need and its reader is still alive (took data within the stall
    /// limit). Services writing there then block on their full pipe, as under s6-log.
    fn held_back(&self, stream: Stream, now: Instant) -> bool {
        let s = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        s.free() < HOLD_BELOW && !s.stalled(now, self.stall_limit())
    }

    /// How many bytes of `f`'s pipe may be read now without the sink having to drop a line:
    /// the sink's free space minus the partial line already held, minus one byte per piece a
    /// long line may be cut into. Unlimited for a file-only pipe or a stalled reader.
    fn budget(to: Option<Stream>, pending: usize, out: &Sink, err: &Sink, now: Instant, stall: Duration) -> usize {
        let s = match to {
            None => return usize::MAX,
            Some(Stream::Stdout) => out,
            Some(Stream::Stderr) => err,
        };
        if s.stalled(now, stall) {
            return usize::MAX;
        }
        let avail = s.free().saturating_sub(pending);
        avail.saturating_sub(avail / (crate::logs::MAX_LINE / 2) + 2)
    }

    /// Backpressure on the container's stdout: while a stream is held back (see `held_back`),
    /// the pipes that feed it are left out of `read_fds`. Returns when a held-back stream's
    /// reader reaches the stall limit (then reading resumes and lines are dropped for that
    /// stream only), so the loop wakes then.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        let stall = self.stall_limit();
        [(Stream::Stdout, &self.stdout), (Stream::Stderr, &self.stderr)]
            .into_iter()
            .filter(|(w, _)| self.held_back(*w, now))
            .map(|(_, s)| s.last_progress + stall)
            .min()
    }

    /// Read what every slot's pipes hold now (at exit: nothing written before the stop is lost).
    /// Waits for the container's stdout to take what it holds until `deadline`; what is still
    /// in a pipe then is read anyway (dropped for a stdout that did not take it, kept in files).
    pub fn drain_all(&mut self, deadline: Instant) {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        let mut left: Vec<String> = names;
        while !left.is_empty() {
            let now = Instant::now();
            let force = now >= deadline;
            left.retain(|n| self.drain_inner(n, now, force));
            if left.is_empty() || force {
                break;
            }
            let fds: Vec<i32> = [&self.stdout, &self.stderr]
                .into_iter()
                .filter(|s| s.free() < HOLD_BELOW)
                .filter_map(|s| s.raw_fd())
                .collect();
            let mut p: Vec<libc::pollfd> =
                fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLOUT, revents: 0 }).collect();
            let ms = deadline.saturating_duration_since(Instant::now()).as_millis().clamp(1, 1000) as i32;
            // SAFETY: a valid pollfd array (possibly empty: then it only sleeps, never longer
            // than the deadline).
            unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, if p.is_empty() { 1 } else { ms }) };
        }
        self.report_drops(Instant::now());
    }

    /// The fds to poll for reading, each with the slot it belongs to: every pipe, except those
    /// feeding a held-back stream, and every `supervise/control` FIFO (see
    /// [`Supervisor::control_input`]). Built again only when the slot table or that set changed.
    pub fn read_fds(&mut self, now: Instant) -> ReadFds {
        let mask = u8::from(self.held_back(Stream::Stdout, now)) | u8::from(self.held_back(Stream::Stderr, now)) << 1;
        if let Some((m, v)) = &self.read_fds {
            if *m == mask {
                return v.clone();
            }
        }
        let held = |to: Option<Stream>| match to {
            Some(Stream::Stdout) => mask & 1 != 0,
            Some(Stream::Stderr) => mask & 2 != 0,
            None => false,
        };
        let mut v = Vec::new();
        for (n, s) in &self.slots {
            if !held(s.out.to) {
                v.push((s.out.r.as_raw_fd(), n.clone(), false));
            }
            if let Some(e) = s.err.as_ref().filter(|e| !held(e.to)) {
                v.push((e.r.as_raw_fd(), n.clone(), false));
            }
            if let Some(sv) = &s.supervise {
                v.push((sv.control_fd(), n.clone(), true));
            }
        }
        let v: ReadFds = v.into();
        self.read_fds = Some((mask, v.clone()));
        v
    }

    /// Read what a slot's pipes hold now, as far as the container's stdout can take it, and
    /// deliver whole lines.
    pub fn drain(&mut self, name: &str) {
        let now = Instant::now();
        self.drain_inner(name, now, false);
        self.report_drops(now);
    }

    /// Returns whether data may be left in the slot's pipes (held back, or rounds used up).
    /// `force` reads regardless of what the container's stdout can take.
    pub(super) fn drain_inner(&mut self, name: &str, now: Instant, force: bool) -> bool {
        let stall = self.stall_limit();
        let Some(s) = self.slots.get_mut(name) else { return false };
        let mut buf = [0u8; 65536];
        let mut left = false;
        for f in std::iter::once(&mut s.out).chain(s.err.as_mut()) {
            let mut empty = false;
            // Bounded rounds per call so one chatty service cannot starve the loop.
            let mut rounds = 0;
            loop {
                if rounds == 16 {
                    left = true;
                    break;
                }
                rounds += 1;
                let budget = if force {
                    usize::MAX
                } else {
                    Self::budget(f.to, f.split.pending(), &self.stdout, &self.stderr, now, stall)
                };
                if budget == 0 {
                    left = true;
                    break;
                }
                let want = budget.min(buf.len());
                match nix::unistd::read(f.r.as_raw_fd(), &mut buf[..want]) {
                    Ok(0) => break,
                    Err(nix::Error::EINTR) => continue,
                    Err(nix::Error::EAGAIN) => {
                        empty = true;
                        break;
                    }
                    Err(_) => break,
                    Ok(n) => {
                        let to = f.to;
                        let file = &mut f.file;
                        let (out, err) = (&mut self.stdout, &mut self.stderr);
                        let ts = crate::logs::timestamp(SystemTime::now());
                        f.split.feed(&buf[..n], |l| deliver(&ts, l, to, file, out, err));
                        if n < want {
                            empty = true;
                            break;
                        }
                        if to.is_some() {
                            // Let the reader take what is queued before the next budget.
                            let sink = if to == Some(Stream::Stdout) { &mut self.stdout } else { &mut self.stderr };
                            sink.flush();
                        }
                    }
                }
            }
            if empty && std::mem::take(&mut f.flush_when_empty) {
                let to = f.to;
                let file = &mut f.file;
                let (out, err) = (&mut self.stdout, &mut self.stderr);
                let ts = crate::logs::timestamp(SystemTime::now());
                f.split.flush(|l| deliver(&ts, l, to, file, out, err));
            }
            if let Some(file) = f.file.as_mut() {
                if let Err(e) = file.flush() {
                    error!("service {name}: cannot write its log file in {}: {e}", file.dir.display());
                }
            }
        }
        self.stdout.flush();
        self.stderr.flush();
        left
    }

    /// Dropped lines are reported when dropping starts (the reader reached the stall limit)
    /// and, with their count, when it ends (the reader takes data again) — not once per line.
    fn report_drops(&mut self, now: Instant) {
        let dropped = self.stdout.dropped_lines + self.stderr.dropped_lines;
        let stall = self.stall_limit();
        if dropped > self.dropped_reported && !self.dropping {
            self.dropping = true;
            warn!(
                "container stdout took nothing for {} ms: dropping lines there until it reads again (log files keep them)",
                stall.as_millis()
            );
        }
        let stalled = self.stdout.stalled(now, stall) || self.stderr.stalled(now, stall);
        if self.dropping && (!stalled || self.shutting_down) && dropped > self.dropped_reported {
            warn!(
                "container stdout: {} line(s) dropped while its reader was stalled ({dropped} in all; log files keep them)",
                dropped - self.dropped_reported
            );
            self.dropped_reported = dropped;
            self.dropping = false;
        }
    }
}

/// One line to its stream and file. `ts` is taken once per read: the lines of one read arrived
/// together, and formatting a timestamp per line was a third of PID 1's time on a burst.
pub(super) fn deliver(
    ts: &str,
    line: &[u8],
    to: Option<Stream>,
    file: &mut Option<RotatingFile>,
    out: &mut Sink,
    err: &mut Sink,
) {
    match to {
        Some(Stream::Stdout) => out.line(line),
        Some(Stream::Stderr) => err.line(line),
        None => {}
    }
    if let Some(f) = file {
        if let Err(e) = f.write_line(ts, line) {
            error!("cannot write log file in {}: {e} (lines still go to stdout)", f.dir.display());
        }
    }
}
