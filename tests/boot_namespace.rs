//! Boot end to end with its real paths (`/etc/passwd`, `/etc/group`, `/run/service`,
//! `/run/s6/…`, `/opt/hermes/defaults`), each scenario re-run inside a private mount namespace
//! over fake files (never the host's), with a hard timeout. The outer test checks boot's log
//! lines; the inner one (an `#[ignore]`d test that only does something inside the namespace)
//! checks the files.

mod boot_common;

use boot_common::*;
use hermesinit::boot::{self, Context};
use hermesinit::config::Config;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

const DIR: &str = "HERMESINIT_BOOT_IT_DIR";
const TIMEOUT: Duration = Duration::from_secs(60);

fn config(dir: &Path) -> Config {
    Config { hermes_home: dir.join("data"), cont_init_dir: dir.join("cont-init.d"), ..Config::default() }
}

fn it_dir() -> PathBuf {
    PathBuf::from(std::env::var_os(DIR).expect("dir"))
}

fn outer(inner: &str, env: &[(&str, &str)]) -> Run {
    if !is_root() {
        eprintln!("skipped: needs root for a mount namespace");
        return Run { ok: true, stdout: "INNER-OK".into(), stderr: String::new() };
    }
    let t = TempDir::new(inner);
    let dir = t.path().to_string_lossy().into_owned();
    let mut env = env.to_vec();
    env.push((DIR, &dir));
    let run = in_namespace(inner, &env, TIMEOUT);
    assert!(run.ok, "inner test {inner} failed");
    assert!(run.stdout.contains("INNER-OK"), "inner test {inner} did not run:\n{}", run.stdout);
    run
}

fn down(slot: &str) -> bool {
    Path::new("/run/service").join(slot).join("down").exists()
}

fn slots() -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir("/run/service").unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

fn boot_log(home: &Path) -> Vec<String> {
    std::fs::read_to_string(home.join("logs/container-boot.log")).unwrap().lines().map(str::to_string).collect()
}

/// `<%Y-%m-%dT%H:%M:%S+0000> profile=<p> prior_state=<s> action=<a>`
fn assert_line(line: &str, profile: &str, prior: &str, action: &str) {
    let (ts, rest) = line.split_once(' ').unwrap();
    assert_eq!(ts.len(), 24, "{line}");
    assert!(ts.ends_with("+0000") && ts.as_bytes()[10] == b'T', "{line}");
    assert_eq!(rest, format!("profile={profile} prior_state={prior} action={action}"));
}

// ---------------------------------------------------------------------------------------------

/// C-BOOT-1..9 together, then again (C-BOOT idempotence): PUID/PGID remap with HERMES_ winning,
/// root-written files healed, a symlink out of the volume never followed, bootstrap state,
/// the reconcile table, the dashboard toggle, hooks with the env snapshot, the boot log.
#[test]
fn c_boot_full_boot_remaps_heals_reconciles_and_is_idempotent() {
    let run = outer(
        "inner_full_boot",
        &[
            ("HERMES_UID", "1234"),
            ("PUID", "999"),
            ("PGID", "4321"),
            ("HERMES_DASHBOARD", "1"),
            ("HERMES_GATEWAY_BOOTSTRAP_STATE", "running"),
            ("EMPTY_VAR", ""),
            ("dotted.name", "dot"),
        ],
    );
    let e = &run.stderr;
    assert!(e.contains("[stage2] Changing hermes UID to 1234"), "{e}");
    assert!(e.contains("[stage2] Changing hermes GID to 4321"), "{e}");
    assert!(e.contains("/data/workspace/host: another mount"), "{e}");
    assert!(e.contains("/data/config.yaml: another mount"), "{e}");
    let refusals: Vec<&str> = e.lines().filter(|l| l.contains("refusing")).collect();
    assert_eq!(refusals.len(), 2, "the listed gateway.lock symlink, once per boot: {e}");
    assert!(refusals.iter().all(|l| l.ends_with("/data/gateway.lock")), "{e}");
    assert_eq!(e.matches("[stage2] Changing").count(), 2, "the second boot remaps nothing: {e}");
    let sweeps: Vec<&str> = e.lines().filter(|l| l.contains("boot: sweep: scanned")).collect();
    assert_eq!(sweeps.len(), 2, "{e}");
    assert!(!sweeps[0].contains("changed 0,"), "{}", sweeps[0]);
    assert!(sweeps[1].contains("changed 0,"), "the second sweep changes nothing: {}", sweeps[1]);
    assert!(e.contains("boot: hooks: running") && e.contains("10-add exited with 0"), "{e}");
    assert_eq!(e.matches("boot: finished in").count(), 2, "{e}");
}

