//! Differential tests (C-S6-2, C-S6-3, C-S6-4): one scenario script drives the same service
//! directories through the same states twice — once supervised by the real s6 (Debian's
//! s6-svscan 2.11, with the real s6-svc/s6-svstat/s6-svwait/s6-svscanctl), once with
//! hermesinit as PID 1 and its applets first on PATH — and every line it reports (s6-svstat's
//! human line, `-n`, `-o` fields, short flags, stamps; exit codes and messages of s6-svc,
//! s6-svwait, s6-svscanctl) must be equal once pids, second counts and TAI64N stamps are
//! normalised. Both runs happen in a throwaway jail (tests/s6_common), never on the host.

mod s6_common;
use s6_common::{HERMESINIT_PATH, Jail, Out, PRELUDE, REAL_PATH, normalise, real_s6_available};
use std::time::Duration;

/// The states and commands compared. Every service name is a directory in /run/service.
const SCENARIO: &str = r#"
i=0; until s6-svscanctl -a $S 2>/dev/null; do i=$((i+1)); [ $i -gt 500 ] && break; sleep 0.01; done
say "== publish"
mk sleeper 'exec sleep 1000'
mk lazy 'exec sleep 1000' '' down
mk quitter 'exit 7' 'echo "$1 $2" >> /tmp/finish-args; exit 125'
mk slowfin 'exec sleep 1000' 'sleep 2'
mk stubborn 'trap "" TERM; exec sleep 1000'
until_field sleeper up true; until_field slowfin up true; until_field stubborn up true
until_field quitter wantedup false
say "== initial states: up; registered down (never ran); finish 125 after exit 7"
show sleeper lazy quitter
say "finish args: $(cat /tmp/finish-args)"

say "== up a normally-down service (-wu)"
rc s6-svc -wu -T 5000 -u $S/lazy
show lazy
say "== down it"
rc s6-svc -d $S/lazy
rc s6-svwait -d -t 5000 $S/lazy
show lazy
say "== once (-o), then killed: stays down"
rc s6-svc -o $S/lazy
until_field lazy up true
show lazy
rc s6-svc -k $S/lazy
until_field lazy up false; settle lazy
show lazy

say "== down a normally-up service (-wD)"
rc s6-svc -wD -T 5000 -d $S/sleeper
show sleeper
say "== up again (-wu)"
rc s6-svc -wu -T 5000 -u $S/sleeper
show sleeper
for f in -t -k -r -h -i -a -1 -2; do
  say "== $f on a wanted-up service restarts it"
  p=$(s6-svstat -o pid $S/sleeper); rc s6-svc $f $S/sleeper; until_new_pid sleeper $p; show sleeper
done
say "== pause (-p) and continue (-c)"
rc s6-svc -p $S/sleeper; sleep 0.3; show sleeper
rc s6-svc -c $S/sleeper; sleep 0.3; show sleeper
say "== -O: no restart, keep running"
rc s6-svc -O $S/sleeper
show sleeper
rc s6-svc -u $S/sleeper

say "== a crash loop, seen while down between restarts, then downed there"
mk crash 'sleep 0.3; exit 3'
until_field crash up true; until_field crash up false
show crash
rc s6-svc -d $S/crash
show crash

say "== a finish script still running after down (-wD waits for it)"
rc s6-svc -d $S/slowfin; sleep 0.3; show slowfin
rc s6-svwait -D -t 5000 $S/slowfin
show slowfin

say "== a service that ignores SIGTERM: up, want down; then -k"
rc s6-svc -d $S/stubborn; sleep 0.3; show stubborn
rc s6-svc -k $S/stubborn; until_field stubborn up false; settle stubborn; show stubborn

