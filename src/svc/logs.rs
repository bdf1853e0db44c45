//! `hermesinit svc logs NAME`: a service's timestamped log, `current` and its s6-style archives
//! (`@<tai64n>.s`), read by a client process (root or hermes), never by PID 1.
//!
//! The files live where hermes can write, so they are opened with `O_NOFOLLOW|O_NONBLOCK` and
//! must be regular files; when the caller is root, every directory component below
//! `HERMES_HOME` (or below `/` for a log dir elsewhere) is opened no-follow too, so a symlink
//! planted by hermes never makes root read a file of its choosing. Root then reads a directory
//! that another user owns (the gateways' logs are hermes') as that user: a hard link hermes made
//! to a file only root may read is refused like any other.

use crate::fsx;
use std::ffi::CString;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest file read whole (s6-log rotates at 1 MB; a planted giant is refused).
const MAX_FILE: u64 = 64 << 20;
/// `YYYY-MM-DD HH:MM:SS.nnnnnnnnn  ` (crate::logs::timestamp).
const PREFIX_LEN: usize = 31;

/// `10m`, `2h`, `30s`, `1d`, `500ms`, or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?} (use e.g. 30s, 10m, 2h, 1d)"))?;
    let mult = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m, h or d)")),
    };
    Duration::try_from_secs_f64(n * mult).map_err(|_| format!("bad duration {s:?}"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (inverse of logs::civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The time of a line's timestamp prefix, in ns since the epoch; `None` when it has none.
pub fn line_time(line: &[u8]) -> Option<u128> {
    let p = std::str::from_utf8(line.get(..PREFIX_LEN)?).ok()?;
    let b = p.as_bytes();
    if b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' || b[16] != b':' || b[19] != b'.' {
        return None;
    }
    if &p[29..] != "  " {
        return None;
    }
    let n = |r: std::ops::Range<usize>| p[r].parse::<i64>().ok();
    let days = days_from_civil(n(0..4)?, n(5..7)?, n(8..10)?);
    let secs = days * 86_400 + n(11..13)? * 3600 + n(14..16)? * 60 + n(17..19)?;
    let nanos = n(20..29)?;
    (secs >= 0).then(|| secs as u128 * 1_000_000_000 + nanos as u128)
}

/// The line without its timestamp prefix (`--raw`); a line without one is kept whole.
pub fn strip(line: &[u8]) -> &[u8] {
    if line_time(line).is_some() { &line[PREFIX_LEN..] } else { line }
}

pub struct Options {
    pub lines: Option<usize>,
    pub follow: bool,
    pub since: Option<Duration>,
    pub raw: bool,
}

/// An open log directory.
pub struct LogDir {
    pub path: PathBuf,
    fd: OwnedFd,
}

impl LogDir {
    /// Open `path`; as root, without following a symlink below `trusted` (HERMES_HOME, or `/`).
    pub fn open(path: &Path, trusted: &Path, as_root: bool) -> io::Result<LogDir> {
        let fd = match path.strip_prefix(trusted) {
            Ok(rel) if as_root && rel.components().next().is_some() => {
                let base = fsx::open_dir_path(trusted)?;
                let (parent, last) = fsx::walk_parent(base.as_fd(), rel)
                    .map_err(|(p, e)| io::Error::new(e.kind(), format!("{}: {e}", trusted.join(p).display())))?;
                fsx::open_dir_at(parent.as_ref().map_or(base.as_fd(), |p| p.as_fd()), &last)?
            }
            _ => fsx::open_dir_path(path)?,
        };
        Ok(LogDir { path: path.to_path_buf(), fd })
    }

    /// The directory's owner (uid, gid).
    pub fn owner(&self) -> io::Result<(u32, u32)> {
        fsx::fstat(self.fd.as_fd()).map(|st| (st.uid, st.gid))
    }

    /// Archives oldest first, then `current` (when present).
    fn files(&self) -> io::Result<Vec<CString>> {
        let mut names: Vec<CString> =
            fsx::list(self.fd.as_fd())?.into_iter().filter(|n| is_archive(n.to_bytes())).collect();
        names.sort();
        if fsx::lstat_at(self.fd.as_fd(), c"current").is_ok() {
            names.push(c"current".to_owned());
        }
        Ok(names)
    }

    fn read(&self, name: &CString) -> io::Result<Vec<u8>> {
        fsx::read_bounded_at(self.fd.as_fd(), name, MAX_FILE).map_err(|e| {
            io::Error::new(e.kind(), format!("{}: {e}", self.path.join(name.to_string_lossy().as_ref()).display()))
        })
    }

    /// The last lines, oldest first: `n` of them (all when `None`), and only those stamped at
    /// or after `since_ns`. Reads archives newest first and stops once it has enough.
    pub fn tail(&self, n: Option<usize>, since_ns: Option<u128>) -> io::Result<Vec<Vec<u8>>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for name in self.files()?.iter().rev() {
            if n.is_some_and(|n| out.len() >= n) {
                break;
            }
            let data = match self.read(name) {
                Ok(d) => d,
                // Rotated away between the listing and the open.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut lines: Vec<Vec<u8>> = data.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let mut older = false;
            if let Some(t) = since_ns {
                let before = lines.len();
                lines.retain(|l| line_time(l).is_none_or(|lt| lt >= t));
                older = lines.len() < before;
            }
            lines.append(&mut out);
            out = lines;
            if older {
                break; // this file reaches back past `since`: older ones cannot help
            }
        }
        if let Some(n) = n {
            let skip = out.len().saturating_sub(n);
            out.drain(..skip);
        }
        Ok(out)
    }
}

fn is_archive(name: &[u8]) -> bool {
    name.len() == 27 && name.starts_with(b"@") && name.ends_with(b".s") && name[1..25].iter().all(u8::is_ascii_hexdigit)
}

fn emit(out: &mut impl Write, line: &[u8], raw: bool) -> io::Result<()> {
    let l = if raw { strip(line) } else { line };
    out.write_all(l)?;
    if !l.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

pub fn show(dir: &LogDir, o: &Options) -> io::Result<()> {
    let since_ns = o.since.map(|d| {
        SystemTime::now().checked_sub(d).unwrap_or(UNIX_EPOCH).duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
    });
    let n = match (o.lines, o.since) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(50),
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    for l in dir.tail(n, since_ns)? {
        emit(&mut out, &l, o.raw)?;
    }
    out.flush()?;
    if o.follow {
        follow(dir, &mut out, o.raw)?;
    }
    Ok(())
}

/// `tail -F` on `current`: print what is appended; when `current` is rotated away (a new
/// inode under the name) finish the old file, then follow the new one from its start; when it
/// is truncated, start over. Polls every 200 ms (a client, not PID 1: simple beats clever).
fn follow(dir: &LogDir, out: &mut impl Write, raw: bool) -> io::Result<()> {
    let open = || -> Option<(std::fs::File, fsx::Stat)> {
        let f = fsx::open_read_at(dir.fd.as_fd(), c"current").ok()?;
        let st = fsx::fstat(f.as_fd()).ok()?;
        st.is_file().then_some((f, st))
    };
    let mut cur = open().map(|(mut f, st)| {
        let _ = f.seek(SeekFrom::End(0));
        (f, st)
    });
    let mut partial: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut drain = |f: &mut std::fs::File, partial: &mut Vec<u8>, out: &mut dyn Write| -> io::Result<()> {
            loop {
                let k = match f.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                };
                partial.extend_from_slice(&buf[..k]);
                if let Some(end) = partial.iter().rposition(|&b| b == b'\n') {
                    let whole: Vec<u8> = partial.drain(..=end).collect();
                    for l in whole.split_inclusive(|&b| b == b'\n') {
                        let l = if raw { strip(l) } else { l };
                        out.write_all(l)?;
                    }
                    out.flush()?;
                }
            }
        };
        if let Some((f, st)) = cur.as_mut() {
            drain(f, &mut partial, out)?;
            let now = fsx::lstat_at(dir.fd.as_fd(), c"current").ok();
            let pos = f.stream_position().unwrap_or(0);
            let replaced = now.as_ref().is_none_or(|n| (n.dev, n.ino) != (st.dev, st.ino));
            if replaced {
                if now.is_some() {
                    drain(f, &mut partial, out)?;
                    cur = open();
                }
            } else if now.is_some_and(|n| n.size < pos) {
                let _ = f.seek(SeekFrom::Start(0));
                partial.clear();
            }
        } else {
            cur = open();
            if cur.is_some() {
                continue;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("1.5d").unwrap(), Duration::from_secs(129_600));
        assert!(parse_duration("10x").is_err() && parse_duration("").is_err() && parse_duration("m").is_err());
    }

    #[test]
    fn timestamps_round_trip_with_the_writer() {
        let t = UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
        let line = format!("{}hello\n", crate::logs::timestamp(t));
        assert_eq!(line_time(line.as_bytes()), Some(1_795_000_000_123_456_789));
        assert_eq!(strip(line.as_bytes()), b"hello\n");
        assert_eq!(line_time(b"no stamp here, but long enough to look at\n"), None);
        assert_eq!(strip(b"short\n"), b"short\n");
    }

    #[test]
    fn tail_reaches_into_archives_and_refuses_symlinks() {
        let t = crate::boot::testutil::TempDir::new("svclogs");
        let d = t.path();
        let stamp = |s: u64| crate::logs::timestamp(UNIX_EPOCH + Duration::from_secs(s));
        let a1 = crate::logs::tai64n_name(UNIX_EPOCH + Duration::from_secs(100));
        let a2 = crate::logs::tai64n_name(UNIX_EPOCH + Duration::from_secs(200));
        std::fs::write(d.join(&a1), format!("{}one\n{}two\n", stamp(10), stamp(20))).unwrap();
        std::fs::write(d.join(&a2), format!("{}three\n", stamp(150))).unwrap();
        std::fs::write(d.join("current"), format!("{}four\n{}five\n", stamp(300), stamp(400))).unwrap();
        std::fs::write(d.join("unrelated"), "x\n").unwrap();
        let dir = LogDir::open(d, Path::new("/"), false).unwrap();
        let text =
            |v: Vec<Vec<u8>>| v.iter().map(|l| String::from_utf8_lossy(strip(l)).into_owned()).collect::<String>();
        assert_eq!(text(dir.tail(Some(2), None).unwrap()), "four\nfive\n");
        assert_eq!(text(dir.tail(Some(4), None).unwrap()), "two\nthree\nfour\nfive\n");
        assert_eq!(text(dir.tail(None, None).unwrap()), "one\ntwo\nthree\nfour\nfive\n");
        assert_eq!(text(dir.tail(None, Some(150_000_000_000)).unwrap()), "three\nfour\nfive\n");
        // A symlinked `current` is refused, and so is a symlinked directory for root.
        std::fs::remove_file(d.join("current")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("current")).unwrap();
        assert!(dir.tail(Some(1), None).is_err());
        std::fs::create_dir(d.join("real")).unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
        assert!(LogDir::open(&d.join("link"), d, true).is_err());
        assert!(LogDir::open(&d.join("real"), d, true).is_ok());
    }
}
