//! A jail for the s6 tests: a fresh PID + mount namespace whose root is an overlay of the host's
//! `/` (writes land in a tmpfs and vanish with the namespace, so the host's files are never
//! touched), with its own `/proc`, an empty tmpfs `/run`, a `hermes` user (uid 10000) and the
//! applets linked into `/command`. The program given runs chrooted there as PID 1, under a
//! hard timeout that kills the whole namespace.
#![allow(dead_code)]

#[path = "../support/runner.rs"]
mod runner;
pub use runner::{Out, Running, start};

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_hermesinit");
pub const APPLETS: [&str; 7] =
    ["s6-svc", "s6-svstat", "s6-svscanctl", "s6-svwait", "s6-setuidgid", "s6-log", "with-contenv"];
/// PATH inside the jail for programs that must find the real s6 tools first.
pub const REAL_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// PATH inside the jail for programs that must find hermesinit's applets first.
pub const HERMESINIT_PATH: &str = "/command:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Out {
    /// The lines a scenario reported (`| …`), without the marker.
    pub fn said(&self) -> Vec<String> {
        self.stdout.lines().filter_map(|l| l.strip_prefix("| ")).map(str::to_string).collect()
    }
}

/// Is the real s6 here? Without it the differential side cannot run: skipped on a developer
/// machine, a failure on CI.
pub fn real_s6_available(test: &str) -> bool {
    if std::path::Path::new("/usr/bin/s6-svscan").exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: /usr/bin/s6-svscan is missing on CI (apt-get install s6)");
    }
    eprintln!("{test}: skipped: /usr/bin/s6-svscan is missing (apt-get install s6)");
    false
}

pub struct Jail {
    pub dir: PathBuf,
}

impl Jail {
    pub fn new(tag: &str) -> Jail {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hermesinit-s6-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("ovl")).unwrap();
        std::fs::create_dir_all(dir.join("root")).unwrap();
        Jail { dir }
    }

    /// The host shell that builds the root; `pre` runs with `$R` = the new root before the
    /// chroot (bind more things in, write files); then `argv` is exec'd in the root as PID 1
    /// with exactly the environment `env` (plus PATH unless given).
    pub fn run(&self, pre: &str, env: &[(&str, &str)], argv: &[&str], timeout: Duration) -> Out {
        self.start(pre, env, argv).wait(timeout)
    }

    pub fn start(&self, pre: &str, env: &[(&str, &str)], argv: &[&str]) -> Running {
        let d = self.dir.display();
        let links: String = APPLETS.iter().map(|a| format!("ln -sf {BIN} $R/command/{a}; ")).collect();
        // The build tree (binary, cached venv) must stay visible at its own path even when it
        // lives under /tmp, which the jail replaces with an empty tmpfs.
        let target = std::path::Path::new(BIN)
            .ancestors()
            .find(|p| p.file_name().is_some_and(|n| n == "target"))
            .unwrap_or_else(|| std::path::Path::new(BIN).parent().unwrap())
            .display()
            .to_string();
        let script = format!(
            "set -e; R={d}/root; \
             mount -t tmpfs tmpfs {d}/ovl; mkdir -p {d}/ovl/u {d}/ovl/w; \
             mount -t overlay overlay -o lowerdir=/,upperdir={d}/ovl/u,workdir={d}/ovl/w $R; \
             mount --rbind /dev $R/dev; mount -t proc proc $R/proc; \
             mount -t tmpfs -o mode=755 tmpfs $R/run; mount -t tmpfs -o mode=1777 tmpfs $R/tmp; \
             mkdir -p $R{target}; mount --rbind {target} $R{target}; \
             mkdir -p $R/run/service $R/command $R/opt/data $R/etc/hermesinit; {links}\
             grep -q '^hermes:' $R/etc/passwd || echo 'hermes:x:10000:10000:Hermes:/opt/data:/bin/sh' >> $R/etc/passwd; \
             grep -q '^hermes:' $R/etc/group || echo 'hermes:x:10000:' >> $R/etc/group; \
             chown 10000:10000 $R/opt/data; \
             {pre}\n\
             exec chroot $R /usr/bin/env -i \"$@\""
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", &script, "sh"]);
        if !env.iter().any(|(k, _)| *k == "PATH") {
            cmd.arg(format!("PATH={REAL_PATH}"));
        }
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(argv);
        start(cmd)
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Jail {
    /// Run `argv` inside a started jail — same namespaces, same root — as root, with exactly
    /// the environment `env`, like `docker exec`. Waits for the jail's PID 1 to be `pid1_exe`.
    pub fn exec(
        &self,
        running: &Running,
        pid1_exe: &str,
        env: &[(&str, &str)],
        argv: &[&str],
        timeout: Duration,
    ) -> Out {
        let pid1 = running.pid1(pid1_exe);
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &pid1.to_string(), "--mount", "--pid", "--", "chroot"]);
        cmd.arg(self.dir.join("root")).args(["/usr/bin/env", "-i"]);
        if !env.iter().any(|(k, _)| *k == "PATH") {
            cmd.arg(format!("PATH={REAL_PATH}"));
        }
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(argv);
        start(cmd).wait(timeout)
    }
}

