//! C-BOOT-6: user hooks — the executables in `/etc/cont-init.d/`, in lexical (byte) order, as
//! root, after the built-in steps. Each gets the env snapshot as its whole environment, read back
//! before each hook so a hook can add variables for the later ones (and for services and the
//! main program) by writing files into `/run/s6/container_environment/`, as with s6-overlay.
//! `/command` is on their PATH (C-IMG-4). stdin/stdout/stderr are init's.
//!
//! Init's event loop is not running yet, so boot is the only reaper: each hook is waited for by
//! its own pid.

use super::StepErr;
use crate::spawn::{Command, Group};
use nix::sys::wait::WaitStatus;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tracing::{error, info, warn};

#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    Run(PathBuf),
    /// Not executable, or not a regular file: warned about and skipped.
    Skip(PathBuf, &'static str),
}

/// The hooks in run order. Dot-files are ignored silently (as the shell glob `*` does).
pub fn list(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut names: Vec<OsString> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| !n.as_bytes().starts_with(b"."))
        .collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names
        .into_iter()
        .map(|n| {
            let p = dir.join(n);
            match std::fs::metadata(&p) {
                Ok(m) if !m.is_file() => Entry::Skip(p, "not a regular file"),
                Ok(m) if m.permissions().mode() & 0o111 == 0 => Entry::Skip(p, "not executable"),
                Ok(_) => Entry::Run(p),
                Err(_) => Entry::Skip(p, "cannot be read (dangling symlink?)"),
            }
        })
        .collect())
}

/// The environment of the next hook: the snapshot (or, without one, boot's own environment),
/// with `/command` on PATH.
fn hook_env(env_dir: Option<&Path>, boot_env: &[(OsString, OsString)]) -> Vec<(OsString, OsString)> {
    let mut vars = match env_dir.map(crate::envdir::read) {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            warn!("boot: hooks: cannot read the env snapshot: {e}; using init's environment");
            boot_env.to_vec()
        }
        None => boot_env.to_vec(),
    };
    let path = vars.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
    let path = crate::routing::path_with_command(path.as_deref());
    vars.retain(|(k, _)| k != "PATH");
    vars.push(("PATH".into(), path.into()));
    vars
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Run one hook to completion.
pub fn run_one(path: &Path, env: &[(OsString, OsString)]) -> Result<Exit, StepErr> {
    let mut cmd = Command::new(&[path.as_os_str().as_bytes()]);
    cmd.env(env.iter().map(|(k, v)| (k, v)));
    cmd.group = Group::Own { tty: None };
    let pid = cmd.spawn().map_err(|e| StepErr {
        code: if e.errno == nix::Error::ENOENT { 127 } else { 126 },
        reason: format!("hook {} could not be started: {e}", path.display()),
    })?;
    // Stay answerable to `docker stop` while it runs: the hook's group is stopped (KILL after
    // 3 s) and so is the container.
    match super::pyrun::wait_child(pid, None, None, std::time::Duration::from_secs(3)) {
        Ok((_, Some(super::pyrun::Stop::Signal(sig)))) => {
            warn!("boot: hooks: signal {sig} during {}: stopped it and the container", path.display());
            Err(StepErr {
                code: 128 + sig,
                reason: format!("stopped by signal {sig} while hook {} ran", path.display()),
            })
        }
        Ok((WaitStatus::Signaled(_, sig, _), _)) => Ok(Exit::Signal(sig as i32)),
        Ok((WaitStatus::Exited(_, code), _)) => Ok(Exit::Code(code)),
        Ok(_) => Ok(Exit::Code(1)),
        Err(e) => Err(StepErr::new(format!("waiting for hook {}: {e}", path.display()))),
    }
}

