//! A hostile hermes user (C-SEC-1, C-SEC-2, C-SEC-5): the main program runs as hermes (uid
//! 10000), as an agent's tools do, and tries every known way to get uid or gid 0 through the
//! scan directory and HERMES_HOME. Each payload records `id` in a file; root-only places
//! (`/opt/hermes`, the cont-init directory) must stay untouched. A root-owned slot made by root
//! is the positive control: it does run as root, so the checks can see uid 0 when it happens.

mod harness;
use harness::{BIN, Root, secs};
use std::os::unix::fs::MetadataExt;

/// `pub NAME`: publish the staged `/run/service/.NAME` (hermes builds slots the way Hermes does).
const PRELUDE: &str = "set -u; S=/run/service; D=/opt/data; \
    stage() { rm -rf $S/.$1; mkdir -p $S/.$1; }; pub() { mv $S/.$1 $S/$1; }; \
    script() { printf '#!/bin/sh\\n%s\\n' \"$2\" > $1; chmod 755 $1; }; ";

fn ids_in(root: &Root, name: &str) -> Option<String> {
    std::fs::read_to_string(root.dir.join("opt/data").join(name)).ok().map(|s| s.trim().to_string())
}

#[test]
fn c_sec_1_no_slot_hermes_writes_ever_runs_as_root() {
    let root = Root::new("hostile");
    std::fs::write(root.dir.join("opt/hermes/rootfile"), "root data\n").unwrap();
    let ci = root.dir.join("cont-init.d").display().to_string();
    // Root's own trusted slot (positive control), and one hermes will try to hijack.
    // (A cont-init hook: boot empties the scan directory before hooks run.)
    root.write_exec(
        "cont-init.d/10-root-slots",
        "#!/bin/sh\nset -e; mkdir -p /run/service/rootok /run/service/victim\n\
         printf '#!/bin/sh\\nid -u > /opt/data/rootok; exec sleep 100\\n' > /run/service/rootok/run\n\
         printf '#!/bin/sh\\nexec sleep 100\\n' > /run/service/victim/run\n\
         chmod 755 /run/service/rootok/run /run/service/victim/run\n",
    );
    let pre = "";
    let attacks = format!(
        "{PRELUDE}\
         stage a1; printf 'command: [/bin/sh, -c, \"id -u > /opt/data/a1; id -g >> /opt/data/a1; id > /opt/hermes/pwn1\"]\\n' > $S/.a1/hermesinit.yaml; pub a1; \
         stage a2; printf 'command: [/bin/sh, -c, \"id -u > /opt/data/a2; id -g >> /opt/data/a2\"]\\nuser: root\\n' > $S/.a2/hermesinit.yaml; pub a2; \
         stage a3; printf 'command: [/bin/sh, -c, \"id -u > /opt/data/a3; id -G >> /opt/data/a3\"]\\nuser: \"hermes:0\"\\n' > $S/.a3/hermesinit.yaml; pub a3; \
         stage a4; ln -s /bin/false $S/.a4/run; script $S/.a4/finish \"id -u > $D/a4; id > /opt/hermes/pwn4\"; pub a4; \
         stage a5; script $S/.a5/run 'echo \"id > /opt/hermes/pwn5\"; echo \"id -u > /opt/data/a5log\"; exec sleep 100'; \
           mkdir $S/.a5/log; ln -s /bin/sh $S/.a5/log/run; pub a5; \
         stage a6; script $S/.a6/run 'exec sleep 100'; pub a6; \
         mkdir -p $D/l7; ln -s /opt/hermes/rootfile $D/l7/current; \
         ln -s /opt/hermes $D/lnk; \
         stage a7; printf 'command: [/bin/echo, hello-a7]\\nlog: {{dir: /opt/data/l7}}\\n' > $S/.a7/hermesinit.yaml; pub a7; \
         stage a8; printf 'command: [/bin/echo, hello-a8]\\nlog: {{dir: /opt/hermes/logs8}}\\n' > $S/.a8/hermesinit.yaml; pub a8; \
         stage a9; printf 'command: [/bin/echo, hello-a9]\\nlog: {{dir: /opt/data/lnk/logs9}}\\n' > $S/.a9/hermesinit.yaml; pub a9; \
         stage a10; printf 'command: [/bin/echo, hello-a10]\\nlog: {{dir: {ci}}}\\n' > $S/.a10/hermesinit.yaml; pub a10; \
         sleep 1; \
         script $S/a6/run \"id -u > $D/a6; exec sleep 100\"; {BIN} svc restart a6; \
         mv $S/victim $S/.victim-old; stage victim; script $S/.victim/run \"id -u > $D/victim; exec sleep 100\"; pub victim; \
         sleep 1.5; {BIN} svc restart victim; sleep 1.5; {BIN} svc status; ls -la $S; exit 0"
    );
    let out = root.run_ns(
        true,
        pre,
        &format!("exec {BIN} init sh -c '{}'", attacks.replace('\'', "'\\''")),
        &[],
        &[],
        secs(60),
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let ctx = format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    // The positive control: a root-made, root-only slot runs as root.
    assert_eq!(ids_in(&root, "rootok").as_deref(), Some("0"), "{ctx}");
    // 1-3: native specs in a hermes directory run as hermes whatever `user:` says.
    assert_eq!(ids_in(&root, "a1").as_deref(), Some("10000\n10000"), "{ctx}");
    assert_eq!(ids_in(&root, "a2").as_deref(), Some("10000\n10000"), "{ctx}");
    let a3 = ids_in(&root, "a3").unwrap_or_default();
    assert!(a3.starts_with("10000\n") && !a3.split_whitespace().any(|g| g == "0"), "a3={a3:?} {ctx}");
    // ... and a `user:` naming anyone but the directory's owner is reported; boot's own slots,
    // which name their owner (`user: hermes` in a hermes-owned directory), are not.
    assert!(out.stderr.contains("service a2: `user: root` ignored"), "{ctx}");
    assert!(out.stderr.contains("service a3: `user: hermes:0` ignored"), "{ctx}");
    assert!(out.stderr.contains("service gateway-default: registered"), "{ctx}");
    assert!(!out.stderr.contains("service gateway-default: `user:"), "{ctx}");
    // 4: a symlinked run is refused; its finish never runs (and never as root).
    assert!(out.stderr.contains("refusing run: a symlink"), "{ctx}");
    assert_ne!(ids_in(&root, "a4").as_deref(), Some("0"), "{ctx}");
    // 5: a symlinked log/run is refused: the service's output is never executed.
    assert!(out.stderr.contains("refusing log/run: a symlink"), "{ctx}");
    assert!(ids_in(&root, "a5log").is_none(), "{ctx}");
    // 6: run replaced after load: the new file runs as the directory's owner.
    assert_eq!(ids_in(&root, "a6").as_deref(), Some("10000"), "{ctx}");
    // The hijacked name: hermes' directory runs as hermes.
    assert_eq!(ids_in(&root, "victim").as_deref(), Some("10000"), "{ctx}");
    // 7-10: log files: symlinked `current`, root-only dirs, symlinked components, cont-init.
    assert_eq!(std::fs::read_to_string(root.dir.join("opt/hermes/rootfile")).unwrap(), "root data\n", "{ctx}");
    assert!(out.stderr.contains("refusing to follow /opt/data/l7/current"), "{ctx}");
    assert!(!root.dir.join("opt/hermes/logs8").exists(), "{ctx}");
    assert!(out.stderr.contains("refusing to follow /opt/data/lnk"), "{ctx}");
    assert!(!root.dir.join("opt/hermes/logs9").exists(), "{ctx}");
    assert_eq!(std::fs::read_dir(root.dir.join("cont-init.d")).unwrap().count(), 1, "{ctx}");
    // Nothing root-owned appeared where hermes pointed, and no pwn file exists.
    for n in ["pwn1", "pwn4", "pwn5"] {
        assert!(!root.dir.join("opt/hermes").join(n).exists(), "{n}: {ctx}");
    }
    for e in walk(&root.dir.join("opt/data")) {
        let m = std::fs::symlink_metadata(&e).unwrap();
        let created_by_test_root = e.ends_with("rootok") || e == root.dir.join("opt/data");
        assert!(created_by_test_root || m.uid() != 0, "{} is root-owned: {ctx}", e.display());
    }
}

#[test]
fn c_sec_2_boot_never_follows_a_planted_gateway_log_symlink() {
    let root = Root::new("hostile-boot");
    let ci = root.dir.join("cont-init.d");
    // Escalation 5: logs/gateways/default -> the cont-init directory, gateway stamped running.
    let pre = format!(
        "mkdir -p /opt/data/logs/gateways; ln -s {} /opt/data/logs/gateways/default; \
         echo '{{\"gateway_state\":\"running\"}}' > /opt/data/gateway_state.json; chown -hR 10000:10000 /opt/data;",
        ci.display()
    );
    let out = root.run_ns(true, &pre, &format!("exec {BIN} init sh -c 'sleep 1.5'"), &[], &[], secs(30));
    let ctx = format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(!ci.join("current").exists(), "{ctx}");
    assert_eq!(std::fs::read_dir(&ci).unwrap().count(), 0, "{ctx}");
    assert!(out.stderr.contains("refusing"), "{ctx}");
}

#[test]
fn c_sec_5_bad_slots_are_reported_once_and_rescans_coalesce() {
    let root = Root::new("hostile-flood");
    // 300 invalid specs, then churn: mkdir/rmdir bursts. Every problem is logged once.
    let script = format!(
        "{PRELUDE}i=0; while [ $i -lt 300 ]; do stage b$i; echo 'command: [' > $S/.b$i/hermesinit.yaml; pub b$i; i=$((i+1)); done; \
         stage fifo; mkfifo $S/.fifo/hermesinit.yaml; pub fifo; \
         stage sparse; truncate -s 1G $S/.sparse/hermesinit.yaml; pub sparse; \
         stage deep; python3 -c \"print('command: ' + '[' * 100000 + ']' * 100000)\" > $S/.deep/hermesinit.yaml; pub deep; \
         j=0; while [ $j -lt 20 ]; do mkdir $S/c$j; rmdir $S/c$j; j=$((j+1)); done; \
         sleep 1; stage ok; script $S/.ok/run 'exec sleep 100'; pub ok; \
         {BIN} svc wait --up ok --timeout 5 && echo ok-up; exit 0"
    );
    let out = root.init(&["sh", "-c", &script], &[], secs(60));
    let ctx = format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ok-up"), "{ctx}");
    for name in ["b0", "b150", "b299", "fifo", "sparse", "deep"] {
        let n = out.stderr.matches(&format!("service {name} not started")).count();
        assert_eq!(n, 1, "{name} reported {n} times: {ctx}");
    }
    assert!(out.stderr.contains("not a regular file") && out.stderr.contains("larger than 65536 bytes"), "{ctx}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v = vec![dir.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                v.extend(walk(&p));
            } else {
                v.push(p);
            }
        }
    }
    v
}

