//! C-BOOT-2: move user and group hermes to `HERMES_UID`/`HERMES_GID` (or `PUID`/`PGID`) by
//! rewriting their lines in `/etc/passwd` and `/etc/group` — no `usermod` walk of the home
//! directory; the ownership sweep heals the volume afterwards.
//!
//! "Remembering" the applied ids needs no state file: the ids live in `/etc/passwd` itself, which
//! survives `docker restart`, so a restart with the same ids finds nothing to change and writes
//! nothing. (A recreated container starts from the image's `/etc` and remaps again.)

use crate::users;
use std::fs::{OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use tracing::{info, warn};

/// Digits only, 1–65534 (65535 is the 16-bit "no id", 0 is root).
pub fn parse_id(v: &str) -> Result<u32, &'static str> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a number (digits only)");
    }
    match v.trim_start_matches('0').len() {
        n if n > 5 => Err("out of range 1-65534"),
        _ => match v.parse::<u32>() {
            Ok(n @ 1..=65534) => Ok(n),
            _ => Err("out of range 1-65534"),
        },
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub warnings: Vec<String>,
}

/// The ids asked for. `HERMES_UID` wins over `PUID` (and `HERMES_GID` over `PGID`); an empty
/// value counts as unset; an invalid value is ignored with a warning and, as in upstream's
/// stage2-hook (`${HERMES_UID:-${PUID:-}}`), does not fall back to the alias.
pub fn wanted(get: impl Fn(&str) -> Option<String>) -> Wanted {
    let mut w = Wanted::default();
    for (primary, alias, slot) in [("HERMES_UID", "PUID", &mut w.uid), ("HERMES_GID", "PGID", &mut w.gid)] {
        let pick = [primary, alias].into_iter().find_map(|n| get(n).filter(|v| !v.is_empty()).map(|v| (n, v)));
        if let Some((name, v)) = pick {
            match parse_id(&v) {
                Ok(id) => *slot = Some(id),
                Err(why) => w.warnings.push(format!("ignoring {name}={v:?}: {why}")),
            }
        }
    }
    w
}

/// The entry name of a passwd/group line, unless it is a comment or a NIS `+`/`-` line.
fn entry_name(line: &[u8]) -> Option<&[u8]> {
    if line.starts_with(b"#") || line.starts_with(b"+") || line.starts_with(b"-") {
        return None;
    }
    line.split(|&b| b == b':').next()
}

/// Replace numbered `:`-fields of the first entry called `name` (which must have at least
/// `min_fields` fields). Every other byte of the file is kept. `None` when nothing changes.
pub fn rewrite_fields(text: &[u8], name: &str, min_fields: usize, set: &[(usize, Option<u32>)]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() + 8);
    let mut done = false;
    let mut changed = false;
    for line in text.split_inclusive(|&b| b == b'\n') {
        let (body, nl) = match line.strip_suffix(b"\n") {
            Some(b) => (b, &b"\n"[..]),
            None => (line, &b""[..]),
        };
        if !done && entry_name(body) == Some(name.as_bytes()) {
            done = true;
            let mut fields: Vec<Vec<u8>> = body.split(|&b| b == b':').map(<[u8]>::to_vec).collect();
            if fields.len() >= min_fields {
                for (i, v) in set {
                    if let Some(v) = v {
                        fields[*i] = v.to_string().into_bytes();
                    }
                }
                let new = fields.join(&b':');
                changed |= new != body;
                out.extend_from_slice(&new);
                out.extend_from_slice(nl);
                continue;
            }
        }
        out.extend_from_slice(line);
    }
    changed.then_some(out)
}

/// Replace a file's content: a temporary file beside it (same mode and owner), fsync, rename.
/// A file that is itself a mount point (`-v /etc/passwd:/etc/passwd`, or a test's bind mount)
/// cannot be renamed over (`EBUSY`), nor can a file in a read-only `/etc` be created beside
/// it: those are rewritten in place instead (not atomic, but nothing reads them during boot).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let real = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&real)?;
    let mode = meta.mode() & 0o7777;
    let dir = real.parent().unwrap_or(Path::new("/"));
    let name = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.hermesinit-tmp"));
    let _ = std::fs::remove_file(&tmp);
    let staged = (|| {
        let mut f =
            OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&tmp)?;
        f.write_all(data)?;
        std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
        f.set_permissions(Permissions::from_mode(mode))?;
        f.sync_all()
    })();
    let in_place = match staged {
        Ok(()) => match std::fs::rename(&tmp, &real) {
            Ok(()) => {
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                return Ok(());
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EXDEV)) => e,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        },
        Err(e) if matches!(e.raw_os_error(), Some(libc::EROFS | libc::EACCES | libc::EPERM)) => e,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let _ = std::fs::remove_file(&tmp);
    info!("boot: remap: {} cannot be replaced atomically ({in_place}); rewriting it in place", real.display());
    let mut f = OpenOptions::new().write(true).truncate(true).open(&real)?;
    f.write_all(data)?;
    f.sync_all()
}

