//! `s6-log [ -d notif ] [ -q | -v ] [ -b ] [ -p ] [ -l linelimit ] [ -- ] logging script`
//! (C-S6-7, C-SVC-5): the logger of Hermes' `log/run` scripts, which run
//! `s6-log 1 n10 s1000000 T "$log_dir"`.
//!
//! Supported directives: selections `+regex`, `-regex` (POSIX ERE), `f`; controls `nN`, `sN`,
//! `SN`, `lN`, `rN`, `EN`, `^N`, `pprefix`, `t`, `T`; actions `1`, `2`, `=statusfile`, and
//! logdirs (`/…` or `.…`). Processors (`!…`, `?…`) are refused (exit 100).
//!
//! Logdirs are written through [`crate::logs::RotatingFile`]: `current`, rotated by rename to
//! `@<tai64n>.s` before it would pass the `s` size, `n` archives kept. There is no `lock`
//! file: two containers sharing a volume never make each other fail, and Hermes' `rm -f lock`
//! is harmless. `T` is local time (TZ), as s6-log prints it: `2026-11-23 08:38:33.876905781  `.
//! The `1` copy to stdout never blocks: a stalled reader makes whole lines drop from a bounded
//! buffer, never the file.
//!
//! Differences from s6-log 2.11, on purpose: a last line without a newline at EOF is logged
//! (s6-log drops it); `n0` keeps one archive; `l` (tolerance), `r` (cooldown) and `-b` are
//! accepted and have no effect; SIGALRM does not force a rotation.

use super::common::{fatal, strerror, usage, warn};
use super::getopt;
use crate::logs::{LineSplitter, RotatingFile, Sink};
use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PROG: &str = "s6-log";
const USAGE: &str = "s6-log [ -d notif ] [ -q | -v ] [ -b ] [ -p ] [ -l linelimit ] [ -- ] logging_script";
/// Bytes of stdout copies held for a slow reader before whole lines are dropped.
const STDOUT_BUFFER: usize = 1 << 20;
/// How long the last stdout copies may take to drain at exit.
const EXIT_DRAIN: Duration = Duration::from_secs(1);

/// A compiled POSIX extended regular expression.
struct Regex(Box<libc::regex_t>);

impl Regex {
    fn new(pattern: &str) -> Result<Regex, String> {
        let c = CString::new(pattern).map_err(|_| "NUL in regular expression".to_string())?;
        // SAFETY: regex_t is plain data; regcomp initialises it.
        let mut re: Box<libc::regex_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: valid pointers; the pattern is NUL-terminated.
        let r = unsafe { libc::regcomp(&mut *re, c.as_ptr(), libc::REG_EXTENDED | libc::REG_NOSUB) };
        if r != 0 {
            return Err(format!("invalid regular expression: {pattern}"));
        }
        Ok(Regex(re))
    }

    /// Does the line (up to its first NUL, as s6's C strings see it) match?
    fn matches(&self, line: &[u8]) -> bool {
        let end = line.iter().position(|&b| b == 0).unwrap_or(line.len());
        let Ok(c) = CString::new(&line[..end]) else { return false };
        // SAFETY: compiled regex, NUL-terminated subject, no match array requested.
        unsafe { libc::regexec(&*self.0, c.as_ptr(), 0, std::ptr::null_mut(), 0) == 0 }
    }
}

impl Drop for Regex {
    fn drop(&mut self) {
        // SAFETY: compiled by regcomp, freed once.
        unsafe { libc::regfree(&mut *self.0) };
    }
}

enum Sel {
    Plus(Regex),
    Minus(Regex),
    /// Lines no earlier action took.
    F,
}

enum Target {
    Stdout,
    Alert { size: usize },
    Status { path: PathBuf, size: usize },
    Dir { index: usize, total: u64 },
}

struct Action {
    sels: Vec<Sel>,
    tai: bool,
    iso: bool,
    prefix: Option<String>,
    target: Target,
}

struct Logdir {
    path: PathBuf,
    file: RotatingFile,
}

struct Script {
    actions: Vec<Action>,
    dirs: Vec<Logdir>,
}

#[derive(Debug, PartialEq, Eq)]
enum ParseError {
    Usage(String),
}

