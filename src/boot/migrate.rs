//! Config migration: when `config.yaml` exists, hermes-agent's own
//! `hermes_cli.config.migrate_config(interactive=False)` (0.19.0's schema migrations; it also
//! repairs a corrupted `.env`) runs as hermes, its output in the log prefixed `[config-migrate]`.
//! `HERMES_SKIP_CONFIG_MIGRATION` truthy skips it; a failure or timeout is a warning.
//!
//! Starting Python for it costs about half a second, so it is skipped when it is known to
//! change nothing and say nothing, which is known two ways:
//!
//! - **The image's proof.** At build, `docker/image-stamp.py` runs `migrate_config` on the
//!   `config.yaml` and `.env` a fresh volume gets (the defaults, with an `API_SERVER_KEY`
//!   appended as the `apikey` step does) and fails the build unless it leaves every file alone
//!   and prints and reports nothing; it then writes [`PROOF`]: the hermes-agent version, and
//!   the size and FNV-1a hash of what it proved. A `HERMES_HOME` whose `config.yaml` is byte
//!   for byte the image's default and whose `.env` is the default with a 64-hex-digit key
//!   appended (compared with the root-owned defaults, never with a hash of something hermes
//!   wrote) is not migrated — on a fresh volume, the files `seed` just copied.
//! - **The memo.** After a run that exited 0, printed nothing but its summary and left
//!   `config.yaml` and `.env` as they were, root records what was migrated in [`MEMO_DIR`]
//!   (the container's own filesystem, root's, outside anything hermes can write):
//!   `HERMES_HOME`, the hermes-agent version, and (device, inode, size, mtime, ctime) of both
//!   files and of the `plugins` directory (a plugin's toolsets decide what the run warns
//!   about). The next boot of the same container (`docker restart`, a
//!   restart policy) skips the run when all of it still matches. Any edit, chmod, chown or
//!   replacement moves a file's ctime, which nobody but the kernel sets, so it brings the run
//!   back. The memo is compared byte for byte with what the current state would give, read
//!   only from a root-owned directory and file writable by nobody else (no symlink followed,
//!   nothing larger than 4 KiB). Not root: no memo.
//!
//! A run of Python also has hermes-agent's start-up side effects (`ensure_hermes_home` makes
//! and chmods its directories); a skipped run leaves them to the first hermes-agent process,
//! as upstream's boot does for a config that is already at the latest version.

use super::apikey;
use crate::fsx::{self, Ident};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The Python run with `-c`: a summary line after the migration's own output.
pub const CODE: &str = "\
import sys
from hermes_cli.config import check_config_version, migrate_config
before, latest = check_config_version()
r = migrate_config(interactive=False, quiet=False)
after, _ = check_config_version()
print(f\"config version {before} -> {after} (latest {latest}); \"
      f\"{len(r.get('config_added', []))} config and {len(r.get('env_added', []))} env entries added, \"
      f\"{len(r.get('warnings', []))} warnings\")
";

pub const PREFIX: &str = "[config-migrate]";
pub const TIMEOUT_SECS: u64 = 60;

/// What `docker/image-stamp.py` proved at image build.
pub const PROOF: &str = "/opt/hermes/migrate-proof";
/// Root's directory for the memo (made by the Dockerfile, or at boot).
pub const MEMO_DIR: &str = "/var/lib/hermesinit";
const MEMO: &CStr = c"migrate";
const PROOF_HEADER: &str = "hermesinit migrate-proof 1";
const MEMO_HEADER: &str = "hermesinit migrate memo 1";
/// The proof and the memo are a few lines.
const MAX_SMALL: u64 = 4096;
/// Larger defaults than this are not compared (they are ~25 KiB).
const MAX_DEFAULT: u64 = 1 << 20;
const CONFIG: &CStr = c"config.yaml";
const ENV: &CStr = c".env";
const KEY_LINE: &[u8] = b"API_SERVER_KEY=";

/// FNV-1a, 64 bits, as `docker/image-stamp.py` computes it (not a defence against anyone: it
/// only tells that the root-owned defaults are the ones the build proved).
pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The image's proof ([`PROOF`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// hermes-agent's version, as its dist-info said at build.
    pub version: String,
    /// `config.yaml`: size and hash.
    config: (u64, u64),
    /// `.env` before its `API_SERVER_KEY=` line: size and hash.
    env_body: (u64, u64),
}

