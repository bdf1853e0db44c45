//! Service supervision (C-SVC, C-S6-5) with hermesinit as PID 1. Each test's main program is a
//! shell script that builds services in the scan directory at run time (as Hermes does),
//! drives them with `hermesinit svc`, and prints what it saw.

mod harness;
use harness::{BIN, Root, secs};

/// Shell helpers available to every script: `mk NAME RUN` publishes an s6 service atomically,
/// `native NAME YAML` a native one, `svc …` is the CLI.
fn prelude() -> String {
    format!(
        "svc() {{ {BIN} svc \"$@\"; }}; \
         mk() {{ d=/run/service/.$1.tmp; mkdir -p $d; printf '#!/bin/sh\\n%s\\n' \"$2\" > $d/run; chmod +x $d/run; \
                [ -n \"$3\" ] && {{ printf '#!/bin/sh\\n%s\\n' \"$3\" > $d/finish; chmod +x $d/finish; }}; \
                [ -n \"$4\" ] && touch $d/down; mv $d /run/service/$1; }}; \
         native() {{ d=/run/service/.$1.tmp; mkdir -p $d; printf '%s\\n' \"$2\" > $d/hermesinit.yaml; mv $d /run/service/$1; }}; "
    )
}

fn run(root: &Root, script: &str, timeout: u64) -> harness::Out {
    let s = format!("{}{script}", prelude());
    let out = root.init(&["sh", "-c", &s], &[], secs(timeout));
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    out
}

