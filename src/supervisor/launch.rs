//! Who a slot's programs run as, and exactly which file runs (C-SEC-1). Every start of a
//! service, a `finish` script or a logger comes through [`prepare`]; nothing is cached from an
//! earlier look at the directory.
//!
//! The rule: a slot never runs with more privilege than the owner of its directory (lstat, on
//! the opened directory). A directory owned by a non-root user runs everything in it as that
//! user, whatever its spec says and whoever owns the files inside. Root runs only a slot whose
//! directory and files are all root-owned and writable by nobody else — which boot's own slots
//! and root's tools can create, and the hermes user cannot.
//!
//! What was checked is what runs: the directory is opened with `O_NOFOLLOW` and becomes the
//! child's working directory by descriptor; `run`/`finish`/`log/run` are opened with
//! `O_NOFOLLOW` and checked on the descriptor (regular, executable, owner). A binary is then
//! executed from that descriptor (`execveat`). A script cannot be: its interpreter re-opens it
//! by name (via `/dev/fd`, which would also leak the descriptor into the service), so it runs
//! as `./run` from the pinned directory, after the child has checked that the name still
//! denotes the checked inode. Only the directory's owner could swap it, and that is who it
//! runs as.

use super::servicedir::{Kind, ServiceDir};
use crate::config::{MAX_SPEC_BYTES, SPEC_FILE, ServiceSpec};
use crate::creds::Identity;
use crate::fsx::{self, Stat};
use crate::spawn::Exec;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use super::Supervisor;
use crate::spawn::{self, Command};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::AsRawFd;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Service,
    Finish,
    Logger,
}

/// Everything a start needs, decided now from opened descriptors.
pub struct Launch {
    /// `None`: stays root.
    pub identity: Option<Identity>,
    /// The working directory, pinned (the slot directory, or its `log/`).
    pub cwd: OwnedFd,
    /// The s6 script or binary; `None` for a native spec (its argv[0] is a path of its own).
    pub exec: Option<Exec>,
    /// Native services: the spec as it is now, read from the pinned directory.
    pub spec: Option<ServiceSpec>,
}

/// A file's owner may run it as root only if nobody else can change it.
fn root_trusted(st: &Stat) -> bool {
    st.uid == 0 && st.mode & 0o022 == 0
}

/// The identity of a directory's owner: root (`None`) only when the directory is root-trusted.
pub fn owner_identity(st: &Stat, what: &Path) -> Result<Option<Identity>, String> {
    if st.uid == 0 {
        return if root_trusted(st) {
            Ok(None)
        } else {
            Err(format!("refusing to run as root: {} is writable by group or others", what.display()))
        };
    }
    Ok(Some(identity_of_owner(st.uid, st.gid)))
}

/// Who a non-root owner is: its passwd entry and groups, or — without one — the directory's
/// group, but never root's. Also whose permissions PID 1 writes the slot's files with.
pub fn identity_of_owner(uid: u32, gid: u32) -> Identity {
    let gid = if gid == 0 { uid } else { gid };
    Identity::resolve(&uid.to_string()).unwrap_or(Identity { uid, gid, groups: vec![gid], name: None, home: None })
}

/// Open and check one program file of the slot.
fn open_program(dir: &OwnedFd, name: &std::ffi::CStr, root: bool, shown: &Path) -> Result<Exec, String> {
    let fd = fsx::open_read_at(dir.as_fd(), name).map_err(|e| {
        if fsx::is_symlink_refusal(&e) {
            format!("refusing {}: a symlink", shown.display())
        } else {
            format!("{}: {e}", shown.display())
        }
    })?;
    let fd = OwnedFd::from(fd);
    let st = fsx::fstat(fd.as_fd()).map_err(|e| format!("{}: {e}", shown.display()))?;
    if !st.is_file() || st.mode & 0o111 == 0 {
        return Err(format!("{} is not an executable regular file", shown.display()));
    }
    if root && !root_trusted(&st) {
        return Err(format!(
            "refusing to run {} as root: it is not root-owned, or writable by group or others",
            shown.display()
        ));
    }
    let mut head = [0u8; 2];
    let script = nix::sys::uio::pread(fd.as_fd(), &mut head, 0).is_ok_and(|n| n == 2 && head == *b"#!");
    Ok(Exec::Fd { fd, name: CString::from(name), script, dev: st.dev, ino: st.ino })
}

