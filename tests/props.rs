//! Property tests for every parser of outside input (issue 10; C-INIT-7: PID 1 must not panic
//! on any input; C-SEC-3: no parse may stall it). The hermes user can write the scan
//! directory and HERMES_HOME and can talk to the control socket: all of it is hostile.
//!
//! Each property runs a bounded number of cases (see [`cfg`]) and the slow-input checks carry a
//! wall-clock bound, so the whole file stays well under a minute in a debug build.
//!
//! Covered here, through the public API: control requests (the real `control::server`
//! reading from a socket), native service specs and the global config (`ServiceSpec::parse`,
//! `Config::parse`, `ServiceDir::load`), the `user:` spec (`creds::Identity::resolve_with`),
//! passwd/group (`users::parse_passwd`/`parse_group`), envdirs (`envdir::read`), truthiness and
//! main routing (`routing`), and the s6 applets' argv (`s6-svc`, `s6-svstat`, `s6-svwait`,
//! `s6-svscanctl`, `s6-log`, run as the built binary). Parsers in private modules have their
//! properties next to them: `src/s6/getopt.rs` (skalibs getopt), `src/s6/log.rs` (the s6-log
//! script), `src/boot/state.rs` (gateway_state.json), `src/boot/remap.rs` (boot's
//! passwd/group reader and rewriter).

use hermesinit::config::{Backoff, Config, LogDefaults, LogSpec, ServiceSpec};
use hermesinit::control::server::Server;
use hermesinit::control::{Envelope, Request, Response, WaitFor};
use hermesinit::creds::Identity;
use hermesinit::supervisor::servicedir::{LoadError, ServiceDir};
use hermesinit::{envdir, routing, users};
use proptest::prelude::*;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A bounded proptest run: no regression files written into the tree, shrinking capped.
fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, max_shrink_iters: 2048, ..ProptestConfig::default() }
}

/// What one parse of a ~200 KB hostile input may cost: 1 s in release (the issue's bound), a
/// generous multiple in an unoptimised build.
const PARSE_BOUND: Duration = if cfg!(debug_assertions) { Duration::from_secs(15) } else { Duration::from_secs(1) };

/// Run `f`, print how long it took (nextest shows it with `--no-capture`), assert the bound.
fn timed<T>(what: &str, bound: Duration, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    let el = t.elapsed();
    eprintln!("{what}: {el:?}");
    assert!(el < bound, "{what} took {el:?} (bound {bound:?})");
    r
}

#[path = "support/tmp.rs"]
mod tmp;
use tmp::Tmp;

/// Arbitrary bytes, with up to 32 of them replaced by ones parsers care about (one flat
/// `Vec<u8>` plus a few patches: much cheaper to generate than a union per byte).
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    const SPECIAL: &[u8] = b"{}[]:,\"'\\\n\r\t #-+0123456789.eE\0";
    (prop::collection::vec(any::<u8>(), 0..max), prop::collection::vec((any::<usize>(), 0..SPECIAL.len()), 0..32))
        .prop_map(|(mut v, patches)| {
            let n = v.len();
            for (i, s) in patches.into_iter().filter(|_| n > 0) {
                v[i % n] = SPECIAL[s];
            }
            v
        })
}

/// Text glued from tokens: a cheap grammar-free way to reach deep into a parser.
fn tokens(vocab: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vocab), 0..max).prop_map(|v| v.concat())
}

/// Apply byte-level edits (overwrite, insert, delete) to a valid input.
fn mutate(base: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut v = base.to_vec();
    for &(pos, op, b) in edits {
        let i = if v.is_empty() { 0 } else { pos % (v.len() + 1) };
        match op % 3 {
            0 if i < v.len() => v[i] = b,
            1 => v.insert(i, b),
            _ if i < v.len() => {
                v.remove(i);
            }
            _ => v.push(b),
        }
    }
    v
}

/// Any string: control characters, NUL, BOM, line and paragraph separators included
/// (`any::<String>()` leaves out the control characters).
fn text() -> BoxedStrategy<String> {
    prop_oneof!["(?s).{0,16}", "[\\x00-\\x7f]{0,16}", "\\PC{0,16}"].boxed()
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..12)
}

// ---------------------------------------------------------------------------------------------
// Control requests: the real server reading the bytes a client sent.
// ---------------------------------------------------------------------------------------------

/// A bound control socket with one connected client.
struct Socket {
    _tmp: Tmp,
    server: Server,
}

impl Socket {
    fn new() -> Socket {
        let tmp = Tmp::new("ctl");
        let server = Server::bind(&tmp.0.join("control.sock")).unwrap();
        Socket { _tmp: tmp, server }
    }

    fn path(&self) -> PathBuf {
        self._tmp.0.join("control.sock")
    }

    /// Send `data` on a fresh connection and return what the server made of it, driving it
    /// as init's poll loop does (one read per readiness). None: still waiting for the line.
    fn send(&mut self, data: &[u8]) -> Option<Result<Envelope, String>> {
        let mut c = UnixStream::connect(self.path()).unwrap();
        c.write_all(data).unwrap();
        let now = Instant::now();
        self.server.accept(now);
        let id = self.server.conn_fds().last().map(|c| c.2).expect("accepted");
        let mut got = None;
        for _ in 0..data.len() / 4096 + 4 {
            if let Some(i) = self.server.event(id, libc::POLLIN) {
                got = Some(i.request);
                break;
            }
            if !self.server.is_open(id) {
                break;
            }
        }
        if self.server.is_open(id) {
            self.server.error(id, "test".into(), now);
        }
        drop(c);
        got
    }
}

/// Serializable requests, for round trips and as seeds for mutation.
fn request() -> impl Strategy<Value = Request> {
    let names = prop::collection::vec(text(), 0..4);
    let until = prop::sample::select(vec![WaitFor::Up, WaitFor::Down, WaitFor::Finished, WaitFor::Boot]);
    prop_oneof![
        names.clone().prop_map(|services| Request::Status { services }),
        names.clone().prop_map(|services| Request::Up { services }),
        names.clone().prop_map(|services| Request::Once { services }),
        names.clone().prop_map(|services| Request::Down { services }),
        names.clone().prop_map(|services| Request::Restart { services }),
        (names.clone(), any::<i32>()).prop_map(|(services, signal)| Request::Signal { services, signal }),
        any::<bool>().prop_map(|prune| Request::Rescan { prune }),
        (names, until, any::<bool>(), any::<Option<u64>>())
            .prop_map(|(services, until, any, timeout_ms)| Request::Wait { services, until, any, timeout_ms }),
    ]
}

