//! The real client (issue 5, C-S6-1..8): unmodified hermes-agent 0.19.0 from PyPI manages its
//! per-profile gateways through hermesinit's s6 surfaces. hermesinit runs as PID 1 of a jail
//! (tests/s6_common: an overlay of `/`, so the host is never touched) laid out like the image:
//! `/opt/hermes/.venv` (the cached venv), `/opt/hermes/bin/hermes` (the shim), `/command/*`,
//! `/run`, `/opt/data`; Debian's own s6 tools are hidden from the jail so that Hermes' run
//! scripts can only find hermesinit's. Hermes runs as uid 10000, offline:
//! `HERMES_GATEWAY_MAX_STARTS=0 TIRITH_ENABLED=false HERMES_DISABLE_LAZY_INSTALLS=1`.
//!
//! The venv is built once (python3 -m venv + pip install hermes-agent==0.19.0, ~1 min) under
//! `$HERMESINIT_TEST_VENV` or the target directory, and reused. Without python3/PyPI the tests
//! are skipped on a developer machine and fail on CI.

mod s6_common;
use s6_common::{BIN, Jail, Out, Running};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const VERSION: &str = "0.19.0";
const IMAGE_PATH: &str = "/opt/hermes/bin:/opt/hermes/.venv/bin:/opt/data/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const OFFLINE: [(&str, &str); 5] = [
    ("HERMES_GATEWAY_MAX_STARTS", "0"),
    ("TIRITH_ENABLED", "false"),
    ("HERMES_DISABLE_LAZY_INSTALLS", "1"),
    ("PYTHONUNBUFFERED", "1"),
    ("HERMES_HOME", "/opt/data"),
];

fn skip_or_fail(test: &str, why: &str) -> Option<PathBuf> {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why}");
    }
    eprintln!("{test}: skipped: {why}");
    None
}

/// The cached venv with hermes-agent 0.19.0, built on first use. One builder at a time across
/// processes (nextest runs each test in its own): an flock on a file beside the venv.
fn venv(test: &str) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    let dir = std::env::var_os("HERMESINIT_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hermes-agent-{VERSION}-venv")));
    let _ = std::fs::create_dir_all(dir.parent().unwrap_or(std::path::Path::new("/")));
    let lock = std::fs::OpenOptions::new().create(true).append(true).open(dir.with_extension("lock")).ok();
    if let Some(f) = &lock {
        // SAFETY: flock on an fd we own; released when `lock` drops at return.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    }
    let installed = |d: &PathBuf| {
        d.join("bin/hermes").exists()
            && std::fs::read_dir(d.join("lib"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|py| py.path().join(format!("site-packages/hermes_agent-{VERSION}.dist-info")).is_dir())
    };
    if installed(&dir) {
        return Some(dir);
    }
    // A venv's scripts name its own path, so it is built where it will live; a failed or
    // interrupted build is removed, and `installed` only holds once pip has finished.
    let pip = |d: &PathBuf| {
        Command::new("python3").args(["-m", "venv"]).arg(d).status().is_ok_and(|s| s.success())
            && Command::new(d.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check", &format!("hermes-agent=={VERSION}")])
                .status()
                .is_ok_and(|s| s.success())
    };
    let _ = std::fs::remove_dir_all(&dir);
    if !pip(&dir) || !installed(&dir) {
        let _ = std::fs::remove_dir_all(&dir);
        return skip_or_fail(test, "cannot build a venv with hermes-agent from PyPI (python3 -m venv, pip install)");
    }
    Some(dir)
}

/// The image's layout inside the jail.
fn image_pre(venv: &std::path::Path) -> String {
    format!(
        "rm -f $R/usr/bin/s6-* $R/usr/bin/with-contenv; \
         mkdir -p $R/opt/hermes/bin; ln -sf {BIN} $R/opt/hermes/bin/hermes; ln -sfn {v} $R/opt/hermes/.venv; \
         chmod 755 $R/root; chown 10000:10000 $R/run/service;",
        v = venv.display()
    )
}

fn env_with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut e = vec![("PATH", IMAGE_PATH)];
    e.extend_from_slice(&OFFLINE);
    e.extend_from_slice(extra);
    e
}

/// Start hermesinit as PID 1 with the container CMD `cmd`.
fn container(venv: &std::path::Path, cmd: &[&str]) -> (Jail, Running) {
    let jail = Jail::new("client");
    let mut argv = vec![BIN, "init"];
    argv.extend_from_slice(cmd);
    let running = jail.start(&image_pre(venv), &env_with(&[]), &argv);
    (jail, running)
}

/// `docker exec --user hermes <c> sh -c SCRIPT`, once the container is ready (boot done,
/// services registered: hermesinit's own readiness wait, C-SVC-6).
fn exec_as_hermes(jail: &Jail, running: &Running, script: &str) -> Out {
    let ready = format!(
        "i=0; until {BIN} svc wait --boot --timeout 60 >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 600 ] && break; sleep 0.05; done"
    );
    let full = format!("{}\n{ready}\n{script}", s6_common::PRELUDE);
    jail.exec(
        running,
        "hermesinit",
        &env_with(&[("HOME", "/opt/data")]),
        &["setpriv", "--reuid", "10000", "--regid", "10000", "--init-groups", "/bin/sh", "-c", &full],
        Duration::from_secs(300),
    )
}

fn stop(running: Running) -> Out {
    running.signal("hermesinit", libc::SIGTERM);
    running.wait(Duration::from_secs(60))
}

fn said_line<'a>(said: &'a [String], prefix: &str, out: &Out) -> &'a str {
    said.iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{}\nstderr:\n{}", said.join("\n"), out.stderr))
}