say "== waits and timeouts"
rc s6-svwait -u -t 300 $S/lazy
rc s6-svwait -d -t 300 $S/sleeper
rc s6-svwait -o -d -t 300 $S/sleeper $S/lazy
rc s6-svwait -a -d -t 300 $S/sleeper $S/lazy
rc s6-svwait -u -t 300 $S/sleeper
rc s6-svwait -D -t 300 $S/lazy
rc s6-svwait -U -t 300 $S/sleeper
rc s6-svwait -r -t 300 $S/sleeper
rc s6-svc -wd -T 300 $S/sleeper
rc s6-svc -wd -T 300 -u $S/sleeper
rc s6-svc -wU -T 2000 -u $S/sleeper
rc s6-svc -wR -T 300 -u $S/sleeper
rc s6-svc -wr -T 300 $S/sleeper
rc s6-svc -wr -T 5000 -t $S/sleeper
rc s6-svc -wu -T 300 -d $S/sleeper
rc s6-svwait -d -t 5000 $S/sleeper
rc s6-svc -wu -T 5000 -u $S/sleeper

say "== errors"
mkdir -p /tmp/unsup
rc s6-svc -u /tmp/unsup
rc s6-svc -u $S/nonexist
rc s6-svstat /tmp/unsup
rc s6-svstat $S/nonexist
rc s6-svscanctl -a /tmp/unsup
rc s6-svscanctl -a /nonexist
rc s6-svscanctl -a $S/sleeper
rcq s6-svc
rcq s6-svstat
rcq s6-svwait
rcq s6-svscanctl
rcq s6-svc -Z $S/sleeper
rcq s6-svc -wx $S/sleeper
rc s6-svstat -o foo $S/sleeper
rcq s6-svstat -Z $S/sleeper
rcq s6-svc -T abc $S/sleeper
rcq s6-svwait -t abc $S/sleeper
rcq s6-svscanctl -Z $S
rc s6-svc -u $S/sleeper $S/lazy

say "== permissions, on a slot seeded as Hermes seeds it"
d=$S/.perm.tmp; mkdir -p $d/event $d/supervise/event; mkfifo $d/supervise/control
chmod 3730 $d/event $d/supervise/event; chmod 755 $d/supervise; chmod 660 $d/supervise/control
printf '#!/bin/sh\nexec sleep 1000\n' > $d/run; chmod +x $d/run; chown -R 10000:10000 $d
mv $d $S/perm; s6-svscanctl -a $S; until_field perm up true
rc as_hermes s6-svc -d $S/perm
until_field perm up false; settle perm
rc as_hermes s6-svstat $S/perm
rc as_hermes s6-svc -u $S/perm
until_field perm up true
rc as_hermes s6-svc -wD -T 5000 -d $S/perm
rc as_hermes s6-svc -wu -T 5000 -u $S/perm
rcq as_nobody s6-svc -d $S/perm

say "== runtime add, rescan, removal (Hermes' profile delete order)"
mk late 'exec sleep 1000'
until_field late up true
show late
rc s6-svc -d $S/late
rc s6-svwait -D -t 5000 $S/late
rc s6-svscanctl -an $S
rm -rf $S/late
rc s6-svstat $S/late
say "== end"
"#;

fn scenario() -> String {
    format!("{PRELUDE}{SCENARIO}")
}

fn real_s6() -> Out {
    let jail = Jail::new("diff-real");
    let script = format!("env --default-signal=INT,QUIT s6-svscan /run/service >/dev/null 2>&1 &\n{}", scenario());
    jail.run("", &[("PATH", REAL_PATH)], &["/bin/sh", "-c", &script], Duration::from_secs(180))
}

/// `script` (after the prelude) beside hermesinit as PID 1 — its main program just sleeps, as
/// hermes — run as root like a `docker exec`, with the applets first on PATH.
fn in_hermesinit(script: &str) -> Out {
    let jail = Jail::new("diff-hermesinit");
    let bin = s6_common::BIN;
    let running = jail.start(
        "printf 'kill_grace_ms: 1000\\n' > $R/etc/hermesinit/config.yaml;",
        &[("HERMESINIT_CONFIG", "/etc/hermesinit/config.yaml")],
        &[bin, "init", "sleep", "1000"],
    );
    let script = format!("{PRELUDE}{script}");
    let out = jail.exec(
        &running,
        "hermesinit",
        &[("PATH", HERMESINIT_PATH)],
        &["/bin/sh", "-c", &script],
        Duration::from_secs(180),
    );
    running.signal("hermesinit", libc::SIGTERM);
    let init = running.wait(Duration::from_secs(30));
    Out { stderr: format!("{}\n--- PID 1 ---\n{}{}", out.stderr, init.stdout, init.stderr), ..out }
}

