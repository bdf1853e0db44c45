//! Lossless container stdout (issue 12, part 1), with hermesinit as PID 1 of a namespace and its
//! stdout a pipe into a reader this test controls: while the reader takes data no line is ever
//! dropped (services are held back instead); a reader that takes nothing for the stall limit
//! costs stdout lines (counted and reported), never the log file's, and never blocks anyone.

mod harness;
use harness::{BIN, Root};
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

const LINES: usize = 300_000;

/// A native service writing LINES numbered lines of 100 bytes as fast as it can, then a marker.
fn script() -> String {
    let x = "x".repeat(88);
    format!(
        "d=/run/service/.gen.tmp; mkdir -p $d; cat > $d/hermesinit.yaml <<'EOF'\n\
         command: [/bin/sh, -c, \"seq -f 'L%09.0f {x}' 0 {last}; touch /opt/data/gen.done\"]\n\
         log: {{stdout: true, dir: /opt/data/logs/gen, max_bytes: 100000000, keep: 2}}\n\
         stay_down_exit_codes: [0]\n\
         EOF\n\
         mv $d /run/service/gen; t=0; while [ ! -e /opt/data/gen.done ] && [ $t -lt 1200 ]; do sleep 0.1; t=$((t+1)); done; \
         {BIN} svc status gen > /opt/data/status.txt 2>&1; exit 0",
        last = LINES - 1
    )
}

#[derive(Clone, Copy)]
enum Reader {
    /// Reads as fast as it can.
    Full,
    /// Stops for 2 s after the first 10 MB, then reads on.
    Stall2s,
    /// Never reads (until PID 1 has exited).
    Never,
}

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
    file: Vec<u8>,
    status: String,
    elapsed: Duration,
}

fn run(tag: &str, reader: Reader) -> Run {
    let root = Root::new(tag);
    root.config("logs: {stdout_stall_ms: 1000}\n");
    let mut cmd = root.init_command(&["sh", "-c", &script()], &[]);
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let t0 = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let ho = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        match reader {
            Reader::Full => {
                let _ = so.read_to_end(&mut out);
            }
            Reader::Stall2s => {
                while out.len() < 10 << 20 {
                    match so.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => out.extend_from_slice(&buf[..n]),
                    }
                }
                std::thread::sleep(Duration::from_secs(2));
                let _ = so.read_to_end(&mut out);
            }
            Reader::Never => {
                // Hold the pipe open, unread, until the namespace is gone.
                let _ = done_rx.recv();
                let _ = so.read_to_end(&mut out);
            }
        }
        out
    });
    let he = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code().unwrap_or(-1);
        }
        if t0.elapsed() > Duration::from_secs(240) {
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("hang guard: PID 1 still running after 240 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = t0.elapsed();
    let _ = done_tx.send(());
    let stdout = ho.join().unwrap();
    let stderr = he.join().unwrap();
    let file = std::fs::read(root.dir.join("opt/data/logs/gen/current")).unwrap_or_default();
    let status = std::fs::read_to_string(root.dir.join("opt/data/status.txt")).unwrap_or_default();
    Run { code, stdout, stderr, file, status, elapsed }
}

/// Which of the numbered lines appear in `text` (after an optional timestamp prefix).
fn seen(text: &[u8]) -> Vec<bool> {
    let mut got = vec![false; LINES];
    for l in text.split(|&b| b == b'\n') {
        let Some(i) = l.iter().position(|&b| b == b'L') else { continue };
        let l = &l[i..];
        if l.len() != 99 {
            continue;
        }
        if let Some(n) = std::str::from_utf8(&l[1..10]).ok().and_then(|s| s.parse::<usize>().ok()) {
            if n < LINES {
                got[n] = true;
            }
        }
    }
    got
}

fn missing(text: &[u8]) -> usize {
    seen(text).iter().filter(|&&b| !b).count()
}

/// Sum of the counts PID 1 reported in its "N line(s) dropped" lines.
fn reported_drops(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| l.split("container stdout: ").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_reader_at_full_speed_gets_every_line() {
    let r = run("bp-full", Reader::Full);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(missing(&r.stdout), 0, "lines missing on stdout; stderr: {}", r.stderr);
    assert_eq!(missing(&r.file), 0, "lines missing in the log file");
    assert!(!r.stderr.contains("dropping lines"), "{}", r.stderr);
    eprintln!("300k lines through a full-speed reader in {:?}", r.elapsed);
}

#[test]
fn a_reader_that_stalls_2s_costs_counted_stdout_lines_and_no_file_line() {
    let r = run("bp-stall", Reader::Stall2s);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lost = missing(&r.stdout);
    assert!(lost > 0, "a 2 s stall past a 1 s limit drops something: {}", r.stderr);
    assert!(r.stderr.contains("container stdout took nothing for 1000 ms"), "{}", r.stderr);
    assert_eq!(reported_drops(&r.stderr), lost as u64, "the reported count is what is missing: {}", r.stderr);
    assert_eq!(missing(&r.file), 0, "the log file keeps every line");
    eprintln!("2 s stall: {lost} line(s) dropped on stdout, in {:?}", r.elapsed);
}

#[test]
fn a_reader_that_never_reads_does_not_freeze_services_or_pid1() {
    let r = run("bp-never", Reader::Never);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The service ran to its end (the main program saw its marker) and PID 1 answered.
    assert!(r.status.lines().any(|l| l.starts_with("gen ")), "svc status answered: {:?} {}", r.status, r.stderr);
    assert_eq!(missing(&r.file), 0, "the log file keeps every line");
    assert!(r.stderr.contains("dropping lines"), "{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(120), "{:?}", r.elapsed);
}
