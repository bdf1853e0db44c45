//! The `hermes` privilege-drop shim (C-SHIM) and the terminal contract (C-INIT-5).

mod harness;
use harness::{BIN, Root, secs};

/// Run the shim (through a link named `hermes`, first on PATH) as `uid` with extra env.
fn shim(root: &Root, uid: u32, env: &[(&str, &str)], pre: &str) -> harness::Out {
    let drop = if uid == 0 { String::new() } else { format!("setpriv --reuid {uid} --regid {uid} --clear-groups ") };
    let body = format!(
        "mkdir -p /opt/hermes/bin && ln -sf {BIN} /opt/hermes/bin/hermes; {pre} \
         PATH=/opt/hermes/bin:/opt/hermes/.venv/bin:$PATH exec {drop}hermes config set x 1"
    );
    root.run_ns(false, "", &body, &[], env, secs(20))
}

#[test]
fn c_shim_2_root_is_dropped_to_hermes_with_groups_and_home() {
    let root = Root::new("shim-root");
    let out = shim(&root, 0, &[("HOME", "/root")], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "HERMES uid=10000 gid=10000 groups=10000 29 home=/opt/data args=config set x 1");
}

#[test]
fn c_shim_1_non_root_callers_exec_unchanged() {
    let root = Root::new("shim-user");
    for uid in [10000, 1234] {
        let out = shim(&root, uid, &[("HOME", "/somewhere")], "");
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.starts_with(&format!("HERMES uid={uid} ")), "{}", out.stdout);
        assert!(out.stdout.contains("home=/somewhere"));
    }
}

#[test]
fn c_shim_3_opt_out_table_with_strict_truthiness() {
    let root = Root::new("shim-optout");
    for v in ["1", "true", "TRUE", "True", "yes", "YES", "Yes"] {
        let out = shim(&root, 0, &[("HERMES_DOCKER_EXEC_AS_ROOT", v)], "");
        assert!(out.stdout.starts_with("HERMES uid=0 "), "{v}: {}", out.stdout);
    }
    for v in ["0", "false", "no", "", "garbage", "2"] {
        let out = shim(&root, 0, &[("HERMES_DOCKER_EXEC_AS_ROOT", v)], "");
        assert!(out.stdout.starts_with("HERMES uid=10000 "), "{v:?}: {}", out.stdout);
    }
}

#[test]
fn c_shim_4_failed_drop_exits_126_and_missing_cli_127() {
    let root = Root::new("shim-fail");
    std::fs::write(root.dir.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let out = shim(&root, 0, &[], "");
    assert_eq!(out.code, 126, "{}", out.stderr);
    assert!(
        out.stderr.contains("--user hermes") && out.stderr.contains("HERMES_DOCKER_EXEC_AS_ROOT=1"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "never runs on as root");
    let root = Root::new("shim-missing");
    let out = shim(&root, 0, &[], "rm /opt/hermes/.venv/bin/hermes;");
    assert_eq!(out.code, 127, "{}", out.stderr);
    assert!(out.stderr.contains("/opt/hermes/.venv/bin/hermes"));
}

#[test]
fn c_shim_5_no_recursion_whatever_path_holds() {
    let root = Root::new("shim-rec");
    // The shim is first on PATH, and also the only `hermes` in every other PATH entry: it must
    // never look PATH up, so the real CLI runs exactly once.
    let out = shim(
        &root,
        0,
        &[],
        "mkdir -p /run/p1 /run/p2 && ln -s /opt/hermes/bin/hermes /run/p1/hermes && ln -s /opt/hermes/bin/hermes /run/p2/hermes; export PATH=/run/p1:/run/p2:$PATH;",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.matches("HERMES").count(), 1);
}

#[test]
fn c_init_5_tty_main_program_gets_the_terminal_foreground_and_ctrl_c() {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::process::CommandExt;
    let root = Root::new("tty");
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = pty.slave.as_raw_fd();
    let script = "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; echo pg=$(ps -o pgid= -p $$ | tr -d ' ') tpg=$(ps -o tpgid= -p $$ | tr -d ' '); \
        trap 'echo got-int; exit 130' INT; echo ready; while :; do sleep 0.05; done";
    let setup = format!(
        "mount -t tmpfs tmpfs /run; mount --bind {d}/passwd /etc/passwd; mount --bind {d}/group /etc/group; \
         mount --bind {d}/opt /opt; exec {BIN} init sh -c \"$0\"",
        d = root.dir.display()
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--mount-proc",
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        &setup,
        script,
    ]);
    cmd.env("HERMESINIT_CONFIG", root.dir.join("config.yaml"));
    unsafe {
        cmd.stdin(std::process::Stdio::from_raw_fd(libc::dup(slave)))
            .stdout(std::process::Stdio::from_raw_fd(libc::dup(slave)))
            .stderr(std::process::Stdio::from_raw_fd(libc::dup(slave)))
            .pre_exec(move || {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
    }
    let mut child = cmd.spawn().unwrap();
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut seen = String::new();
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    let mut sent = false;
    while t0.elapsed() < secs(15) {
        // The master read blocks; the child's output comes quickly, and EIO ends it.
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
        if seen.contains("ready") && !sent {
            master.write_all(b"\x03").unwrap();
            sent = true;
        }
        if seen.contains("got-int") {
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(seen.contains("is-a-tty"), "{seen}");
    let pg = seen.split("pg=").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or("?").to_string();
    assert!(seen.contains(&format!("tpg={pg}")), "main program is the foreground group: {seen}");
    assert!(seen.contains("got-int"), "Ctrl-C reaches the main program: {seen}");
    assert_eq!(status.code(), Some(130));
}