const JSON_VOCAB: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"v\"",
    "1",
    "\"op\"",
    "\"status\"",
    "\"up\"",
    "\"wait\"",
    "\"signal\"",
    "\"services\"",
    "\"until\"",
    "\"boot\"",
    "\"any\"",
    "true",
    "false",
    "null",
    "\"timeout_ms\"",
    "\"prune\"",
    "-1",
    "1e400",
    "18446744073709551616",
    "-9223372036854775809",
    "0.5",
    "\"\\u0000\"",
    "\"\\ud800\"",
    " ",
    "\n",
    "\"\u{feff}\"",
    "\"rescan\"",
    "\"x\"",
];

proptest! {
    #![proptest_config(cfg(256))]

    /// Whatever a peer sends, the server answers with an envelope or an error, never a panic.
    #[test]
    fn control_server_survives_arbitrary_bytes(data in bytes(4096)) {
        let mut s = Socket::new();
        let mut line = data.clone();
        line.push(b'\n');
        prop_assert!(s.send(&line).is_some(), "a whole line always gets an answer");
        // Without a newline the request is incomplete: no answer yet, nothing held beyond it.
        let no_nl: Vec<u8> = data.into_iter().filter(|&b| b != b'\n').collect();
        prop_assert!(s.send(&no_nl).is_none());
        // The client side (`svc`, the s6 applets) reads PID 1's answer with the same serde.
        let _ = serde_json::from_slice::<Response>(&line);
    }

    #[test]
    fn control_server_survives_json_shaped_garbage(text in tokens(JSON_VOCAB, 64)) {
        let mut s = Socket::new();
        let mut line = text.replace('\n', " ").into_bytes();
        line.push(b'\n');
        prop_assert!(s.send(&line).is_some());
        let _ = serde_json::from_str::<Envelope>(&text);
    }

    /// Every request a client can build is read back as the same request.
    #[test]
    fn control_requests_round_trip(req in request()) {
        let env = Envelope { v: 1, request: req };
        let mut line = serde_json::to_vec(&env).unwrap();
        line.push(b'\n');
        let mut s = Socket::new();
        prop_assert_eq!(s.send(&line), Some(Ok(env)));
    }

    #[test]
    fn control_mutated_requests_are_answered(req in request(), e in edits()) {
        let line = serde_json::to_vec(&Envelope { v: 1, request: req }).unwrap();
        let mut line = mutate(&line, &e);
        line.retain(|&b| b != b'\n');
        line.push(b'\n');
        let mut s = Socket::new();
        prop_assert!(s.send(&line).is_some());
    }
}

#[test]
fn control_hostile_requests_get_clean_errors() {
    let mut s = Socket::new();
    let mut err = |data: &[u8]| match s.send(data) {
        Some(Err(e)) => e,
        other => panic!("{:?}: expected an error, got {other:?}", String::from_utf8_lossy(&data[..data.len().min(80)])),
    };
    // Deep nesting: serde_json's recursion limit (128) answers, no stack overflow.
    let mut deep = "[".repeat(60_000).into_bytes();
    deep.push(b'\n');
    assert!(err(&deep).starts_with("not JSON"));
    let mut deep = "{\"v\":1,\"op\":\"status\",\"services\":".to_string();
    deep.push_str(&"{\"a\":".repeat(12_000));
    deep.push('\n');
    assert!(err(deep.as_bytes()).starts_with("not JSON"));
    // Numbers out of range, wrong types, versions.
    assert!(err(b"{\"v\":1e400,\"op\":\"status\",\"services\":[]}\n").starts_with("not JSON"));
    assert!(err(b"{\"v\":18446744073709551616,\"op\":\"status\",\"services\":[]}\n").starts_with("missing protocol"));
    assert!(err(b"{\"v\":4294967297,\"op\":\"status\",\"services\":[]}\n").contains("not supported"));
    assert!(err(b"{\"v\":-1,\"op\":\"status\",\"services\":[]}\n").starts_with("missing protocol"));
    assert!(err(b"{\"v\":1,\"op\":\"signal\",\"services\":[],\"signal\":2147483648}\n").starts_with("bad request"));
    assert!(
        err(b"{\"v\":1,\"op\":\"wait\",\"services\":[],\"until\":\"up\",\"any\":0,\"timeout_ms\":-1}\n")
            .starts_with("bad request")
    );
    assert!(err(b"{\"v\":1,\"op\":\"status\",\"services\":\"x\"}\n").starts_with("bad request"));
    assert!(err(b"{\"v\":1,\"op\":\"reboot\"}\n").starts_with("bad request"));
    assert!(err(b"[1]\n").starts_with("missing protocol"));
    // NUL, invalid UTF-8, a BOM, a lone surrogate escape.
    assert!(err(b"\0\n").starts_with("not JSON"));
    assert!(err(b"{\"v\":1,\"op\":\"status\",\"services\":[\"\xff\"]}\n").starts_with("not JSON"));
    assert!(err("\u{feff}{\"v\":1,\"op\":\"status\",\"services\":[]}\n".as_bytes()).starts_with("not JSON"));
    assert!(err(b"{\"v\":1,\"op\":\"status\",\"services\":[\"\\ud800\"]}\n").starts_with("not JSON"));
    // Longer than the request cap without a newline: refused, not buffered without end.
    assert!(err(&vec![b' '; 70 * 1024]).starts_with("request too large"));
    // CRLF: the \r is JSON whitespace; a long service name is the server's business, not the parser's.
    let long = format!("{{\"v\":1,\"op\":\"status\",\"services\":[\"{}\"]}}\r\n", "a".repeat(60_000));
    assert!(matches!(s.send(long.as_bytes()), Some(Ok(_))));
}

