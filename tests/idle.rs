//! No periodic wake-ups (issue 12, part 2), with hermesinit as PID 1 of a namespace: every
//! change of the scan directory is picked up from dnotify alone (no safety-net rescan), even in
//! bursts of hundreds of slots, and an idle PID 1 does not wake up at all.

mod harness;
use harness::{BIN, Root, secs};
use std::time::Duration;

/// Bursts of 200 slots published at once (one process renames them all), each burst removed
/// (one `rm -rf`) while the next one is published: every slot must come up and every removed
/// one must go, its process stopped, with `rescan_interval_ms: 0`.
#[test]
fn bursts_of_slots_are_picked_up_and_dropped_without_a_periodic_rescan() {
    let root = Root::new("bursts");
    root.config("rescan_interval_ms: 0\n");
    let script = format!(
        "svc() {{ {BIN} svc \"$@\"; }}; \
         publish() {{ perl -e '($b,$n)=@ARGV; for $i (1..$n) {{ $d=\"/run/service/.s${{b}}_$i\"; mkdir $d or die; \
             open F, \">$d/run\" or die; print F \"#!/bin/sh\\nexec sleep 1000\\n\"; close F; chmod 0755, \"$d/run\"; }} \
             for $i (1..$n) {{ rename \"/run/service/.s${{b}}_$i\", \"/run/service/s${{b}}_$i\" or die; }}' $1 200; }}; \
         prev=; for b in 1 2 3; do \
           publish $b; [ -n \"$prev\" ] && rm -rf /run/service/s${{prev}}_*; \
           svc wait --up --timeout 60 $(seq -f \"s${{b}}_%g\" 1 200) && echo burst$b-up; \
           if [ -n \"$prev\" ]; then t=0; while [ \"$(svc list | grep -c \"^s${{prev}}_\")\" != 0 ] && [ $t -lt 300 ]; do sleep 0.1; t=$((t+1)); done; \
             echo burst$prev-listed=$(svc list | grep -c \"^s${{prev}}_\"); fi; \
           prev=$b; done; \
         rm -rf /run/service/s3_*; t=0; while [ \"$(svc list | grep -c '^s3_')\" != 0 ] && [ $t -lt 300 ]; do sleep 0.1; t=$((t+1)); done; \
         echo burst3-listed=$(svc list | grep -c '^s3_'); \
         t=0; while [ \"$(pgrep -xfc 'sleep 1000')\" != 0 ] && [ $t -lt 100 ]; do sleep 0.1; t=$((t+1)); done; \
         echo sleepers=$(pgrep -xfc 'sleep 1000'); exit 0"
    );
    let out = root.init(&["sh", "-c", &script], &[], secs(240));
    assert_eq!(out.code, 0, "{}", out.stderr);
    for b in 1..=3 {
        assert!(out.stdout.contains(&format!("burst{b}-up")), "burst {b} came up: {}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.contains(&format!("burst{b}-listed=0")), "burst {b} dropped: {}", out.stdout);
    }
    assert!(out.stdout.contains("sleepers=0"), "removed slots' processes stopped: {}", out.stdout);
    assert!(!out.stderr.contains("rescanning periodically"), "{}", out.stderr);
}

fn voluntary_switches(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:")).unwrap().trim().parse().unwrap()
}

/// With services running (and logging) but silent, PID 1 sleeps in poll with no timeout: at most
/// a couple of voluntary context switches over 3 s (each wake-up is one).
#[test]
fn an_idle_pid1_does_not_wake_up() {
    let root = Root::new("idle");
    let script = format!(
        "native() {{ d=/run/service/.$1.tmp; mkdir -p $d; printf '%s\\n' \"$2\" > $d/hermesinit.yaml; mv $d /run/service/$1; }}; \
         for i in 1 2 3; do native quiet$i \"command: [sleep, '1000']\nlog: {{stdout: true, dir: /opt/data/logs/quiet$i}}\"; done; \
         {BIN} svc wait --up --timeout 20 quiet1 quiet2 quiet3 && echo all-up; exec sleep 60"
    );
    let run = root.spawn_init(&["sh", "-c", &script], &[]);
    let pid = run.pid1("hermesinit");
    // Let boot, the three starts and the main program's exec settle.
    std::thread::sleep(Duration::from_secs(2));
    let a = voluntary_switches(pid);
    std::thread::sleep(Duration::from_secs(3));
    let b = voluntary_switches(pid);
    run.signal("hermesinit", libc::SIGTERM);
    let out = run.wait(secs(30));
    assert!(out.stdout.contains("all-up"), "{}\n{}", out.stdout, out.stderr);
    assert!(b - a <= 2, "PID 1 woke up {} times in 3 s while idle", b - a);
    eprintln!("idle PID 1: {} voluntary context switches in 3 s", b - a);
}