impl Proof {
    /// Read [`PROOF`] (or a test's): root's file, in its exact format. It is written in the same
    /// build step that installs hermes-agent into the venv, so the version it names is the one
    /// installed (not checked again: a lookup that deep into the image costs milliseconds on
    /// fuse-overlayfs); an image that changes the venv re-runs `image-stamp.py`, or drops it.
    pub fn load(path: &Path) -> Result<Proof, String> {
        let text = fsx::read_trusted_file(path, MAX_SMALL).map_err(|e| format!("{}: {e}", path.display()))?;
        let text = String::from_utf8(text).map_err(|_| format!("{}: not UTF-8", path.display()))?;
        let bad = || format!("{}: not a proof this hermesinit reads", path.display());
        let mut lines = text.lines();
        if lines.next() != Some(PROOF_HEADER) {
            return Err(bad());
        }
        let mut field = |key: &str| lines.next().and_then(|l| l.strip_prefix(key)?.strip_prefix(' ')).ok_or_else(bad);
        let version = field("hermes-agent")?.to_string();
        let sized = |v: &str| -> Option<(u64, u64)> {
            let (size, hash) = v.split_once(' ')?;
            (hash.len() == 16).then_some(())?;
            Some((size.parse().ok()?, u64::from_str_radix(hash, 16).ok()?))
        };
        let config = sized(field("config.yaml")?).ok_or_else(bad)?;
        let env_body = sized(field(".env")?).ok_or_else(bad)?;
        if lines.next().is_some() || version.is_empty() || version.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(Proof { version, config, env_body })
    }
}

/// What a migration run reads in a `HERMES_HOME`, as it is now: `config.yaml` and `.env`, and
/// the `plugins` directory (whose toolsets decide whether a `platform_toolsets` entry is
/// warned about: installing or removing a plugin moves its mtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Files {
    config: Ident,
    /// `None`: there is no `.env`.
    env: Option<Ident>,
    /// `None`: there is no `plugins`.
    plugins: Option<Ident>,
}

/// Looked at without following anything: `None` when either file is something else than a
/// regular file (or missing, for `config.yaml`) — such a state is never remembered.
pub fn files(home: BorrowedFd) -> Option<Files> {
    let at = |name: &CStr, regular: bool| match fsx::lstat_at(home, name) {
        Ok(st) if st.is_file() || !regular => Some(Some(Ident::from(&st))),
        Err(e) if fsx::is_missing(&e) => Some(None),
        _ => None,
    };
    Some(Files { config: at(CONFIG, true)??, env: at(ENV, true)?, plugins: at(c"plugins", false)? })
}

/// What the memo holds for this state: compared byte for byte, never parsed. `None` for a
/// `HERMES_HOME` whose name would not fit on one line.
pub fn memo_text(home: &Path, version: &str, f: &Files) -> Option<Vec<u8>> {
    let home = home.as_os_str().as_bytes();
    if home.contains(&b'\n') {
        return None;
    }
    let mut t = format!("{MEMO_HEADER}\nhermes-agent {version}\nconfig.yaml {}\n", f.config).into_bytes();
    for (name, id) in [(".env", &f.env), ("plugins", &f.plugins)] {
        match id {
            Some(id) => t.extend_from_slice(format!("{name} {id}\n").as_bytes()),
            None => t.extend_from_slice(format!("{name} none\n").as_bytes()),
        }
    }
    t.extend_from_slice(b"home ");
    t.extend_from_slice(home);
    t.push(b'\n');
    Some(t)
}

/// Does the memo in `dir` say exactly `expected`? A missing memo is `Ok(false)`; one that is
/// not root's, is a symlink, a FIFO, too large, or in a directory anyone but root can write is
/// an error (and does not match).
pub fn memo_matches(dir: &Path, expected: &[u8]) -> Result<bool, String> {
    match fsx::read_trusted(dir, MEMO, MAX_SMALL) {
        Ok(text) => Ok(text == expected),
        Err(e) if fsx::is_missing(&e) => Ok(false),
        Err(e) => Err(format!("{}/migrate: {e}", dir.display())),
    }
}

