//! `hermesinit svc`: the operator CLI over the control socket (C-SVC-6).
//!
//! Exit codes: 0 done; 1 refused (permission, unknown service); 2 usage; 99 `wait` timed out;
//! 111 the supervisor is not reachable.

use crate::control::{self, Request, Response, ServiceStatus, WaitFor};
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
        Cmd::Wait { up, down, boot, sweep, any, timeout, services } => {
            let until = if sweep {
                WaitFor::Sweep
            } else if boot || (!up && !down && services.is_empty()) {
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
    let resp = match control::request(req) {
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