/// `printf '{…}\n' | socat - UNIX:…` and Python's `shutdown(SHUT_WR)` send a whole request
/// and then EOF; the request must still be answered.
#[test]
fn control_a_half_closed_request_is_answered() {
    let mut s = Socket::new();
    let mut c = UnixStream::connect(s.path()).unwrap();
    c.write_all(b"{\"v\":1,\"op\":\"rescan\",\"prune\":false}\n").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    s.server.accept(Instant::now());
    let id = s.server.conn_fds()[0].2;
    assert!(matches!(s.server.event(id, libc::POLLIN).map(|i| i.request), Some(Ok(_))));
}

// ---------------------------------------------------------------------------------------------
// Native service specs and the global config (YAML)
// ---------------------------------------------------------------------------------------------

const SPEC: &str = "command: [/opt/hermes/.venv/bin/hermes, gateway, run, --replace]
user: hermes
env: {HERMES_SUPERVISED_CHILD: \"1\"}
cwd: /opt/data
log:
  stdout: true
  dir: /opt/data/logs/gateways/default
  max_bytes: 1000000
  keep: 10
stay_down_exit_codes: [0, 78]
stop_timeout_ms: 5000
";

const CONFIG: &str = "scan_dir: /run/service
control_socket: /run/hermesinit/control.sock
hermes_home: /opt/data
user: hermes
kill_grace_ms: 3000
stop_timeout_ms: 5000
backoff: {first_ms: 0, base_ms: 500, max_ms: 30000, reset_after_ms: 60000}
logs: {max_bytes: 1000000, keep: 10, stdout_buffer_bytes: 262144}
s6_compat: true
env_dir: /run/s6/container_environment
cont_init_dir: /etc/cont-init.d
rescan_interval_ms: 5000
";

const YAML_VOCAB: &[&str] = &[
    "command",
    "user",
    "env",
    "cwd",
    "log",
    "dir",
    "stdout",
    "max_bytes",
    "keep",
    "stay_down_exit_codes",
    "stop_timeout_ms",
    "scan_dir",
    "backoff",
    "logs",
    "s6_compat",
    "base_ms",
    "kill_grace_ms",
    ":",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\n    ",
    "{",
    "}",
    "[",
    "]",
    ", ",
    "\"",
    "'",
    "#",
    "? ",
    "|",
    ">",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: ",
    "!!binary ",
    "!!str ",
    "!!int ",
    "!Up ",
    "!!map ",
    "~",
    "null",
    "true",
    "yes",
    "0x10",
    "0o7",
    "-1",
    "1e400",
    ".inf",
    ".nan",
    "99999999999999999999999",
    "4294967296",
    "2147483648",
    "-9223372036854775809",
    "/opt/data",
    "hermes:0",
    "0:0",
    "\t",
    "\r\n",
    "\u{feff}",
    "\0",
    "\u{85}",
    "\u{2028}",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "%TAG ! tag:x:\n",
    " ",
    "x",
    "\\",
    "=",
];

fn check_spec(text: &str) {
    let _ = ServiceSpec::parse(Path::new("hermesinit.yaml"), text);
}

fn check_config(text: &str) {
    let _ = Config::parse(Path::new("config.yaml"), text);
}

/// A spec `ServiceSpec::parse` must accept; the shapes reconcile writes and more.
fn spec() -> impl Strategy<Value = ServiceSpec> {
    let s = text();
    let abs = text().prop_map(|p| PathBuf::from(format!("/{p}")));
    let env_name = "[A-Za-z_][A-Za-z0-9_.-]{0,12}";
    (
        ("[^\0]{1,20}", prop::collection::vec(s.clone(), 0..4)),
        prop::option::of(s.clone()),
        prop::collection::btree_map(env_name, s, 0..4),
        prop::option::of(abs.clone()),
        (any::<bool>(), prop::option::of(abs), any::<Option<u64>>(), any::<Option<u32>>()),
        prop::collection::vec(any::<i32>(), 0..4),
        any::<Option<u64>>(),
    )
        .prop_map(|((prog, args), user, env, cwd, (stdout, dir, max_bytes, keep), codes, stop)| {
            let mut command = vec![prog];
            command.extend(args);
            ServiceSpec {
                command,
                user,
                env,
                cwd,
                log: LogSpec { stdout, dir, max_bytes, keep },
                stay_down_exit_codes: codes,
                stop_timeout_ms: stop,
            }
        })
}

fn config() -> impl Strategy<Value = Config> {
    let abs = text().prop_map(|p| PathBuf::from(format!("/{p}")));
    (
        (abs.clone(), abs.clone(), abs.clone(), text()),
        (any::<u64>(), any::<u64>(), any::<[u64; 4]>(), (4096..=u64::MAX, 1..=u32::MAX, any::<usize>())),
        (any::<bool>(), abs.clone(), abs, any::<u64>(), any::<usize>()),
    )
        .prop_map(
            |((scan_dir, control_socket, hermes_home, user), (kill, stop, b, l), (s6, env_dir, ci, rescan, max))| {
                Config {
                    scan_dir,
                    control_socket,
                    hermes_home,
                    user,
                    kill_grace_ms: kill,
                    stop_timeout_ms: stop,
                    backoff: Backoff { first_ms: b[0], base_ms: b[1], max_ms: b[2], reset_after_ms: b[3] },
                    logs: LogDefaults { max_bytes: l.0, keep: l.1, stdout_buffer_bytes: l.2, ..LogDefaults::default() },
                    s6_compat: s6,
                    env_dir,
                    cont_init_dir: ci,
                    rescan_interval_ms: rescan,
                    max_services: max,
                }
            },
        )
}

proptest! {
    #![proptest_config(cfg(256))]

    #[test]
    fn yaml_parsers_survive_arbitrary_text(b in bytes(2048)) {
        let text = String::from_utf8_lossy(&b);
        check_spec(&text);
        check_config(&text);
    }

    #[test]
    fn yaml_parsers_survive_yaml_shaped_garbage(text in tokens(YAML_VOCAB, 96)) {
        check_spec(&text);
        check_config(&text);
    }

    #[test]
    fn yaml_parsers_survive_mutated_valid_files(e in edits()) {
        check_spec(&String::from_utf8_lossy(&mutate(SPEC.as_bytes(), &e)));
        check_config(&String::from_utf8_lossy(&mutate(CONFIG.as_bytes(), &e)));
    }

    /// What `to_yaml` writes (reconcile publishes specs with it) reads back unchanged.
    #[test]
    fn service_specs_round_trip_through_yaml(s in spec()) {
        let text = s.to_yaml();
        prop_assert_eq!(ServiceSpec::parse(Path::new("hermesinit.yaml"), &text), Ok(s), "yaml:\n{}", text);
    }

    #[test]
    fn configs_round_trip_through_yaml(c in config()) {
        let text = serde_norway::to_string(&c).unwrap();
        prop_assert_eq!(Config::parse(Path::new("config.yaml"), &text), Ok(c), "yaml:\n{}", text);
    }
}

/// Inputs of up to ~200 KB built to be expensive without nesting: long scalars and lines,
/// wide maps and lists, duplicate keys, aliases (billion laughs).
fn wide_yaml() -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("one 200 KB scalar", format!("command: [\"{}\"]\n", "x".repeat(200_000))),
        ("one 200 KB line of garbage", ":-[{".repeat(50_000)),
        ("one 200 KB key", format!("{}: 1\n", "k".repeat(200_000))),
        ("one 200 KB complex key", format!("? [{}]\n: 1\n", vec!["k"; 60_000].join(","))),
        ("20k keys", (0..20_000).map(|i| format!("k{i}: {i}\n")).collect()),
        ("50k list items", format!("stay_down_exit_codes: [{}]\n", vec!["1"; 50_000].join(","))),
        (
            "20k env entries",
            format!(
                "env: {{{}}}\ncommand: [x]\n",
                (0..20_000).map(|i| format!("V{i}: x")).collect::<Vec<_>>().join(", ")
            ),
        ),
        ("15k duplicate keys", "command: [x]\n".repeat(15_000)),
        ("20k documents", "---\na: 1\n".repeat(20_000)),
    ];
    // Billion laughs: each level refers to the previous one ten times.
    let mut laughs = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..30 {
        let p = i - 1;
        laughs
            .push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
    }
    v.push(("billion laughs under command", format!("{laughs}command: *a29\n")));
    v
}