/// Decide identity and open what `program` of `slot` will execute.
pub fn prepare(scan_dir: &Path, slot: &ServiceDir, program: Program) -> Result<Launch, String> {
    let mut l = decide(scan_dir, slot, program)?;
    // A non-root PID 1 (`--user 10000`, Kubernetes runAsUser) cannot switch identity: it runs
    // a slot as itself when the slot's owner is itself (or root, which has more than it does),
    // and refuses one that belongs to somebody else.
    let me = nix::unistd::geteuid().as_raw();
    if me != 0 {
        match &l.identity {
            Some(id) if id.uid != me => {
                return Err(format!("cannot run it as uid {}: PID 1 runs as uid {me}, not root", id.uid));
            }
            _ => l.identity = None,
        }
    }
    Ok(l)
}

fn decide(scan_dir: &Path, slot: &ServiceDir, program: Program) -> Result<Launch, String> {
    let scan = fsx::open_dir_path(scan_dir).map_err(|e| format!("{}: {e}", scan_dir.display()))?;
    let name = fsx::cname(std::ffi::OsStr::new(&slot.name)).map_err(|e| e.to_string())?;
    let dir = fsx::open_dir_at(scan.as_fd(), &name).map_err(|e| format!("{}: {e}", slot.path.display()))?;
    let st = fsx::fstat(dir.as_fd()).map_err(|e| e.to_string())?;
    if (st.dev, st.ino) != slot.inode {
        return Err("its directory was replaced".into());
    }
    let owner = owner_identity(&st, &slot.path)?;
    match (&slot.kind, program) {
        (Kind::Native(_), _) => {
            let file = slot.path.join(SPEC_FILE);
            let text = fsx::read_bounded_at(dir.as_fd(), c"hermesinit.yaml", MAX_SPEC_BYTES)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let spec_st = fsx::lstat_at(dir.as_fd(), c"hermesinit.yaml").map_err(|e| e.to_string())?;
            if owner.is_none() && !root_trusted(&spec_st) {
                return Err(format!("refusing {}: not root-owned, or writable by group or others", file.display()));
            }
            let spec = ServiceSpec::parse(&file, &String::from_utf8_lossy(&text)).map_err(|e| e.to_string())?;
            // A root-trusted spec may name any user; anyone else's runs as its owner.
            let identity = match (&owner, &spec.user) {
                (None, Some(u)) => Some(Identity::resolve(u).map_err(|e| format!("user {u}: {e}"))?),
                (o, _) => o.clone(),
            };
            Ok(Launch { identity, cwd: dir, exec: None, spec: Some(spec) })
        }
        (Kind::S6 { .. }, Program::Logger) => {
            let log = fsx::open_dir_at(dir.as_fd(), c"log").map_err(|e| format!("{}/log: {e}", slot.path.display()))?;
            let log_st = fsx::fstat(log.as_fd()).map_err(|e| e.to_string())?;
            if owner.is_none() && !root_trusted(&log_st) {
                return Err(format!(
                    "refusing to run {}/log/run as root: log/ is not root-owned, or writable by others",
                    slot.path.display()
                ));
            }
            let exec = open_program(&log, c"run", owner.is_none(), &slot.path.join("log/run"))?;
            Ok(Launch { identity: owner, cwd: log, exec: Some(exec), spec: None })
        }
        (Kind::S6 { .. }, p) => {
            let (file, shown) = if p == Program::Finish { (c"finish", "finish") } else { (c"run", "run") };
            let exec = open_program(&dir, file, owner.is_none(), &slot.path.join(shown))?;
            Ok(Launch { identity: owner, cwd: dir, exec: Some(exec), spec: None })
        }
    }
}