#[test]
fn c_svc_4_crashing_service_restarts_fast_then_backs_off() {
    let root = Root::new("crash");
    let out = run(
        &root,
        "mk crashy 'date +%s%N >> /opt/data/starts; exit 1'; sleep 3; n=$(wc -l < /opt/data/starts); echo starts=$n; \
         svc status crashy; svc status --json crashy | grep -q '\"state\": \"backoff\"' && echo in-backoff; exit 0",
        30,
    );
    let n: u32 = out.stdout.split("starts=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    // 0 ms, then 500, 1000, 2000 ms of backoff: about 4 starts in 3 s, never a storm.
    assert!((3..=6).contains(&n), "{n} starts in 3 s: {}", out.stdout);
    assert!(out.stdout.contains("in-backoff"), "{}", out.stdout);
}

#[test]
fn c_s6_5_finish_125_keeps_it_down_and_down_file_registers_without_starting() {
    let root = Root::new("finish");
    let out = run(
        &root,
        "mk quitter 'exit 3' 'echo \"finish args: $1 $2\"; exit 125'; \
         mkfifo -m 666 /opt/data/lazy; mk lazy 'echo lazy-started; echo > /opt/data/lazy; exec sleep 100' '' down; \
         svc wait --finished quitter --timeout 5; svc status quitter lazy; \
         svc up lazy; svc wait --up lazy --timeout 5 && echo lazy-up; read _ < /opt/data/lazy; exit 0",
        30,
    );
    assert!(out.stdout.contains("finish args: 3 0"), "{}", out.stdout);
    let quitter = out.stdout.lines().find(|l| l.starts_with("quitter")).unwrap();
    assert!(quitter.contains("down") && quitter.contains("code 3") && quitter.ends_with("down"), "{quitter}");
    let lazy = out.stdout.lines().find(|l| l.starts_with("lazy ")).unwrap();
    assert!(lazy.contains(" down "), "{lazy}");
    // "Up" means started, not "has printed": the main program reads a FIFO `lazy` writes after
    // its line, so the line is in PID 1's pipe before the main program exits and the stop kills
    // `lazy` (a service that never starts leaves the read blocked and the run timed out).
    assert!(out.stdout.contains("lazy-started") && out.stdout.contains("lazy-up"), "{}", out.stdout);
}

#[test]
fn c_svc_7_services_come_and_go_at_runtime() {
    let root = Root::new("runtime");
    let out = run(
        &root,
        "mk late 'exec sleep 100'; svc wait --up late --timeout 2 && echo appeared; \
         mkdir -p /run/service/.ignored; printf '#!/bin/sh\\nexec sleep 100\\n' > /run/service/.ignored/run; chmod +x /run/service/.ignored/run; \
         rm -rf /run/service/late; svc wait --down late --timeout 2 && echo gone; sleep 0.3; \
         pgrep -x sleep >/dev/null && echo sleep-left || echo no-sleep; svc list; exit 0",
        30,
    );
    assert!(out.stdout.contains("appeared") && out.stdout.contains("gone"), "{}", out.stdout);
    assert!(out.stdout.contains("no-sleep"), "{}", out.stdout);
    assert!(!out.stdout.contains(".ignored"), "dot-prefixed entries are ignored: {}", out.stdout);
}

#[test]
fn c_svc_8_stopping_a_service_kills_its_grandchildren() {
    let root = Root::new("grandkids");
    let out = run(
        &root,
        "mk family 'sleep 1001 & sleep 1002 & exec sleep 1003'; svc wait --up family --timeout 5; \
         i=0; while [ $(ps -eo args | grep -c '^sleep 100[123]$') -lt 3 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; \
         echo before=$(ps -eo args | grep -c '^sleep 100[123]$'); svc down family; svc wait --down family --timeout 5; \
         i=0; while [ $(ps -eo args | grep -c '^sleep 100[123]$') -gt 0 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; \
         echo after=$(ps -eo args | grep -c '^sleep 100[123]$'); exit 0",
        30,
    );
    assert!(out.stdout.contains("before=3") && out.stdout.contains("after=0"), "{}", out.stdout);
}

#[test]
fn c_svc_8_services_start_clean_own_session_no_stray_fds_default_signals() {
    let root = Root::new("clean");
    std::fs::write(
        root.dir.join("opt/data/probe"),
        "echo sid=$(ps -o sid= -p $$ | tr -d ' ') pid=$$ fds=$(ls /proc/$$/fd | tr '\\n' ' ')\\
         sigblk=$(grep SigBlk /proc/$$/status | cut -f2) sigign=$(grep SigIgn /proc/$$/status | cut -f2); exec sleep 100",
    )
    .unwrap();
    let out = run(
        &root,
        "mk probe 'exec sh -c \"$(cat /opt/data/probe)\"'; \
         svc wait --up probe --timeout 5; sleep 0.3; exit 0",
        30,
    );
    let line = out.stdout.lines().find(|l| l.starts_with("sid=")).expect(&out.stdout);
    let f: std::collections::HashMap<&str, &str> =
        line.split_whitespace().filter_map(|kv| kv.split_once('=')).collect();
    assert_eq!(f["sid"], f["pid"], "own session: {line}");
    assert_eq!(f["sigblk"], "0000000000000000", "{line}");
    assert_eq!(f["sigign"], "0000000000000000", "{line}");
    // ls itself opens one fd (3) for the directory it lists.
    assert!(line.contains("fds=0 1 2 3 sigblk") || line.contains("fds=0 1 2 sigblk"), "{line}");
}

#[test]
fn c_svc_5_lines_go_to_stdout_raw_and_to_the_file_with_timestamps_rotated() {
    let root = Root::new("fanout");
    let out = run(
        &root,
        "native chatty 'command: [sh, -c, \"i=0; while [ $i -lt 300 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; echo to-err >&2; printf partial; exec sleep 100\"]
log: {dir: /opt/data/logs/chatty, max_bytes: 4096, keep: 3}
user: hermes'; \
         svc wait --up chatty --timeout 5; sleep 1; svc down chatty; svc wait --down chatty --timeout 5; sleep 0.2; \
         ls /opt/data/logs/chatty | sort | tr '\\n' ' '; echo; stat -c 'owner=%U' /opt/data/logs/chatty/current; \
         cat /opt/data/logs/chatty/@* /opt/data/logs/chatty/current > /run/all; wc -l < /run/all | sed 's/^/filelines=/'; \
         tail -n 2 /run/all; head -n 1 /run/all; exit 0",
        30,
    );
    let so = &out.stdout;
    assert!(so.contains("\nline-0-x") || so.starts_with("line-0-x"), "raw line on stdout: {so}");
    assert!(so.contains("line-299-x") && so.contains("to-err"), "{so}");
    let listing = so.lines().find(|l| l.contains("current")).unwrap();
    assert_eq!(listing.split_whitespace().filter(|n| n.starts_with('@')).count(), 3, "keeps 3 archives: {listing}");
    assert!(so.contains("owner=hermes"), "{so}");
    // 300 lines + stderr line + partial flushed at exit; older ones rotated away.
    let tail_partial = so.lines().any(|l| l.ends_with("  partial"));
    assert!(tail_partial, "partial last line flushed at exit, timestamped: {so}");
    let stamped = so.lines().find(|l| l.contains("  line-")).unwrap();
    assert!(
        stamped.len() > 31 && &stamped[4..5] == "-" && &stamped[10..11] == " " && &stamped[29..31] == "  ",
        "{stamped}"
    );
}

#[test]
fn c_svc_5_stalled_stdout_blocks_neither_service_nor_pid1_and_the_file_gets_every_line() {
    let root = Root::new("stall");
    std::fs::write(root.dir.join("opt/data/script"), format!("{}{}", prelude(),
        "native flood 'command: [sh, -c, \"seq 1 200000 | sed s/$/-yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy/; exec sleep 100\"]
log: {dir: /opt/data/logs/flood, max_bytes: 100000000}'; \
         for t in $(seq 200); do [ \"$(wc -l < /opt/data/logs/flood/current 2>/dev/null)\" = 200000 ] && break; sleep 0.1; done; \
         echo lines=$(wc -l < /opt/data/logs/flood/current) > /opt/data/result; svc status flood >> /opt/data/result; exit 0")).unwrap();
    // init's stdout is a FIFO whose reader never reads.
    let body = format!("mkfifo /run/f; sleep 1000 < /run/f & exec {BIN} init sh /opt/data/script > /run/f");
    let out = root.run_ns(true, "", &body, &[], &[], secs(60));
    let result = std::fs::read_to_string(root.dir.join("opt/data/result")).unwrap_or_default();
    assert!(result.contains("lines=200000"), "{result} {}", out.stderr);
    assert!(result.contains("flood"), "PID 1 still answers: {result}");
    assert!(out.stderr.contains("line(s) dropped"), "the loss on stdout is reported: {}", out.stderr);
}

#[test]
fn c_svc_5_full_disk_keeps_the_service_running_and_reports_once() {
    let root = Root::new("enospc");
    let script = format!(
        "{}native filler 'command: [sh, -c, \"i=0; while [ $i -lt 3000 ]; do echo fill-$i-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz; i=$((i+1)); done; exec sleep 100\"]
log: {{dir: /run/small/log, max_bytes: 100000000}}'; svc wait --up filler --timeout 5; sleep 1.5; svc status filler; exit 0",
        prelude()
    );
    let out = root.run_ns(
        true,
        "mkdir -p /run/small; mount -t tmpfs -o size=64k tmpfs /run/small;",
        &format!("exec {BIN} init sh -c \"$1\""),
        &[&script],
        &[],
        secs(30),
    );
    check_enospc(&out);
}

fn check_enospc(out: &harness::Out) {
    assert!(
        out.stdout.contains("fill-2999-z"),
        "stdout still gets every line: {}",
        &out.stdout[out.stdout.len().saturating_sub(300)..]
    );
    let st = out.stdout.lines().find(|l| l.starts_with("filler")).expect(&out.stdout);
    assert!(st.contains(" up "), "{st}");
    assert_eq!(out.stderr.matches("No space left").count(), 1, "reported once: {}", out.stderr);
}

#[test]
fn c_svc_6_control_is_refused_for_other_uids_and_allowed_for_hermes() {
    let root = Root::new("perm");
    // The main program is hermes and cannot become another uid; a root hook can: once boot is
    // over it asks as uid 1000 and records the answer where hermes reads it.
    root.write_exec(
        "cont-init.d/50-other-uid",
        &format!(
            "#!/bin/sh\n( {BIN} svc wait --boot --timeout 10 >/dev/null; sleep 0.5; \
             setpriv --reuid 1000 --regid 1000 --clear-groups {BIN} svc up target > /opt/data/other.txt 2>&1; \
             echo other-rc=$? >> /opt/data/other.txt ) &\n"
        ),
    );
    let out = run(
        &root,
        "mk target 'exec sleep 100'; svc wait --up target --timeout 5; \
         svc down target && echo hermes-may; \
         i=0; while ! grep -q other-rc /opt/data/other.txt 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
         cat /opt/data/other.txt; exit 0",
        30,
    );
    assert!(out.stdout.contains("hermes-may"), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("other-rc=1"), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("permission denied: uid 1000"), "{}{}", out.stdout, out.stderr);
}

#[test]
fn clients_with_a_closed_stdout_get_epipe_instead_of_dying_of_sigpipe() {
    use std::os::unix::process::ExitStatusExt;
    // The read end is closed before the client writes its help text: with SIGPIPE at its
    // default, the client would die of it silently (exit 141 in a shell); it must see EPIPE.
    for argv in [&["svc", "--help"][..], &["svc", "status", "--help"][..]] {
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        let st = std::process::Command::new(BIN)
            .args(argv)
            .stdout(std::process::Stdio::from(w))
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_ne!(st.signal(), Some(libc::SIGPIPE), "{argv:?}: {st:?}");
    }
}
