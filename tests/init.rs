//! PID 1 behaviour (C-INIT, C-MAIN), with the real binary as PID 1 of a fresh namespace.

mod harness;
use harness::{BIN, Root, secs};

#[test]
fn c_init_2_exit_code_of_every_value() {
    let root = Root::new("codes");
    // One namespace per code would take long; a script runs init 256 times inside one.
    let script = format!(
        "fail=0; for c in $(seq 0 255); do unshare --pid --fork --mount-proc {} init sh -c \"exit $c\" 2>/dev/null; \
         r=$?; [ $r -eq $c ] || {{ echo \"code $c gave $r\"; fail=1; }}; done; echo done; exit $fail",
        harness::BIN
    );
    let out = root.run_ns(false, "", &script, &[], &[], secs(120));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("done"));
}

#[test]
fn c_init_2_killed_by_signal_n_exits_128_plus_n() {
    let root = Root::new("sigcodes");
    for (sig, n) in [("TERM", 15), ("INT", 2), ("HUP", 1), ("USR1", 10), ("USR2", 12), ("KILL", 9)] {
        // The main program kills itself with the signal (default dispositions: it dies of it).
        let out = root.init(&["sh", "-c", &format!("kill -{sig} $$; sleep 5")], &[], secs(20));
        assert_eq!(out.code, 128 + n, "SIG{sig}: {}", out.stderr);
    }
}

#[test]
fn c_main_6_main_program_runs_as_hermes_with_home_and_keeps_cwd() {
    let root = Root::new("ident");
    let out = root.run_ns(
        true,
        "",
        &format!("cd /tmp && exec {} init sh -c 'echo \"id=$(id -u):$(id -g) groups=$(id -G) home=$HOME pwd=$(pwd) path=$PATH\"'", harness::BIN),
        &[],
        &[],
        secs(20),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("id=10000:10000 groups=10000 29 home=/opt/data pwd=/tmp"), "{}", out.stdout);
    assert!(out.stdout.contains("path=/command:"), "C-IMG-4: /command on the main program's PATH: {}", out.stdout);
}

#[test]
fn c_main_routing_through_init() {
    let root = Root::new("route");
    let cases: &[(&[&str], &str)] = &[
        (&[], "args=\n"),
        (&["--version"], "args=--version"),
        (&["mcp", "--help"], "args=mcp --help"),
        (&["chat", "-q", "hi"], "args=chat -q hi"),
        (&["gateway", "run", "--no-supervise"], "args=gateway run --no-supervise"),
    ];
    for (args, want) in cases {
        let out = root.init(args, &[], secs(20));
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert!(out.stdout.contains("HERMES uid=10000") && out.stdout.contains(want), "{args:?}: {}", out.stdout);
    }
    let out = root.init(&["echo", "direct"], &[], secs(20));
    assert_eq!(out.stdout.trim(), "direct", "C-MAIN-4: executables on PATH run directly");
    let out = root.init(&["sh", "-c", "echo argv0=$0"], &[], secs(20));
    assert_eq!(out.stdout.trim(), "argv0=sh", "argv[0] is kept as typed");
}

#[test]
fn c_main_8_arbitrary_uid_is_refused_and_hermes_uid_works() {
    let root = Root::new("user");
    let body = format!(
        "exec setpriv --reuid \"$1\" --regid \"$1\" --clear-groups {} init sh -c 'echo uid=$(id -u)'",
        harness::BIN
    );
    let out = root.run_ns(true, "", &body, &["1000"], &[], secs(20));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("HERMES_UID") && out.stderr.contains("PUID"), "{}", out.stderr);
    let out = root.run_ns(true, "", &body, &["10000"], &[], secs(20));
    assert_eq!((out.code, out.stdout.trim()), (0, "uid=10000"), "{}", out.stderr);
}