pub struct Files<'a> {
    pub passwd: &'a Path,
    pub group: &'a Path,
}

/// What was changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// One passwd/group entry as boot needs it: name, id (uid or gid), and for passwd the gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub id: u32,
    pub gid: Option<u32>,
}

/// The entries of a passwd (`passwd`) or group file, through the one parser (`users`), with
/// malformed lines skipped as glibc does: one bad line elsewhere must not stop the container.
pub fn entries(text: &[u8], passwd: bool) -> Vec<Entry> {
    let text = String::from_utf8_lossy(text);
    let (path, skip) = (std::path::Path::new(""), users::Malformed::Skip);
    if passwd {
        let u = users::parse_passwd_as(path, &text, skip).unwrap_or_default();
        u.into_iter().map(|u| Entry { name: u.name, id: u.uid, gid: Some(u.gid) }).collect()
    } else {
        let g = users::parse_group_as(path, &text, skip).unwrap_or_default();
        g.into_iter().map(|g| Entry { name: g.name, id: g.gid, gid: None }).collect()
    }
}

/// A remap that was asked for but cannot be written is fatal, never a warning: going on would
/// run every service as the old uid, against a volume owned by the new one. The usual cause is
/// a read-only root filesystem (`--read-only`, Kubernetes `readOnlyRootFilesystem`); the error
/// names the fixes. (Not an OS error, so boot's "soft" rule does not turn it into a warning.)
fn cannot_remap(path: &Path, e: io::Error) -> io::Error {
    let why = if e.raw_os_error() == Some(libc::EROFS) { " (the root filesystem is read-only)" } else { "" };
    io::Error::other(format!(
        "HERMES_UID/HERMES_GID (or PUID/PGID) ask for a uid/gid change but {} cannot be rewritten: {e}{why}; \
         refusing to run as the image's hermes uid instead. Fix: run without --read-only \
         (readOnlyRootFilesystem: false), or drop HERMES_UID/PUID and make the volume owned by the \
         image's hermes uid:gid (10000:10000 unless rebuilt)",
        path.display()
    ))
}

