//! `hermesinit svc`: the operator CLI over the control socket (C-SVC-6).
//!
//! Exit codes: 0 done; 1 refused (permission, unknown service); 2 usage; 99 `wait` timed out;
//! 111 the supervisor is not reachable.

pub mod health;
pub mod logs;

use crate::control::{self, Request, Response, ServiceKind, ServiceStatus, WaitFor};
use clap::{Parser, Subcommand};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(name = "hermesinit svc", about = "Control the services supervised by hermesinit")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start services (and keep them up).
    Up(Targets),
    /// Stop services (TERM, then KILL after the stop timeout) and keep them down.
    Down(Targets),
    /// Stop and start services again.
    Restart(Targets),
    /// Show services: state, pid, uptime, restarts, last exit, wanted state.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        services: Vec<String>,
    },
    /// List service names.
    List,
    /// Wait until services are up / down, or until boot has finished.
    Wait {
        #[arg(long, conflicts_with_all = ["down", "boot", "sweep"])]
        up: bool,
        #[arg(long, conflicts_with = "boot")]
        down: bool,
        /// Down and its finish script done (s6-svwait -D).
        #[arg(long, conflicts_with_all = ["up", "down", "boot", "sweep"])]
        finished: bool,
        /// Boot finished and services were started: the container is ready.
        #[arg(long)]
        boot: bool,
        /// The background part of the ownership sweep (bulk data trees) has finished.
        #[arg(long, conflicts_with_all = ["down", "boot"])]
        sweep: bool,
        /// Return when any of the services is there (default: all).
        #[arg(long)]
        any: bool,
        /// Give up after this many seconds (exit 99).
        #[arg(long)]
        timeout: Option<f64>,
        services: Vec<String>,
    },
    /// Exit 0 when boot has finished, the main program runs and every service wanted up is up
    /// (or has been failing for less than the grace); else exit 1 with one line per reason.
    Health {
        /// Seconds a wanted-up service may keep failing before the container is unhealthy.
        #[arg(long, default_value_t = health::DEFAULT_GRACE_S)]
        grace: u64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show a service's timestamped log (`current`, and its archives when -n reaches back).
    Logs {
        /// Lines to show (default 50; all of them with --since).
        #[arg(short = 'n', long = "lines")]
        lines: Option<usize>,
        /// Keep printing what is appended, across rotations (like `tail -F`).
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only lines newer than this: 30s, 10m, 2h, 1d.
        #[arg(long, value_parser = logs::parse_duration)]
        since: Option<std::time::Duration>,
        /// Without the timestamp prefix.
        #[arg(long)]
        raw: bool,
        service: String,
    },
}

#[derive(clap::Args)]
struct Targets {
    /// Every service.
    #[arg(long)]
    all: bool,
    services: Vec<String>,
}

pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    let cli = match Cli::try_parse_from(std::iter::once("svc".into()).chain(args)) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let targets = |t: Targets| -> Result<Vec<String>, i32> {
        if t.services.is_empty() && !t.all {
            eprintln!("hermesinit svc: name one or more services, or --all");
            return Err(2);
        }
        Ok(t.services)
    };
    #[derive(PartialEq)]
    enum Show {
        Table,
        Json,
        Names,
        Nothing,
    }
    let (req, show) = match cli.cmd {
        Cmd::Up(t) => match targets(t) {
            Ok(s) => (Request::Up { services: s }, Show::Nothing),
            Err(c) => return c,
        },
        Cmd::Down(t) => match targets(t) {
            Ok(s) => (Request::Down { services: s }, Show::Nothing),
            Err(c) => return c,
        },
        Cmd::Restart(t) => match targets(t) {
            Ok(s) => (Request::Restart { services: s }, Show::Nothing),
            Err(c) => return c,
        },
        Cmd::Status { json, services } => (Request::Status { services }, if json { Show::Json } else { Show::Table }),
        Cmd::List => (Request::Status { services: Vec::new() }, Show::Names),
        Cmd::Health { grace, json } => return health_main(grace, json),
        Cmd::Logs { lines, follow, since, raw, service } => {
            return logs_main(&service, &logs::Options { lines, follow, since, raw });
        }
        Cmd::Wait { up, down, finished, boot, sweep, any, timeout, services } => {
            let until = if sweep {
                WaitFor::Sweep
            } else if finished {
                WaitFor::Finished
            } else if boot || (!up && !down && !finished && services.is_empty()) {
                WaitFor::Boot
            } else if down {
                WaitFor::Down
            } else {
                WaitFor::Up
            };
            let timeout_ms = timeout.map(|t| (t.max(0.0) * 1000.0) as u64);
            (Request::Wait { services, until, any, timeout_ms }, Show::Nothing)
        }
    };
    let resp = match crate::config::Config::for_client().client().request(req) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hermesinit svc: {e}");
            return 111;
        }
    };
    if !resp.ok {
        eprintln!("hermesinit svc: {}", resp.error.as_deref().unwrap_or("refused"));
        return 1;
    }
    if resp.timed_out {
        eprintln!("hermesinit svc: timed out");
        return 99;
    }
    let text = match show {
        Show::Table => table(&resp),
        Show::Json => serde_json::to_string_pretty(&resp).unwrap_or_default() + "\n",
        Show::Names => resp.services.iter().map(|s| s.name.clone() + "\n").collect(),
        Show::Nothing => String::new(),
    };
    // A closed or broken stdout is the reader's business, not a reason to panic.
    match std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes()) {
        Ok(()) => 0,
        Err(_) => 111,
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn print(text: &str) -> bool {
    std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes()).is_ok()
}