#[test]
fn c_init_1_orphan_storm_leaves_no_zombie() {
    let root = Root::new("orphans");
    // 1000 orphans whose parent (a subshell) exits at once and never reaps them.
    let script = "for i in $(seq 1000); do ( sleep 0.0$((i % 9)) & ) ; done; \
        for t in $(seq 100); do z=$(ps -eo stat= | grep -c '^Z'); n=$(ps -e --no-headers | wc -l); \
        [ \"$z\" -eq 0 ] && [ \"$n\" -le 6 ] && { echo clean; exit 0; }; sleep 0.1; done; ps -eo pid,ppid,stat,comm; exit 1";
    let out = root.init(&["sh", "-c", script], &[], secs(60));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

/// Wait until the main program has written `marker` into the shared file.
fn wait_for(root: &Root, marker: &str) {
    let f = root.dir.join("opt/data/marks");
    for _ in 0..1000 {
        if std::fs::read_to_string(&f).unwrap_or_default().contains(marker) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("{marker} never appeared");
}

#[test]
fn c_init_4_signals_are_forwarded_to_the_main_programs_whole_group() {
    let root = Root::new("fwd");
    let script = "trap 'echo parent-got-usr1' USR1; \
        sh -c 'trap \"echo child-got-usr1; exit 0\" USR1; echo ready >> /opt/data/marks; while :; do sleep 0.05; done' & c=$!; \
        wait $c; wait $c; echo child-done; trap 'echo parent-got-hup; exit 0' HUP; echo hup-ready >> /opt/data/marks; \
        while :; do sleep 0.05; done";
    let run = root.spawn_init(&["sh", "-c", script], &[]);
    wait_for(&root, "ready");
    run.signal("hermesinit", libc::SIGUSR1);
    wait_for(&root, "hup-ready");
    run.signal("hermesinit", libc::SIGHUP);
    let out = run.wait(secs(20));
    assert!(
        out.stdout.contains("child-got-usr1") && out.stdout.contains("parent-got-usr1"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("parent-got-hup"), "{}{}", out.stdout, out.stderr);
    assert_eq!(out.code, 0);
}

#[test]
fn c_init_3_term_ignoring_program_is_killed_after_the_grace() {
    let root = Root::new("grace");
    root.config("kill_grace_ms: 300\n");
    let run = root.spawn_init(&["sh", "-c", "trap '' TERM; echo up >> /opt/data/marks; sleep 30"], &[]);
    wait_for(&root, "up");
    let t = std::time::Instant::now();
    run.signal("hermesinit", libc::SIGTERM);
    let out = run.wait(secs(20));
    assert_eq!(out.code, 137, "{}", out.stderr);
    assert!(t.elapsed() >= std::time::Duration::from_millis(300), "killed before the grace: {:?}", t.elapsed());
    assert!(t.elapsed() < secs(3), "took {:?}", t.elapsed());
}

#[test]
fn c_init_3_stop_exits_as_soon_as_nothing_is_left() {
    let root = Root::new("fast-stop");
    root.config("kill_grace_ms: 5000\n");
    let run = root.spawn_init(&["sh", "-c", "echo up >> /opt/data/marks; sleep 30"], &[]);
    wait_for(&root, "up");
    let t = std::time::Instant::now();
    run.signal("hermesinit", libc::SIGTERM);
    let out = run.wait(secs(20));
    assert_eq!(out.code, 143, "{}", out.stderr);
    assert!(t.elapsed() < secs(2), "no fixed grace sleep: took {:?}", t.elapsed());
    // A stop the operator asked for is not echoed at info: no line wakes the log reader mid-stop.
    assert!(!out.stderr.contains("SIGTERM") && !out.stderr.contains("main program exited"), "{}", out.stderr);
}

#[test]
fn a_main_program_that_ends_the_container_says_so_and_debug_shows_a_stop() {
    let root = Root::new("stop-lines");
    // On its own: that exit is why the container stops, so it is said.
    let out = root.init(&["sh", "-c", "exit 3"], &[], secs(20));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("main program exited with code 3"), "{}", out.stderr);
    // A SIGTERM stop shows both lines at debug.
    let run = root.spawn_init(&["sh", "-c", "echo up >> /opt/data/marks; sleep 30"], &[("HERMESINIT_LOG", "debug")]);
    wait_for(&root, "up");
    run.signal("hermesinit", libc::SIGTERM);
    let out = run.wait(secs(20));
    assert_eq!(out.code, 143, "{}", out.stderr);
    assert!(out.stderr.contains("SIGTERM: stopping the container"), "{}", out.stderr);
    assert!(out.stderr.contains("main program exited with code 143"), "{}", out.stderr);
}

#[test]
fn c_init_6_not_pid_1_warns_once_and_still_works() {
    let root = Root::new("notpid1");
    let body = format!("exec {} init sh -c '( (sleep 0.1 &) & ); sleep 0.3; exit 7'", harness::BIN);
    let out = root.run_ns(false, "", &body, &[], &[], secs(20));
    assert_eq!(out.code, 7, "{}", out.stderr);
    assert_eq!(out.stderr.matches("not running as PID 1").count(), 1, "{}", out.stderr);
}

#[test]
fn c_init_7_bad_input_gets_a_clear_message_not_a_panic() {
    let root = Root::new("bad");
    std::fs::write(root.dir.join("config.yaml"), "kill_grace_ms: [\nbogus").unwrap();
    let out = root.init(&["true"], &[], secs(20));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("config.yaml") && !out.stderr.contains("panicked"), "{}", out.stderr);
    // A malformed /etc/group line names the file and line, and the program still runs.
    let root = Root::new("badgroup");
    std::fs::write(root.dir.join("group"), "root:x:0:\nbroken\n").unwrap();
    let out = root.init(&["true"], &[], secs(20));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("/etc/group:2: malformed entry"), "{}", out.stderr);
    // Unreadable or malformed /etc/passwd as root: refuse, never run the program as root.
    let root = Root::new("badpasswd");
    std::fs::write(root.dir.join("passwd"), "root:x:0:0:root:/root:/bin/sh\nhermes:x:ten:10000::/opt/data:/bin/sh\n")
        .unwrap();
    let out = root.init(&["sh", "-c", "echo ran-as-$(id -u)"], &[], secs(20));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("/etc/passwd:2: malformed entry: uid is not a number"), "{}", out.stderr);
    assert!(!out.stdout.contains("ran-as"));
    // A main program that cannot be found: 127 and a message.
    let root = Root::new("nomain");
    std::fs::remove_file(root.dir.join("opt/hermes/.venv/bin/hermes")).unwrap();
    let out = root.init(&[], &[], secs(20));
    assert_eq!(out.code, 127, "{}", out.stderr);
    assert!(out.stderr.contains("cannot start the main program /opt/hermes/.venv/bin/hermes"), "{}", out.stderr);
    let out = root.run_ns(false, "", &format!("{} nosuchrole; echo rc=$?", harness::BIN), &[], &[], secs(10));
    assert!(out.stdout.contains("rc=64") && out.stderr.contains("unknown role"), "{}{}", out.stdout, out.stderr);
}