/// Issue 5: `profile create` → slot registered down; `gateway start` → up, a gateway runs as
/// hermes, `gateway list` shows it; `gateway restart` → new pid; `gateway stop` → down and
/// gateway_state.json says stopped (the planned-stop marker found the pid through s6-svstat's
/// `(pid N)`); `profile delete` → slot gone. All as uid 10000, through /command.
#[test]
fn c_s6_unmodified_hermes_manages_profile_gateways_through_hermesinit() {
    let test = "c_s6_unmodified_hermes_manages_profile_gateways_through_hermesinit";
    let Some(venv) = venv(test) else { return };
    let (jail, running) = container(&venv, &["sleep", "infinity"]);
    let out = exec_as_hermes(
        &jail,
        &running,
        r#"
G=/run/service/gateway-coder
say "whoami: $(id -u) $(cat /proc/1/comm) $([ -d /run/s6/basedir ] && echo basedir)"
say "detect: $(/opt/hermes/.venv/bin/python -c 'from hermes_cli.service_manager import detect_service_manager as d; print(d())')"
hermes profile create coder >/tmp/create.log 2>&1; say "create rc=$?"
[ -d $G ] && say "slot: exists"
say "after create: $(/command/s6-svstat $G)"
hermes -p coder gateway start >/tmp/start.log 2>&1; say "start rc=$?"
/command/s6-svwait -u -t 30000 $G; say "wait up rc=$?"
say "after start: $(/command/s6-svstat -o up,wantedup,normallyup $G)"
pid=$(/command/s6-svstat -o pid $G)
say "gateway: $(ps -o user= -p $pid) $(tr '\0' ' ' < /proc/$pid/cmdline)"
i=0; until hermes gateway list 2>/dev/null | grep -q "✓ coder"; do i=$((i+1)); [ $i -gt 120 ] && break; sleep 0.5; done
say "list: $(hermes gateway list 2>&1 | grep coder | tr -s ' ')"
hermes -p coder gateway restart >/tmp/restart.log 2>&1; say "restart rc=$?"
i=0; while :; do p=$(/command/s6-svstat -o pid $G); [ "$p" != "-1" ] && [ "$p" != "$pid" ] && break; i=$((i+1)); [ $i -gt 600 ] && break; sleep 0.05; done
[ "$p" != "$pid" ] && [ "$p" != "-1" ] && say "restart: new pid"
i=0; until grep -q '"pid": *'$p /opt/data/profiles/coder/gateway_state.json 2>/dev/null; do i=$((i+1)); [ $i -gt 120 ] && break; sleep 0.5; done
hermes -p coder gateway stop >/tmp/stop.log 2>&1; say "stop rc=$?"
/command/s6-svwait -D -t 30000 $G; say "wait down rc=$?"
say "after stop: $(/command/s6-svstat -o up,wantedup $G)"
say "state: $(grep -o '"gateway_state": *"[a-z]*"' /opt/data/profiles/coder/gateway_state.json | tr -d ' ')"
say "log: $(grep -c 'Hermes Gateway Starting' /opt/data/logs/gateways/coder/current) $(head -c 31 /opt/data/logs/gateways/coder/current | sed 's/[0-9]/d/g')"
say "files: $(ls /opt/data/logs/gateways/coder/ | tr '\n' ' ')"
hermes profile delete coder --yes >/tmp/delete.log 2>&1; say "delete rc=$?"
[ -d $G ] || say "slot: gone"
o=$(/command/s6-svstat $G 2>&1); say "after delete: rc=$? $o"
for f in create start restart stop delete; do echo "--- $f"; cat /tmp/$f.log; done >&2
say "== end"
"#,
    );
    let pid1 = stop(running);
    let said = out.said();
    let all = format!("{}\n--- PID 1 ---\n{}{}", out.stderr, pid1.stdout, pid1.stderr);
    let ctx = Out { stderr: all, ..out };
    let l = |p: &str| said_line(&said, p, &ctx).to_string();
    assert_eq!(l("whoami: "), "whoami: 10000 s6-svscan basedir", "C-S6-1 as uid 10000");
    assert_eq!(l("detect: "), "detect: s6", "Hermes' own detection");
    assert_eq!(l("create rc="), "create rc=0");
    assert_eq!(l("slot: "), "slot: exists");
    assert!(
        l("after create: ").starts_with("after create: down (exitcode 0) "),
        "registered down: {}",
        l("after create")
    );
    assert!(!l("after create: ").contains("normally up"), "with a down file: {}", l("after create"));
    assert_eq!(l("start rc="), "start rc=0");
    assert_eq!(l("wait up rc="), "wait up rc=0");
    assert_eq!(l("after start: "), "after start: true true false");
    let g = l("gateway: ");
    assert!(g.starts_with("gateway: hermes ") && g.contains("-p coder gateway run --replace"), "{g}");
    assert!(l("list: ").contains("✓ coder"), "{}", l("list: "));
    assert_eq!(l("restart rc="), "restart rc=0");
    assert_eq!(l("restart: "), "restart: new pid");
    assert_eq!(l("stop rc="), "stop rc=0");
    assert_eq!(l("wait down rc="), "wait down rc=0");
    assert_eq!(l("after stop: "), "after stop: false false");
    assert_eq!(l("state: "), "state: \"gateway_state\":\"stopped\"", "the planned stop was recognised");
    assert!(l("log: ").starts_with("log: 2 dddd-dd-dd dd:dd:dd.ddddddddd  "), "s6-log T file: {}", l("log: "));
    assert_eq!(l("files: "), "files: current ", "hermesinit's s6-log keeps no lock (nor state)");
    assert_eq!(l("delete rc="), "delete rc=0");
    assert_eq!(l("slot: gone"), "slot: gone");
    assert!(l("after delete: ").starts_with("after delete: rc=1 "), "{}", l("after delete: "));
    assert!(said.iter().any(|s| s == "== end"));
    assert!(ctx.stderr.contains("Hermes Gateway Starting"), "the banner reaches docker logs:\n{}", ctx.stderr);
}

