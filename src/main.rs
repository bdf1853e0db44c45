//! Busybox-style dispatch: the role comes from argv[0], or from the first argument when the
//! binary is called as `hermesinit`.

use hermesinit::{init, logs, routing, s6, shim, svc};
use std::ffi::OsString;
use std::path::Path;

const HELP: &str = "hermesinit — PID 1 for the Hermes Agent container

usage: hermesinit <role> [args…]   (or call it through a link named after the role)

roles:
  init [CMD…]        PID 1: boot, supervise services, run CMD, stop cleanly (the image's /init)
  tini [OPTS] [--] [CMD…]
                     legacy /usr/bin/tini: drops tini's options and /opt/hermes/docker/entrypoint.sh, then init
  shim [ARGS…]       the `hermes` privilege-drop exec (linked as /opt/hermes/bin/hermes)
  svc <command>      operator CLI: up, down, restart, status, wait, list, health, logs (see `hermesinit svc --help`)
  s6-svc, s6-svstat, s6-svscanctl, s6-svwait, s6-setuidgid, s6-log, with-contenv
                     s6-compatible front ends (linked into /command)
";

/// Exit code for an unknown role or bad top-level usage (EX_USAGE).
const USAGE: i32 = 64;

fn main() {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let argv0 = args.first().cloned().unwrap_or_default();
    let mut name = Path::new(&argv0).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    args.remove(0);
    if name == "hermesinit" {
        let Some(first) = args.first().map(|a| a.to_string_lossy().into_owned()) else {
            eprint!("{HELP}");
            std::process::exit(USAGE);
        };
        if first == "--help" || first == "-h" || first == "help" {
            print!("{HELP}");
            std::process::exit(0);
        }
        if first == "--version" || first == "-V" {
            println!("hermesinit {}", env!("CARGO_PKG_VERSION"));
            std::process::exit(0);
        }
        args.remove(0);
        name = first;
    }
    let code = match name.as_str() {
        "init" => init::main(args),
        "tini" => {
            let lossy: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
            match routing::tini(&lossy) {
                // What is left is always a suffix of the arguments: hand over the originals.
                routing::Tini::Init(rest) => init::main(args.split_off(args.len() - rest.len())),
                routing::Tini::Print(text) => {
                    print!("{text}");
                    0
                }
                routing::Tini::Usage(text) => {
                    eprint!("{text}");
                    1
                }
            }
        }
        "hermes" | "shim" => shim::main(args),
        "svc" => {
            logs::init_tracing();
            svc::main(args)
        }
        other if s6::APPLETS.contains(&other) => s6::main(other, args),
        other => {
            eprintln!("hermesinit: unknown role '{other}'; `hermesinit --help` lists the roles");
            USAGE
        }
    };
    std::process::exit(code);
}
