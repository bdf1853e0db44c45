//! The control protocol: one JSON object per line over a Unix stream socket owned by PID 1.
//!
//! Version 1. A client sends one request line and reads one response line. PID 1 checks the
//! peer's credentials (SO_PEERCRED): root and the hermes user may control services, anyone
//! else gets `ok: false` with a clear error. `wait` requests are answered when the condition
//! holds or the timeout passes, never by blocking PID 1.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

pub const VERSION: u32 = 1;
pub const DEFAULT_SOCKET: &str = "/run/hermesinit/control.sock";

/// Where the socket is: the config's `control_socket` (`HERMESINIT_SOCKET` wins).
pub fn socket_path() -> PathBuf {
    match crate::config::Config::load() {
        Ok(c) => c.control_socket,
        Err(_) => std::env::var_os("HERMESINIT_SOCKET").map(PathBuf::from).unwrap_or_else(|| DEFAULT_SOCKET.into()),
    }
}

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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// down | starting | up | stopping | finishing | backoff
    pub state: String,
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
    /// `native` (hermesinit.yaml) or `s6` (run script).
    pub kind: String,
    pub has_logger: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootState {
    #[default]
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True when a wait ended by its timeout.
    #[serde(default)]
    pub timed_out: bool,
    #[serde(default)]
    pub boot: BootState,
    #[serde(default)]
    pub services: Vec<ServiceStatus>,
}

impl Response {
    pub fn error(msg: impl Into<String>) -> Response {
        Response { v: VERSION, ok: false, error: Some(msg.into()), ..Default::default() }
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

/// Send one request and read the answer. `wait` requests get a socket timeout a little longer
/// than their own, so a dead supervisor cannot hang the client.
pub fn request(req: Request) -> Result<Response, ClientError> {
    let path = socket_path();
    let mut stream =
        UnixStream::connect(&path).map_err(|e| ClientError::NotRunning(format!("{}: {e}", path.display())))?;
    let timeout = match &req {
        Request::Wait { timeout_ms: Some(ms), .. } => Some(Duration::from_millis(ms + 5000)),
        Request::Wait { timeout_ms: None, .. } => None,
        _ => Some(Duration::from_secs(30)),
    };
    stream.set_read_timeout(timeout).map_err(ClientError::Io)?;
    let mut line =
        serde_json::to_vec(&Envelope { v: VERSION, request: req }).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(ClientError::Io)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(ClientError::Io)?;
    if answer.is_empty() {
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

/// The server side, driven by init's event loop: non-blocking listener and connections.
pub mod server {
    use super::{Envelope, Response, VERSION};
    use std::collections::BTreeMap;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::Path;

    /// Requests larger than this are refused (and the connection closed).
    const MAX_REQUEST: usize = 64 * 1024;

    struct Conn {
        stream: UnixStream,
        uid: u32,
        inbuf: Vec<u8>,
        out: Vec<u8>,
        /// A request was read; no further input is taken.
        got: bool,
    }

    pub struct Server {
        listener: UnixListener,
        conns: BTreeMap<u64, Conn>,
        next: u64,
    }

    /// One parsed request from a client.
    pub struct Incoming {
        pub conn: u64,
        pub uid: u32,
        pub request: Result<Envelope, String>,
    }

    impl Server {
        /// Bind the socket (replacing a stale one); mode 0666, since permission is checked per
        /// request from the peer's credentials.
        pub fn bind(path: &Path) -> std::io::Result<Server> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            }
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path)?;
            listener.set_nonblocking(true)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
            Ok(Server { listener, conns: BTreeMap::new(), next: 0 })
        }

        pub fn listen_fd(&self) -> RawFd {
            self.listener.as_raw_fd()
        }

        /// (fd, wants write, conn id) for each connection.
        pub fn conn_fds(&self) -> Vec<(RawFd, bool, u64)> {
            self.conns.iter().map(|(id, c)| (c.stream.as_raw_fd(), !c.out.is_empty(), *id)).collect()
        }

        pub fn accept(&mut self) {
            while let Ok((stream, _)) = self.listener.accept() {
                let Ok(cred) = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) else {
                    continue;
                };
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                self.next += 1;
                self.conns.insert(
                    self.next,
                    Conn { stream, uid: cred.uid(), inbuf: Vec::new(), out: Vec::new(), got: false },
                );
            }
        }

        /// Read from a connection; returns its request once a whole line is in.
        pub fn readable(&mut self, id: u64) -> Option<Incoming> {
            let c = self.conns.get_mut(&id)?;
            let mut buf = [0u8; 4096];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        if !c.got {
                            self.conns.remove(&id);
                        }
                        return None;
                    }
                    Ok(n) if !c.got => c.inbuf.extend_from_slice(&buf[..n]),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.conns.remove(&id);
                        return None;
                    }
                }
            }
            if c.got {
                return None;
            }
            let line_end = c.inbuf.iter().position(|&b| b == b'\n');
            let line = match line_end {
                Some(i) => c.inbuf[..i].to_vec(),
                None if c.inbuf.len() > MAX_REQUEST => {
                    c.got = true;
                    return Some(Incoming { conn: id, uid: c.uid, request: Err("request too large".into()) });
                }
                None => return None,
            };
            c.got = true;
            let request = serde_json::from_slice::<serde_json::Value>(&line)
                .map_err(|e| format!("not JSON: {e}"))
                .and_then(|v| match v.get("v").and_then(|x| x.as_u64()) {
                    Some(n) if n == u64::from(VERSION) => {
                        serde_json::from_value::<Envelope>(v).map_err(|e| format!("bad request: {e}"))
                    }
                    Some(n) => Err(format!("protocol version {n} is not supported (this is version {VERSION})")),
                    None => Err("missing protocol version \"v\"".into()),
                });
            Some(Incoming { conn: id, uid: c.uid, request })
        }

        /// Queue the answer and write what the socket takes; the connection closes once sent.
        pub fn reply(&mut self, id: u64, resp: &Response) {
            let Some(c) = self.conns.get_mut(&id) else { return };
            let mut line = serde_json::to_vec(resp).unwrap_or_else(|_| b"{}".to_vec());
            line.push(b'\n');
            c.out = line;
            self.writable(id);
        }

        pub fn writable(&mut self, id: u64) {
            let Some(c) = self.conns.get_mut(&id) else { return };
            while !c.out.is_empty() {
                match c.stream.write(&c.out) {
                    Ok(n) => {
                        c.out.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            self.conns.remove(&id);
        }

        pub fn is_open(&self, id: u64) -> bool {
            self.conns.contains_key(&id)
        }

        pub fn error(&mut self, id: u64, msg: String) {
            self.reply(id, &Response::error(msg));
        }
    }
}