/// Record `text` as the memo: the directory made (root, 0700) when missing and refused unless
/// it is root's and writable by nobody else; the file replaced atomically, no symlink followed.
pub fn write_memo(dir: &Path, text: &[u8]) -> io::Result<()> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let parent = fsx::open_dir_path(parent)?;
    let name = fsx::cname(name)?;
    match fsx::mkdir_at(parent.as_fd(), &name, 0o700) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
        _ => {}
    }
    let d = fsx::open_dir_at(parent.as_fd(), &name)?;
    if !fsx::trusted(&fsx::fstat(d.as_fd())?) {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("{} is not root's alone", dir.display())));
    }
    super::atomic::write_at(d.as_fd(), MEMO, text, 0o600, None)
}

/// Are `config.yaml` and `.env` in `home` exactly what the build proved: `config.yaml` the
/// image's default byte for byte, `.env` the default with `API_SERVER_KEY=<64 hex digits>`
/// appended as the `apikey` step does it? Both are compared with root's defaults in
/// `defaults`, never only with a hash. `Err` says why not.
pub fn proven_defaults(home: BorrowedFd, defaults: &Path, proof: &Proof) -> Result<(), String> {
    let key_line = (KEY_LINE.len() + 64 + 1) as u64;
    let config = read_home_file(home, CONFIG, proof.config.0)?;
    let env = read_home_file(home, ENV, proof.env_body.0 + key_line)?;
    let default_config = fsx::read_trusted(defaults, CONFIG, MAX_DEFAULT)
        .map_err(|e| format!("{}/config.yaml: {e}", defaults.display()))?;
    if (default_config.len() as u64, fnv1a64(&default_config)) != proof.config {
        return Err(format!("{}/config.yaml is not the one the image build proved", defaults.display()));
    }
    if config != default_config {
        return Err("config.yaml is not the image's default".into());
    }
    let (body, last) = env.split_at(proof.env_body.0 as usize);
    let key = last.strip_prefix(KEY_LINE).and_then(|k| k.strip_suffix(b"\n")).unwrap_or_default();
    if key.len() != 64 || !key.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(".env does not end with the key the apikey step appends".into());
    }
    if (body.len() as u64, fnv1a64(body)) != proof.env_body {
        return Err(".env is not the proven default".into());
    }
    let default_env =
        fsx::read_trusted(defaults, ENV, MAX_DEFAULT).map_err(|e| format!("{}/.env: {e}", defaults.display()))?;
    let key = std::str::from_utf8(key).unwrap_or_default();
    if apikey::with_key(&default_env, key).as_deref() != Some(&env[..]) {
        return Err(".env is not the image's default with a key".into());
    }
    Ok(())
}

/// A regular file of `HERMES_HOME` of exactly `size` bytes, read without following a link or
/// waiting on a FIFO; refused when it changed while it was read.
fn read_home_file(home: BorrowedFd, name: &CStr, size: u64) -> Result<Vec<u8>, String> {
    let shown = name.to_string_lossy();
    let f = fsx::open_read_at(home, name).map_err(|e| format!("{shown}: {e}"))?;
    let st = fsx::fstat(f.as_fd()).map_err(|e| format!("{shown}: {e}"))?;
    if !st.is_file() || st.size != size {
        return Err(format!("{shown} is not the image's default (not a regular file of its size)"));
    }
    let again = f.try_clone().map_err(|e| e.to_string())?;
    let data = fsx::read_capped(f, &st, size).map_err(|e| format!("{shown}: {e}"))?;
    let after = fsx::fstat(again.as_fd()).map_err(|e| format!("{shown}: {e}"))?;
    if data.len() as u64 != size || Ident::from(&st) != Ident::from(&after) {
        return Err(format!("{shown} changed while it was read"));
    }
    Ok(data)
}

