//! Helpers for the boot integration tests: temporary trees, a fake `/etc`, and running a test
//! function again inside a private mount namespace (`unshare --mount --fork`), so that boot can
//! use its real paths (`/etc/passwd`, `/run/service`, `/opt/hermes/defaults`) without ever
//! touching the host's files.
#![allow(dead_code)]

#[path = "../support/runner.rs"]
mod runner;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static N: AtomicUsize = AtomicUsize::new(0);

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "hi-boot-it-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
# a comment that must survive\n\
hermes:x:10000:10000:Hermes Agent:/opt/data:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";

pub const GROUP: &str = "root:x:0:\ndaemon:x:1:\nhermes:x:10000:\naudio:x:29:hermes\nnogroup:x:65534:\n";

/// Root-only checks skip on a developer's machine, but never pass silently in CI: there a
/// missing root is a failure.
pub fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    assert!(root || std::env::var_os("CI").is_none(), "this test needs root, and CI is set");
    root
}

pub fn owner(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

pub fn lchown(p: &Path, o: (u32, u32)) {
    std::os::unix::fs::lchown(p, Some(o.0), Some(o.1)).unwrap();
}

/// Output of a child run.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// The variable that tells an `#[ignore]`d inner test it runs inside the namespace.
pub const INNER: &str = "HERMESINIT_BOOT_IT_INNER";

/// Run the test `inner` of this test binary inside `unshare --mount --fork`, with `env` added,
/// killing it after `timeout`.
pub fn in_namespace(inner: &str, env: &[(&str, &str)], timeout: Duration) -> Run {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--fork", "--"])
        .arg(&exe)
        .args(["--exact", inner, "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = runner::run(cmd, timeout);
    let run = Run { ok: out.code == 0, stdout: out.stdout, stderr: out.stderr };
    if !run.ok {
        eprintln!("--- {inner} stdout ---\n{}\n--- stderr ---\n{}", run.stdout, run.stderr);
    }
    run
}

/// True when this process is the namespaced re-run.
pub fn inside() -> bool {
    std::env::var_os(INNER).is_some()
}

fn mount_tmpfs(target: &str) {
    nix::mount::mount(Some("none"), target, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("mode=755"))
        .unwrap_or_else(|e| panic!("mount tmpfs on {target}: {e}"));
}

/// Inside the namespace: a fresh `/run` and `/opt` (with `/opt/hermes/defaults/SOUL.md`), and
/// `/etc` overlaid so that `/etc/passwd` and `/etc/group` are the fake ones, replaceable by
/// rename. With `bind_files`, the fake files are bind-mounted over `/etc/passwd` and
/// `/etc/group` instead (the `-v /etc/passwd:/etc/passwd` case: no rename possible).
pub fn fake_system(scratch: &Path, passwd: &str, group: &str, bind_files: bool) {
    assert!(inside(), "only inside the private mount namespace");
    mount_tmpfs("/run");
    mount_tmpfs("/opt");
    std::fs::create_dir_all("/opt/hermes/defaults").unwrap();
    std::fs::write("/opt/hermes/defaults/SOUL.md", "You are Hermes.\n").unwrap();
    if bind_files {
        let (p, g) = (scratch.join("passwd"), scratch.join("group"));
        std::fs::write(&p, passwd).unwrap();
        std::fs::write(&g, group).unwrap();
        for (src, dst) in [(&p, "/etc/passwd"), (&g, "/etc/group")] {
            nix::mount::mount(Some(src.as_path()), dst, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
                .unwrap_or_else(|e| panic!("bind {dst}: {e}"));
        }
    } else {
        std::fs::create_dir_all("/run/etc-overlay/upper").unwrap();
        std::fs::create_dir_all("/run/etc-overlay/work").unwrap();
        nix::mount::mount(
            Some("overlay"),
            "/etc",
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some("lowerdir=/etc,upperdir=/run/etc-overlay/upper,workdir=/run/etc-overlay/work"),
        )
        .unwrap_or_else(|e| panic!("overlay on /etc: {e}"));
        std::fs::write("/etc/passwd", passwd).unwrap();
        std::fs::write("/etc/group", group).unwrap();
    }
}

/// Boot's log lines, on stderr, for the outer test to read.
pub fn tracing_to_stderr() {
    hermesinit::logs::init_tracing();
}

/// `find`-style list of every path under `p` (not following symlinks).
pub fn walk(p: &Path) -> Vec<PathBuf> {
    let mut v = vec![p.to_path_buf()];
    if std::fs::symlink_metadata(p).unwrap().is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            v.extend(walk(&e.unwrap().path()));
        }
    }
    v
}

pub fn script(p: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}
