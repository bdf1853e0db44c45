//! Small pure rules shared by several roles: truthiness and the main-program routing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The real Hermes CLI. Always called by absolute path so nothing can re-enter the shim.
pub const HERMES_REAL: &str = "/opt/hermes/.venv/bin/hermes";
pub const HERMES_HOME_DEFAULT: &str = "/opt/data";
/// Where the s6 front ends live; on the PATH of everything init starts.
pub const COMMAND_DIR: &str = "/command";

/// C-TRUE: exactly these spellings are true; everything else (including unset) is false.
pub fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("1" | "true" | "TRUE" | "True" | "yes" | "YES" | "Yes"))
}

pub fn env_truthy(name: &str) -> bool {
    truthy(std::env::var(name).ok().as_deref())
}

/// C-MAIN-1..5: what `docker run <image> ARGS…` runs. Returns the argv to exec, with a
/// resolved path in front.
pub fn route_main(args: &[String], path_var: &str) -> Vec<String> {
    let hermes = |rest: &[String]| {
        let mut v = vec![HERMES_REAL.to_string()];
        v.extend_from_slice(rest);
        v
    };
    let Some(first) = args.first() else {
        return hermes(args);
    };
    if first.starts_with('-') || first == "mcp" || first == "login" {
        return hermes(args);
    }
    match which(first, path_var) {
        Some(p) => {
            let mut v = vec![p.to_string_lossy().into_owned()];
            v.extend_from_slice(&args[1..]);
            v
        }
        None => hermes(args),
    }
}

/// `execvp`'s lookup, done before fork: a name with a slash is taken as is.
pub fn which(name: &str, path_var: &str) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        return is_executable(Path::new(name)).then(|| PathBuf::from(name));
    }
    path_var
        .split(':')
        .map(|d| if d.is_empty() { Path::new(".") } else { Path::new(d) })
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// PATH with `/command` in front when it is missing (C-IMG-4), as s6-overlay has it: Hermes'
/// run scripts call `s6-setuidgid`/`s6-log` by bare name and must get ours.
pub fn path_with_command(path_var: Option<&OsStr>) -> String {
    let base = path_var.map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned());
    let base = base.unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    if base.split(':').any(|d| d == COMMAND_DIR) {
        base
    } else if base.is_empty() {
        COMMAND_DIR.to_string()
    } else {
        format!("{COMMAND_DIR}:{base}")
    }
}

/// The legacy first argument of images that ran `tini -- /opt/hermes/docker/entrypoint.sh CMD…`.
pub const LEGACY_ENTRYPOINT: &str = "/opt/hermes/docker/entrypoint.sh";

/// What `/usr/bin/tini …` does: run `/init` with what is left, or print and exit.
#[derive(Debug, PartialEq, Eq)]
pub enum Tini {
    /// Behave exactly like `/init` with these arguments.
    Init(Vec<String>),
    /// Print this to stdout (`--version`, `-h`, `-l`) and exit 0.
    Print(String),
    /// Refuse (unknown option, missing argument) with this message on stderr and exit 1, as tini.
    Usage(String),
}

const TINI_USAGE: &str = "tini (hermesinit compat) - tini's options are accepted and ignored; hermesinit is the init\n\
Usage: tini [OPTIONS] PROGRAM -- [ARGS] | --version\n\
Options: --version -h -s -p SIGNAL -v -w -g -l -e EXIT_CODE\n";

/// Tini compatibility (legacy `--entrypoint /usr/bin/tini`): tini's own options are parsed as
/// its getopt string `+hvwgsle:p:` does (clustered flags, attached or separate arguments,
/// stop at the first non-option, `--` ends them) and dropped — hermesinit already reaps,
/// forwards signals to the group and subreaps. Then a legacy first argument
/// [`LEGACY_ENTRYPOINT`] is dropped, and the rest goes to `/init`.
pub fn tini(args: &[String]) -> Tini {
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            i += 1;
            break;
        }
        if a == "--version" {
            return Tini::Print(format!("tini version 0.19.0 (hermesinit {} compat)\n", env!("CARGO_PKG_VERSION")));
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        if a.starts_with("--") {
            return Tini::Usage(format!("tini: unrecognized option '{a}'\n{TINI_USAGE}"));
        }
        let flags = &a[1..];
        for (pos, c) in flags.char_indices() {
            match c {
                'h' => return Tini::Print(TINI_USAGE.to_string()),
                'l' => {
                    return Tini::Print(
                        "tini compat of hermesinit; tini itself is MIT licensed (Copyright (c) 2015 Thomas Orozco)\n"
                            .into(),
                    );
                }
                's' | 'v' | 'w' | 'g' => {}
                'e' | 'p' => {
                    let attached = &flags[pos + c.len_utf8()..];
                    let value = if attached.is_empty() {
                        i += 1;
                        match args.get(i) {
                            Some(v) => v.as_str(),
                            None => {
                                return Tini::Usage(format!(
                                    "tini: option requires an argument -- '{c}'\n{TINI_USAGE}"
                                ));
                            }
                        }
                    } else {
                        attached
                    };
                    if c == 'e' && !value.parse::<u32>().is_ok_and(|n| n <= 255) {
                        return Tini::Usage(format!("tini: not a valid exit code: '{value}'\n{TINI_USAGE}"));
                    }
                    break;
                }
                other => return Tini::Usage(format!("tini: invalid option -- '{other}'\n{TINI_USAGE}")),
            }
        }
        i += 1;
    }
    let mut rest = &args[i..];
    if rest.first().is_some_and(|a| a == LEGACY_ENTRYPOINT) {
        rest = &rest[1..];
    }
    Tini::Init(rest.to_vec())
}