/// C-S6-8: `gateway run` as the container's main program: Hermes starts gateway-default under
/// supervision, says so on stderr (naming --no-supervise) and keeps the main program alive.
#[test]
fn c_s6_8_gateway_run_as_main_program_goes_under_supervision() {
    let test = "c_s6_8_gateway_run_as_main_program_goes_under_supervision";
    let Some(venv) = venv(test) else { return };
    let (jail, running) = container(&venv, &["gateway", "run"]);
    let out = exec_as_hermes(
        &jail,
        &running,
        r#"
G=/run/service/gateway-default
/command/s6-svwait -u -t 60000 $G; say "wait up rc=$?"
say "svstat: $(/command/s6-svstat -o up,wantedup $G)"
pid=$(/command/s6-svstat -o pid $G); say "gateway: $(ps -o user= -p $pid) $(tr '\0' ' ' < /proc/$pid/cmdline)"
i=0; until [ "$(ps -o args= -p $(pgrep -P 1 -x sleep | head -1) 2>/dev/null)" = "sleep infinity" ]; do i=$((i+1)); [ $i -gt 300 ] && break; sleep 0.1; done
s=$(pgrep -P 1 -x sleep | head -1); say "main: $(ps -o user=,args= -p $s | tr -s ' ')"
say "== end"
"#,
    );
    let pid1 = stop(running);
    let said = out.said();
    let ctx = Out { stderr: format!("{}\n--- PID 1 ---\n{}{}", out.stderr, pid1.stdout, pid1.stderr), ..out };
    let l = |p: &str| said_line(&said, p, &ctx).to_string();
    assert_eq!(l("wait up rc="), "wait up rc=0");
    assert_eq!(l("svstat: "), "svstat: true true");
    assert!(
        l("gateway: ").starts_with("gateway: hermes ") && l("gateway: ").contains("gateway run --replace"),
        "{}",
        l("gateway: ")
    );
    assert_eq!(l("main: "), "main: hermes sleep infinity");
    assert!(pid1.stderr.contains("s6 supervision") && pid1.stderr.contains("--no-supervise"), "{}", ctx.stderr);
}