/// Why the run is skipped, or what to remember after it.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Skip(String),
    /// Run it; `memo`: remember the state if the run proves it a fixed point.
    Run {
        memo: Option<Pending>,
    },
}

/// What a run must leave unchanged to be remembered.
#[derive(Debug, PartialEq, Eq)]
pub struct Pending {
    version: String,
    before: Files,
}

/// Where [`decide`] looks.
pub struct Where<'a> {
    pub home: &'a Path,
    pub defaults: &'a Path,
    pub proof: &'a Path,
    /// `None` when not root: no memo.
    pub memo_dir: Option<&'a Path>,
    /// Did this boot's `seed` copy `config.yaml` and `.env` (for the log)?
    pub seeded: bool,
}

/// Skip the run, or run it (and maybe remember). `note` gets what is worth a debug line.
///
/// The proven defaults are checked first: reading two small files of the volume and of the
/// image is cheaper than reaching root's directory on the container's filesystem, and a fresh
/// volume (or one whose files were never edited) needs no memo. They are not remembered either:
/// the next boot recognises them the same way.
pub fn decide(w: &Where, mut note: impl FnMut(&str)) -> Decision {
    let proof = match Proof::load(w.proof) {
        Ok(p) => p,
        Err(e) => {
            note(&format!("no proof, no memo: {e}"));
            return Decision::Run { memo: None };
        }
    };
    let Ok(home) = fsx::open_dir_path(w.home) else {
        return Decision::Run { memo: None };
    };
    match proven_defaults(home.as_fd(), w.defaults, &proof) {
        Ok(()) => {
            let how = if w.seeded { "seeded from this image's defaults" } else { "still this image's defaults" };
            return Decision::Skip(format!(
                "skipped: config.yaml and .env {how}, which hermes-agent {}'s migrate_config leaves alone \
                 (proven at image build)",
                proof.version
            ));
        }
        Err(e) => note(&format!("not the proven defaults: {e}")),
    }
    let Some(dir) = w.memo_dir else {
        return Decision::Run { memo: None };
    };
    let Some(now) = files(home.as_fd()) else {
        return Decision::Run { memo: None };
    };
    match memo_text(w.home, &proof.version, &now).map(|t| memo_matches(dir, &t)) {
        Some(Ok(true)) => {
            return Decision::Skip(format!(
                "skipped: config.yaml and .env are as hermes-agent {} last migrated them (memo in {})",
                proof.version,
                dir.display()
            ));
        }
        Some(Err(e)) => note(&format!("memo not used: {e}")),
        _ => {}
    }
    Decision::Run { memo: Some(Pending { version: proof.version, before: now }) }
}