/// Map a wait status to the container's exit code (C-INIT-2).
pub fn exit_code(status: nix::sys::wait::WaitStatus) -> Option<i32> {
    use nix::sys::wait::WaitStatus::*;
    match status {
        Exited(_, code) => Some(code & 0xff),
        Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    use nix::unistd::Pid;

    #[test]
    fn c_true_exact_spellings() {
        for t in ["1", "true", "TRUE", "True", "yes", "YES", "Yes"] {
            assert!(truthy(Some(t)), "{t}");
        }
        for f in ["0", "false", "no", "", "garbage", "2", "tRue", " 1", "on", "y"] {
            assert!(!truthy(Some(f)), "{f:?}");
        }
        assert!(!truthy(None));
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn c_main_routing_table() {
        let path = "/usr/bin:/bin";
        let h = HERMES_REAL;
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &[h]),                         // C-MAIN-1
            (&["--version"], &[h, "--version"]), // C-MAIN-2
            (&["-p", "coder", "gateway", "run"], &[h, "-p", "coder", "gateway", "run"]),
            (&["mcp", "--help"], &[h, "mcp", "--help"]), // C-MAIN-3
            (&["login"], &[h, "login"]),
            (&["sh", "-c", "exit 42"], &["/usr/bin/sh", "-c", "exit 42"]), // C-MAIN-4
            (&["chat", "-q", "hi"], &[h, "chat", "-q", "hi"]),             // C-MAIN-5
            (&["gateway", "run"], &[h, "gateway", "run"]),
            (&["dashboard"], &[h, "dashboard"]),
            (&["/bin/true"], &["/bin/true"]),
        ];
        for (args, want) in cases {
            assert_eq!(route_main(&s(args), path), s(want), "{args:?}");
        }
    }

    #[test]
    fn tini_options_are_dropped_and_the_legacy_entrypoint_too() {
        let ep = LEGACY_ENTRYPOINT;
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &[]),
            (&["-g", "--", ep, "chat", "--help"], &["chat", "--help"]),
            (&["--", ep, "sleep", "1"], &["sleep", "1"]),
            (&["-s", "-g", "-w", "-vvv", "-p", "SIGKILL", "-e", "143", "--", "sleep", "1"], &["sleep", "1"]),
            (&["-gs", "-pSIGTERM", "-e143", "-e", "0", ep], &[]),
            (&["-g", "sleep", "-g"], &["sleep", "-g"]), // stops at the first non-option
            (&["--", "--version"], &["--version"]),     // after `--`: the program's
            (&["--", "-p", "coder"], &["-p", "coder"]),
            (&[ep], &[]),
            (&["--", ep, ep], &[ep]), // only the first one is the legacy wrapper
        ];
        for (args, want) in cases {
            assert_eq!(tini(&s(args)), Tini::Init(s(want)), "{args:?}");
        }
        assert!(matches!(tini(&s(&["--version"])), Tini::Print(v) if v.starts_with("tini version")));
        assert!(matches!(tini(&s(&["-g", "-h"])), Tini::Print(v) if v.contains("Usage: tini")));
        assert!(matches!(tini(&s(&["-l"])), Tini::Print(_)));
        for bad in [&["-x"][..], &["-p"], &["-e", "256"], &["-e", "x"], &["--bogus"], &["-gx", "sleep"]] {
            assert!(matches!(tini(&s(bad)), Tini::Usage(_)), "{bad:?}");
        }
    }

    #[test]
    fn command_dir_is_prepended_once() {
        assert_eq!(path_with_command(Some(OsStr::new("/bin"))), "/command:/bin");
        assert_eq!(path_with_command(Some(OsStr::new("/command:/bin"))), "/command:/bin");
    }

    #[test]
    fn c_init_2_exit_codes_map_for_every_value() {
        let p = Pid::from_raw(2);
        for code in 0..=255 {
            assert_eq!(exit_code(WaitStatus::Exited(p, code)), Some(code));
        }
        assert_eq!(exit_code(WaitStatus::Signaled(p, Signal::SIGTERM, false)), Some(143));
        assert_eq!(exit_code(WaitStatus::Signaled(p, Signal::SIGKILL, true)), Some(137));
    }
}