/// C-S6-8: with `--no-supervise` the gateway is the main program, in the foreground, and
/// gateway-default stays down.
#[test]
fn c_s6_8_no_supervise_runs_the_gateway_in_the_foreground() {
    let test = "c_s6_8_no_supervise_runs_the_gateway_in_the_foreground";
    let Some(venv) = venv(test) else { return };
    let (jail, running) = container(&venv, &["gateway", "run", "--no-supervise"]);
    let out = exec_as_hermes(
        &jail,
        &running,
        r#"
i=0; until pgrep -P 1 -f "gateway run --no-supervise" >/dev/null; do i=$((i+1)); [ $i -gt 300 ] && break; sleep 0.1; done
m=$(pgrep -P 1 -f "gateway run --no-supervise" | head -1)
# Up and past its banner once it records itself running.
i=0; until grep -q '"gateway_state": *"running"' /opt/data/gateway_state.json 2>/dev/null; do i=$((i+1)); [ $i -gt 600 ] && break; sleep 0.1; done
say "main: $(ps -o user= -p $m) $(tr '\0' ' ' < /proc/$m/cmdline)"
say "svstat: $(/command/s6-svstat -o up,wantedup /run/service/gateway-default)"
say "== end"
"#,
    );
    let pid1 = stop(running);
    let said = out.said();
    let ctx = Out { stderr: format!("{}\n--- PID 1 ---\n{}{}", out.stderr, pid1.stdout, pid1.stderr), ..out };
    let l = |p: &str| said_line(&said, p, &ctx).to_string();
    let m = l("main: ");
    assert!(m.starts_with("main: hermes ") && m.contains("python") && m.contains("gateway run --no-supervise"), "{m}");
    assert_eq!(l("svstat: "), "svstat: false false");
    assert!(!pid1.stderr.contains("s6 supervision"), "{}", ctx.stderr);
    assert!(format!("{}{}", pid1.stdout, pid1.stderr).contains("Hermes Gateway Starting"), "{}", ctx.stderr);
}