/// Shell functions for scenarios, usable with the real s6 and with hermesinit alike:
/// `say` reports a line, `mk NAME RUN [FINISH] [down]` publishes a service atomically (as
/// Hermes does) and waits until it is supervised, `show NAME…` prints every s6-svstat view,
/// `rc CMD…` runs a command and reports its exit code and output (lines joined by `~`),
/// `until_field NAME FIELD VALUE` polls `s6-svstat -o`, `settle NAME` waits until it is down
/// and ready (s6 records a death before the down-readiness), `until_new_pid NAME OLD` waits
/// for a restart.
pub const PRELUDE: &str = r#"
S=/run/service
F=up,wantedup,normallyup,ready,paused,pid,exitcode,signal,signum,updownfor,readyfor
say() { echo "| $*"; }
mk() {
  d=$S/.$1.tmp; mkdir -p $d; printf '#!/bin/sh\n%s\n' "$2" > $d/run; chmod +x $d/run
  if [ -n "$3" ]; then printf '#!/bin/sh\n%s\n' "$3" > $d/finish; chmod +x $d/finish; fi
  if [ -n "$4" ]; then touch $d/down; fi
  mv $d $S/$1; s6-svscanctl -a $S
  i=0; until s6-svstat $S/$1 >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 500 ] && { say "TIMEOUT supervising $1"; return 1; }; sleep 0.01; done
}
show() {
  for n in "$@"; do
    o=$(s6-svstat $S/$n 2>&1); say "$n: $o [rc=$?]"
    say "$n -n: $(s6-svstat -n $S/$n 2>&1)"
    o=$(s6-svstat -o $F $S/$n 2>&1); say "$n -o: $o [rc=$?]"
    say "$n stamps: $(s6-svstat -o updownsince,readysince $S/$n 2>&1)"
    say "$n short: $(s6-svstat -uwNrpest $S/$n 2>&1)"
  done
}
rc() { o=$("$@" 2>&1); r=$?; o=$(printf '%s' "$o" | tr '\n' '~'); say "\$ $* -> rc=$r $o"; }
rcq() { "$@" >/dev/null 2>&1; say "\$ $* -> rc=$?"; }
until_field() {
  i=0; while [ "$(s6-svstat -o $2 $S/$1 2>/dev/null)" != "$3" ]; do
    i=$((i+1)); [ $i -gt 1000 ] && { say "TIMEOUT $1 $2=$3"; return 1; }; sleep 0.01; done
}
settle() { s6-svwait -D -t 5000 $S/$1 >/dev/null 2>&1 || say "TIMEOUT settling $1"; }
until_new_pid() {
  i=0; while :; do p=$(s6-svstat -o pid $S/$1); [ "$p" != "-1" ] && [ "$p" != "$2" ] && break
    i=$((i+1)); [ $i -gt 1000 ] && { say "TIMEOUT new pid $1"; return 1; }; sleep 0.01; done
  say "$1 restarted with a new pid"
}
as_hermes() { setpriv --reuid 10000 --regid 10000 --clear-groups "$@"; }
as_nobody() { setpriv --reuid 65534 --regid 65534 --clear-groups "$@"; }
"#;

/// Make outputs of two supervisors comparable: pids, second counts and TAI64N stamps become
/// placeholders, and s6 2.11's doubled `fatal: : ` becomes `fatal: `.
pub fn normalise(line: &str) -> String {
    let line = line.replace("fatal: : ", "fatal: ");
    let mut out = String::with_capacity(line.len());
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'@' && b.len() >= i + 25 && b[i + 1..i + 25].iter().all(|c| c.is_ascii_hexdigit()) {
            out.push_str("@STAMP");
            i += 25;
            continue;
        }
        if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let j = (i..b.len()).find(|&j| !b[j].is_ascii_digit()).unwrap_or(b.len());
            let num = &line[i..j];
            let rest = &line[j..];
            if rest.starts_with(" seconds") {
                out.push('S');
            } else if out.ends_with("(pid ") {
                out.push('P');
            } else {
                out.push_str(num);
            }
            i = j;
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    // `-o …` and the short flags: pid and second counts by position.
    if let Some((head, fields)) = out.split_once(" -o: ").or_else(|| out.split_once(" short: ")) {
        let short = out.contains(" short: ");
        let (fields, tail) =
            fields.split_once(" [rc=").map(|(f, t)| (f, format!(" [rc={t}"))).unwrap_or((fields, String::new()));
        let mut v: Vec<String> = fields.split(' ').map(str::to_string).collect();
        // -o: up,wantedup,normallyup,ready,paused,pid,exitcode,signal,signum,updownfor,readyfor
        // short (-uwNrpest): up,wantedup,normallyup,ready,pid,exitcode,signal,updownfor
        let (pid, secs): (usize, &[usize]) = if short { (4, &[7]) } else { (5, &[9, 10]) };
        if v.len() > pid && v[pid] != "-1" && v[pid].bytes().all(|c| c.is_ascii_digit()) {
            v[pid] = "P".into();
        }
        for &s in secs {
            if v.len() > s && v[s].bytes().all(|c| c.is_ascii_digit()) {
                v[s] = "S".into();
            }
        }
        return format!("{head}{} {}{tail}", if short { " short:" } else { " -o:" }, v.join(" "));
    }
    out
}

#[test]
fn normalise_hides_pids_seconds_and_stamps() {
    assert_eq!(
        normalise("a: up (pid 123) 45 seconds, normally down [rc=0]"),
        "a: up (pid P) S seconds, normally down [rc=0]"
    );
    assert_eq!(
        normalise("a -o: true true true false false 77 -1 NA -1 3 3 [rc=0]"),
        "a -o: true true true false false P -1 NA -1 S S [rc=0]"
    );
    assert_eq!(normalise("a short: true true true false 77 -1 NA 3"), "a short: true true true false P -1 NA S");
    assert_eq!(normalise("a stamps: @400000006b041a2a0d8b589e @400000006b041a2a0d8b589e"), "a stamps: @STAMP @STAMP");
    assert_eq!(normalise("s6-svc: fatal: : unable to control x"), "s6-svc: fatal: unable to control x");
    assert_eq!(normalise("down (signal 9) 0 seconds, ready 0 seconds"), "down (signal 9) S seconds, ready S seconds");
}