/// After a run that exited 0 and printed only its summary: remember the state when the run left
/// both files exactly as they were. `Ok(true)` when remembered.
pub fn remember(w: &Where, p: &Pending) -> Result<bool, String> {
    let (Some(dir), Ok(home)) = (w.memo_dir, fsx::open_dir_path(w.home)) else {
        return Ok(false);
    };
    if files(home.as_fd()) != Some(p.before) {
        return Ok(false);
    }
    let Some(text) = memo_text(w.home, &p.version, &p.before) else {
        return Ok(false);
    };
    write_memo(dir, &text).map(|()| true).map_err(|e| format!("{}/migrate: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::testutil::{TempDir, is_root};
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::path::PathBuf;

    const CONFIG_TEXT: &str = "model: ''\n_config_version: 33\n";
    const ENV_TEXT: &str = "# OPENAI_API_KEY=\n\n# generated at first boot when empty.\nAPI_SERVER_KEY=\n";
    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// An image (defaults, proof), a seeded `HERMES_HOME` and a memo directory.
    struct Image {
        t: TempDir,
    }

    impl Image {
        fn new(tag: &str) -> Image {
            let t = TempDir::new(tag);
            let p = t.path();
            std::fs::create_dir_all(p.join("defaults")).unwrap();
            std::fs::write(p.join("defaults/config.yaml"), CONFIG_TEXT).unwrap();
            std::fs::write(p.join("defaults/.env"), ENV_TEXT).unwrap();
            let img = Image { t };
            img.write_proof("0.19.0", CONFIG_TEXT.as_bytes());
            std::fs::create_dir_all(img.home()).unwrap();
            std::fs::write(img.home().join("config.yaml"), CONFIG_TEXT).unwrap();
            let env = apikey::with_key(ENV_TEXT.as_bytes(), KEY).unwrap();
            std::fs::write(img.home().join(".env"), env).unwrap();
            img
        }
        fn write_proof(&self, version: &str, config: &[u8]) {
            let body = &ENV_TEXT.as_bytes()[..ENV_TEXT.len() - "API_SERVER_KEY=\n".len()];
            let text = format!(
                "{PROOF_HEADER}\nhermes-agent {version}\nconfig.yaml {} {:016x}\n.env {} {:016x}\n",
                config.len(),
                fnv1a64(config),
                body.len(),
                fnv1a64(body)
            );
            std::fs::write(self.proof(), text).unwrap();
        }
        fn home(&self) -> PathBuf {
            self.t.path().join("data")
        }
        fn proof(&self) -> PathBuf {
            self.t.path().join("migrate-proof")
        }
        fn memo_dir(&self) -> PathBuf {
            self.t.path().join("var-lib-hermesinit")
        }
        fn decide(&self, memo: bool) -> (Decision, Vec<String>) {
            let (home, defaults, proof, memo_dir) =
                (self.home(), self.t.path().join("defaults"), self.proof(), self.memo_dir());
            let w = Where {
                home: &home,
                defaults: &defaults,
                proof: &proof,
                memo_dir: memo.then_some(memo_dir.as_path()),
                seeded: true,
            };
            let mut notes = Vec::new();
            let d = decide(&w, |n| notes.push(n.to_string()));
            (d, notes)
        }
        fn remember(&self, p: &Pending) -> Result<bool, String> {
            let (home, defaults, proof, memo_dir) =
                (self.home(), self.t.path().join("defaults"), self.proof(), self.memo_dir());
            let w = Where { home: &home, defaults: &defaults, proof: &proof, memo_dir: Some(&memo_dir), seeded: false };
            remember(&w, p)
        }
    }

    fn skipped(d: &Decision, what: &str) -> bool {
        matches!(d, Decision::Skip(s) if s.contains(what))
    }

    /// Rewrite a file with the same bytes until its state moves (file times tick coarsely):
    /// content equal, state not.
    fn touch(p: &Path) {
        use std::os::unix::fs::MetadataExt;
        let ctime = |p: &Path| std::fs::metadata(p).map(|m| (m.ctime(), m.ctime_nsec())).unwrap();
        let (before, data) = (ctime(p), std::fs::read(p).unwrap());
        while ctime(p) == before {
            std::fs::write(p, &data).unwrap();
        }
    }

    #[test]
    fn fnv_matches_the_image_stamp() {
        // Values of the reference FNV-1a 64 (as image-stamp.py's fnv1a64).
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    /// A fresh volume: the proven defaults are skipped, on every boot, without a memo.
    #[test]
    fn proven_defaults_are_skipped_without_a_memo() {
        let img = Image::new("mig-seeded");
        for _ in 0..2 {
            let (d, notes) = img.decide(true);
            assert!(skipped(&d, "seeded from this image's defaults"), "{d:?} {notes:?}");
            assert!(skipped(&d, "hermes-agent 0.19.0"), "{d:?}");
        }
        // The memo is not even read: a FIFO there (refused, with a note, if it were) goes unseen.
        std::fs::create_dir(img.memo_dir()).unwrap();
        nix::unistd::mkfifo(&img.memo_dir().join("migrate"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (d, notes) = img.decide(true);
        assert!(skipped(&d, "seeded from this image's defaults"), "{d:?}");
        assert!(!notes.iter().any(|n| n.starts_with("memo")), "{notes:?}");
        assert!(skipped(&img.decide(false).0, "seeded from this image's defaults"), "as hermes too");
    }

    /// Anything but the exact defaults runs the migration: one byte of config.yaml, a key that
    /// is not what apikey writes, defaults the build did not prove, another hermes-agent.
    #[test]
    fn anything_but_the_proven_defaults_runs() {
        // Runs, and says why: the defaults check failed for that very reason.
        let runs_because = |img: &Image, why: &str| {
            let (d, notes) = img.decide(true);
            assert!(matches!(d, Decision::Run { .. }), "{why}: {d:?}");
            assert!(
                notes.iter().any(|n| n.starts_with("not the proven defaults") && n.contains(why)),
                "{why}: {notes:?}"
            );
        };
        let img = Image::new("mig-config");
        std::fs::write(img.home().join("config.yaml"), CONFIG_TEXT.replace("33", "32")).unwrap();
        runs_because(&img, "config.yaml is not the image's default");
        let img = Image::new("mig-key");
        let env = apikey::with_key(ENV_TEXT.as_bytes(), &KEY.to_uppercase()).unwrap();
        std::fs::write(img.home().join(".env"), env).unwrap();
        runs_because(&img, "does not end with the key");
        let img = Image::new("mig-env-extra");
        let env = apikey::with_key(format!("{ENV_TEXT}OPENAI_API_KEY=x\n").as_bytes(), KEY).unwrap();
        std::fs::write(img.home().join(".env"), env).unwrap();
        runs_because(&img, "not a regular file of its size");
        // The same size, one byte of the body changed: the body's hash says so.
        let img = Image::new("mig-env-body");
        let env = apikey::with_key(ENV_TEXT.replace("# OPENAI", "# OPENAX").as_bytes(), KEY).unwrap();
        std::fs::write(img.home().join(".env"), env).unwrap();
        runs_because(&img, ".env is not the proven default");
        let img = Image::new("mig-unproven");
        img.write_proof("0.19.0", b"model: other\n_config_version: 33\n");
        std::fs::write(img.home().join("config.yaml"), "model: other\n_config_version: 33\n").unwrap();
        runs_because(&img, "is not the one the image build proved");
        let img = Image::new("mig-noproof");
        std::fs::remove_file(img.proof()).unwrap();
        let (d, notes) = img.decide(true);
        assert_eq!(d, Decision::Run { memo: None }, "no proof: no skip and no memo");
        assert!(notes.iter().any(|n| n.starts_with("no proof")), "{notes:?}");
        let img = Image::new("mig-linked");
        std::fs::rename(img.home().join("config.yaml"), img.t.path().join("elsewhere.yaml")).unwrap();
        symlink(img.t.path().join("elsewhere.yaml"), img.home().join("config.yaml")).unwrap();
        assert_eq!(img.decide(true).0, Decision::Run { memo: None }, "a symlink is never remembered");
    }

    /// After a run that changed nothing the state is remembered; an edit (even to the same
    /// bytes), another hermes-agent version or a run that changed the file is not.
    #[test]
    fn the_memo_remembers_only_an_unchanged_state_of_the_same_version() {
        if !is_root() {
            return; // the memo's directory must be root's
        }
        let img = Image::new("mig-memo");
        std::fs::write(img.home().join("config.yaml"), "model: mine\n").unwrap();
        let Decision::Run { memo: Some(p) } = img.decide(true).0 else { panic!("runs, remembering") };
        assert_eq!(img.remember(&p), Ok(true));
        assert!(skipped(&img.decide(true).0, "last migrated them"));
        // An edit moves ctime (and mtime) even when the bytes are the same.
        touch(&img.home().join("config.yaml"));
        let Decision::Run { memo: Some(p) } = img.decide(true).0 else { panic!("edited: runs") };
        // A run that changed a file (here: during it) is not remembered.
        touch(&img.home().join(".env"));
        assert_eq!(img.remember(&p), Ok(false));
        assert!(matches!(img.decide(true).0, Decision::Run { .. }));
        // Installing (or removing) a plugin: its toolsets may change what the run warns about.
        let Decision::Run { memo: Some(p) } = img.decide(true).0 else { panic!() };
        assert_eq!(img.remember(&p), Ok(true));
        assert!(skipped(&img.decide(true).0, "last migrated them"));
        std::fs::create_dir_all(img.home().join("plugins/demo")).unwrap();
        assert!(matches!(img.decide(true).0, Decision::Run { .. }), "a plugin appeared");
        // The same state under another hermes-agent is not remembered either.
        let Decision::Run { memo: Some(p) } = img.decide(true).0 else { panic!() };
        assert_eq!(img.remember(&p), Ok(true));
        assert!(skipped(&img.decide(true).0, "last migrated them"));
        img.write_proof("0.20.0", CONFIG_TEXT.as_bytes());
        assert!(matches!(img.decide(true).0, Decision::Run { .. }), "another version");
    }

    /// The memo is believed only from a root-only directory and file: a hermes-owned or
    /// writable one, a symlink, a FIFO or an oversized file never matches (and never blocks).
    #[test]
    fn a_hostile_memo_is_never_believed() {
        if !is_root() {
            return;
        }
        let img = Image::new("mig-hostile");
        std::fs::write(img.home().join("config.yaml"), "model: mine\n").unwrap();
        let Decision::Run { memo: Some(p) } = img.decide(true).0 else { panic!() };
        assert_eq!(img.remember(&p), Ok(true));
        let dir = img.memo_dir();
        let memo = dir.join("migrate");
        let good = std::fs::read(&memo).unwrap();
        assert!(skipped(&img.decide(true).0, "last migrated them"));
        let refused = |why: &str| {
            let (d, notes) = img.decide(true);
            assert!(matches!(d, Decision::Run { .. }), "{why}: {d:?}");
            assert!(notes.iter().any(|n| n.starts_with("memo not used")), "{why}: {notes:?}");
        };
        // Owned by hermes (as if hermes had written it).
        std::os::unix::fs::lchown(&memo, Some(10000), Some(10000)).unwrap();
        refused("hermes-owned memo");
        std::os::unix::fs::lchown(&memo, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(&memo, std::fs::Permissions::from_mode(0o666)).unwrap();
        refused("world-writable memo");
        std::fs::set_permissions(&memo, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::lchown(&dir, Some(10000), Some(10000)).unwrap();
        refused("hermes-owned memo directory");
        assert!(write_memo(&dir, &good).is_err(), "nor is one written there");
        std::os::unix::fs::lchown(&dir, Some(0), Some(0)).unwrap();
        // A symlink to a copy with the right bytes is not followed.
        std::fs::write(img.t.path().join("copy"), &good).unwrap();
        std::fs::remove_file(&memo).unwrap();
        symlink(img.t.path().join("copy"), &memo).unwrap();
        refused("symlinked memo");
        std::fs::remove_file(&memo).unwrap();
        nix::unistd::mkfifo(&memo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        refused("FIFO");
        std::fs::remove_file(&memo).unwrap();
        std::fs::write(&memo, vec![b'x'; 5000]).unwrap();
        refused("oversized memo");
        // Writing it again replaces whatever is there, through no symlink.
        std::fs::remove_file(&memo).unwrap();
        symlink(img.t.path().join("copy"), &memo).unwrap();
        write_memo(&dir, b"x").unwrap();
        assert_eq!(std::fs::read(img.t.path().join("copy")).unwrap(), good, "the link's target untouched");
        assert!(std::fs::symlink_metadata(&memo).unwrap().is_file());
    }

    #[test]
    fn a_malformed_or_foreign_proof_is_refused() {
        let img = Image::new("mig-proof");
        assert_eq!(Proof::load(&img.proof()).unwrap().version, "0.19.0");
        let good = std::fs::read_to_string(img.proof()).unwrap();
        for bad in [
            good.replace(PROOF_HEADER, "hermesinit migrate-proof 2"),
            good.replace("hermes-agent 0.19.0", "hermes-agent "),
            good.replace(".env ", ".envx "),
            format!("{good}extra\n"),
            good.lines().take(3).map(|l| format!("{l}\n")).collect(),
        ] {
            std::fs::write(img.proof(), &bad).unwrap();
            assert!(Proof::load(&img.proof()).is_err(), "{bad}");
        }
        std::fs::write(img.proof(), &good).unwrap();
        std::fs::set_permissions(img.proof(), std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(Proof::load(&img.proof()).is_err(), "writable by others");
    }
}