/// An unknown non-string key is reported with its `Debug` form: a 60 KB spec (under the 64 KiB
/// cap) makes a ~390 KB error (×6.5), which PID 1 logs.
#[test]
fn yaml_errors_stay_small() {
    let text = format!("command: [x]\n? [{}]\n: 1\n", vec!["k"; 30_000].join(","));
    let e = ServiceSpec::parse(Path::new("hermesinit.yaml"), &text).unwrap_err().to_string();
    assert!(e.len() < 8 * 1024, "{} bytes of error for {} bytes of spec", e.len(), text.len());
}

/// Deeply nested inputs: ~200 KB ones, and ones under the spec size cap (64 KiB) that only a
/// depth check can refuse in time.
fn deep_yaml() -> Vec<(&'static str, String)> {
    const N: usize = 100_000;
    const M: usize = 15_000;
    let mut v = vec![
        ("[ x100k", "[".repeat(N)),
        ("{a: x50k", "{a: ".repeat(N / 2)),
        ("command: [ x100k ] x100k", format!("command: {}{}", "[".repeat(N), "]".repeat(N))),
        ("command: [ x15k ] x15k", format!("command: {}{}", "[".repeat(M), "]".repeat(M))),
        ("{a: x15k", "{a: ".repeat(M)),
        ("[ x60k", "[".repeat(60_000)),
        ("- x30k (block sequences)", format!("{}x\n", "- ".repeat(30_000))),
        ("? x30k (complex keys)", format!("{}x\n", "? ".repeat(30_000))),
        ("&a [ x15k (anchored)", "&a [".repeat(M)),
        ("!!map { x8k (tagged)", "!!map {".repeat(8_000)),
        ("[ in quotes x60k", format!("command: [\"{}\"]\n", "[".repeat(60_000))),
        ("{ after comment x60k", format!("command: [x] # {}\n", "{".repeat(60_000))),
        ("flow over lines x20k", format!("command:\n{}", "[\n".repeat(20_000))),
        ("? [ chains x15k", "? [".repeat(M)),
        ("- [ chains x15k", "- [".repeat(M)),
    ];
    // Nested block mappings: the indentation grows, so ~350 levels fill 64 KB.
    let mut block = String::new();
    for i in 0..350 {
        block.push_str(&" ".repeat(i));
        block.push_str("a:\n");
    }
    v.push(("350 nested block maps", block));
    v
}