/// Starting a slot's programs: the environment they get and the fork/exec, with identity and
/// file from [`prepare`].
impl Supervisor {
    pub(super) fn env_for(&self, extra: &BTreeMap<String, String>, home: Option<&str>) -> Vec<(OsString, OsString)> {
        let mut overlay: Vec<(OsString, OsString)> = Vec::new();
        if let Some(h) = home {
            overlay.push(("HOME".into(), h.into()));
        }
        overlay.extend(extra.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))));
        crate::envdir::merge(self.base_env.iter().cloned(), &overlay)
    }

    /// Start one program of a slot: identity and file decided now, from the directory itself
    /// (`launch`), for services, finish scripts and loggers alike.
    pub(super) fn spawn(&mut self, name: &str, program: Program, args: &[String]) -> Result<i32, String> {
        let slot = self.slots.get(name).ok_or("no such slot")?;
        let l = prepare(&self.cfg.scan_dir, &slot.dir, program)?;
        let home = l.identity.as_ref().map(|_| self.cfg.hermes_home.to_string_lossy().into_owned());
        let devnull = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        let err_w = slot.err.as_ref().map(|e| e.w.as_raw_fd());
        let mut c = match (&l.spec, program) {
            (Some(spec), _) => {
                let mut argv = spec.command.clone();
                let path = self.path_var();
                if !argv[0].contains('/') {
                    match crate::routing::which(&argv[0], &path) {
                        Some(p) => argv[0] = p.to_string_lossy().into_owned(),
                        None => return Err(format!("{}: not found on PATH", argv[0])),
                    }
                }
                let mut c = Command::new(&argv);
                let spec_home = spec.env.get("HOME").cloned();
                c.env(self.env_for(&spec.env, spec_home.as_deref().or(home.as_deref())));
                c.cwd(spec.cwd.as_deref().unwrap_or(std::path::Path::new("/")));
                c.stdio = [Some(devnull.as_raw_fd()), Some(slot.out.w.as_raw_fd()), Some(slot.out.w.as_raw_fd())];
                c
            }
            (None, p) => {
                let script = if p == Program::Finish { "./finish" } else { "./run" };
                let mut argv = vec![script.to_string()];
                argv.extend_from_slice(args);
                let mut c = Command::new(&argv);
                c.env(self.env_for(&BTreeMap::new(), home.as_deref()));
                c.cwd_fd = Some(l.cwd.as_raw_fd());
                c.stdio = match p {
                    // The logger's stdout is the container's stdout; s6-log writes it without blocking.
                    Program::Logger => [slot.logger.as_ref().map(|l| l.r.as_raw_fd()), None, err_w],
                    Program::Service => {
                        let out = slot.logger.as_ref().and_then(|l| l.w.as_ref()).unwrap_or(&slot.out.w).as_raw_fd();
                        [Some(devnull.as_raw_fd()), Some(out), err_w]
                    }
                    Program::Finish => [Some(devnull.as_raw_fd()), Some(slot.out.w.as_raw_fd()), err_w],
                };
                c
            }
        };
        c.exec = l.exec;
        c.identity = l.identity.clone();
        if program == Program::Service {
            c.group = spawn::Group::Session;
        }
        let r = c.spawn().map(|p| p.as_raw()).map_err(|e| e.to_string());
        // The log file follows whoever the service runs as now.
        if let (Some(f), Some(_)) = (self.slots.get_mut(name).and_then(|s| s.out.file.as_mut()), &l.spec) {
            f.set_writer(l.identity);
        }
        r
    }

    pub(super) fn path_var(&self) -> String {
        self.base_env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.to_string_lossy().into_owned())
            .unwrap_or_else(|| crate::routing::path_with_command(None))
    }
}