/// C-SEC-5 at scale: 6,000 slots appear at once (over the 5,000 cap); PID 1 registers 5,000
/// with one error line for the rest, and `svc status` answers (its latency is printed).
#[test]
fn c_sec_5_thousands_of_slots_register_once_and_status_answers() {
    let root = Root::new("hostile-scale");
    let py = "import os\n\
        S='/run/service'\n\
        for i in range(6000):\n\
        \x20   d=f'{S}/.s{i}'; os.mkdir(d)\n\
        \x20   open(f'{d}/hermesinit.yaml','w').write('command: [/bin/sleep, \"100\"]\\n')\n\
        \x20   open(f'{d}/down','w').close()\n\
        \x20   os.rename(d, f'{S}/s{i}')\n";
    let script = format!(
        "python3 -c \"$PY\"; i=0; while [ $i -lt 120 ]; do i=$((i+1)); \
           n=$({BIN} svc status --json 2>/dev/null | grep -c '\"name\"'); [ \"$n\" -ge 5000 ] && break; sleep 0.5; done; \
         for i in 1 2 3 4 5; do t0=$(date +%s%N); {BIN} svc status s4321 >/dev/null && t1=$(date +%s%N) && \
           echo status-ms=$(( (t1-t0)/1000000 )); done; \
         t0=$(date +%s%N); n=$({BIN} svc status --json | grep -c '\"name\"'); t1=$(date +%s%N); \
         echo all=$n all-ms=$(( (t1-t0)/1000000 )); \
         echo fds=$(ls /proc/1/fd | wc -l); grep VmRSS /proc/1/status; exit 0"
    );
    let out = root.init(&["sh", "-c", &script], &[("PY", py)], secs(120));
    let ctx =
        format!("stdout:\n{}\nstderr (tail):\n{}", out.stdout, &out.stderr[out.stderr.len().saturating_sub(3000)..]);
    eprintln!("{}", out.stdout);
    assert!(out.stdout.contains("all=5000 "), "{ctx}");
    assert_eq!(out.stderr.matches("service(s) not started: at most 5000 services").count(), 1, "{ctx}");
    let ms: Vec<u64> = out.stdout.lines().filter_map(|l| l.strip_prefix("status-ms=")?.parse().ok()).collect();
    assert_eq!(ms.len(), 5, "{ctx}");
    // Answered (each line is printed only when `svc status` succeeded), each time; how fast is
    // measured, not asserted (printed above; bench row S
    // times `svc status` against s6 as the slot count grows).
    // Bounded stderr: 1,000 refused slots are one line, not one per slot per rescan.
    assert!(out.stderr.len() < 2_000_000, "{} bytes of stderr", out.stderr.len());
}
