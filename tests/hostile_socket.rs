//! C-SEC-4: nothing a peer does on the control socket can hurt PID 1. Each case runs the real
//! binary as PID 1 of a fresh namespace, attacks its socket from the host, and checks that
//! `hermesinit svc status` is still answered and that PID 1's fds, RSS and CPU stay bounded.
//! Wall times are printed (run with `--no-capture` to see them), never asserted.

mod harness;
use harness::{Root, Running, proc_fds, proc_rss_kb, proc_ticks, secs};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A quiet window's CPU budget: an idle PID 1 uses ~0 ticks; a spinning one ~100 per second.
const QUIET: Duration = Duration::from_secs(2);
const QUIET_TICKS: u64 = 20;
/// How long the server gives a peer to send its request or read its answer (plus slack).
const EXPIRY: Duration = Duration::from_secs(7);

struct Pid1 {
    _root: Root,
    run: Option<Running>,
    pid: i32,
    sock: PathBuf,
    config: PathBuf,
    tag: &'static str,
}

impl Pid1 {
    fn start(tag: &'static str) -> Pid1 {
        let root = Root::new(tag);
        let sock = root.dir.join("control.sock");
        root.config(&format!("control_socket: {}\n", sock.display()));
        let run = root.spawn_init(&["sleep", "1000"], &[]);
        let pid = run.pid1("hermesinit");
        let p = Pid1 { config: root.dir.join("config.yaml"), _root: root, run: Some(run), pid, sock, tag };
        let t0 = Instant::now();
        while request(&p.sock, br#"{"v":1,"op":"wait","services":[],"until":"boot","any":false}"#).is_none() {
            assert!(t0.elapsed() < secs(20), "PID 1 never answered on {}", p.sock.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// `hermesinit svc status` must be answered; its wall time is measured and printed.
    fn status(&self, when: &str) -> Duration {
        // The request alone, without the CLI's process start.
        let t0 = Instant::now();
        let raw = request(&self.sock, br#"{"v":1,"op":"status","services":[]}"#);
        eprintln!("{}: raw status request {when}: {:?} in {:?}", self.tag, raw.is_some(), t0.elapsed());
        let mut cmd = Command::new(harness::BIN);
        cmd.args(["svc", "status"]).env("HERMESINIT_CONFIG", &self.config);
        let out = harness::run(cmd, secs(10));
        assert_eq!(out.code, 0, "{}: svc status {when}: {}{}", self.tag, out.stdout, out.stderr);
        eprintln!("{}: svc status {when}: answered in {:?}", self.tag, out.elapsed);
        out.elapsed
    }

    /// (fds, RSS KiB, CPU ticks over a quiet window), printed; the ticks are asserted.
    fn measure(&self, when: &str) -> (usize, u64, u64) {
        let t = proc_ticks(self.pid);
        std::thread::sleep(QUIET);
        let ticks = proc_ticks(self.pid) - t;
        let (fds, rss) = (proc_fds(self.pid), proc_rss_kb(self.pid));
        eprintln!("{}: {when}: fds={fds} rss={rss}KiB cpu={ticks} ticks in {QUIET:?}", self.tag);
        assert!(ticks < QUIET_TICKS, "{}: PID 1 spins {when}: {ticks} ticks in {QUIET:?}", self.tag);
        (fds, rss, ticks)
    }

    /// Stop PID 1 (it must not have panicked) and return what it logged.
    fn stop(mut self) -> String {
        let run = self.run.take().unwrap();
        run.signal("hermesinit", libc::SIGTERM);
        let out = run.wait(secs(20));
        assert!(!out.stderr.contains("panicked"), "{}: {}", self.tag, out.stderr);
        assert_eq!(out.code, 143, "{}: {}", self.tag, out.stderr);
        out.stderr
    }
}

impl Drop for Pid1 {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            run.signal("hermesinit", libc::SIGKILL);
            let _ = run.wait(secs(10));
        }
    }
}

/// One request line, one answer (None when there is none within 2 s).
fn request(sock: &Path, line: &[u8]) -> Option<String> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(secs(2))).ok()?;
    s.write_all(line).ok()?;
    s.write_all(b"\n").ok()?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).ok()?;
    (!answer.is_empty()).then_some(answer)
}

/// A forked process that connects `n` times as `uid`, sends `payload` on each connection
/// (without reading anything), reads the first connection's answer when `read_first` is set,
/// and then holds every connection open until dropped.
struct Clients {
    pid: i32,
    connected: u32,
    first_answer: String,
}