fn hermesinit() -> Out {
    in_hermesinit(SCENARIO)
}

fn compare(real: &Out, ours: &Out) {
    let r: Vec<String> = real.said().iter().map(|l| normalise(l)).collect();
    let o: Vec<String> = ours.said().iter().map(|l| normalise(l)).collect();
    assert!(r.iter().any(|l| l == "== end"), "the real-s6 run did not finish:\n{}\n{}", real.stdout, real.stderr);
    assert!(o.iter().any(|l| l == "== end"), "the hermesinit run did not finish:\n{}\n{}", ours.stdout, ours.stderr);
    let mut diffs = Vec::new();
    for i in 0..r.len().max(o.len()) {
        let (a, b) = (r.get(i).map_or("<none>", |s| s.as_str()), o.get(i).map_or("<none>", |s| s.as_str()));
        if a != b {
            diffs.push(format!("line {i}:\n  s6:         {a}\n  hermesinit: {b}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differing lines:\n{}\n\nfull real-s6 report:\n{}\n\nhermesinit stderr:\n{}",
        diffs.len(),
        diffs.join("\n"),
        r.join("\n"),
        ours.stderr
    );
}

/// C-S6-2/3/4: the whole matrix, real s6 against hermesinit.
#[test]
fn c_s6_3_svstat_svc_svwait_svscanctl_match_real_s6() {
    if !real_s6_available("c_s6_3_svstat_svc_svwait_svscanctl_match_real_s6") {
        return;
    }
    let (real, ours) = std::thread::scope(|s| {
        let a = s.spawn(real_s6);
        let b = s.spawn(hermesinit);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(!ours.stderr.contains("panicked"), "{}", ours.stderr);
    compare(&real, &ours);
}

/// The real-s6 half alone: the states the scenario relies on are what s6 2.11 prints (a
/// guard against a scenario that silently stopped exercising anything).
#[test]
fn real_s6_reports_the_recorded_lines() {
    if !real_s6_available("real_s6_reports_the_recorded_lines") {
        return;
    }
    let out = real_s6();
    let said: Vec<String> = out.said().iter().map(|l| normalise(l)).collect();
    for want in [
        "sleeper: up (pid P) S seconds [rc=0]",
        "lazy: down (exitcode 0) S seconds, ready S seconds [rc=0]",
        "quitter: down (exitcode 7) S seconds, normally up, ready S seconds [rc=0]",
        "finish args: 7 0",
        "lazy: up (pid P) S seconds, normally down [rc=0]",
        "lazy: up (pid P) S seconds, normally down, want down [rc=0]",
        "lazy: down (signal SIGKILL) S seconds, ready S seconds [rc=0]",
        "sleeper: down (signal SIGTERM) S seconds, normally up, ready S seconds [rc=0]",
        "sleeper: up (pid P) S seconds, paused [rc=0]",
        "crash: down (exitcode 3) S seconds, normally up, want up, ready S seconds [rc=0]",
        "slowfin: down (signal SIGTERM) S seconds, normally up [rc=0]",
        "stubborn: up (pid P) S seconds, want down [rc=0]",
        "stubborn -n: down (signal 9) S seconds, normally up, ready S seconds",
        "$ s6-svwait -u -t 300 /run/service/lazy -> rc=99 s6-svwait: fatal: timed out",
        "$ s6-svc -u /tmp/unsup -> rc=100 s6-svc: fatal: unable to control /tmp/unsup: supervisor not listening",
        "$ s6-svstat /run/service/late -> rc=1 s6-svstat: fatal: unable to read status for /run/service/late: s6-supervise not running",
    ] {
        assert!(said.iter().any(|l| l == want), "missing {want:?} in:\n{}", said.join("\n"));
    }
}

/// The hermesinit half alone (runs without the real s6 too): the scenario completes and
/// every wait in it is met.
#[test]
fn hermesinit_runs_the_whole_scenario() {
    let out = hermesinit();
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let said = out.said();
    assert!(said.iter().any(|l| l == "== end"), "{}\n{}", out.stdout, out.stderr);
    let timeouts: Vec<&String> = said.iter().filter(|l| l.starts_with("TIMEOUT")).collect();
    assert!(timeouts.is_empty(), "{timeouts:?}\n{}\n{}", out.stdout, out.stderr);
    if std::env::var_os("S6_DIFF_SHOW").is_some() {
        eprintln!("{}", out.stdout);
    }
}

/// C-S6-2, C-S6-4: root and hermes control services, any other uid is refused with PID 1's
/// reason and exit 111 (reading a status stays open to all); the commands that would tear
/// the tree down are refused; without a supervisor the tools say so the s6 way.
#[test]
fn c_s6_2_root_and_hermes_control_others_are_refused() {
    let out = in_hermesinit(
        r#"
i=0; until s6-svscanctl -a $S 2>/dev/null; do i=$((i+1)); [ $i -gt 500 ] && break; sleep 0.01; done
mk svc 'exec sleep 1000'; until_field svc up true
rc as_nobody s6-svc -d $S/svc
rc as_nobody s6-svscanctl -a $S
rc as_nobody s6-svstat -o up $S/svc
rc as_hermes s6-svscanctl -a $S
rc as_hermes s6-svc -wd -T 5000 -d $S/svc
rc as_hermes s6-svwait -D -t 5000 $S/svc
rc as_hermes s6-svc -wu -T 5000 -u $S/svc
rc s6-svscanctl -t $S
rc s6-svscanctl -z $S
rc s6-svscanctl -h $S
rc s6-svc -x $S/svc
rc s6-svstat -o up $S/svc
rc env HERMESINIT_SOCKET=/run/nowhere.sock s6-svc -u $S/svc
rc env HERMESINIT_SOCKET=/run/nowhere.sock s6-svstat $S/svc
rc env HERMESINIT_SOCKET=/run/nowhere.sock s6-svscanctl -a $S
say "== end"
"#,
    );
    let said = out.said();
    let line = |p: &str| {
        said.iter().find(|l| l.starts_with(p)).unwrap_or_else(|| panic!("no {p:?} in {said:?}\n{}", out.stderr)).clone()
    };
    let nobody = line("$ as_nobody s6-svc -d");
    assert!(nobody.contains("rc=111 s6-svc: fatal: unable to control /run/service/svc: permission denied"), "{nobody}");
    assert!(
        line("$ as_nobody s6-svscanctl -a")
            .contains("rc=111 s6-svscanctl: fatal: unable to control /run/service: permission denied")
    );
    // Unlike s6 (a world-readable status file), PID 1 answers only root and hermes (C-SVC-6).
    assert!(line("$ as_nobody s6-svstat").contains("rc=111"), "{}", line("$ as_nobody s6-svstat"));
    for ok in ["$ as_hermes s6-svscanctl", "$ as_hermes s6-svc -wd", "$ as_hermes s6-svwait", "$ as_hermes s6-svc -wu"]
    {
        assert!(line(ok).contains("-> rc=0"), "{}", line(ok));
    }
    let t = line("$ s6-svscanctl -t");
    assert!(t.contains("rc=111") && t.contains("docker stop"), "{t}");
    for ok in ["$ s6-svscanctl -z", "$ s6-svscanctl -h", "$ s6-svc -x"] {
        assert!(line(ok).ends_with("-> rc=0 "), "{}", line(ok));
    }
    assert!(line("$ s6-svstat -o up").ends_with("rc=0 true"), "-x leaves the service alone");
    assert!(
        line("$ env HERMESINIT_SOCKET=/run/nowhere.sock s6-svc")
            .contains("rc=100 s6-svc: fatal: unable to control /run/service/svc: supervisor not listening")
    );
    assert!(
        line("$ env HERMESINIT_SOCKET=/run/nowhere.sock s6-svstat")
            .contains("rc=1 s6-svstat: fatal: unable to read status for /run/service/svc: s6-supervise not running")
    );
    assert!(line("$ env HERMESINIT_SOCKET=/run/nowhere.sock s6-svscanctl").contains("rc=100"));
}
