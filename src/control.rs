//! The control protocol: one JSON object per line over a Unix stream socket owned by PID 1.
//!
//! Version 1. A client sends one request line and reads one response line. PID 1 checks the
//! peer's credentials (SO_PEERCRED) at accept: root and the hermes user may control services,
//! anyone else gets `ok: false` with a clear error and is closed. `wait` requests are answered
//! when the condition holds or the timeout passes, never by blocking PID 1. Limits on
//! connections, sizes and time are in `server` (C-SEC-4).

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Version 2: answers carry an error `code`. Version 1 requests are still served (their
/// answers differ only by the added fields, which v1 clients ignore).
pub const VERSION: u32 = 2;
/// The oldest request version served.
pub const MIN_VERSION: u32 = 1;
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitFor {
    /// The service is up.
    Up,
    /// The service is down (its finish script may still run).
    Down,
    /// Down and its finish script is done (s6-svwait -D).
    Finished,
    /// Boot has finished and services were started (readiness of the container).
    Boot,
    /// The background part of the ownership sweep has finished (or there was none).
    Sweep,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Status of the named services (all when empty).
    Status { services: Vec<String> },
    /// Want up; start now if down.
    Up { services: Vec<String> },
    /// Want up but do not restart after the next exit (s6-svc -o).
    Once { services: Vec<String> },
    /// Want down; TERM the group (then KILL after the stop timeout).
    Down { services: Vec<String> },
    /// Stop and start again; wanted state becomes up.
    Restart { services: Vec<String> },
    /// Send a signal to the service's process group (s6-svc -t/-k/-h/…); no change of wanted state.
    Signal { services: Vec<String>, signal: i32 },
    /// Re-read the scan directory now. `prune` also drops services whose directory is gone.
    Rescan { prune: bool },
    /// Answer when every named service (all when empty) meets `until`, or `any` of them does.
    Wait { services: Vec<String>, until: WaitFor, any: bool, timeout_ms: Option<u64> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Exit code, when the process exited.
    pub code: Option<i32>,
    /// Signal number, when it was killed.
    pub signal: Option<i32>,
}

/// A service's state on the wire (the machine's states; `supervisor/machine.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    #[default]
    Down,
    Up,
    /// Asked to stop; the process is still there.
    Stopping,
    /// `./finish` runs.
    Finishing,
    /// Waiting to restart after a crash.
    Backoff,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Down => "down",
            ServiceState::Up => "up",
            ServiceState::Stopping => "stopping",
            ServiceState::Finishing => "finishing",
            ServiceState::Backoff => "backoff",
        }
    }
}

impl std::str::FromStr for ServiceState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.into())).map_err(|_| format!("unknown state {s}"))
    }
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a service is defined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    /// `hermesinit.yaml`.
    #[default]
    Native,
    /// An s6 `run` script.
    S6,
}

impl std::fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServiceKind::Native => "native",
            ServiceKind::S6 => "s6",
        })
    }
}

/// Why a request failed, for clients to act on (the text is for people).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A named service is not in the scan directory.
    NoSuchService,
    /// The peer may not ask (uid), or the server cannot take it now (connection cap).
    Refused,
    /// Not a request: not JSON, an unknown version or op, too large, too slow.
    BadRequest,
    /// The container is stopping: nothing is started any more.
    Stopping,
}

/// A failed request: its code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into() }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: ServiceState,
    pub pid: Option<i32>,
    /// Wall-clock milliseconds since the epoch of the last up/down transition.
    pub since_ms: u64,
    pub wanted_up: bool,
    /// False when the service directory has a `down` file.
    pub normally_up: bool,
    /// Restarts since the last stable run (the backoff counter).
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// When a restart is pending: milliseconds until it happens.
    pub restart_in_ms: Option<u64>,
    pub kind: ServiceKind,
    pub has_logger: bool,
    /// Since when (wall-clock ms) the service has been crashing without a stable run in
    /// between (the streak the backoff counts); absent when it is not. Added in 0.2 (v1-compatible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
    /// A native service's `log.dir` (where `current` is written); absent for s6 slots and
    /// native services without a log directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootState {
    #[default]
    Running,
    Done,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `error`: what kind of failure (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// True when a wait ended by its timeout.
    #[serde(default)]
    pub timed_out: bool,
    #[serde(default)]
    pub boot: BootState,
    #[serde(default)]
    pub services: Vec<ServiceStatus>,
    /// The main program's pid while it runs (absent before it started and after it exited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_pid: Option<i32>,
    /// The container is stopping (SIGTERM received, or the main program has exited).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopping: bool,
}

