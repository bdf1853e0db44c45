//! Runs the real binary as PID 1 of a fresh PID + mount namespace, on a fake root: /etc/passwd,
//! /etc/group, /opt and /run are replaced inside the namespace only, so the host's real files
//! are never touched. Every run has a hard timeout.
#![allow(dead_code)]

#[path = "../support/runner.rs"]
mod runner;
pub use runner::{Out, Running, run, start};

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_hermesinit");

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
hermes:x:10000:10000:Hermes:/opt/data:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
pub const GROUP: &str = "root:x:0:\nhermes:x:10000:\naudio:x:29:hermes\nnogroup:x:65534:\n";

/// A stand-in for the Hermes CLI: reports who ran it and with what.
pub const FAKE_HERMES: &str =
    "#!/bin/sh\necho \"HERMES uid=$(id -u) gid=$(id -g) groups=$(id -G) home=$HOME args=$*\"\n";

pub struct Root {
    pub dir: PathBuf,
}

impl Root {
    pub fn new(tag: &str) -> Root {
        let dir = std::env::temp_dir().join(format!("hermesinit-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("opt/hermes/.venv/bin")).unwrap();
        std::fs::create_dir_all(dir.join("opt/data")).unwrap();
        std::fs::create_dir_all(dir.join("cont-init.d")).unwrap();
        std::fs::write(dir.join("passwd"), PASSWD).unwrap();
        std::fs::write(dir.join("group"), GROUP).unwrap();
        let r = Root { dir };
        r.write_exec("opt/hermes/.venv/bin/hermes", FAKE_HERMES);
        r.config("");
        r
    }

    pub fn write_exec(&self, rel: &str, text: &str) {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// hermesinit's config; `extra` is appended YAML.
    pub fn config(&self, extra: &str) {
        let grace = if extra.contains("kill_grace_ms") { "" } else { "kill_grace_ms: 1000\n" };
        let c = format!("cont_init_dir: {}/cont-init.d\n{grace}{extra}", self.dir.display());
        std::fs::write(self.dir.join("config.yaml"), c).unwrap();
    }

    /// The shell that sets up the namespace's view and then execs `cmd` as PID 1.
    fn setup(&self, pre: &str) -> String {
        let d = self.dir.display();
        format!(
            "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/service; chown 10000:10000 /run/service; \
             mount --bind {d}/passwd /etc/passwd; mount --bind {d}/group /etc/group; \
             mount --bind {d}/opt /opt; chown -R 10000:10000 /opt/data; {pre} set +e; "
        )
    }

    /// Run `hermesinit init ARGS…` as PID 1. `env` adds variables.
    pub fn init(&self, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Out {
        self.run_ns(true, "", &format!("exec {BIN} init \"$@\""), args, env, timeout)
    }

    /// Run a shell snippet inside the namespace (as PID 1 when `pid1`), with "$@" = args.
    pub fn run_ns(
        &self,
        pid1: bool,
        pre: &str,
        body: &str,
        args: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Out {
        let script = format!("{}{body}", self.setup(pre));
        let mut cmd = Command::new("unshare");
        if pid1 {
            cmd.args(["--pid", "--fork", "--mount-proc"]);
        }
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c", &script, "sh"]);
        cmd.args(args);
        cmd.env("HERMESINIT_CONFIG", self.dir.join("config.yaml"));
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd, timeout)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Root {
    /// Start `hermesinit init ARGS…` as PID 1 and return at once.
    pub fn spawn_init(&self, args: &[&str], env: &[(&str, &str)]) -> Running {
        let script = format!("{}exec {BIN} init \"$@\"", self.setup(""));
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--mount-proc", "--mount", "--propagation", "private", "--", "/bin/sh", "-c"]);
        cmd.arg(&script).arg("sh").args(args);
        cmd.env("HERMESINIT_CONFIG", self.dir.join("config.yaml"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        start(cmd)
    }
}

impl Root {
    /// The command that runs `hermesinit init ARGS…` as PID 1, for a test that wires its stdio
    /// itself (a slow or stalled reader of the container's stdout).
    pub fn init_command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let script = format!("{}exec {BIN} init \"$@\"", self.setup(""));
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--mount-proc", "--mount", "--propagation", "private", "--", "/bin/sh", "-c"]);
        cmd.arg(&script).arg("sh").args(args);
        cmd.env("HERMESINIT_CONFIG", self.dir.join("config.yaml"));
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Open fds of a process (`/proc/<pid>/fd`).
pub fn proc_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn proc_rss_kb(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time a process used so far, in clock ticks (utime + stime of `/proc/<pid>/stat`).
pub fn proc_ticks(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may contain spaces: state is field 3, utime 14, stime 15.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}