#[test]
#[ignore = "runs inside the mount namespace of c_boot_full_boot_remaps_heals_reconciles_and_is_idempotent"]
fn inner_full_boot() {
    if !inside() {
        return;
    }
    let dir = it_dir();
    fake_system(&dir, PASSWD, GROUP, false);
    tracing_to_stderr();
    let home = dir.join("data");
    let h = (10000, 10000);
    // The volume as the old image left it: hermes-owned, plus what root `docker exec` wrote.
    for d in ["profiles/coder", "profiles/idle", "profiles/broken", "profiles/default", "profiles/nosoul", "sessions"] {
        std::fs::create_dir_all(home.join(d)).unwrap();
    }
    std::fs::create_dir_all(home.join("skills/a")).unwrap();
    for (p, state) in [
        ("coder", &br#"{"gateway_state":"running"}"#[..]),
        ("idle", br#"{"gateway_state":"stopped"}"#),
        ("broken", b"{garbage"),
        ("default", br#"{"gateway_state":"running"}"#),
    ] {
        std::fs::write(home.join("profiles").join(p).join("SOUL.md"), "soul").unwrap();
        std::fs::write(home.join("profiles").join(p).join("gateway_state.json"), state).unwrap();
        std::fs::write(home.join("profiles").join(p).join("gateway.pid"), "42").unwrap();
    }
    std::fs::write(home.join("sessions/s1.json"), "{}").unwrap();
    std::fs::write(home.join("auth.json"), "{}").unwrap();
    std::fs::set_permissions(home.join("auth.json"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let outside = dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "s").unwrap();
    symlink(&outside, home.join("skills/a/escape")).unwrap();
    symlink(&outside, home.join("skills/rootlink")).unwrap();
    symlink(outside.join("secret"), home.join("gateway.lock")).unwrap();
    for p in walk(&home) {
        lchown(&p, h);
    }
    lchown(&home.join("auth.json"), (0, 0));
    lchown(&home.join("sessions/s1.json"), (0, 0));
    lchown(&home.join("skills/rootlink"), (0, 0));
    // Host bind mounts inside the volume: a directory in a subtree and a top-level file.
    let host = dir.join("host");
    std::fs::create_dir_all(host.join("dir")).unwrap();
    std::fs::write(host.join("dir/host-file"), "h").unwrap();
    std::fs::write(host.join("config.yaml"), "model: host\n").unwrap();
    std::fs::create_dir_all(home.join("workspace/host")).unwrap();
    std::fs::write(home.join("config.yaml"), "").unwrap();
    let bind = |src: &Path, dst: &Path| {
        nix::mount::mount(Some(src), dst, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).unwrap()
    };
    bind(&host.join("dir"), &home.join("workspace/host"));
    bind(&host.join("config.yaml"), &home.join("config.yaml"));
    let hooks = dir.join("cont-init.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let out = dir.join("hooks.out");
    script(
        &hooks.join("10-add"),
        &format!(
            "printf hooked > /run/s6/container_environment/HOOK_VAR\n\
             echo \"hook1 uid=$(id -u) HERMES_UID=$HERMES_UID PATH=$PATH\" >> {}",
            out.display()
        ),
    );
    script(&hooks.join("20-read"), &format!("echo \"hook2 HOOK_VAR=$HOOK_VAR\" >> {}", out.display()));

    let cfg = config(&dir);
    let args: Vec<String> = Vec::new();
    boot::run(&Context { config: &cfg, main_args: &args }).expect("boot");

    // C-BOOT-2: only the hermes lines changed.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert_eq!(passwd, PASSWD.replace("hermes:x:10000:10000:", "hermes:x:1234:4321:"));
    assert_eq!(std::fs::read_to_string("/etc/group").unwrap(), GROUP.replace("hermes:x:10000:", "hermes:x:4321:"));
    // C-BOOT-3/4: everything of the volume is the new hermes (links inside subtrees included,
    // never their targets), except the refused top-level symlink; outside untouched.
    let new = (1234, 4321);
    for p in walk(&home) {
        if p.ends_with("gateway.lock") || p.ends_with("config.yaml") || p.starts_with(home.join("workspace/host")) {
            continue;
        }
        assert_eq!(owner(&p), new, "{}", p.display());
    }
    assert_eq!(owner(&home.join("gateway.lock")), (10000, 10000));
    // Other mounts are neither entered nor changed: their owners are the host's.
    for p in [home.join("workspace/host"), home.join("workspace/host/host-file"), home.join("config.yaml")] {
        assert_eq!(owner(&p), (0, 0), "{}", p.display());
    }
    assert_eq!(owner(&outside), (0, 0));
    assert_eq!(owner(&outside.join("secret")), (0, 0));
    assert_eq!(std::fs::read_to_string(home.join("SOUL.md")).unwrap(), "You are Hermes.\n");
    for d in ["logs/gateways", "cron", "memories", "platforms/pairing", "workspace", "home"] {
        assert!(home.join(d).is_dir(), "{d}");
    }
    // C-BOOT-1 / C-S6-1.
    let envd = Path::new("/run/s6/container_environment");
    assert_eq!(std::fs::read_to_string(envd.join("HERMES_UID")).unwrap(), "1234");
    assert_eq!(std::fs::read_to_string(envd.join("EMPTY_VAR")).unwrap(), "");
    assert_eq!(std::fs::read_to_string(envd.join("dotted.name")).unwrap(), "dot");
    assert_eq!(std::fs::read_to_string(envd.join("HOOK_VAR")).unwrap(), "hooked");
    let m = std::fs::metadata(envd).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 4321, 0o750));
    assert_eq!(owner(&envd.join("PGID")), (0, 4321), "regrouped after the remap");
    assert!(std::fs::symlink_metadata("/run/s6/basedir").unwrap().is_dir());
    // C-BOOT-5: bootstrap state for the root profile.
    assert_eq!(std::fs::read_to_string(home.join("gateway_state.json")).unwrap(), "{\"gateway_state\":\"running\"}\n");
    // C-BOOT-7 / C-SVC-1.
    assert_eq!(slots(), ["dashboard", "gateway-broken", "gateway-coder", "gateway-default", "gateway-idle"]);
    assert!(!down("gateway-default") && !down("gateway-coder") && !down("dashboard"));
    assert!(down("gateway-idle") && down("gateway-broken"));
    assert_eq!(owner(Path::new("/run/service")), new);
    assert_eq!(owner(Path::new("/run/service/gateway-coder")), new);
    assert!(!home.join("profiles/coder/gateway.pid").exists());
    assert!(home.join("profiles/default/gateway.pid").exists());
    // C-BOOT-6.
    let hooks_out = std::fs::read_to_string(&out).unwrap();
    let first = hooks_out.lines().next().unwrap();
    assert!(first.starts_with("hook1 uid=0 HERMES_UID=1234 PATH=/command:"), "{hooks_out}");
    assert_eq!(hooks_out.lines().nth(1), Some("hook2 HOOK_VAR=hooked"));
    // C-BOOT-9.
    let log = boot_log(&home);
    assert_eq!(log.len(), 4, "{log:?}");
    assert_line(&log[0], "broken", "None", "registered");
    assert_line(&log[1], "coder", "running", "started");
    assert_line(&log[2], "idle", "stopped", "registered");
    assert_line(&log[3], "default", "running", "started");
    assert_eq!(owner(&home.join("logs/container-boot.log")), new);

    // `docker restart`: the same boot again changes nothing that is right.
    let ino = std::fs::metadata("/etc/passwd").unwrap().ino();
    boot::run(&Context { config: &cfg, main_args: &args }).expect("second boot");
    assert_eq!(std::fs::metadata("/etc/passwd").unwrap().ino(), ino, "passwd not rewritten");
    assert_eq!(slots(), ["dashboard", "gateway-broken", "gateway-coder", "gateway-default", "gateway-idle"]);
    let log = boot_log(&home);
    assert_eq!(log.len(), 8);
    assert_line(&log[7], "default", "running", "started");
    println!("INNER-OK");
}

// ---------------------------------------------------------------------------------------------

/// C-BOOT-3: a symlinked `auth.json` is left alone with a `refusing` line; C-BOOT-10: a
/// dashboard container gets no gateway slot, and still the readiness line; C-BOOT-2: an
/// invalid HERMES_UID is ignored with a warning (no fallback to PUID).
#[test]
fn c_boot_symlinked_auth_json_refused_and_dashboard_container_has_no_slots() {
    let run = outer("inner_symlink_dashboard", &[("HERMES_UID", "abc"), ("PUID", "1000")]);
    let e = &run.stderr;
    assert!(e.lines().any(|l| l.contains("refusing") && l.contains("/data/auth.json")), "{e}");
    assert!(e.contains("ignoring HERMES_UID=\"abc\""), "{e}");
    assert!(!e.contains("[stage2] Changing"), "{e}");
    assert!(e.contains("dashboard container: no gateway slots"), "{e}");
}

#[test]
#[ignore = "runs inside the mount namespace of c_boot_symlinked_auth_json_refused_and_dashboard_container_has_no_slots"]
fn inner_symlink_dashboard() {
    if !inside() {
        return;
    }
    let dir = it_dir();
    fake_system(&dir, PASSWD, GROUP, false);
    tracing_to_stderr();
    let home = dir.join("data");
    std::fs::create_dir_all(&home).unwrap();
    let target = dir.join("root-secret");
    std::fs::write(&target, "secret").unwrap();
    symlink(&target, home.join("auth.json")).unwrap();
    lchown(&home.join("auth.json"), (10000, 10000));
    let cfg = config(&dir);
    let args = vec!["dashboard".to_string()];
    boot::run(&Context { config: &cfg, main_args: &args }).expect("boot");
    assert_eq!(owner(&target), (0, 0));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "secret");
    assert_eq!(std::fs::read_to_string("/etc/passwd").unwrap(), PASSWD);
    assert_eq!(slots(), ["dashboard"]);
    assert!(down("dashboard"), "HERMES_DASHBOARD unset: registered down");
    let log = boot_log(&home);
    assert_eq!(log.len(), 1);
    assert_line(&log[0], "default", "None", "skipped");
    println!("INNER-OK");
}

// ---------------------------------------------------------------------------------------------

/// C-BOOT-6: a failing hook stops boot with its exit code, later hooks never run, and no
/// readiness line is written. C-BOOT-2 with `/etc/passwd` and `/etc/group` bind-mounted files
/// (not renameable): rewritten in place. C-BOOT-8: the legacy `gateway run` migration.
#[test]
fn c_boot_failing_hook_stops_boot_and_bind_mounted_passwd_is_rewritten_in_place() {
    let run = outer("inner_failing_hook", &[("HERMES_GID", "777")]);
    let e = &run.stderr;
    assert!(e.contains("[stage2] Changing hermes GID to 777"), "{e}");
    assert!(e.contains("rewriting it in place"), "{e}");
    assert!(e.contains("20-fail exited with 7"), "{e}");
    assert!(!e.contains("boot: finished in"), "{e}");
}

#[test]
#[ignore = "runs inside the mount namespace of c_boot_failing_hook_stops_boot_and_bind_mounted_passwd_is_rewritten_in_place"]
fn inner_failing_hook() {
    if !inside() {
        return;
    }
    let dir = it_dir();
    fake_system(&dir, PASSWD, GROUP, true);
    tracing_to_stderr();
    let home = dir.join("data");
    let hooks = dir.join("cont-init.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let out = dir.join("hooks.out");
    for (name, word, code) in [("10-ok", "ok", 0), ("20-fail", "fail", 7), ("30-never", "never", 0)] {
        script(&hooks.join(name), &format!("echo {word} >> {}; exit {code}", out.display()));
    }
    let cfg = config(&dir);
    let args: Vec<String> = ["gateway", "run"].map(String::from).to_vec();
    let err = boot::run(&Context { config: &cfg, main_args: &args }).unwrap_err();
    assert_eq!(err.code, 7);
    assert!(err.reason.contains("20-fail"), "{}", err.reason);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "ok\nfail\n");
    assert!(!home.join("logs/container-boot.log").exists(), "no readiness line after a failed boot");
    assert_eq!(
        std::fs::read_to_string("/etc/passwd").unwrap(),
        PASSWD.replace("hermes:x:10000:10000:", "hermes:x:10000:777:")
    );
    assert_eq!(std::fs::read_to_string("/etc/group").unwrap(), GROUP.replace("hermes:x:10000:", "hermes:x:777:"));
    let state = std::fs::read_to_string(home.join("gateway_state.json")).unwrap();
    assert!(state.contains("\"migrated_from\":\"legacy-container-cmd\""), "{state}");
    assert_eq!(owner(&home.join("gateway_state.json")), (10000, 777));
    assert!(!down("gateway-default"), "the migrated state autostarts the root gateway");
    println!("INNER-OK");
}

// ---------------------------------------------------------------------------------------------

/// `docker run --user 10000:10000`: steps that need root warn and go on; seeding, the
/// reconcile and the boot log still work as the hermes user.
#[test]
fn c_boot_6_rootless_boot_warns_and_goes_on() {
    let run = outer("inner_rootless", &[("HERMES_UID", "1234")]);
    let e = &run.stderr;
    assert!(e.contains("need the container to start as root"), "{e}");
    assert!(e.contains("creating /run/s6/basedir: Permission denied"), "{e}");
    assert!(e.contains("rootless or read-only container?"), "{e}");
    assert!(e.contains("boot: finished in"), "{e}");
}

#[test]
#[ignore = "runs inside the mount namespace of c_boot_6_rootless_boot_warns_and_goes_on"]
fn inner_rootless() {
    if !inside() {
        return;
    }
    let dir = it_dir();
    fake_system(&dir, PASSWD, GROUP, false);
    tracing_to_stderr();
    let home = dir.join("data");
    std::fs::create_dir_all(home.join("profiles/coder")).unwrap();
    std::fs::write(home.join("profiles/coder/SOUL.md"), "soul").unwrap();
    std::fs::write(home.join("auth.json"), "{}").unwrap();
    for p in walk(&home) {
        lchown(&p, (10000, 10000));
    }
    lchown(&home.join("auth.json"), (0, 0));
    // What an image can pre-create for `--user 10000`: the scan dir and the env snapshot dir.
    std::fs::create_dir_all("/run/service").unwrap();
    lchown(Path::new("/run/service"), (10000, 10000));
    std::fs::create_dir_all("/run/s6/container_environment").unwrap();
    std::fs::write("/run/s6/container_environment/STALE", "x").unwrap();
    lchown(Path::new("/run/s6/container_environment"), (10000, 10000));
    lchown(&dir, (10000, 10000));
    hermesinit::creds::Identity::resolve("hermes").unwrap().switch().unwrap();
    let cfg = config(&dir);
    let args: Vec<String> = Vec::new();
    boot::run(&Context { config: &cfg, main_args: &args }).expect("rootless boot");
    assert_eq!(std::fs::read_to_string("/etc/passwd").unwrap(), PASSWD);
    let envd = Path::new("/run/s6/container_environment");
    assert_eq!(std::fs::read_to_string(envd.join("HERMES_UID")).unwrap(), "1234", "snapshot in the pre-created dir");
    assert!(!envd.join("STALE").exists());
    assert!(!Path::new("/run/s6/basedir").exists(), "/run/s6 is root's: cannot be created as hermes");
    assert_eq!(slots(), ["dashboard", "gateway-coder", "gateway-default"]);
    let spec = std::fs::read_to_string("/run/service/gateway-coder/hermesinit.yaml").unwrap();
    assert!(!spec.contains("user:"), "no privilege drop for an unprivileged supervisor: {spec}");
    assert_eq!(owner(&home.join("auth.json")), (0, 0), "cannot be fixed without root");
    assert!(home.join("SOUL.md").exists() && home.join("logs/gateways").is_dir());
    assert_eq!(boot_log(&home).len(), 2);
    println!("INNER-OK");
}

// ---------------------------------------------------------------------------------------------

/// A read-only volume (`-v data:/opt/data:ro`) stops the container: boot fails at its `volume`
/// step, naming the mount, before anything is changed or registered.
#[test]
fn read_only_volume_stops_the_container() {
    let run = outer("inner_read_only", &[]);
    let e = &run.stderr;
    assert!(!e.contains("boot: finished in"), "{e}");
}

#[test]
#[ignore = "runs inside the mount namespace of read_only_volume_stops_the_container"]
fn inner_read_only() {
    if !inside() {
        return;
    }
    let dir = it_dir();
    fake_system(&dir, PASSWD, GROUP, false);
    tracing_to_stderr();
    let home = dir.join("data");
    std::fs::create_dir_all(home.join("profiles/coder")).unwrap();
    std::fs::write(home.join("profiles/coder/SOUL.md"), "soul").unwrap();
    std::fs::write(home.join("auth.json"), "{}").unwrap();
    let flags = nix::mount::MsFlags::MS_BIND;
    nix::mount::mount(Some(&home), &home, None::<&str>, flags, None::<&str>).unwrap();
    let ro = flags | nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY;
    nix::mount::mount(None::<&str>, &home, None::<&str>, ro, None::<&str>).unwrap();
    let cfg = config(&dir);
    let args = vec!["gateway".to_string(), "run".to_string()];
    let err = boot::run(&Context { config: &cfg, main_args: &args }).expect_err("a read-only volume is fatal");
    assert_eq!(err.code, 1);
    assert!(err.reason.contains("boot step volume") && err.reason.contains("read-only mount"), "{}", err.reason);
    assert!(err.reason.contains(&home.display().to_string()), "names the mount: {}", err.reason);
    assert_eq!(owner(&home.join("auth.json")), (0, 0));
    assert!(slots().is_empty(), "nothing registered: {:?}", slots());
    println!("INNER-OK");
}