impl Clients {
    fn start(sock: &Path, uid: u32, n: u32, payload: &[u8], read_first: bool) -> Clients {
        // Everything the child needs is prepared before fork: it only makes system calls.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(sock.as_os_str().as_encoded_bytes()) {
            *d = *s as libc::c_char;
        }
        let mut p = [0i32; 2];
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            unsafe { child(&addr, uid, n, payload, read_first, p[1]) }
        }
        unsafe { libc::close(p[1]) };
        let mut out = Vec::new();
        // SAFETY: p[0] is ours; File takes ownership and closes it.
        let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(p[0]) };
        f.read_to_end(&mut out).unwrap();
        assert!(out.len() >= 4, "client process failed");
        let connected = u32::from_ne_bytes(out[..4].try_into().unwrap());
        Clients { pid, connected, first_answer: String::from_utf8_lossy(&out[4..]).into_owned() }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// The forked child: system calls only (the test process has threads).
unsafe fn child(addr: &libc::sockaddr_un, uid: u32, n: u32, payload: &[u8], read_first: bool, out: i32) -> ! {
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let lim = libc::rlimit { rlim_cur: 8192, rlim_max: 8192 };
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        if uid != 0
            && (libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(uid, uid, uid) != 0
                || libc::setresuid(uid, uid, uid) != 0)
        {
            libc::_exit(1);
        }
        let mut connected: u32 = 0;
        let mut answer = [0u8; 4096];
        let mut got = 0usize;
        for i in 0..n {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
            if fd < 0 {
                break;
            }
            // A full backlog says EAGAIN: retry for a while (the server drains it).
            let mut ok = false;
            for _ in 0..2000 {
                let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                if libc::connect(fd, addr as *const _ as *const libc::sockaddr, len) == 0 {
                    ok = true;
                    break;
                }
                if *libc::__errno_location() != libc::EAGAIN {
                    break;
                }
                let ts = libc::timespec { tv_sec: 0, tv_nsec: 1_000_000 };
                libc::nanosleep(&ts, std::ptr::null_mut());
            }
            if !ok {
                libc::close(fd);
                continue;
            }
            connected += 1;
            if !payload.is_empty() {
                libc::send(fd, payload.as_ptr().cast(), payload.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
            }
            if i == 0 && read_first {
                let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                while libc::poll(&mut pfd, 1, 2000) > 0 && got < answer.len() {
                    let r = libc::read(fd, answer[got..].as_mut_ptr().cast(), answer.len() - got);
                    if r <= 0 {
                        break;
                    }
                    got += r as usize;
                    if answer[..got].contains(&b'\n') {
                        break;
                    }
                }
            }
        }
        let c = connected.to_ne_bytes();
        libc::write(out, c.as_ptr().cast(), 4);
        libc::write(out, answer.as_ptr().cast(), got);
        libc::close(out);
        loop {
            libc::pause();
        }
    }
}

/// Bounds that hold whatever a peer does: the connection cap plus PID 1's own fds.
fn assert_bounded(p: &Pid1, base: (usize, u64, u64), now: (usize, u64, u64), when: &str) {
    assert!(now.0 <= base.0 + 64 + 2, "{}: fds {when}: {} (baseline {})", p.tag, now.0, base.0);
    assert!(now.1 <= base.1 + 16 * 1024, "{}: RSS {when}: {} KiB (baseline {} KiB)", p.tag, now.1, base.1);
}

#[test]
fn c_sec_4_wait_then_disconnect_does_not_spin_or_leak() {
    let p = Pid1::start("hostile-hangup");
    let base = p.measure("baseline");
    for _ in 0..20 {
        let mut s = UnixStream::connect(&p.sock).unwrap();
        s.write_all(b"{\"v\":1,\"op\":\"wait\",\"services\":[\"nope\"],\"until\":\"up\",\"any\":false}\n").unwrap();
        std::thread::sleep(Duration::from_millis(20)); // the request is read: the wait is pending
    } // ... and every client hangs up (Ctrl-C on `svc wait`)
    // The hang-ups are seen on the next loop pass: wait for the descriptors to go (bounded).
    let t0 = std::time::Instant::now();
    while harness::proc_fds(p.pid) > base.0 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = p.measure("after 20 waits hung up");
    assert!(after.0 <= base.0, "fds leaked by hung-up waits: {} (baseline {})", after.0, base.0);
    p.status("after hung-up waits");
    p.stop();
}

#[test]
fn c_sec_4_connection_flood_from_any_uid_is_capped() {
    let p = Pid1::start("hostile-flood");
    let base = p.measure("baseline");
    let stranger = Clients::start(&p.sock, 12345, 2000, b"", false);
    let own = Clients::start(&p.sock, 0, 2000, b"", false);
    eprintln!("flood: {} connections as uid 12345, {} as root, held open", stranger.connected, own.connected);
    p.status("under the flood of idle connections");
    let during = p.measure("under the flood");
    assert_bounded(&p, base, during, "under the flood");
    std::thread::sleep(EXPIRY);
    let idle = p.measure("flood held past the idle deadline");
    assert!(idle.0 <= base.0 + 2, "idle connections not closed: fds {} (baseline {})", idle.0, base.0);
    drop((stranger, own));
    p.status("after the flood");
    // Thousands of refusals, but PID 1's log grows by a line per period, not per peer.
    let log = p.stop();
    let lines = log.lines().filter(|l| l.contains("control socket")).count();
    eprintln!("flood: {lines} log lines about refusals");
    assert!((1..=4).contains(&lines), "{log}");
}