pub fn apply(files: &Files, user: &str, want: &Wanted) -> io::Result<Applied> {
    let pw = std::fs::read(files.passwd)?;
    let gr = std::fs::read(files.group)?;
    let users = entries(&pw, true);
    let groups = entries(&gr, false);
    let me = users.iter().find(|u| u.name == user).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("no user '{user}' in {}", files.passwd.display()))
    })?;
    let my_group = groups.iter().find(|g| g.name == user);
    let new_uid = want.uid.filter(|&u| u != me.id);
    let new_gid = want.gid.filter(|&g| Some(g) != me.gid || my_group.is_some_and(|x| x.id != g));
    if let Some(u) = new_uid {
        info!("[stage2] Changing hermes UID to {u}");
        if let Some(other) = users.iter().find(|o| o.id == u && o.name != user) {
            warn!("boot: remap: uid {u} is also user '{}' (allowed, as usermod -o)", other.name);
        }
    }
    if let Some(g) = new_gid {
        info!("[stage2] Changing hermes GID to {g}");
        if let Some(other) = groups.iter().find(|o| o.id == g && o.name != user) {
            info!("boot: remap: gid {g} is also group '{}' (allowed, as groupmod -o)", other.name);
        }
    }
    if new_uid.is_none() && new_gid.is_none() {
        return Ok(Applied::default());
    }
    if let Some(new) = rewrite_fields(&pw, user, 7, &[(2, new_uid), (3, new_gid)]) {
        write_atomic(files.passwd, &new).map_err(|e| cannot_remap(files.passwd, e))?;
    }
    if let Some(g) = new_gid {
        match rewrite_fields(&gr, user, 4, &[(2, Some(g))]) {
            Some(new) => write_atomic(files.group, &new).map_err(|e| cannot_remap(files.group, e))?,
            None if my_group.is_none() => {
                warn!(
                    "boot: remap: no group '{user}' in {}; only the passwd entry's gid changed",
                    files.group.display()
                )
            }
            None => {}
        }
    }
    Ok(Applied { uid: new_uid, gid: new_gid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::testutil::{TempDir, is_root};
    use std::collections::HashMap;

    #[test]
    fn c_boot_2_ids_are_digits_in_range() {
        for (v, want) in [("1", Ok(1)), ("99", Ok(99)), ("1000", Ok(1000)), ("0100", Ok(100)), ("65534", Ok(65534))] {
            assert_eq!(parse_id(v), want, "{v}");
        }
        for v in ["", "0", "00", "65535", "70000", "-1", "+5", " 5", "5 ", "1e3", "abc", "99999999999999999999", "１"]
        {
            assert!(parse_id(v).is_err(), "{v:?}");
        }
    }

    fn from(pairs: &[(&str, &str)]) -> Wanted {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        wanted(|k| m.get(k).cloned())
    }

    #[test]
    fn c_boot_2_hermes_names_win_over_puid_pgid() {
        assert_eq!(from(&[]), Wanted::default());
        let w = from(&[("PUID", "1000"), ("PGID", "100")]);
        assert_eq!((w.uid, w.gid), (Some(1000), Some(100)));
        let w = from(&[("HERMES_UID", "2000"), ("PUID", "1000"), ("HERMES_GID", "3000"), ("PGID", "100")]);
        assert_eq!((w.uid, w.gid, w.warnings.len()), (Some(2000), Some(3000), 0));
        // Empty counts as unset; an invalid value is ignored with a warning, without fallback.
        let w = from(&[("HERMES_UID", ""), ("PUID", "1000"), ("HERMES_GID", "root"), ("PGID", "100")]);
        assert_eq!((w.uid, w.gid), (Some(1000), None));
        assert_eq!(w.warnings, vec!["ignoring HERMES_GID=\"root\": not a number (digits only)"]);
        let w = from(&[("PUID", "0")]);
        assert_eq!(w.uid, None);
        assert!(w.warnings[0].contains("PUID=\"0\""), "{:?}", w.warnings);
    }

    const PW: &[u8] = b"root:x:0:0:root:/root:/bin/bash\n# hermes:x:1:1:comment\n+hermes::::::\nhermes2:x:10001:10001::/x:/bin/sh\nhermes:x:10000:10000:Hermes Agent:/opt/data:/usr/sbin/nologin\nweird line without colons\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin";

    #[test]
    fn c_boot_2_passwd_rewrite_keeps_every_other_byte() {
        let out = rewrite_fields(PW, "hermes", 7, &[(2, Some(1000)), (3, Some(100))]).unwrap();
        let want = String::from_utf8_lossy(PW)
            .replace("hermes:x:10000:10000:Hermes Agent:/opt/data:", "hermes:x:1000:100:Hermes Agent:/opt/data:");
        assert_eq!(String::from_utf8(out).unwrap(), want);
        // uid only; no change → None; unknown user → None.
        let out = rewrite_fields(PW, "hermes", 7, &[(2, Some(5)), (3, None)]).unwrap();
        assert!(String::from_utf8_lossy(&out).contains("\nhermes:x:5:10000:"));
        assert_eq!(rewrite_fields(PW, "hermes", 7, &[(2, Some(10000)), (3, None)]), None);
        assert_eq!(rewrite_fields(PW, "ghost", 7, &[(2, Some(5))]), None);
        let gr = b"root:x:0:\nhermes:x:10000:\naudio:x:29:hermes\n";
        let out = rewrite_fields(gr, "hermes", 4, &[(2, Some(20))]).unwrap();
        assert_eq!(out, b"root:x:0:\nhermes:x:20:\naudio:x:29:hermes\n");
    }

    #[test]
    fn c_boot_2_apply_is_atomic_keeps_mode_and_is_idempotent() {
        let t = TempDir::new("remap");
        let passwd = t.path().join("passwd");
        let group = t.path().join("group");
        std::fs::write(&passwd, PW).unwrap();
        std::fs::write(&group, b"root:x:0:\nhermes:x:10000:\n").unwrap();
        std::fs::set_permissions(&group, Permissions::from_mode(0o640)).unwrap();
        let files = Files { passwd: &passwd, group: &group };
        let want = Wanted { uid: Some(1000), gid: Some(1000), warnings: vec![] };
        let ino = std::fs::metadata(&passwd).unwrap().ino();
        assert_eq!(apply(&files, "hermes", &want).unwrap(), Applied { uid: Some(1000), gid: Some(1000) });
        assert_ne!(std::fs::metadata(&passwd).unwrap().ino(), ino, "replaced by rename");
        assert_eq!(std::fs::metadata(&group).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read(&group).unwrap(), b"root:x:0:\nhermes:x:1000:\n");
        let u = entries(&std::fs::read(&passwd).unwrap(), true);
        assert!(u.iter().any(|u| u.name == "hermes" && (u.id, u.gid) == (1000, Some(1000))), "{u:?}");
        assert_eq!(u.len(), 4, "comment, NIS and malformed lines are not entries");
        // Restart with the same ids: nothing is written.
        let ino = std::fs::metadata(&passwd).unwrap().ino();
        assert_eq!(apply(&files, "hermes", &want).unwrap(), Applied::default());
        assert_eq!(std::fs::metadata(&passwd).unwrap().ino(), ino);
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 2, "no temporary file left");
        if is_root() {
            assert_eq!(crate::boot::testutil::owner(&passwd), (0, 0));
        }
    }

    /// Property tests (issue 10) for boot's passwd/group reader and rewriter: here rather than
    /// in tests/props.rs because `boot::remap` is private to the crate.
    mod props {
        use super::*;
        use proptest::prelude::*;

        const LINES: &[&str] = &[
            "root:x:0:0:root:/root:/bin/bash",
            "hermes:x:10000:10000:Hermes Agent:/opt/data:/usr/sbin/nologin",
            "hermes:x:10000:10000::/opt/data:/bin/sh\r",
            "hermes:x:bad:10000::/opt/data:/bin/sh",
            "hermes:x:10000",
            "hermes:x:10000:",
            "hermes:x:-1:-1::/:/bin/sh",
            "hermes:x:4294967296:0::/:/bin/sh",
            "+hermes::::::",
            "-hermes",
            "# hermes:x:1:1:c:/:/bin/sh",
            "",
            "   ",
            "\u{feff}hermes:x:1:1::/:/bin/sh",
            "audio:x:29:hermes,bob",
            "hermes\0:x:1:1::/:/bin/sh",
            ":::::::",
        ];

        fn file() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(
                prop_oneof![
                    4 => prop::sample::select(LINES).prop_map(|l| l.as_bytes().to_vec()),
                    1 => prop::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\n'), 0..40),
                ],
                0..10,
            )
            .prop_flat_map(|lines| (Just(lines.join(&b'\n')), any::<bool>()))
            .prop_map(|(mut text, nl)| {
                if nl {
                    text.push(b'\n');
                }
                text
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn entries_is_total(b in prop::collection::vec(any::<u8>(), 0..2048), text in file()) {
                for t in [&b, &text] {
                    let _ = entries(t, true);
                    let _ = entries(t, false);
                }
            }

            /// The rewrite changes at most one line (the first `hermes` entry), keeps every
            /// other byte, and a file whose first `hermes` line is well-formed reads back with
            /// the new ids.
            #[test]
            fn rewrite_touches_one_line_only(text in file(), uid in 1u32..65535, gid in 1u32..65535, passwd in any::<bool>()) {
                let (min, set) = if passwd { (7, vec![(2, Some(uid)), (3, Some(gid))]) } else { (4, vec![(2, Some(gid))]) };
                if let Some(out) = rewrite_fields(&text, "hermes", min, &set) {
                    let a: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
                    let b: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
                    prop_assert_eq!(a.len(), b.len());
                    let changed: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
                    prop_assert_eq!(changed.len(), 1);
                    let i = changed[0];
                    prop_assert_eq!(entry_name(a[i]), Some(&b"hermes"[..]));
                    prop_assert!(a[..i].iter().all(|l| entry_name(l) != Some(&b"hermes"[..])), "the first hermes line");
                    let mine = entries(b[i], passwd);
                    if let Some(e) = mine.first() {
                        prop_assert_eq!(e.id, if passwd { uid } else { gid });
                        if passwd {
                            prop_assert_eq!(e.gid, Some(gid));
                        }
                    }
                }
            }

            #[test]
            fn parse_id_is_exactly_1_to_65534(v in "[0-9+ -]{0,8}") {
                let want = (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| v.parse::<u64>().ok())
                    .flatten()
                    .filter(|n| (1..=65534).contains(n));
                prop_assert_eq!(parse_id(&v).ok().map(u64::from), want);
            }
        }

        #[test]
        fn hostile_files() {
            let big = [&b"hermes:x:10000:10000::/"[..], &vec![b'h'; 1 << 20], b":/bin/sh\n"].concat();
            assert_eq!(entries(&big, true)[0].id, 10000);
            assert!(rewrite_fields(&big, "hermes", 7, &[(2, Some(5)), (3, None)]).is_some());
            assert!(entries(b"hermes:x:-1:0::/:/bin/sh\n", true).is_empty(), "a negative uid is skipped");
            assert!(entries(b"hermes:x:1:4294967296::/:/bin/sh\n", true).is_empty());
            assert!(entries(b"\xff\xfe:x:1:1::/:/bin/sh\n", true)[0].name.starts_with('\u{fffd}'));
            let crlf = entries(b"hermes:x:1:2::/:/bin/sh\r\nhermes:x:3:\r\n", true);
            assert_eq!((crlf[0].id, crlf[0].gid), (1, Some(2)));
            assert_eq!(rewrite_fields(b"hermes:x:1:\r\n", "hermes", 4, &[(2, Some(7))]).unwrap(), b"hermes:x:7:\r\n");
            assert!(parse_id("99999999999999999999999999").is_err());
        }
    }
}