/// Which actions take `line`: each action's selections run in order from "selected", and `f`
/// takes what no earlier action took (s6-log's rules).
fn select(actions: &[Action], line: &[u8]) -> Vec<bool> {
    let mut taken = false;
    actions
        .iter()
        .map(|a| {
            let mut selected = true;
            for s in &a.sels {
                match s {
                    Sel::Plus(re) if !selected => selected = re.matches(line),
                    Sel::Minus(re) if selected => selected = !re.matches(line),
                    Sel::F => selected = !taken,
                    _ => {}
                }
            }
            taken |= selected;
            selected
        })
        .collect()
}

/// Digits after the directive letter.
fn num(word: &str) -> Result<u64, ParseError> {
    getopt::uint(&word[1..]).ok_or_else(|| ParseError::Usage(format!("unrecognized directive: {word}")))
}

fn compile(words: &[OsString]) -> Result<Script, ParseError> {
    let mut actions = Vec::new();
    let mut dirs = Vec::new();
    let mut sels = Vec::new();
    let (mut keep, mut size, mut total, mut alert, mut status) = (10u32, 99_999u64, 0u64, 200usize, 1001usize);
    let (mut tai, mut iso) = (false, false);
    let mut prefix: Option<String> = None;
    for w in words {
        let word = w.to_string_lossy().into_owned();
        let bad = || ParseError::Usage(format!("unrecognized directive: {word}"));
        let regex = |p: &str| Regex::new(p).map_err(ParseError::Usage);
        let target = match word.as_bytes().first().copied() {
            Some(b'+') => {
                sels.push(Sel::Plus(regex(&word[1..])?));
                continue;
            }
            Some(b'-') => {
                sels.push(Sel::Minus(regex(&word[1..])?));
                continue;
            }
            Some(b'f') if word == "f" => {
                sels.push(Sel::F);
                continue;
            }
            Some(b'n') => {
                keep = u32::try_from(num(&word)?).map_err(|_| bad())?;
                continue;
            }
            Some(b's') => {
                size = num(&word)?.clamp(4096, 268_435_455);
                continue;
            }
            Some(b'S') => {
                total = num(&word)?;
                continue;
            }
            Some(b'l' | b'r') => {
                num(&word)?;
                continue;
            }
            Some(b'E') => {
                alert = num(&word)? as usize;
                continue;
            }
            Some(b'^') => {
                status = num(&word)? as usize;
                continue;
            }
            Some(b'p') => {
                prefix = (word.len() > 1).then(|| word[1..].to_string());
                continue;
            }
            Some(b't') if word == "t" => {
                tai = true;
                continue;
            }
            Some(b'T') if word == "T" => {
                iso = true;
                continue;
            }
            Some(b'!' | b'?') if word.len() == 1 => continue,
            Some(b'!' | b'?') => {
                return Err(ParseError::Usage(format!("processors are not supported by hermesinit's s6-log: {word}")));
            }
            Some(b'1') if word == "1" => Target::Stdout,
            Some(b'2') if word == "2" => Target::Alert { size: alert },
            Some(b'=') if word.len() > 1 => Target::Status { path: PathBuf::from(&word[1..]), size: status },
            Some(b'/' | b'.') => {
                dirs.push(Logdir {
                    path: PathBuf::from(w),
                    file: RotatingFile::new(PathBuf::from(w), size, keep, None),
                });
                Target::Dir { index: dirs.len() - 1, total }
            }
            _ => return Err(bad()),
        };
        actions.push(Action { sels: std::mem::take(&mut sels), tai, iso, prefix: prefix.clone(), target });
        (tai, iso) = (false, false);
    }
    if actions.is_empty() {
        return Err(ParseError::Usage("no action directive specified".into()));
    }
    // s6-log 2.11 says nothing about control directives after the last action; neither do we.
    Ok(Script { actions, dirs })
}

