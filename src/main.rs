//! Busybox-style dispatch: the role comes from argv[0], or from the first argument when the
//! binary is called as `hermesinit`.
//!
//! `no_main`: the C library calls [`main`] directly, without std's runtime set-up. That set-up costs
//! PID 1 about twenty syscalls before the main program can start (a read of /proc/self/maps
//! for the main thread's stack bounds, an alternate signal stack, SIGSEGV/SIGBUS handlers,
//! SIGPIPE ignored). What of it matters is done here: descriptors 0–2 are made valid, and
//! `process::exit` still flushes stdout. SIGPIPE is left as found, except where a role wants
//! otherwise: PID 1 blocks it, the clients of PID 1 and s6-log ignore it, and `hermes`,
//! `s6-setuidgid` and `with-contenv` hand it on unchanged to the program they exec. A stack
//! overflow is a plain SIGSEGV, without std's message.
#![no_main]

use hermesinit::{heap, init, logs, routing, s6, shim, svc};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
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

/// Every role allocates from [`heap::Pool`]: 1 MiB of .bss, paged in as it is used.
#[global_allocator]
static HEAP: heap::Pool<{ 1 << 20 }> = heap::Pool::new();

/// Exit code for an unknown role or bad top-level usage (EX_USAGE).
const USAGE: i32 = 64;

/// The C entry point (see the module comment).
///
/// # Safety
/// Called by the C runtime with `argc` valid NUL-terminated strings in `argv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    valid_std_fds();
    let count = usize::try_from(argc).unwrap_or(0);
    // SAFETY: the C runtime passes argc valid NUL-terminated strings.
    let args: Vec<OsString> = (0..count)
        .map(|i| unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) })
        .map(|a| OsString::from_vec(a.to_bytes().to_vec()))
        .collect();
    let code = run(args);
    // Whatever PID 1 still holds of its start's diagnostics (an early fatal exit).
    logs::release_stderr();
    std::process::exit(code)
}

/// A closed 0, 1 or 2 would be handed to the next file opened (a control connection, a log
/// file) and from there to a child as its stdin or stdout: point each closed one at /dev/null,
/// as std's runtime did. One poll(2) tells which are closed.
fn valid_std_fds() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd { fd, events: 0, revents: 0 });
    // SAFETY: a valid array of pollfd; a zero timeout.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } <= 0 {
        return;
    }
    for p in fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
        // SAFETY: open(2) on a literal path; the lowest free descriptor is the closed one.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if fd != p.fd && fd >= 0 {
            // SAFETY: closing what we just opened.
            unsafe { libc::close(fd) };
        }
    }
}

fn run(mut args: Vec<OsString>) -> i32 {
    let argv0 = args.first().cloned().unwrap_or_default();
    let mut name = Path::new(&argv0).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !args.is_empty() {
        args.remove(0);
    }
    if name == "hermesinit" {
        let Some(first) = args.first().map(|a| a.to_string_lossy().into_owned()) else {
            eprint!("{HELP}");
            return USAGE;
        };
        if first == "--help" || first == "-h" || first == "help" {
            print!("{HELP}");
            return 0;
        }
        if first == "--version" || first == "-V" {
            println!("hermesinit {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        args.remove(0);
        name = first;
    }
    match name.as_str() {
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
            hermesinit::control::ignore_sigpipe();
            logs::init_tracing();
            svc::main(args)
        }
        other if s6::APPLETS.contains(&other) => s6::main(other, args),
        other => {
            eprintln!("hermesinit: unknown role '{other}'; `hermesinit --help` lists the roles");
            USAGE
        }
    }
}
