//! `s6-log` (C-S6-7, C-SVC-5): hermesinit's applet against Debian's real s6-log 2.11 for the
//! script Hermes writes (`1 n10 s1000000 T dir`) and the other directives, plus what only
//! hermesinit promises: a stalled stdout never blocks the file, two writers sharing a logdir
//! never fail on a lock, a last line without newline is kept. Everything runs in temp dirs.

mod s6_common;
use s6_common::{BIN, real_s6_available};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/tmp.rs"]
mod tmp;
use tmp::Tmp;

/// Our applet, called by its s6 name through a link.
fn ours(tmp: &Tmp) -> PathBuf {
    let link = tmp.0.join("s6-log");
    if !link.exists() {
        std::os::unix::fs::symlink(BIN, &link).unwrap();
    }
    link
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run `prog args` with `input` on stdin (closed after), under a hard timeout.
fn run(prog: &Path, args: &[&str], input: &[u8], env: &[(&str, &str)]) -> Out {
    let mut c = Command::new(prog);
    c.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("hang guard: {prog:?} {args:?} still ran after 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    w.join().unwrap();
    let o = child.wait_with_output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn input_lines(n: usize, width: usize) -> String {
    (0..n).map(|i| format!("line {i:05} {}\n", "x".repeat(width))).collect()
}

/// Strip s6-log's `T` prefix, checking its shape: `YYYY-MM-DD HH:MM:SS.nnnnnnnnn  `.
fn strip_iso(line: &str) -> &str {
    let b = line.as_bytes();
    assert!(b.len() >= 31, "too short for a T prefix: {line:?}");
    let shape = "dddd-dd-dd dd:dd:dd.ddddddddd  ";
    for (i, s) in shape.bytes().enumerate() {
        let ok = if s == b'd' { b[i].is_ascii_digit() } else { b[i] == s };
        assert!(ok, "bad T prefix at byte {i}: {line:?}");
    }
    &line[31..]
}

/// C-S6-7: Hermes' `log/run` line, real s6-log and ours fed the same lines: same stdout, same
/// `current` once the timestamps are checked and stripped, timestamps in local time.
#[test]
fn c_s6_7_hermes_log_script_matches_real_s6_log() {
    if !real_s6_available("c_s6_7_hermes_log_script_matches_real_s6_log") {
        return;
    }
    let tmp = Tmp::new("hermes");
    let input = input_lines(200, 30);
    for tz in ["UTC", "America/New_York"] {
        let (rd, od) =
            (tmp.0.join(format!("real-{tz}").replace('/', "_")), tmp.0.join(format!("ours-{tz}").replace('/', "_")));
        let args =
            |d: &Path| vec!["1".to_string(), "n10".into(), "s1000000".into(), "T".into(), d.display().to_string()];
        let ra = args(&rd);
        let oa = args(&od);
        let real = run(
            Path::new("/usr/bin/s6-log"),
            &ra.iter().map(String::as_str).collect::<Vec<_>>(),
            input.as_bytes(),
            &[("TZ", tz)],
        );
        let mine =
            run(&ours(&tmp), &oa.iter().map(String::as_str).collect::<Vec<_>>(), input.as_bytes(), &[("TZ", tz)]);
        assert_eq!((real.code, mine.code), (0, 0), "{}\n{}", real.stderr, mine.stderr);
        assert_eq!(mine.stdout, real.stdout, "the `1` copy is the raw lines");
        assert_eq!(mine.stdout, input);
        let rc = std::fs::read_to_string(rd.join("current")).unwrap();
        let oc = std::fs::read_to_string(od.join("current")).unwrap();
        let strip = |s: &str| s.lines().map(|l| strip_iso(l).to_string()).collect::<Vec<_>>();
        assert_eq!(strip(&oc), strip(&rc));
        // Same local hour as the real tool (TZ is honoured).
        assert_eq!(&oc[..13], &rc[..13], "{tz}: {} vs {}", &oc[..31], &rc[..31]);
        // Finalised like s6-log leaves it: user-executable.
        let mode = std::fs::metadata(od.join("current")).unwrap().permissions().mode();
        assert_eq!(mode & 0o100, 0o100, "{mode:o}");
        assert!(!od.join("lock").exists(), "no lock file: two containers may share the volume");
    }
}

/// Selection, prefix, `t`, `-l`, alerts: the same stdout/stderr as the real s6-log.
#[test]
fn s6_log_directives_match_real_s6_log() {
    if !real_s6_available("s6_log_directives_match_real_s6_log") {
        return;
    }
    let tmp = Tmp::new("directives");
    let input = format!("{}\nkeep me\ndebug: no\n\nlast\n", "x".repeat(100));
    let stamp = |s: &str| {
        s.lines()
            .map(|l| match l.strip_prefix('@') {
                Some(r) if r.len() >= 24 && r[..24].bytes().all(|c| c.is_ascii_hexdigit()) => {
                    format!("@STAMP{}", &r[24..])
                }
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for script in [
        "1",
        "-l 48 1",
        "-l 0 1",
        "-l 5 1",
        "-- -^debug 1",
        "-- -.* +^keep 1",
        "-- -^debug 1 f pELSE 1",
        "pSVC 1",
        "t 1",
        "t pP 1",
        "1 1",
        "E5 2",
        "2",
        "s100 1",
        "n0 1",
    ] {
        let args: Vec<&str> = script.split(' ').collect();
        let real = run(Path::new("/usr/bin/s6-log"), &args, input.as_bytes(), &[]);
        let mine = run(&ours(&tmp), &args, input.as_bytes(), &[]);
        assert_eq!(mine.code, real.code, "{script}: {}", mine.stderr);
        assert_eq!(stamp(&mine.stdout), stamp(&real.stdout), "{script}");
        assert_eq!(mine.stderr, real.stderr, "{script}");
    }
    // The status file: the first ^N bytes of the last selected line, padded with newlines.
    let (rs, os) = (tmp.0.join("real.status"), tmp.0.join("ours.status"));
    let r = run(Path::new("/usr/bin/s6-log"), &["^20", &format!("={}", rs.display())], input.as_bytes(), &[]);
    let o = run(&ours(&tmp), &["^20", &format!("={}", os.display())], input.as_bytes(), &[]);
    assert_eq!((o.code, r.code), (0, 0));
    assert_eq!(std::fs::read(&os).unwrap(), std::fs::read(&rs).unwrap());
}

/// Usage errors: exit 100 with the same messages as the real s6-log.
#[test]
fn s6_log_bad_scripts_exit_100_like_real_s6_log() {
    if !real_s6_available("s6_log_bad_scripts_exit_100_like_real_s6_log") {
        return;
    }
    let tmp = Tmp::new("usage");
    for script in [&[][..], &["n10"], &["1", "x"], &["-l", "x", "1"], &["-Z", "1"], &["nten", "1"]] {
        let real = run(Path::new("/usr/bin/s6-log"), script, b"", &[]);
        let mine = run(&ours(&tmp), script, b"", &[]);
        assert_eq!((mine.code, real.code), (100, 100), "{script:?}: {}", mine.stderr);
        if !script.is_empty() && script[0] != "-l" && script[0] != "-Z" {
            assert_eq!(mine.stderr, real.stderr, "{script:?}");
        }
    }
    // Processors are refused instead of run.
    let d = tmp.0.join("proc");
    let mine = run(&ours(&tmp), &["!gzip", d.to_str().unwrap()], b"", &[]);
    assert_eq!(mine.code, 100);
    assert!(mine.stderr.contains("processors are not supported"), "{}", mine.stderr);
}

/// Rotation: `current` becomes `@<tai64n>.s` before it passes `s`, `n` archives are kept, and
/// together they hold the newest lines, in order.
#[test]
fn c_svc_5_rotation_keeps_n_archives_below_the_size() {
    let tmp = Tmp::new("rotate");
    let d = tmp.0.join("logs");
    let input = input_lines(2000, 40);
    let o = run(&ours(&tmp), &["n3", "s4096", d.to_str().unwrap()], input.as_bytes(), &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let mut names: Vec<String> =
        std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(names[3], "current");
    let mut all = String::new();
    for n in &names {
        if n != "current" {
            assert!(n.len() == 27 && n.starts_with("@4000") && n.ends_with(".s"), "{n}");
        }
        let text = std::fs::read_to_string(d.join(n)).unwrap();
        assert!(text.len() <= 4096, "{n}: {}", text.len());
        all.push_str(&text);
    }
    assert!(input.ends_with(&all), "the kept files are the newest lines, in order");
}

/// C-SVC-5: a stdout nobody reads never holds up the file: every line reaches `current` and
/// s6-log exits soon after EOF.
#[test]
fn c_svc_5_stalled_stdout_does_not_block_the_file() {
    let tmp = Tmp::new("stall");
    let d = tmp.0.join("logs");
    let input = input_lines(100_000, 40); // ~5 MB, far more than a pipe holds
    let (r, w) = nix::unistd::pipe().unwrap();
    let mut child = Command::new(ours(&tmp))
        .args(["1", "n2", "s100000000", d.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::from(w))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let t0 = Instant::now();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "s6-log blocked on a stalled stdout");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(d.join("current")).unwrap(), input);
    drop(r);
}

/// Two loggers on one logdir (two containers sharing a volume) both run and exit cleanly:
/// there is no lock to collide on, and with no rotation every line of both is there.
#[test]
fn two_writers_share_a_logdir_without_a_lock() {
    let tmp = Tmp::new("shared");
    let d = tmp.0.join("logs");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("lock"), "").unwrap();
    let a: String = (0..5000).map(|i| format!("a {i}\n")).collect();
    let b: String = (0..5000).map(|i| format!("b {i}\n")).collect();
    let link = ours(&tmp);
    let dir = d.to_str().unwrap().to_string();
    let (l2, dir2, b2) = (link.clone(), dir.clone(), b.clone());
    let t = std::thread::spawn(move || run(&l2, &["s100000000", &dir2], b2.as_bytes(), &[]));
    let oa = run(&link, &["s100000000", &dir], a.as_bytes(), &[]);
    let ob = t.join().unwrap();
    assert_eq!((oa.code, ob.code), (0, 0), "{} {}", oa.stderr, ob.stderr);
    let cur = std::fs::read_to_string(d.join("current")).unwrap();
    assert_eq!(cur.lines().count(), 10_000);
    // With rotation racing between them, both still never fail.
    let (l3, dir3) = (link.clone(), dir.clone());
    let big_a = input_lines(3000, 40);
    let big_b = big_a.clone();
    let t = std::thread::spawn(move || run(&l3, &["n5", "s4096", &dir3], big_b.as_bytes(), &[]));
    let oa = run(&link, &["n5", "s4096", &dir], big_a.as_bytes(), &[]);
    let ob = t.join().unwrap();
    assert_eq!((oa.code, ob.code), (0, 0), "{} {}", oa.stderr, ob.stderr);
}

/// A last line without a newline is logged, not dropped (s6-log 2.11 drops it).
#[test]
fn a_last_line_without_newline_is_kept() {
    let tmp = Tmp::new("partial");
    let d = tmp.0.join("logs");
    let o = run(&ours(&tmp), &["1", d.to_str().unwrap()], b"hello\nworld", &[]);
    assert_eq!(o.code, 0);
    assert_eq!(o.stdout, "hello\nworld\n");
    assert_eq!(std::fs::read_to_string(d.join("current")).unwrap(), "hello\nworld\n");
}

/// SIGTERM: s6-log stops after the line it is in and exits 0; with `-p` it ignores TERM.
#[test]
fn sigterm_ends_the_logger_and_p_protects_it() {
    let tmp = Tmp::new("term");
    for protect in [false, true] {
        let d = tmp.0.join(format!("logs-{protect}"));
        let mut args = vec![];
        if protect {
            args.push("-p");
        }
        args.push(d.to_str().unwrap());
        let mut child = Command::new(ours(&tmp)).args(&args).stdin(Stdio::piped()).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"one\n").unwrap();
        // The logger has taken the line once it is in `current`.
        let t0 = Instant::now();
        while std::fs::read_to_string(d.join("current")).unwrap_or_default() != "one\n" {
            assert!(t0.elapsed() < Duration::from_secs(10), "the line never reached current");
            std::thread::sleep(Duration::from_millis(5));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let exited = if protect {
            // Staying alive can only be seen over a window.
            std::thread::sleep(Duration::from_millis(300));
            child.try_wait().unwrap()
        } else {
            let t0 = Instant::now();
            loop {
                match child.try_wait().unwrap() {
                    Some(st) => break Some(st),
                    None if t0.elapsed() > Duration::from_secs(10) => break None,
                    None => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        };
        assert_eq!(exited.is_some(), !protect, "protect={protect}");
        drop(stdin);
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read_to_string(d.join("current")).unwrap(), "one\n");
    }
}