/// Local time as s6-log's `T` prints it: `YYYY-MM-DD HH:MM:SS.nnnnnnnnn  `.
fn iso_local(t: SystemTime) -> String {
    // SAFETY: glibc's `void tzset(void)`, declared as it is (the libc crate does not export it).
    unsafe extern "C" {
        fn tzset();
    }
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    // `as _`: time_t, whose alias the libc crate deprecates on musl (it changes width there).
    let secs = d.as_secs() as _;
    // SAFETY: tm is plain data filled by localtime_r; tzset only reads TZ.
    let tm = unsafe {
        tzset();
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:09}  ",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        d.subsec_nanos()
    )
}

/// `t`'s prefix: the TAI64N label and a space.
fn tai_prefix(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let label = super::status::tai64n_label(d.as_millis() as u64);
    format!("{}{:08x} ", &label[..17], d.subsec_nanos())
}

struct Logger {
    script: Script,
    stdout: Option<Sink>,
}

impl Logger {
    fn log(&mut self, lines: &[Vec<u8>]) {
        if lines.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let (tai, iso) = (tai_prefix(now), iso_local(now));
        for line in lines {
            for (a, selected) in self.script.actions.iter().zip(select(&self.script.actions, line)) {
                if !selected {
                    continue;
                }
                let mut prefix = String::new();
                if a.tai {
                    prefix.push_str(&tai);
                }
                if a.iso {
                    prefix.push_str(&iso);
                }
                if let Some(p) = &a.prefix {
                    prefix.push_str(p);
                    prefix.push(' ');
                }
                match &a.target {
                    Target::Stdout => {
                        if let Some(s) = self.stdout.as_mut() {
                            s.record(&[prefix.as_bytes(), line, b"\n"]);
                        }
                    }
                    Target::Alert { size } => {
                        // Cut to `E` bytes and marked with "..." — unless the mark would not
                        // make it shorter (s6-log 2.11).
                        let cut = *size > 0 && line.len() > size + 3;
                        let mut e = std::io::stderr().lock();
                        let _ = e.write_all(b"s6-log: alert: ");
                        let _ = e.write_all(prefix.as_bytes());
                        let _ = e.write_all(if cut { &line[..*size] } else { line });
                        let _ = e.write_all(if cut { b"...\n" } else { b"\n" });
                    }
                    Target::Status { path, size } => write_status(path, *size, prefix.as_bytes(), line),
                    Target::Dir { index, .. } => {
                        let d = &mut self.script.dirs[*index];
                        // One retry: another writer (a second container on the same volume)
                        // may have rotated `current` away under us.
                        let r = d.file.write_line(&prefix, line).or_else(|_| d.file.write_line(&prefix, line));
                        if let Err(e) = r {
                            warn(PROG, format!("unable to write to {}/current: {}", d.path.display(), strerror(&e)));
                        }
                    }
                }
            }
        }
    }

    fn flush(&mut self) {
        for (i, d) in self.script.dirs.iter_mut().enumerate() {
            if let Err(e) = d.file.flush() {
                warn(PROG, format!("unable to write to {}/current: {}", d.path.display(), strerror(&e)));
            }
            let total = self.script.actions.iter().find_map(|a| match a.target {
                Target::Dir { index, total } if index == i && total > 0 => Some(total),
                _ => None,
            });
            if let Some(total) = total {
                prune_total(&d.path, total);
            }
        }
        if let Some(s) = self.stdout.as_mut() {
            s.flush();
        }
    }

    /// At exit: `current` is marked finished (user-executable, as s6-log does), and the stdout
    /// copies get a short while to drain.
    fn finish(&mut self) {
        self.flush();
        for d in &self.script.dirs {
            let cur = d.path.join("current");
            if let Ok(m) = std::fs::metadata(&cur) {
                let _ = std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(m.permissions().mode() | 0o100));
            }
        }
        let deadline = Instant::now() + EXIT_DRAIN;
        if let Some(s) = self.stdout.as_mut() {
            while s.pending() {
                s.flush();
                let left = deadline.saturating_duration_since(Instant::now());
                let (Some(fd), false) = (s.raw_fd(), left.is_zero()) else { break };
                if !s.pending() {
                    break;
                }
                // SAFETY: the sink owns the fd for the duration of the call.
                let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
                let mut p = [nix::poll::PollFd::new(bfd, nix::poll::PollFlags::POLLOUT)];
                let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                if nix::poll::poll(&mut p, nix::poll::PollTimeout::from(ms)).unwrap_or(0) == 0 {
                    break;
                }
            }
        }
    }
}