#[test]
fn c_sec_4_partial_requests_time_out_and_memory_stays_bounded() {
    let p = Pid1::start("hostile-partial");
    let base = p.measure("baseline");
    let partial = vec![b'x'; 60 * 1024];
    let c = Clients::start(&p.sock, 10000, 1000, &partial, false);
    eprintln!("partial: {} connections with 60 KB and no newline", c.connected);
    p.status("under 1000 partial requests");
    let during = p.measure("under 1000 partial requests");
    assert_bounded(&p, base, during, "under partial requests");
    std::thread::sleep(EXPIRY);
    let later = p.measure("after the request deadline");
    assert!(later.0 <= base.0 + 2, "partial connections not closed: fds {} (baseline {})", later.0, base.0);
    p.stop();
}

#[test]
fn c_sec_4_unread_answers_are_dropped() {
    let p = Pid1::start("hostile-unread");
    let base = p.measure("baseline");
    let c = Clients::start(&p.sock, 0, 1000, b"{\"v\":1,\"op\":\"status\",\"services\":[]}\n", false);
    eprintln!("unread: {} status requests whose answers are never read", c.connected);
    p.status("under 1000 unread answers");
    let during = p.measure("under 1000 unread answers");
    assert_bounded(&p, base, during, "under unread answers");
    std::thread::sleep(EXPIRY);
    let later = p.measure("after the answer deadline");
    assert!(later.0 <= base.0 + 2, "unread answers still held: fds {} (baseline {})", later.0, base.0);
    p.stop();
}

#[test]
fn c_sec_4_oversized_request_is_refused_while_reading() {
    let p = Pid1::start("hostile-big");
    let base = p.measure("baseline");
    let s = UnixStream::connect(&p.sock).unwrap();
    s.set_read_timeout(Some(secs(5))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'{'; 64 * 1024];
        let mut sent = 0;
        for _ in 0..16 {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    assert!(answer.contains("\"ok\":false") && answer.contains("too large"), "{answer}");
    drop(s);
    let sent = writer.join().unwrap();
    eprintln!("big: refused after the client sent {sent} of 1 MiB");
    assert!(sent < 1024 * 1024, "the whole 1 MiB was taken before the refusal");
    let after = p.measure("after a 1 MiB request");
    assert_bounded(&p, base, after, "after a 1 MiB request");
    p.status("after a 1 MiB request");
    p.stop();
}

#[test]
fn c_sec_4_huge_wait_timeouts_do_not_overflow() {
    let p = Pid1::start("hostile-timeout");
    // u64::MAX ms overflows an Instant; 2^31 ms (24.8 days) overflows poll's i32 timeout.
    let mut held = Vec::new();
    for ms in [u64::MAX, 1 << 31, (1 << 31) + 1, u64::from(u32::MAX) * 1000] {
        let mut s = UnixStream::connect(&p.sock).unwrap();
        let line = format!(
            "{{\"v\":1,\"op\":\"wait\",\"services\":[\"nope\"],\"until\":\"up\",\"any\":false,\"timeout_ms\":{ms}}}\n"
        );
        s.write_all(line.as_bytes()).unwrap();
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    p.status("with waits of huge timeouts pending");
    p.measure("with waits of huge timeouts pending");
    drop(held);
    p.status("after the waits hung up");
    p.stop();
}

#[test]
fn c_sec_4_other_uids_are_refused_at_accept() {
    let p = Pid1::start("hostile-uid");
    // The client sends nothing: the refusal comes at accept, not after a request.
    let c = Clients::start(&p.sock, 12345, 1, b"", true);
    assert_eq!(c.connected, 1);
    assert!(
        c.first_answer.starts_with("{\"v\":2,\"ok\":false,\"error\":\"permission denied: uid 12345")
            && c.first_answer.contains("\"code\":\"refused\""),
        "{:?}",
        c.first_answer
    );
    // The hermes user and root are served.
    let h = Clients::start(&p.sock, 10000, 1, b"{\"v\":1,\"op\":\"status\",\"services\":[]}\n", true);
    assert!(h.first_answer.contains("\"ok\":true"), "{:?}", h.first_answer);
    p.status("after a refusal");
    p.stop();
}
