//! Debian's own s6 tools (`s6-svok`, `s6-svstat`, `s6-svc` from s6 2.11) against a hermesinit
//! slot: PID 1 keeps each slot's `supervise/` as s6-supervise does (lock, control FIFO, status
//! record), so they work as they do under s6, and agree with hermesinit's own applets.

mod harness;
use harness::{BIN, Root, secs};

fn have_s6() -> bool {
    std::path::Path::new("/usr/bin/s6-svstat").exists()
}

#[test]
fn real_s6_tools_read_and_control_a_hermesinit_slot() {
    if !have_s6() {
        assert!(std::env::var_os("CI").is_none(), "CI must install Debian's s6");
        eprintln!("skipped: Debian's s6 is not installed");
        return;
    }
    let root = Root::new("s6sup");
    // As hermes (the main program), as Hermes itself would: publish, then drive it.
    let script = format!(
        "set -u; S=/run/service; mkdir $S/.x; printf '#!/bin/sh\\nexec sleep 100\\n' > $S/.x/run; chmod 755 $S/.x/run; \
         mv $S/.x $S/x; {BIN} svc wait --up x --timeout 5 >/dev/null; sleep 0.3; \
         /usr/bin/s6-svok $S/x; echo svok=$?; /usr/bin/s6-svok $S/nope; echo svok-missing=$?; \
         echo \"real-up: $(/usr/bin/s6-svstat $S/x)\"; echo \"ours-up: $({BIN} s6-svstat $S/x)\"; \
         echo \"real-o: $(/usr/bin/s6-svstat -o up,wantedup,normallyup,exitcode $S/x)\"; \
         echo \"ours-o: $({BIN} s6-svstat -o up,wantedup,normallyup,exitcode $S/x)\"; \
         /usr/bin/s6-svc -d $S/x; echo svc-d=$?; {BIN} svc wait --down x --timeout 5 >/dev/null; sleep 0.3; \
         echo \"real-down: $(/usr/bin/s6-svstat $S/x)\"; echo \"ours-down: $({BIN} s6-svstat $S/x)\"; \
         /usr/bin/s6-svc -u $S/x; {BIN} svc wait --up x --timeout 5 >/dev/null && echo back-up; \
         /usr/bin/s6-svc -k $S/x; sleep 0.5; {BIN} svc wait --up x --timeout 5 >/dev/null && echo restarted; \
         ls -l $S/x/supervise; exit 0"
    );
    let out = root.init(&["sh", "-c", &script], &[], secs(60));
    let ctx = format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let line = |k: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} line: {ctx}"))
            .trim()
            .to_string()
    };
    assert_eq!(line("svok="), "0", "{ctx}");
    assert_ne!(line("svok-missing="), "0", "{ctx}");
    // Seconds may tick between the two calls; pids and flags must agree.
    let strip =
        |s: String| s.split(' ').filter(|w| w.parse::<u64>().is_err() || w.len() > 3).collect::<Vec<_>>().join(" ");
    assert!(line("real-up:").starts_with("up (pid "), "{ctx}");
    assert_eq!(strip(line("real-up:")), strip(line("ours-up:")), "{ctx}");
    assert!(line("real-o:").starts_with("true true true "), "{ctx}");
    assert_eq!(line("real-o:"), line("ours-o:"), "{ctx}");
    assert_eq!(line("svc-d="), "0", "{ctx}");
    assert!(line("real-down:").starts_with("down (signal SIGTERM)"), "{ctx}");
    assert_eq!(strip(line("real-down:")), strip(line("ours-down:")), "{ctx}");
    assert!(out.stdout.contains("back-up") && out.stdout.contains("restarted"), "{ctx}");
}
