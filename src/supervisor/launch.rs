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
    let mut id = Identity::resolve(&st.uid.to_string()).map_err(|e| format!("owner uid {}: {e}", st.uid))?;
    if id.name.is_none() {
        // No passwd entry: the directory's group, but never root's.
        id.gid = if st.gid == 0 { st.uid } else { st.gid };
        id.groups = vec![id.gid];
    }
    Ok(Some(id))
}

/// The identity of a non-root directory owner, for PID 1's writes on the slot's behalf.
pub fn owner_uid_identity(uid: u32) -> Option<Identity> {
    Identity::resolve(&uid.to_string()).ok().or(Some(Identity {
        uid,
        gid: uid,
        groups: vec![uid],
        name: None,
        home: None,
    }))
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