/// `=file`: the first `size` bytes of the line, padded with newlines to `size`, replaced
/// atomically.
fn write_status(path: &std::path::Path, size: usize, prefix: &[u8], line: &[u8]) {
    let mut data = [prefix, line].concat();
    if size > 0 {
        data.truncate(size);
        data.resize(size, b'\n');
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let r = std::fs::write(&tmp, &data).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        warn(PROG, format!("unable to write status file {}: {}", path.display(), strerror(&e)));
    }
}

/// `S`: delete the oldest archives until they fit in `total` bytes.
fn prune_total(dir: &std::path::Path, total: u64) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut archives: Vec<(String, u64)> = rd
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e.file_name().into_string().ok()?;
            (n.starts_with('@') && (n.ends_with(".s") || n.ends_with(".u")))
                .then(|| (n, e.metadata().map(|m| m.len()).unwrap_or(0)))
        })
        .collect();
    archives.sort();
    let mut sum: u64 = archives.iter().map(|a| a.1).sum();
    for (n, len) in archives {
        if sum <= total {
            break;
        }
        if std::fs::remove_file(dir.join(&n)).is_ok() {
            sum -= len;
        }
    }
}

pub fn main(args: Vec<OsString>) -> i32 {
    let Ok(p) = getopt::parse(&args, "qvbpd:l:") else {
        return usage(PROG, USAGE);
    };
    let mut protect = false;
    let mut notif: Option<i32> = None;
    let mut limit = 8192usize;
    for (opt, arg) in p.opts {
        match opt {
            'p' => protect = true,
            'd' => match arg.as_deref().and_then(getopt::uint).and_then(|n| i32::try_from(n).ok()) {
                Some(fd) if fd > 2 => notif = Some(fd),
                Some(_) => return fatal(PROG, 100, "notification fd must be 3 or more"),
                None => return usage(PROG, USAGE),
            },
            // Below 48 (but not 0, "no limit") is raised to 48, as s6-log 2.11 does.
            'l' => match arg.as_deref().and_then(getopt::uint) {
                Some(0) => limit = 0,
                Some(n) => limit = n.max(48) as usize,
                None => return usage(PROG, USAGE),
            },
            _ => {}
        }
    }
    let script = match compile(&args[p.rest..]) {
        Ok(s) => s,
        Err(ParseError::Usage(m)) => return fatal(PROG, 100, m),
    };
    for d in &script.dirs {
        if let Err(e) = check_logdir(&d.path) {
            return fatal(PROG, 111, format!("unable to open {}/current: {}", d.path.display(), strerror(&e)));
        }
    }
    // SAFETY: setting a disposition; EPIPE is handled where writes fail.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let wants_stdout = script.actions.iter().any(|a| matches!(a.target, Target::Stdout));
    let mut logger = Logger { script, stdout: wants_stdout.then(stdout_sink) };
    if let Some(fd) = notif {
        // SAFETY: the caller handed us this fd for exactly this purpose; closed once.
        unsafe {
            libc::write(fd, b"\n".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
    run(&mut logger, limit, protect)
}

/// The `1` action's writer. A regular file (a test's `> file`) is written through a plain dup,
/// sharing the file offset with everyone else writing it (a private, reopened description
/// would overwrite their lines); anything else (pipe, tty, socket) gets the non-blocking sink.
fn stdout_sink() -> Sink {
    let regular = nix::sys::stat::fstat(1).is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFREG);
    match regular.then(|| nix::unistd::dup(1).ok()).flatten() {
        // SAFETY: dup returned a fresh fd that nothing else owns.
        Some(fd) => Sink::from_fd(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }, STDOUT_BUFFER),
        None => Sink::open(1, STDOUT_BUFFER),
    }
}

/// The logdir exists (created if missing) and `current` can be opened for appending.
fn check_logdir(dir: &std::path::Path) -> std::io::Result<()> {
    if !dir.is_dir() {
        std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).open(dir.join("current")).map(drop)
}

fn run(logger: &mut Logger, limit: usize, protect: bool) -> i32 {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGHUP);
    if protect {
        // SAFETY: setting a disposition.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    } else {
        mask.add(Signal::SIGTERM);
    }
    let _ = mask.thread_block();
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok();
    let stdin = std::io::stdin();
    let mut lines = LineSplitter::with_limit(limit);
    let mut buf = vec![0u8; 64 * 1024];
    let mut stopping = false;
    loop {
        if stopping && lines.pending() == 0 {
            break;
        }
        let out_fd = logger.stdout.as_ref().filter(|s| s.pending()).and_then(Sink::raw_fd);
        let mut fds = vec![nix::poll::PollFd::new(stdin.as_fd(), nix::poll::PollFlags::POLLIN)];
        if let Some(s) = &sfd {
            fds.push(nix::poll::PollFd::new(s.as_fd(), nix::poll::PollFlags::POLLIN));
        }
        // SAFETY: the sink keeps the fd open for the whole iteration.
        let out_b = out_fd.map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
        if let Some(b) = out_b {
            fds.push(nix::poll::PollFd::new(b, nix::poll::PollFlags::POLLOUT));
        }
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return fatal(PROG, 111, format!("unable to poll: {}", e.desc())),
        }
        let stdin_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let sig_ready = sfd.is_some() && fds[1].revents().is_some_and(|r| !r.is_empty());
        drop(fds);
        if sig_ready {
            if let Some(s) = &sfd {
                while let Ok(Some(_)) = s.read_signal() {
                    stopping = true;
                }
            }
        }
        if stdin_ready {
            // SAFETY: reading into our own buffer from fd 0.
            let n = unsafe { libc::read(stdin.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = nix::Error::last();
                if e == nix::Error::EINTR || e == nix::Error::EAGAIN {
                    continue;
                }
                warn(PROG, format!("unable to read stdin: {}", e.desc()));
                break;
            }
            if n == 0 {
                break;
            }
            let mut out = Vec::new();
            lines.feed(&buf[..n as usize], |l| out.push(l.to_vec()));
            logger.log(&out);
        }
        logger.flush();
    }
    let mut out = Vec::new();
    lines.flush(|l| out.push(l.to_vec()));
    logger.log(&out);
    logger.finish();
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<OsString> {
        w.iter().map(OsString::from).collect()
    }

    #[test]
    fn hermes_script_compiles() {
        let s = compile(&words(&["1", "n10", "s1000000", "T", "/tmp/x"])).unwrap();
        assert_eq!(s.actions.len(), 2);
        assert!(matches!(s.actions[0].target, Target::Stdout));
        assert!(!s.actions[0].iso, "T applies to the next action only");
        assert!(s.actions[1].iso);
        assert!(matches!(s.actions[1].target, Target::Dir { index: 0, total: 0 }));
    }

    #[test]
    fn bad_scripts_are_usage_errors() {
        let e = |w: &[&str]| match compile(&words(w)) {
            Err(ParseError::Usage(m)) => m,
            Ok(_) => "ok".into(),
        };
        assert_eq!(e(&["n10"]), "no action directive specified");
        assert_eq!(e(&["x"]), "unrecognized directive: x");
        assert_eq!(e(&["nten", "1"]), "unrecognized directive: nten");
        assert!(e(&["!gzip", "./d"]).starts_with("processors are not supported"));
        assert!(e(&["+(", "1"]).starts_with("invalid regular expression"));
        assert_eq!(compile(&words(&["1", "T"])).unwrap().actions.len(), 1, "a trailing control directive is ignored");
    }

    #[test]
    fn selections_pick_lines_like_s6_log() {
        let s = compile(&words(&["-.*", "+^keep", "1", "f", "2"])).unwrap();
        let pick = |line: &[u8]| select(&s.actions, line);
        assert_eq!(pick(b"keep this"), vec![true, false]);
        assert_eq!(pick(b"drop this"), vec![false, true]);
    }

    #[test]
    fn lines_split_at_the_limit_and_keep_the_tail() {
        let mut l = LineSplitter::with_limit(48);
        let mut out: Vec<Vec<u8>> = Vec::new();
        l.feed(&[b'a'; 100], |x| out.push(x.to_vec()));
        l.feed(b"\nb\nc", |x| out.push(x.to_vec()));
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), vec![48, 48, 4, 1]);
        assert!(l.pending() > 0);
        l.flush(|x| out.push(x.to_vec()));
        assert_eq!(out.last().unwrap(), b"c");
    }

    #[test]
    fn timestamps_have_s6_log_shapes() {
        let t = UNIX_EPOCH + Duration::new(1_795_423_113, 876_905_781);
        let iso = iso_local(t);
        assert_eq!(iso.len(), "2026-11-23 08:38:33.876905781  ".len());
        assert!(iso.ends_with(":33.876905781  "), "{iso}");
        assert_eq!(tai_prefix(t), "@400000006b03fbae34448535 ");
    }

    /// Property tests (issue 10) for the script parser: here rather than in tests/props.rs
    /// because `s6::log` is private to the crate. `compile` touches no file (logdirs are opened
    /// by `check_logdir`), so any word is safe to try.
    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::os::unix::ffi::OsStringExt;

        const VOCAB: &[&str] = &[
            "1",
            "2",
            "n10",
            "n4294967296",
            "n",
            "s1000000",
            "s0",
            "s99999999999999999999",
            "S100",
            "T",
            "t",
            "f",
            "+.*",
            "-x",
            "+(",
            "-",
            "+",
            "+[[:alpha:]",
            "+a{1,3}",
            "E5",
            "E18446744073709551615",
            "^3",
            "pprefix",
            "p",
            "!",
            "?",
            "!gzip",
            "?x",
            "nten",
            "/tmp/d",
            "./d",
            ".",
            "=st",
            "=",
            "l0",
            "r5",
            "x",
            "",
            "\u{feff}1",
            "n-1",
            "s+5",
            "T ",
            "é",
        ];

        fn word() -> impl Strategy<Value = OsString> {
            prop_oneof![
                3 => prop::sample::select(VOCAB).prop_map(OsString::from),
                1 => prop::collection::vec(any::<u8>(), 0..8).prop_map(OsString::from_vec),
                1 => (prop::sample::select(&[b'+', b'-', b'n', b's', b'=', b'/'][..]), prop::collection::vec(any::<u8>(), 0..8))
                    .prop_map(|(c, mut v)| {
                        v.insert(0, c);
                        OsString::from_vec(v)
                    }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            /// Any script compiles or is a usage error; a compiled one has an action, and its
            /// logdirs are exactly its `/…` and `.…` words.
            #[test]
            fn compile_is_total(words in prop::collection::vec(word(), 0..8)) {
                if let Ok(s) = compile(&words) {
                    prop_assert!(!s.actions.is_empty());
                    let dirs = words.iter().filter(|w| matches!(w.as_encoded_bytes().first(), Some(b'/' | b'.'))).count();
                    prop_assert_eq!(s.dirs.len(), dirs);
                }
            }
        }

        #[test]
        fn hostile_scripts_are_usage_errors() {
            let e = |w: &[&[u8]]| compile(&w.iter().map(|b| OsString::from_vec(b.to_vec())).collect::<Vec<_>>()).err();
            assert!(e(&[b"+a\0b", b"1"]).is_some(), "NUL in a regex");
            assert!(e(&[b"+\xff(", b"1"]).is_some());
            assert!(e(&[b"n\xff", b"1"]).is_some());
            assert!(e(&[b"s99999999999999999999", b"1"]).is_some());
            assert!(e(&[b"n4294967296", b"1"]).is_some());
            assert!(e(&[b"\xef\xbb\xbf1"]).is_some(), "a BOM before an action");
            assert!(e(&[b"1\r"]).is_some(), "CRLF leftovers are not directives");
            assert!(e(&[&[b'x'; 1 << 20][..]]).is_some(), "a 1 MiB word");
            assert!(e(&[b"s0", b"E99999999999999999999", b"1"]).is_some());
            assert!(e(&[b"1", b"\xff"]).is_some());
            // Extreme but valid numbers are clamped or taken as they are, never overflow.
            assert!(e(&[b"s18446744073709551615", b"E18446744073709551615", b"^18446744073709551615", b"2"]).is_none());
        }
    }
}