/// Parse each input as a spec (the hermes-writable file); report every time, fail on any over
/// `bound`.
fn spec_parses_within(inputs: Vec<(&'static str, String)>, bound: Duration) {
    let mut slow = Vec::new();
    for (what, text) in inputs {
        let t = Instant::now();
        let r = ServiceSpec::parse(Path::new("hermesinit.yaml"), &text);
        let el = t.elapsed();
        eprintln!("spec: {what} ({} B): {el:?}: {:?}", text.len(), r.as_ref().err().map(|e| &e.errors));
        if el >= bound {
            slow.push(format!("{what}: {el:?}"));
        }
    }
    assert!(slow.is_empty(), "over {bound:?}: {slow:#?}");
}

/// Parse each input as a spec and as the config; report every time, fail on any over `bound`.
fn parse_all_within(inputs: Vec<(&'static str, String)>, bound: Duration) {
    let mut slow = Vec::new();
    for (what, text) in inputs {
        assert!(text.len() <= 320 * 1024, "{what}: {} bytes", text.len());
        for (kind, f) in [
            ("spec", (|t: &str| ServiceSpec::parse(Path::new("hermesinit.yaml"), t).err()) as fn(&str) -> _),
            ("config", |t: &str| Config::parse(Path::new("config.yaml"), t).err()),
        ] {
            let t = Instant::now();
            let r = f(&text);
            let el = t.elapsed();
            let err_len = r.map_or(0, |e| e.to_string().len());
            eprintln!("{kind}: {what} ({} B): {el:?}, error of {err_len} B", text.len());
            if el >= bound {
                slow.push(format!("{kind}: {what}: {el:?}"));
            }
        }
    }
    assert!(slow.is_empty(), "over {bound:?}: {slow:#?}");
}

#[test]
fn yaml_wide_inputs_fail_or_parse_within_bound() {
    parse_all_within(wide_yaml(), PARSE_BOUND);
}

/// `[[[…` 100,000 deep and friends must fail (or parse) within the bound. Without a cap
/// libyaml's scanner is quadratic in flow nesting: before `MAX_SPEC_BYTES`/`MAX_SPEC_DEPTH`
/// (config.rs) `command: ` + `[`×100k took ~100 s in release. The config is root's file and
/// has no cap; it is not tried here.
#[test]
fn yaml_deep_specs_fail_or_parse_within_bound() {
    spec_parses_within(deep_yaml(), PARSE_BOUND);
}

#[test]
fn yaml_hostile_specs_get_clean_errors() {
    let bad = |text: &str| -> Vec<String> {
        match ServiceSpec::parse(Path::new("hermesinit.yaml"), text) {
            Err(e) => e.errors,
            Ok(s) => panic!("{text:?} was accepted as {s:?}"),
        }
    };
    // Numbers out of range for their key.
    assert!(bad("command: [x]\nstop_timeout_ms: -1\n")[0].starts_with("stop_timeout_ms"));
    // (an integer beyond u64 is refused by the YAML reader itself, still naming the key)
    assert!(bad("command: [x]\nstop_timeout_ms: 99999999999999999999999\n")[0].contains("stop_timeout_ms"));
    assert!(bad("command: [x]\nstay_down_exit_codes: [2147483648]\n")[0].starts_with("stay_down_exit_codes"));
    assert!(bad("command: [x]\nlog: {keep: 4294967296}\n")[0].starts_with("log"));
    assert!(bad("command: [x]\nlog: {keep: -1}\n")[0].starts_with("log"));
    assert!(bad("command: [x]\nstop_timeout_ms: 1e400\n")[0].starts_with("stop_timeout_ms"));
    assert!(bad("command: [x]\nstop_timeout_ms: .nan\n")[0].starts_with("stop_timeout_ms"));
    // Wrong shapes, unknown keys (including non-string ones), empty command, relative paths.
    assert_eq!(bad("[a, b]\n"), vec!["the top level must be a mapping of keys to values"]);
    assert_eq!(bad("command: []\n").len(), 1);
    assert_eq!(bad("command: [\"\"]\n").len(), 1);
    assert!(bad("command: [x]\n[1, 2]: 3\n")[0].contains("unknown key"));
    assert!(bad("command: [x]\n? {a: b}\n: 3\n")[0].contains("unknown key"));
    assert_eq!(bad("command: [x]\ncwd: opt\n"), vec!["cwd: must be an absolute path"]);
    assert_eq!(bad("command: [x]\nlog: {dir: rel}\n"), vec!["log: dir must be an absolute path"]);
    assert!(bad("command: [x]\nenv: {\"A=B\": x}\n")[0].starts_with("env"));
    assert!(bad("command: [x]\nenv: {\"\": x}\n")[0].starts_with("env"));
    assert!(bad("command: [x]\nenv: {A: [1]}\n")[0].starts_with("env"));
    assert!(bad("command: [x]\nuser: [0]\n")[0].starts_with("user"));
    assert!(bad("command: !!binary aGVsbG8=\n")[0].starts_with("command"));
    // Not YAML at all: NUL, a lone BOM in the middle, tabs as indentation, invalid escapes.
    assert!(bad("command: [x]\n\0\n")[0].starts_with("not valid YAML"));
    assert!(bad("command:\n\t- x\n")[0].starts_with("not valid YAML"));
    assert!(bad("command: [\"\\xZZ\"]\n")[0].starts_with("not valid YAML"));
    assert!(bad("a: &x 1\nb: *y\n")[0].starts_with("not valid YAML"));
    // A leading BOM and CRLF line ends are plain YAML: accepted.
    let crlf = SPEC.replace('\n', "\r\n");
    assert_eq!(ServiceSpec::parse(Path::new("s"), &crlf), ServiceSpec::parse(Path::new("s"), SPEC));
    // A leading BOM (some editors write one) is skipped, not a second document.
    assert_eq!(
        ServiceSpec::parse(Path::new("s"), &format!("\u{feff}{SPEC}")),
        ServiceSpec::parse(Path::new("s"), SPEC)
    );
    // `user` is only a string here; who may become what is decided by the supervisor (see
    // `user_specs_resolve_without_panic` for the lookup, and the report for the policy).
    let s = ServiceSpec::parse(Path::new("s"), "command: [x]\nuser: \"hermes:0\"\n").unwrap();
    assert_eq!(s.user.as_deref(), Some("hermes:0"));
}

#[test]
fn config_hostile_values_get_clean_errors() {
    let bad = |text: &str| Config::parse(Path::new("c.yaml"), text).unwrap_err().errors;
    assert!(bad("kill_grace_ms: -1\n")[0].starts_with("kill_grace_ms"));
    assert!(bad("logs: {keep: 0}\n")[0].starts_with("logs"));
    assert!(bad("logs: {max_bytes: 1}\n")[0].starts_with("logs"));
    assert!(bad("logs: {stdout_buffer_bytes: 18446744073709551616}\n")[0].contains("logs.stdout_buffer_bytes"));
    assert!(bad("backoff: {max_ms: x, nope: 1}\n")[0].starts_with("backoff"));
    assert!(bad("s6_compat: maybe\n")[0].starts_with("s6_compat"));
    assert!(bad("scan_dir: [1]\n")[0].starts_with("scan_dir"));
    assert!(bad("\0")[0].starts_with("not valid YAML"));
    assert!(bad("- 1\n")[0].starts_with("the top level"));
    assert_eq!(bad("a: 1\nb: 2\nkill_grace_ms: x\n").len(), 3, "every error at once");
    assert_eq!(Config::parse(Path::new("c"), ""), Ok(Config::default()));
    assert_eq!(Config::parse(Path::new("c"), "~\n"), Ok(Config::default()));
}

// ---------------------------------------------------------------------------------------------
// Service directories: the spec as PID 1 reads it from a hermes-writable scan directory.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cfg(64))]

    /// Any slot name and any spec content: loaded, refused or skipped, never a panic.
    #[test]
    fn service_dirs_with_hostile_names_and_specs_load_cleanly(
        name in prop::collection::vec(any::<u8>().prop_filter("file name byte", |b| *b != 0 && *b != b'/'), 1..40),
        spec in bytes(1024),
    ) {
        let scan = Tmp::new("scan");
        let name = OsString::from_vec(name);
        if std::fs::create_dir(scan.0.join(&name)).is_ok() {
            std::fs::write(scan.0.join(&name).join("hermesinit.yaml"), &spec).unwrap();
            if let Some(n) = name.to_str() {
                let fd = hermesinit::fsx::open_dir_path(&scan.0).unwrap();
                match ServiceDir::load(fd.as_fd(), &scan.0, n) {
                    Ok(_) | Err(LoadError::NotAService) => {}
                    Err(LoadError::Invalid(e)) => prop_assert!(!e.errors.is_empty()),
                }
            }
        }
    }
}

/// C-SEC-3: a spec hermes plants as a FIFO must not block PID 1 (nothing ever writes it).
#[test]
fn service_dir_spec_fifo_does_not_block() {
    let scan = Tmp::new("fifo");
    std::fs::create_dir(scan.0.join("evil")).unwrap();
    let fifo = std::ffi::CString::new(scan.0.join("evil/hermesinit.yaml").into_os_string().into_vec()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let dir = scan.0.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let fd = hermesinit::fsx::open_dir_path(&dir).unwrap();
        let _ = tx.send(matches!(ServiceDir::load(fd.as_fd(), &dir, "evil"), Err(LoadError::Invalid(_))));
    });
    let r = rx.recv_timeout(Duration::from_secs(2));
    if r.is_err() {
        // Unblock the loader so the thread ends with the test process.
        let _ = std::fs::OpenOptions::new().write(true).open(scan.0.join("evil/hermesinit.yaml"));
    }
    assert_eq!(r, Ok(true), "ServiceDir::load blocked on a FIFO, or took it for a spec");
}