/// `svc health`: 0 healthy, 1 unhealthy (any reason, an unreachable supervisor included, as
/// Docker's HEALTHCHECK wants), 2 usage.
fn health_main(grace_s: u64, json: bool) -> i32 {
    let reasons = match crate::config::Config::for_client().client().request(Request::Status { services: Vec::new() }) {
        Ok(r) if r.ok => health::reasons(&r, now_ms(), grace_s.saturating_mul(1000)),
        Ok(r) => vec![format!("supervisor: {}", r.error.as_deref().unwrap_or("refused"))],
        Err(e) => vec![e.to_string()],
    };
    let healthy = reasons.is_empty();
    let text = if json {
        serde_json::json!({"healthy": healthy, "grace_s": grace_s, "reasons": reasons}).to_string() + "\n"
    } else if healthy {
        "healthy\n".to_string()
    } else {
        reasons.iter().map(|r| r.clone() + "\n").collect()
    };
    print(&text);
    i32::from(!healthy)
}

/// Where a service logs: a native spec's `log.dir`, or Hermes' gateway layout for s6 slots.
fn log_dir_of(s: &ServiceStatus, hermes_home: &std::path::Path) -> Result<std::path::PathBuf, String> {
    if let Some(d) = &s.log_dir {
        return Ok(d.into());
    }
    match (s.kind, s.name.strip_prefix("gateway-")) {
        (ServiceKind::Native, _) => {
            Err(format!("{}: logging to a file is disabled (its hermesinit.yaml has no log.dir)", s.name))
        }
        (_, Some(profile)) => Ok(hermes_home.join("logs/gateways").join(profile)),
        _ if s.has_logger => Err(format!("{}: its log/run decides where it logs; hermesinit cannot tell", s.name)),
        _ => Err(format!("{}: logging to a file is disabled (no log/run; output goes to docker logs)", s.name)),
    }
}

fn logs_main(name: &str, o: &logs::Options) -> i32 {
    let resp = match crate::config::Config::for_client()
        .client()
        .request(Request::Status { services: vec![name.to_string()] })
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hermesinit svc: {e}");
            return 111;
        }
    };
    let Some(s) = resp.services.iter().find(|s| s.name == name).filter(|_| resp.ok) else {
        eprintln!("hermesinit svc: {}", resp.error.as_deref().unwrap_or("no such service"));
        return 1;
    };
    let home = crate::config::Config::for_client().hermes_home.clone();
    let dir = match log_dir_of(s, &home) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("hermesinit svc: {e}");
            return 1;
        }
    };
    let trusted = if dir.starts_with(&home) { home.as_path() } else { std::path::Path::new("/") };
    let as_root = nix::unistd::geteuid().is_root();
    let ld = match logs::LogDir::open(&dir, trusted, as_root) {
        Ok(d) => d,
        Err(e) if fsx_missing(&e) => {
            eprintln!("hermesinit svc: {name}: no log yet ({} does not exist)", dir.display());
            return 1;
        }
        Err(e) => {
            eprintln!("hermesinit svc: {name}: cannot open {}: {e}", dir.display());
            return 1;
        }
    };
    if as_root {
        if let Err(e) = ld.owner().and_then(|(u, g)| if u == 0 { Ok(()) } else { drop_to(u, g) }) {
            eprintln!("hermesinit svc: {name}: cannot read {} as its owner: {e}", dir.display());
            return 1;
        }
    }
    match logs::show(&ld, o) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("hermesinit svc: {name}: {e}");
            1
        }
    }
}

/// Become `uid:gid` (no supplementary groups) for good, verified.
fn drop_to(uid: u32, gid: u32) -> std::io::Result<()> {
    use nix::unistd::{Gid, Uid, getegid, geteuid, setgroups, setresgid, setresuid};
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    setgroups(&[]).and_then(|_| setresgid(g, g, g)).and_then(|_| setresuid(u, u, u))?;
    if geteuid() != u || getegid() != g || setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        return Err(std::io::Error::other("identity switch did not hold"));
    }
    Ok(())
}

fn fsx_missing(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

fn since(s: &ServiceStatus) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    now.saturating_sub(s.since_ms) / 1000
}

/// The human status table.
pub fn table(resp: &Response) -> String {
    let mut out = format!(
        "{:<24} {:<10} {:>7} {:>8} {:>8}  {:<12} {}\n",
        "SERVICE", "STATE", "PID", "FOR(s)", "RESTARTS", "LAST EXIT", "WANT"
    );
    for s in &resp.services {
        let last = match &s.last_exit {
            Some(control::Exit { code: Some(c), .. }) => format!("code {c}"),
            Some(control::Exit { signal: Some(g), .. }) => format!("signal {g}"),
            _ => "-".into(),
        };
        let mut want = if s.wanted_up { "up".to_string() } else { "down".to_string() };
        if let Some(ms) = s.restart_in_ms {
            want.push_str(&format!(" (restart in {:.1}s)", ms as f64 / 1000.0));
        }
        out.push_str(&format!(
            "{:<24} {:<10} {:>7} {:>8} {:>8}  {:<12} {}\n",
            s.name,
            s.state,
            s.pid.map_or("-".into(), |p| p.to_string()),
            since(s),
            s.restarts,
            last,
            want
        ));
    }
    out
}