/// Run every hook; the first failure stops the container with the hook's exit code (1 when it
/// was killed by a signal, so the code never looks like a clean exit).
pub fn run_all(dir: &Path, env_dir: Option<&Path>, boot_env: &[(OsString, OsString)]) -> Result<String, StepErr> {
    let entries = match list(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(format!("none ({} does not exist)", dir.display()));
        }
        Err(e) => return Err(StepErr::new(format!("cannot list {}: {e}", dir.display()))),
    };
    let (mut ran, mut skipped) = (0, 0);
    for entry in entries {
        let path = match entry {
            Entry::Skip(p, why) => {
                warn!("boot: hooks: skipping {}: {why}", p.display());
                skipped += 1;
                continue;
            }
            Entry::Run(p) => p,
        };
        info!("boot: hooks: running {}", path.display());
        let env = hook_env(env_dir, boot_env);
        let exit = run_one(&path, &env)?;
        ran += 1;
        let (code, how) = match exit {
            Exit::Code(0) => (0, String::new()),
            Exit::Code(c) => (c, format!("exited with {c}")),
            Exit::Signal(n) => (1, format!("was killed by signal {n}")),
        };
        if code != 0 {
            error!("boot: hooks: {} {how}", path.display());
            return Err(StepErr { code, reason: format!("hook {} {how}", path.display()) });
        }
        info!("boot: hooks: {} exited with 0", path.display());
    }
    Ok(format!("ran {ran} hooks from {}, skipped {skipped}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::testutil::TempDir;

    fn script(dir: &Path, name: &str, body: &str, mode: u32) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// C-BOOT-6: lexical order, the snapshot as environment (a hook's addition is seen by the
    /// next), non-executables skipped, a failing hook stops with its code, later hooks never run.
    #[test]
    fn c_boot_6_hooks_order_env_and_failure() {
        let t = TempDir::new("hooks");
        let d = t.path().join("cont-init.d");
        let envd = t.path().join("env");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::create_dir_all(&envd).unwrap();
        std::fs::write(envd.join("FROM_SNAPSHOT"), "snap").unwrap();
        std::fs::write(envd.join("PATH"), "/usr/bin:/bin").unwrap();
        let out = t.path().join("out");
        let o = out.display();
        let e = envd.display();
        script(&d, "10-first", &format!("echo \"first $FROM_SNAPSHOT $PATH\" >> {o}; printf added > {e}/ADDED"), 0o755);
        script(&d, "2-second", &format!("echo \"second $ADDED\" >> {o}"), 0o755);
        script(&d, "15-noexec", &format!("echo noexec >> {o}"), 0o644);
        script(&d, ".hidden", &format!("echo hidden >> {o}"), 0o755);
        let r = run_all(&d, Some(&envd), &[]).unwrap();
        assert_eq!(r, format!("ran 2 hooks from {}, skipped 1", d.display()));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "first snap /command:/usr/bin:/bin\nsecond added\n");
        script(&d, "3-fail", &format!("echo fail >> {o}; exit 3"), 0o755);
        script(&d, "4-never", &format!("echo never >> {o}"), 0o755);
        std::fs::remove_file(&out).unwrap();
        let e = run_all(&d, Some(&envd), &[]).unwrap_err();
        assert_eq!(e.code, 3);
        assert!(e.reason.contains("3-fail") && e.reason.contains("exited with 3"), "{}", e.reason);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "first snap /command:/usr/bin:/bin\nsecond added\nfail\n");
        std::fs::remove_file(d.join("3-fail")).unwrap();
        script(&d, "3-killed", "kill -9 $$", 0o755);
        assert_eq!(run_all(&d, Some(&envd), &[]).unwrap_err().code, 1);
        assert!(run_all(&t.path().join("none"), None, &[]).unwrap().starts_with("none"));
    }

    #[test]
    fn c_boot_6_unstartable_hook_is_fatal() {
        let t = TempDir::new("hooks-bad");
        let d = t.path();
        std::fs::write(d.join("10-bad"), "#!/nonexistent/interpreter\n").unwrap();
        std::fs::set_permissions(d.join("10-bad"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = run_all(d, None, &[("PATH".into(), "/bin".into())]).unwrap_err();
        assert_eq!(e.code, 127, "{}", e.reason);
    }
}