impl Response {
    pub fn error(code: ErrorCode, msg: impl Into<String>) -> Response {
        Response { v: VERSION, ok: false, error: Some(msg.into()), code: Some(code), ..Default::default() }
    }

    pub fn failure(f: Failure) -> Response {
        Response::error(f.code, f.message)
    }
}

#[derive(Debug)]
pub enum ClientError {
    /// No supervisor listening (not running, or not hermesinit).
    NotRunning(String),
    Io(std::io::Error),
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning(m) => write!(f, "supervisor not reachable: {m}"),
            ClientError::Io(e) => write!(f, "control socket: {e}"),
            ClientError::Protocol(m) => write!(f, "control protocol: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// For the processes that are clients of PID 1 (`svc`, the s6 front ends that do not exec): a
/// peer that went away — PID 1 closing a refused connection, a closed stdout — is EPIPE and an
/// error message, not a silent death by SIGPIPE (exit 141). The binary is `no_main`, so nothing
/// set this up before.
pub fn ignore_sigpipe() {
    // SAFETY: signal(2) with a constant disposition, before the client starts any thread.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Where a client finds PID 1: the configured socket, and the fallback of a non-root PID 1
/// whose `/run` was not writable (see `config::Config::client`).
#[derive(Debug, Clone)]
pub struct Client {
    pub socket: PathBuf,
    pub fallback: Option<PathBuf>,
}

impl Client {
    /// Send one request and read the answer. `wait` requests get a socket timeout a little
    /// longer than their own, so a dead supervisor cannot hang the client.
    pub fn request(&self, req: Request) -> Result<Response, ClientError> {
        request(self, req)
    }
}

fn request(client: &Client, req: Request) -> Result<Response, ClientError> {
    let path = &client.socket;
    let mut stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => client
            .fallback
            .as_ref()
            .and_then(|p| UnixStream::connect(p).ok())
            .ok_or_else(|| ClientError::NotRunning(format!("{}: {e}", path.display())))?,
    };
    let timeout = match &req {
        Request::Wait { timeout_ms: Some(ms), .. } => Some(Duration::from_millis(ms.saturating_add(5000))),
        Request::Wait { timeout_ms: None, .. } => None,
        _ => Some(Duration::from_secs(30)),
    };
    stream.set_read_timeout(timeout).map_err(ClientError::Io)?;
    let mut line =
        serde_json::to_vec(&Envelope { v: VERSION, request: req }).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    // The server may refuse at accept (permission, too many connections) and close before the
    // request is written: its one answer line is still there to read.
    let sent = stream.write_all(&line);
    let mut answer = String::new();
    let read = BufReader::new(stream).read_line(&mut answer);
    if answer.is_empty() {
        sent.map_err(ClientError::Io)?;
        read.map_err(ClientError::Io)?;
        return Err(ClientError::Protocol("supervisor closed the connection without an answer".into()));
    }
    serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(format!("bad answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_json_line() {
        let e = Envelope { v: 1, request: Request::Up { services: vec!["gateway-coder".into()] } };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(s, r#"{"v":1,"op":"up","services":["gateway-coder"]}"#);
        assert_eq!(serde_json::from_str::<Envelope>(&s).unwrap(), e);
        let w: Envelope =
            serde_json::from_str(r#"{"v":1,"op":"wait","services":[],"until":"boot","any":false,"timeout_ms":500}"#)
                .unwrap();
        assert!(matches!(w.request, Request::Wait { until: WaitFor::Boot, .. }));
    }
}

/// The server side, driven by init's event loop. It owns each connection's whole life: the
/// peer check at accept, the connection cap, every deadline and bounded buffers, so PID 1
/// holds nothing for a peer that is gone, idle, partial or not reading (C-SEC-4).
pub mod server {
    use super::{Envelope, ErrorCode, MIN_VERSION, Response, VERSION};
    use std::collections::BTreeMap;
    use std::io::{ErrorKind, Read, Write};
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::Path;
    use std::time::{Duration, Instant};
    use tracing::warn;

    /// Requests longer than this are refused while reading: at most this plus one read
    /// (`READ_CHUNK`) is ever buffered for a connection.
    pub const MAX_REQUEST: usize = 64 * 1024;
    /// An answer longer than this is replaced by an error, bounding the bytes queued per
    /// connection (a status line is ~250 bytes per service).
    pub const MAX_ANSWER: usize = 1024 * 1024;
    /// Connections open at once. At the cap a new connection takes the place of the oldest one
    /// still sending its request, so idle connections cannot lock `svc status` out; when every
    /// slot has a request in flight (a pending wait, an answer being sent) it is refused.
    pub const MAX_CONNS: usize = 64;
    /// Time from accept to a whole request line.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
    /// Time for the peer to take its answer once it is queued.
    pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
    /// Accepts per loop pass. The listener is polled after the connections and a batch never
    /// exceeds the cap, so every connection is read at least once before it can be evicted.
    const ACCEPT_BATCH: usize = MAX_CONNS;
    /// After an accept failure (EMFILE, ENFILE, ENOBUFS…) the pending connection stays queued
    /// and the listener readable: polling it again at once would spin. We stop polling it for
    /// this long instead of keeping a reserve fd: simpler, and nothing is lost (the backlog).
    const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
    /// Refusals (any peer can cause them) are logged at most once per period, with a count.
    const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);
    const READ_CHUNK: usize = 8192;

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Phase {
        /// Until its deadline: reading the request line.
        Reading,
        /// The request went to init and its answer is pending (a wait): only a hang-up is
        /// watched. A peer that only shut down its writing side still gets its answer.
        Pending,
        /// Until its deadline: writing the answer; closed once sent.
        Writing,
    }

    struct Conn {
        stream: UnixStream,
        phase: Phase,
        deadline: Option<Instant>,
        inbuf: Vec<u8>,
        out: Vec<u8>,
        sent: usize,
    }

    /// At most one log line per period; what was suppressed is reported with a count.
    #[derive(Default)]
    struct Refusals {
        logged_at: Option<Instant>,
        unlogged: u64,
        last: String,
    }

    impl Refusals {
        fn note(&mut self, now: Instant, what: String) {
            if self.logged_at.is_some_and(|t| now < t + REFUSAL_LOG_PERIOD) {
                self.unlogged += 1;
                self.last = what;
            } else {
                warn!("control socket: {what}");
                self.logged_at = Some(now);
            }
        }

        fn deadline(&self) -> Option<Instant> {
            self.logged_at.filter(|_| self.unlogged > 0).map(|t| t + REFUSAL_LOG_PERIOD)
        }

        fn flush(&mut self, now: Instant) {
            if self.deadline().is_some_and(|d| d <= now) {
                warn!(
                    "control socket: {} more refused in the last {} s (last: {})",
                    self.unlogged,
                    REFUSAL_LOG_PERIOD.as_secs(),
                    self.last
                );
                self.unlogged = 0;
                self.last = String::new();
                self.logged_at = Some(now);
            }
        }
    }

    pub struct Server {
        listener: UnixListener,
        conns: BTreeMap<u64, Conn>,
        next: u64,
        /// Who may connect besides root (C-SVC-6), and its name for the refusal.
        hermes_uid: Option<u32>,
        user: String,
        accept_paused_until: Option<Instant>,
        refusals: Refusals,
    }

    /// One parsed request from a client.
    pub struct Incoming {
        pub conn: u64,
        pub request: Result<Envelope, String>,
    }

    impl Server {
        /// Bind the socket (replacing a stale one); mode 0666, since the peer's credentials are
        /// checked at accept. Until `allow` names the hermes user, only root is served.
        pub fn bind(path: &Path) -> std::io::Result<Server> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            }
            let _ = std::fs::remove_file(path);
            use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
            let fd = nix::sys::socket::socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                None,
            )?;
            nix::sys::socket::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
            nix::sys::socket::listen(&fd, Backlog::MAXCONN)?;
            let listener = UnixListener::from(fd);
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
            Ok(Server {
                listener,
                conns: BTreeMap::new(),
                next: 0,
                hermes_uid: None,
                user: "hermes".into(),
                accept_paused_until: None,
                refusals: Refusals::default(),
            })
        }

        /// The uid (after boot's remap) that may connect besides root.
        pub fn allow(&mut self, hermes_uid: Option<u32>, user: &str) {
            self.hermes_uid = hermes_uid;
            self.user = user.to_string();
        }

        /// The listener, unless accepts are backing off after a failure.
        pub fn listen_fd(&self, now: Instant) -> Option<RawFd> {
            match self.accept_paused_until {
                Some(t) if now < t => None,
                _ => Some(self.listener.as_raw_fd()),
            }
        }

        /// (fd, poll events, conn id) for each connection. A pending one polls for nothing:
        /// POLLHUP and POLLERR are reported anyway, and they are all it waits for.
        pub fn conn_fds(&self) -> Vec<(RawFd, libc::c_short, u64)> {
            self.conns
                .iter()
                .map(|(id, c)| {
                    let events = match c.phase {
                        Phase::Reading => libc::POLLIN,
                        Phase::Pending => 0,
                        Phase::Writing => libc::POLLOUT,
                    };
                    (c.stream.as_raw_fd(), events, *id)
                })
                .collect()
        }

        /// The earliest connection deadline, accept back-off or refusal report.
        pub fn deadline(&self) -> Option<Instant> {
            let conns = self.conns.values().filter_map(|c| c.deadline);
            conns.chain(self.accept_paused_until).chain(self.refusals.deadline()).min()
        }

        /// Close what is past its deadline; end an accept back-off; report refusals.
        pub fn expire(&mut self, now: Instant) {
            let late: Vec<u64> =
                self.conns.iter().filter(|(_, c)| c.deadline.is_some_and(|d| d <= now)).map(|(id, _)| *id).collect();
            for id in late {
                if let Some(c) = self.conns.remove(&id) {
                    if c.phase == Phase::Reading {
                        let secs = REQUEST_TIMEOUT.as_secs();
                        say(
                            &c.stream,
                            &Response::error(ErrorCode::BadRequest, format!("no whole request line within {secs} s")),
                        );
                    }
                }
            }
            if self.accept_paused_until.is_some_and(|t| t <= now) {
                self.accept_paused_until = None;
            }
            self.refusals.flush(now);
        }

        pub fn accept(&mut self, now: Instant) {
            for _ in 0..ACCEPT_BATCH {
                let stream = match self.listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ECONNABORTED)) => continue,
                    Err(e) => {
                        self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                        self.refusals.note(now, format!("accept: {e} (not accepting for 100 ms)"));
                        return;
                    }
                };
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                let Ok(cred) = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) else {
                    continue;
                };
                // C-SVC-6: root and the hermes user only, status included; checked before the
                // peer can hold anything.
                let uid = cred.uid();
                if uid != 0 && Some(uid) != self.hermes_uid {
                    let why =
                        format!("permission denied: uid {uid} may not control services (only root and {})", self.user);
                    self.refuse(stream, now, why);
                    continue;
                }
                if self.conns.len() >= MAX_CONNS && !self.evict(now) {
                    self.refuse(stream, now, format!("too many connections (limit {MAX_CONNS}); try again"));
                    continue;
                }
                self.next += 1;
                let deadline = Some(now + REQUEST_TIMEOUT);
                let c = Conn { stream, phase: Phase::Reading, deadline, inbuf: Vec::new(), out: Vec::new(), sent: 0 };
                self.conns.insert(self.next, c);
            }
        }

        /// Make room at the cap: close the oldest connection still sending its request.
        fn evict(&mut self, now: Instant) -> bool {
            let Some(id) = self.conns.iter().find(|(_, c)| c.phase == Phase::Reading).map(|(id, _)| *id) else {
                return false;
            };
            if let Some(c) = self.conns.remove(&id) {
                self.refuse(c.stream, now, format!("too many connections (limit {MAX_CONNS}): closed an idle one"));
            }
            true
        }

        /// One refusal line if the socket takes it at once, then close.
        fn refuse(&mut self, stream: UnixStream, now: Instant, why: String) {
            say(&stream, &Response::error(ErrorCode::Refused, why.clone()));
            self.refusals.note(now, why);
        }

        /// Poll readiness on a connection: read its request, write its answer, or notice that
        /// the peer hung up (which closes it; init then drops its wait).
        pub fn event(&mut self, id: u64, revents: libc::c_short) -> Option<Incoming> {
            match self.conns.get(&id)?.phase {
                Phase::Reading => self.read(id),
                Phase::Writing => {
                    self.write(id);
                    None
                }
                Phase::Pending => {
                    if revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                        self.conns.remove(&id);
                    }
                    None
                }
            }
        }

        /// One read per readiness (poll reports the rest again): a fast writer cannot hold
        /// the loop, and a connection evicted early costs one chunk, not its whole backlog.
        /// Never more than `MAX_REQUEST` plus one chunk is buffered.
        fn read(&mut self, id: u64) -> Option<Incoming> {
            let c = self.conns.get_mut(&id)?;
            let mut buf = [0u8; READ_CHUNK];
            let n = match c.stream.read(&mut buf) {
                Ok(n) if n > 0 => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return None,
                _ => {
                    // EOF before a whole request, or an error.
                    self.conns.remove(&id);
                    return None;
                }
            };
            let start = c.inbuf.len();
            c.inbuf.extend_from_slice(&buf[..n]);
            let request = if let Some(i) = c.inbuf[start..].iter().position(|&b| b == b'\n') {
                parse(&c.inbuf[..start + i])
            } else if c.inbuf.len() > MAX_REQUEST {
                Err(format!("request too large (limit {MAX_REQUEST} bytes)"))
            } else {
                return None;
            };
            // One request per connection: what follows it is never read.
            c.inbuf = Vec::new();
            c.phase = Phase::Pending;
            c.deadline = None;
            Some(Incoming { conn: id, request })
        }

        /// Queue the answer and write what the socket takes; the connection closes once sent,
        /// or at `ANSWER_TIMEOUT` if the peer does not read it.
        pub fn reply(&mut self, id: u64, resp: &Response, now: Instant) {
            let Some(c) = self.conns.get_mut(&id) else { return };
            let mut line = serde_json::to_vec(resp).unwrap_or_default();
            if line.len() >= MAX_ANSWER {
                let msg = format!("answer too large ({} bytes, limit {MAX_ANSWER}): name fewer services", line.len());
                line = serde_json::to_vec(&Response::error(ErrorCode::BadRequest, msg)).unwrap_or_default();
            }
            line.push(b'\n');
            c.out = line;
            c.sent = 0;
            c.phase = Phase::Writing;
            c.deadline = Some(now + ANSWER_TIMEOUT);
            self.write(id);
        }

        fn write(&mut self, id: u64) {
            let Some(c) = self.conns.get_mut(&id) else { return };
            while c.sent < c.out.len() {
                match c.stream.write(&c.out[c.sent..]) {
                    Ok(n) => c.sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            self.conns.remove(&id);
        }

        pub fn is_open(&self, id: u64) -> bool {
            self.conns.contains_key(&id)
        }

        pub fn error(&mut self, id: u64, msg: String, now: Instant) {
            self.reply(id, &Response::error(ErrorCode::BadRequest, msg), now);
        }
    }

    /// Write one answer line only if the (non-blocking) socket takes it whole right now.
    fn say(stream: &UnixStream, resp: &Response) {
        let mut line = serde_json::to_vec(resp).unwrap_or_default();
        line.push(b'\n');
        let _ = nix::sys::socket::send(
            stream.as_raw_fd(),
            &line,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        );
    }

    fn parse(line: &[u8]) -> Result<Envelope, String> {
        serde_json::from_slice::<serde_json::Value>(line).map_err(|e| format!("not JSON: {e}")).and_then(|v| {
            match v.get("v").and_then(|x| x.as_u64()) {
                Some(n) if (u64::from(MIN_VERSION)..=u64::from(VERSION)).contains(&n) => {
                    serde_json::from_value::<Envelope>(v).map_err(|e| format!("bad request: {e}"))
                }
                Some(n) => Err(format!("protocol version {n} is not supported (this is version {VERSION})")),
                None => Err("missing protocol version \"v\"".into()),
            }
        })
    }

    #[cfg(test)]
    mod tests {
        use super::super::{Request, ServiceStatus};
        use super::*;
        use std::io::BufRead;

        struct T {
            server: Server,
            path: std::path::PathBuf,
            now: Instant,
        }

        impl T {
            fn new(tag: &str) -> T {
                let path = std::env::temp_dir().join(format!("hi-ctl-{tag}-{}.sock", std::process::id()));
                let mut server = Server::bind(&path).unwrap();
                server.allow(Some(nix::unistd::getuid().as_raw()), "hermes");
                T { server, path, now: Instant::now() }
            }

            fn connect(&self, line: &[u8]) -> UnixStream {
                let mut c = UnixStream::connect(&self.path).unwrap();
                c.write_all(line).unwrap();
                c
            }

            /// One loop pass as init does it: poll the connections, then the listener.
            fn pass(&mut self) -> Vec<Incoming> {
                let mut got = Vec::new();
                let conns = self.server.conn_fds();
                let mut fds: Vec<libc::pollfd> =
                    conns.iter().map(|&(fd, events, _)| libc::pollfd { fd, events, revents: 0 }).collect();
                // SAFETY: a valid pollfd array.
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
                for (p, (_, _, id)) in fds.iter().zip(conns) {
                    if p.revents != 0 {
                        got.extend(self.server.event(id, p.revents));
                    }
                }
                self.server.accept(self.now);
                self.server.expire(self.now);
                got
            }
        }

        impl Drop for T {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.path);
            }
        }

        fn answer(c: &UnixStream) -> String {
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut s = String::new();
            let _ = std::io::BufReader::new(c).read_line(&mut s);
            s
        }

        #[test]
        fn at_the_cap_the_oldest_idle_connection_makes_room_then_new_ones_are_refused() {
            let mut t = T::new("cap");
            let first = t.connect(b"");
            t.pass();
            let _idle: Vec<UnixStream> = (1..MAX_CONNS).map(|_| t.connect(b"")).collect();
            for _ in 0..MAX_CONNS {
                t.pass();
            }
            assert_eq!(t.server.conns.len(), MAX_CONNS);
            let late = t.connect(b"{\"v\":1,\"op\":\"status\",\"services\":[]}\n");
            t.pass();
            assert!(answer(&first).contains("too many connections"), "the oldest idle one was evicted");
            let got = t.pass();
            assert!(matches!(&got[..], [Incoming { request: Ok(_), .. }]), "the new one is served");
            // Every slot with a request in flight: a newcomer is refused.
            let ids: Vec<u64> = t.server.conns.keys().copied().collect();
            for id in ids {
                t.server.conns.get_mut(&id).unwrap().phase = Phase::Pending;
            }
            let refused = t.connect(b"");
            t.pass();
            assert!(answer(&refused).contains("too many connections (limit 64); try again"));
            assert_eq!(t.server.conns.len(), MAX_CONNS);
            drop(late);
        }

        #[test]
        fn oversized_requests_are_refused_while_reading() {
            let mut t = T::new("big");
            let c = UnixStream::connect(&t.path).unwrap();
            c.set_nonblocking(true).unwrap();
            t.pass();
            let chunk = vec![b'x'; 4096];
            let mut sent = 0;
            let mut got = Vec::new();
            while got.is_empty() && sent < 4 * MAX_REQUEST {
                sent += (&c).write(&chunk).unwrap_or(0);
                got = t.pass();
                let buffered: usize = t.server.conns.values().map(|c| c.inbuf.len()).sum();
                assert!(buffered <= MAX_REQUEST + READ_CHUNK, "{buffered} bytes buffered");
            }
            assert!(matches!(&got[..], [Incoming { request: Err(e), .. }] if e.contains("too large")));
        }

        #[test]
        fn idle_partial_and_unread_connections_expire() {
            let mut t = T::new("expire");
            let idle = t.connect(b"");
            let _partial = t.connect(b"{\"v\":1,");
            let unread = t.connect(b"{\"v\":1,\"op\":\"status\",\"services\":[]}\n");
            t.pass();
            let got = t.pass();
            assert_eq!(got.len(), 1);
            // An answer far bigger than the socket buffer, that the peer never reads.
            let svc = ServiceStatus { name: "x".repeat(200), ..Default::default() };
            let big = Response { v: 1, ok: true, services: vec![svc; 1500], ..Default::default() };
            t.server.reply(got[0].conn, &big, t.now);
            assert!(t.server.is_open(got[0].conn), "still writing");
            assert_eq!(t.server.deadline(), Some(t.now + REQUEST_TIMEOUT));
            t.now += ANSWER_TIMEOUT;
            t.pass();
            assert!(t.server.conns.is_empty(), "all three expired");
            assert!(answer(&idle).contains("no whole request line within 5 s"));
            drop(unread);
            // Nothing pending: no deadline, so no wake-up.
            t.now += REFUSAL_LOG_PERIOD;
            t.pass();
            assert_eq!(t.server.deadline(), None);
        }

        #[test]
        fn answers_past_the_cap_become_an_error() {
            let mut t = T::new("cap-answer");
            let c = t.connect(b"{\"v\":1,\"op\":\"status\",\"services\":[]}\n");
            t.pass();
            let got = t.pass();
            let svc = ServiceStatus { name: "x".repeat(1000), ..Default::default() };
            let huge = Response { v: 1, ok: true, services: vec![svc; 2000], ..Default::default() };
            t.server.reply(got[0].conn, &huge, t.now);
            let a = answer(&c);
            assert!(a.contains("answer too large") && a.len() < 200, "{a}");
        }

        #[test]
        fn a_hang_up_closes_a_pending_wait_but_a_half_close_keeps_it() {
            let mut t = T::new("hup");
            let line = b"{\"v\":1,\"op\":\"wait\",\"services\":[],\"until\":\"boot\",\"any\":false}\n";
            let gone = t.connect(line);
            let half = t.connect(line);
            half.shutdown(std::net::Shutdown::Write).unwrap();
            t.pass();
            let got = t.pass();
            assert_eq!(got.len(), 2);
            assert!(got.iter().all(|i| matches!(&i.request, Ok(e) if matches!(e.request, Request::Wait { .. }))));
            drop(gone);
            t.pass();
            assert!(!t.server.is_open(got[0].conn), "hung up: closed (init drops its wait)");
            assert!(t.server.is_open(got[1].conn), "half-closed: still waiting");
            assert_eq!(t.server.deadline(), None, "a pending wait has no server deadline");
            t.server.reply(got[1].conn, &Response::error(ErrorCode::BadRequest, "x"), t.now);
            assert!(answer(&half).contains("\"error\":\"x\""));
        }

        #[test]
        fn accept_failures_pause_the_listener_instead_of_spinning() {
            let mut t = T::new("emfile");
            let _c = t.connect(b"");
            // No fd left for accept (this test runs in its own process under nextest).
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit/setrlimit with valid pointers.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
            // SAFETY: dup/close of stdin: the lowest free fd number, which is all the limit checks.
            let free = unsafe {
                let fd = libc::dup(0);
                libc::close(fd);
                fd
            };
            let low = libc::rlimit { rlim_cur: free as libc::rlim_t, rlim_max: lim.rlim_max };
            // SAFETY: as above.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) };
            t.server.accept(t.now);
            // SAFETY: as above.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
            assert_eq!(t.server.listen_fd(t.now), None, "not polled while backing off");
            assert_eq!(t.server.deadline(), Some(t.now + ACCEPT_BACKOFF), "the back-off is a deadline");
            t.now += ACCEPT_BACKOFF;
            t.server.expire(t.now);
            assert!(t.server.listen_fd(t.now).is_some());
            t.server.accept(t.now);
            assert_eq!(t.server.conns.len(), 1, "the queued connection was kept and is accepted now");
        }

        #[test]
        fn refusals_are_logged_once_per_period_with_a_count() {
            let mut r = Refusals::default();
            let t0 = Instant::now();
            r.note(t0, "a".into());
            assert_eq!(r.deadline(), None, "logged at once");
            r.note(t0, "b".into());
            r.note(t0 + Duration::from_secs(1), "c".into());
            assert_eq!((r.unlogged, r.deadline()), (2, Some(t0 + REFUSAL_LOG_PERIOD)));
            r.flush(t0 + REFUSAL_LOG_PERIOD);
            assert_eq!((r.unlogged, r.deadline()), (0, None));
        }
    }
}