#[test]
fn c_init_3_docker_stop_during_a_hanging_boot_hook_stops_at_once() {
    let root = Root::new("hookstop");
    root.write_exec("cont-init.d/10-hang", "#!/bin/sh\necho hook-up >> /opt/data/marks\nexec sleep 60\n");
    let run = root.spawn_init(&["true"], &[]);
    wait_for(&root, "hook-up");
    let t = std::time::Instant::now();
    run.signal("hermesinit", libc::SIGTERM);
    let out = run.wait(secs(20));
    assert_eq!(out.code, 143, "{}", out.stderr);
    assert!(t.elapsed() < secs(3), "took {:?}", t.elapsed());
    assert!(out.stderr.contains("fatal: stopping the container"), "{}", out.stderr);
}

#[test]
fn c_main_7_non_utf8_arguments_reach_the_main_program_byte_for_byte() {
    let root = Root::new("nonutf8");
    let body = format!("exec {BIN} init sh -c 'printf %s \"$1\" | od -An -tx1' sh \"$(printf '\\377\\376x')\"");
    let out = root.run_ns(true, "", &body, &[], &[], secs(20));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("ff fe 78"), "{:?} {}", out.stdout, out.stderr);
}

#[test]
fn closed_standard_descriptors_are_reopened_on_dev_null_before_anything_else_opens() {
    let root = Root::new("stdfds");
    // PID 1 starts with stdin closed: its first file (the signalfd) must not become fd 0, and
    // the main program gets /dev/null as its stdin.
    let body = format!("exec {} init sh -c 'readlink /proc/self/fd/0' 0<&-", harness::BIN);
    let out = root.run_ns(true, "", &body, &[], &[], secs(20));
    assert_eq!((out.code, out.stdout.trim()), (0, "/dev/null"), "{}", out.stderr);
}

/// PID 1 holds its start's diagnostics and writes them together once the main program runs,
/// but never behind what boot's own programs print: the lines of the steps before the
/// cont-init hooks are out before a hook runs; the later ones, and an early fatal error's,
/// are not lost.
#[test]
fn the_start_s_held_lines_come_before_a_hook_s_output_and_none_is_lost() {
    let root = Root::new("heldlines");
    root.write_exec("cont-init.d/10-say", "#!/bin/sh\necho HOOK-SPEAKS >&2\n");
    let out = root.init(&["sh", "-c", "echo MAIN-RUNS >&2"], &[], secs(30));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let at = |what: &str| out.stderr.find(what).unwrap_or_else(|| panic!("no {what:?} in:\n{}", out.stderr));
    assert!(at("boot: reconcile:") < at("HOOK-SPEAKS"), "a step's line after the hook's output:\n{}", out.stderr);
    for line in ["boot: bootlog:", "boot: finished in", "ready in", "main program exited with code 0"] {
        at(line);
    }
    root.config("kill_grace_ms: [not a number]\n");
    let bad = root.init(&["true"], &[], secs(30));
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("fatal: stopping the container: invalid configuration"), "{}", bad.stderr);
}