/// C-SEC-3: a huge (sparse) spec or a symlink to an endless device is refused, not read.
#[test]
fn service_dir_huge_or_endless_spec_is_refused() {
    let scan = Tmp::new("huge");
    std::fs::create_dir(scan.0.join("big")).unwrap();
    let f = std::fs::File::create(scan.0.join("big/hermesinit.yaml")).unwrap();
    f.set_len(1 << 30).unwrap();
    std::fs::create_dir(scan.0.join("zero")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", scan.0.join("zero/hermesinit.yaml")).unwrap();
    std::fs::create_dir(scan.0.join("nul")).unwrap();
    std::fs::write(scan.0.join("nul/hermesinit.yaml"), b"command: [x]\n\xff\0").unwrap();
    let fd = hermesinit::fsx::open_dir_path(&scan.0).unwrap();
    for name in ["big", "zero", "nul"] {
        let r = timed(&format!("load {name}"), Duration::from_secs(1), || ServiceDir::load(fd.as_fd(), &scan.0, name));
        assert!(matches!(r, Err(LoadError::Invalid(_))), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// `user:` specs, passwd and group
// ---------------------------------------------------------------------------------------------

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nhermes:x:10000:10000::/opt/data:/bin/sh\n";
const GROUP: &str = "root:x:0:\nhermes:x:10000:\naudio:x:29:hermes\n";

const PW_VOCAB: &[&str] = &[
    ":",
    "::",
    "\n",
    "\r\n",
    "#",
    "+",
    "-",
    "hermes",
    "root",
    "x",
    "0",
    "10000",
    "4294967295",
    "4294967296",
    "-1",
    "+0",
    " ",
    "\0",
    "\u{feff}",
    "/opt/data",
    "/bin/sh",
    ",",
    "\u{ff}",
    "00000000000000000000000",
];

proptest! {
    #![proptest_config(cfg(256))]

    #[test]
    fn passwd_and_group_parsers_survive_anything(b in bytes(2048), t in tokens(PW_VOCAB, 64)) {
        for text in [String::from_utf8_lossy(&b).into_owned(), t] {
            let _ = users::parse_passwd(Path::new("p"), &text);
            let _ = users::parse_group(Path::new("g"), &text);
        }
    }

    /// Well-formed entries read back exactly.
    #[test]
    fn passwd_and_group_entries_round_trip(
        ents in prop::collection::vec(("[a-z_][a-z0-9_-]{0,16}", any::<u32>(), any::<u32>(), "[^:\n\r]{0,20}"), 0..8),
        members in prop::collection::vec("[a-z_][a-z0-9_-]{0,8}", 0..4),
    ) {
        let pw: String = ents.iter().map(|(n, u, g, h)| format!("{n}:x:{u}:{g}:gecos:{h}:/bin/sh\n")).collect();
        let gr: String = ents.iter().map(|(n, _, g, _)| format!("{n}:x:{g}:{}\n", members.join(","))).collect();
        let users = users::parse_passwd(Path::new("p"), &pw).unwrap();
        let groups = users::parse_group(Path::new("g"), &gr).unwrap();
        prop_assert_eq!(users.len(), ents.len());
        for (u, (n, uid, gid, home)) in users.iter().zip(&ents) {
            prop_assert_eq!((&u.name, u.uid, u.gid, &u.home), (n, *uid, *gid, home));
        }
        for g in &groups {
            prop_assert_eq!(&g.members, &members);
        }
    }

    /// Any `user:` value of a native spec resolves or is refused, without a panic; a spec that
    /// names no group keeps the passwd entry's groups.
    #[test]
    fn user_specs_resolve_without_panic(spec in tokens(PW_VOCAB, 8), any_spec in text()) {
        let pw = users::parse_passwd(Path::new("p"), PASSWD).unwrap();
        let gr = users::parse_group(Path::new("g"), GROUP).unwrap();
        for s in [&spec, &any_spec] {
            if let Ok(id) = Identity::resolve_with(s, &pw, &gr) {
                prop_assert!(!id.groups.is_empty());
            }
        }
    }
}

#[test]
fn passwd_hostile_lines_get_clean_errors() {
    let p = Path::new("/etc/passwd");
    let err = |t: &str| users::parse_passwd(p, t).unwrap_err().to_string();
    assert!(err("hermes:x:-1:0::/:/bin/sh\n").ends_with("uid is not a number"));
    assert!(err("hermes:x:4294967296:0::/:/bin/sh\n").ends_with("uid is not a number"));
    assert!(err("hermes:x:1:99999999999999999999::/:/bin/sh\n").ends_with("gid is not a number"));
    assert!(err("hermes:x: 1:0::/:/bin/sh\n").ends_with("uid is not a number"));
    assert!(err("hermes:x:1\0:0::/:/bin/sh\n").ends_with("uid is not a number"));
    assert!(err("hermes:x:10000\n").ends_with("expected 7 ':'-separated fields"));
    assert!(err(&format!("{}\n", "a".repeat(1 << 20))).ends_with("expected 7 ':'-separated fields"));
    // CRLF and a 1 MB home directory are read like any other line.
    let u = users::parse_passwd(p, "hermes:x:10000:10000::/opt/data:/bin/sh\r\n").unwrap();
    assert_eq!((u[0].uid, u[0].home.as_str()), (10000, "/opt/data"));
    let long = format!("hermes:x:1:1::/{}:/bin/sh\n", "h".repeat(1 << 20));
    assert_eq!(users::parse_passwd(p, &long).unwrap()[0].home.len(), (1 << 20) + 1);
    // A BOM is part of the first name, as for glibc: it names nobody we look up.
    assert_eq!(users::parse_passwd(p, "\u{feff}root:x:0:0::/:/bin/sh\n").unwrap()[0].name, "\u{feff}root");
    let g = Path::new("/etc/group");
    assert!(users::parse_group(g, "hermes:x:-5:\n").is_err());
    assert!(users::parse_group(g, "hermes:x\n").is_err());
    let gr = users::parse_group(g, "audio:x:29:hermes,,bob,\r\n").unwrap();
    assert_eq!(gr[0].members, vec!["hermes", "bob"]);
}

#[test]
fn user_specs_hostile_values() {
    let pw = users::parse_passwd(Path::new("p"), PASSWD).unwrap();
    let gr = users::parse_group(Path::new("g"), GROUP).unwrap();
    let r = |s: &str| Identity::resolve_with(s, &pw, &gr);
    assert!(r("nobody").is_err());
    assert!(r("hermes:nogroup").is_err());
    assert!(r("").is_err());
    assert!(r(":").is_err());
    assert!(r("-1").is_err(), "a negative uid is a name, and no user has it");
    assert!(r("4294967296").is_err());
    // The lookup resolves what it is asked for; C-SEC-1's clamp (a slot never runs with more
    // privilege than its owner) has to happen where the slot's owner is known: see the report.
    assert_eq!(r("hermes:0").unwrap().gid, 0);
    assert_eq!(r("+0").unwrap().uid, 0, "Rust's u32 parser, like strtoul, takes a leading '+'");
}

// ---------------------------------------------------------------------------------------------
// envdir
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cfg(64))]

    /// Every storable name with any content reads back as written (NULs as newlines), dot
    /// files are skipped, and nothing panics on hostile names or bytes.
    #[test]
    fn envdir_reads_back_any_names_and_values(
        vars in prop::collection::btree_map(
            prop::collection::vec(any::<u8>(), 1..24).prop_filter("storable", |n| envdir::storable(n)),
            prop::collection::vec(any::<u8>(), 0..256),
            0..12,
        ),
    ) {
        let d = Tmp::new("envdir");
        for (k, v) in &vars {
            std::fs::write(d.0.join(std::ffi::OsStr::from_bytes(k)), v).unwrap();
        }
        let got = envdir::read(&d.0).unwrap();
        let want: Vec<(OsString, OsString)> = vars
            .iter()
            .filter(|(k, _)| !k.starts_with(b"."))
            .map(|(k, v)| {
                let v: Vec<u8> = v.iter().map(|&b| if b == 0 { b'\n' } else { b }).collect();
                (OsString::from_vec(k.clone()), OsString::from_vec(v))
            })
            .collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn envdir_hostile_entries() {
    let d = Tmp::new("envdir-hostile");
    std::fs::write(d.0.join("BIG"), vec![b'x'; 1 << 20]).unwrap();
    std::fs::write(d.0.join("\u{feff}BOM"), "\u{feff}v\r\n").unwrap();
    std::fs::write(d.0.join(OsString::from_vec(b"\xff\xfe".to_vec())), b"\0\0").unwrap();
    std::fs::create_dir(d.0.join("ADIR")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", d.0.join("LINK")).unwrap();
    let fifo = std::ffi::CString::new(d.0.join("FIFO").into_os_string().into_vec()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let v = timed("envdir with a FIFO, a symlink and 1 MiB", Duration::from_secs(5), || envdir::read(&d.0)).unwrap();
    let names: Vec<&[u8]> = v.iter().map(|(k, _)| k.as_bytes()).collect();
    assert_eq!(names, vec![&b"BIG"[..], "\u{feff}BOM".as_bytes(), b"\xff\xfe"], "no dir, symlink or FIFO");
    assert_eq!(v[0].1.len(), 1 << 20);
    assert_eq!(v[2].1, OsString::from("\n\n"));
    assert!(!envdir::storable(b"a\0b") && !envdir::storable(b"a/b") && !envdir::storable(b".."));
}

// ---------------------------------------------------------------------------------------------
// routing: truthiness and main-program routing (docker run arguments, env values)
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cfg(256))]

    #[test]
    fn routing_never_panics(args in prop::collection::vec(text(), 0..4), v in text()) {
        let _ = routing::truthy(Some(&v));
        let argv = routing::route_main(&args, "/nonexistent-props-path");
        prop_assert!(!argv.is_empty());
        prop_assert!(argv.len() >= args.len());
    }
}

// ---------------------------------------------------------------------------------------------
// s6 applets: argv parsing, through the binary as Hermes runs it (`/command/s6-*`).
// ---------------------------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_hermesinit");

/// Run an applet with no supervisor anywhere (socket, scan directory and config all point into
/// a fresh temp dir) and stdin closed; it must exit by itself, with a code, promptly.
fn applet(tmp: &Tmp, name: &str, args: &[OsString]) -> i32 {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(BIN)
        .arg0(name)
        .args(args)
        .current_dir(&tmp.0)
        .env("HERMESINIT_CONFIG", tmp.0.join("no-config.yaml"))
        .env("HERMESINIT_SOCKET", tmp.0.join("no.sock"))
        .env("HERMESINIT_SCAN_DIR", tmp.0.join("scan"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or_else(|| panic!("{name} {args:?} died: {st:?}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} {args:?} did not exit within 10 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

const S6_VOCAB: &[&str] = &[
    "-",
    "--",
    "-u",
    "-d",
    "-wu",
    "-wU",
    "-wR",
    "-wD",
    "-wx",
    "-w",
    "-T",
    "-T0",
    "-T18446744073709551616",
    "-t",
    "-t5",
    "-o",
    "-oup,pid",
    "-o,,,",
    "-oup,up,up,up,up,up,up,up,up,up,up,up,up,up,up,up,up",
    "-onope",
    "-n",
    "-uwNrpgest",
    "-abqhkti12pcyroduDUxOQ",
    "-x",
    "-h",
    "-z",
    "-:",
    "-é",
    "-U",
    "-D",
    "-r",
    "-R",
    "-a",
    "-q",
    "-v",
    "-b",
    "-p",
    "-l",
    "-l0",
    "-l99999999999999999999",
    "-d",
    "-d3",
    "-d0",
    "-d-1",
    "5",
    "",
    "\u{feff}",
    "-\u{ff}",
    "-T 5",
];

/// Applet argv: vocabulary words plus arbitrary (non-UTF-8 too) ones, then one service-dir
/// operand that either does not exist or is a plain directory outside any scan directory.
fn applet_args() -> impl Strategy<Value = (Vec<OsString>, u8)> {
    let word = prop_oneof![
        4 => prop::sample::select(S6_VOCAB).prop_map(OsString::from),
        1 => prop::collection::vec(any::<u8>().prop_filter("no NUL", |b| *b != 0), 0..8).prop_map(OsString::from_vec),
    ];
    (prop::collection::vec(word, 0..6), 0u8..3)
}

fn with_operand(tmp: &Tmp, mut args: Vec<OsString>, which: u8) -> Vec<OsString> {
    std::fs::create_dir_all(tmp.0.join("svc")).unwrap();
    match which {
        0 => args.push(tmp.0.join("missing").into()),
        1 => args.push(tmp.0.join("svc").into()),
        _ => {}
    }
    args
}

proptest! {
    #![proptest_config(cfg(32))]

    #[test]
    fn s6_supervision_applets_parse_any_argv((args, which) in applet_args()) {
        let tmp = Tmp::new("applet");
        let args = with_operand(&tmp, args, which);
        for name in ["s6-svc", "s6-svstat", "s6-svwait", "s6-svscanctl"] {
            let code = applet(&tmp, name, &args);
            prop_assert!([0, 1, 99, 100, 102, 111].contains(&code), "{} {:?}: exit {}", name, args, code);
        }
    }

    /// s6-log's script words, with logdirs and status files kept inside the temp dir; stdin is
    /// closed, so a script that compiles logs nothing and exits 0.
    #[test]
    fn s6_log_parses_any_script(
        opts in prop::collection::vec(prop::sample::select(S6_VOCAB).prop_map(OsString::from), 0..3),
        script in prop::collection::vec(prop_oneof![
            prop::sample::select(&[
                "1", "2", "n10", "n4294967296", "s1000000", "s0", "s99999999999999999999", "S100", "T", "t",
                "f", "+.*", "-x", "+(", "+[[:alpha:]", "E5", "^3", "pprefix", "p", "!", "?", "!gzip", "nten",
                "./d1", "./d2/../d1", "=st", "=", "l0", "r5", "x", "",
            ][..]).prop_map(OsString::from),
            prop::collection::vec(any::<u8>().prop_filter("no NUL, no path", |b| *b != 0 && *b != b'/' && *b != b'.' && *b != b'='), 0..6)
                .prop_map(OsString::from_vec),
        ], 0..6),
    ) {
        let tmp = Tmp::new("s6log");
        let mut args = opts;
        args.extend(script);
        let code = applet(&tmp, "s6-log", &args);
        prop_assert!([0, 100, 111].contains(&code), "s6-log {:?}: exit {}", args, code);
    }
}

#[test]
fn s6_applets_hostile_argv() {
    let tmp = Tmp::new("applet-hostile");
    let w = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
    let svc = tmp.0.join("svc");
    std::fs::create_dir_all(&svc).unwrap();
    let svc = svc.to_str().unwrap();
    // Usage errors are 100, a directory without a supervisor 100 (s6-svc) or 1 (s6-svstat) or 111.
    assert_eq!(applet(&tmp, "s6-svc", &w(&["-z", svc])), 100);
    assert_eq!(applet(&tmp, "s6-svc", &w(&["-T", "-1", svc])), 100);
    assert_eq!(applet(&tmp, "s6-svc", &w(&["-T18446744073709551616", "-u", svc])), 100);
    assert_eq!(applet(&tmp, "s6-svc", &w(&["-w", "", svc])), 100);
    assert_eq!(applet(&tmp, "s6-svc", &[OsString::from_vec(b"-\xff".to_vec()), svc.into()]), 100);
    assert_eq!(applet(&tmp, "s6-svc", &w(&["-u", ""])), 100);
    assert_eq!(applet(&tmp, "s6-svc", &w(&[&"-u".repeat(100), svc])), 100, "too many commands");
    assert_eq!(applet(&tmp, "s6-svstat", &w(&["-o", "up,nope", svc])), 100);
    assert_eq!(applet(&tmp, "s6-svstat", &w(&["-o", &vec!["up"; 17].join(","), svc])), 100);
    assert_eq!(applet(&tmp, "s6-svstat", &w(&["-o"])), 100);
    assert_eq!(applet(&tmp, "s6-svstat", &w(&[svc])), 1);
    assert_eq!(applet(&tmp, "s6-svwait", &w(&["-t", "1x", svc])), 100);
    assert_eq!(applet(&tmp, "s6-svwait", &w(&["-u"])), 100);
    assert_eq!(applet(&tmp, "s6-svwait", &w(&["-U", "-t", "10", svc])), 111);
    assert_eq!(applet(&tmp, "s6-log", &w(&["-l", "x", "1"])), 100);
    assert_eq!(applet(&tmp, "s6-log", &w(&["-d", "2", "1"])), 100);
    assert_eq!(applet(&tmp, "s6-log", &w(&["n99999999999999999999", "1"])), 100);
    assert_eq!(applet(&tmp, "s6-log", &w(&["+(", "1"])), 100);
    assert_eq!(applet(&tmp, "s6-log", &[OsString::from_vec(b"+\xff(".to_vec()), "1".into()]), 100);
    assert_eq!(applet(&tmp, "s6-log", &w(&["1"])), 0);
}
