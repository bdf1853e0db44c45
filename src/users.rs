//! `/etc/passwd` and `/etc/group`, read by hand: a static binary has no NSS.

use std::fmt;
use std::path::{Path, PathBuf};

pub const PASSWD: &str = "/etc/passwd";
pub const GROUP: &str = "/etc/group";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

#[derive(Debug)]
pub enum Error {
    Io(PathBuf, std::io::Error),
    Malformed { path: PathBuf, line: usize, why: &'static str },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            Error::Malformed { path, line, why } => {
                write!(f, "{}:{line}: malformed entry: {why}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {}

static CACHE: std::sync::Mutex<Vec<(std::path::PathBuf, crate::fsx::Ident, String)>> =
    std::sync::Mutex::new(Vec::new());

/// Read the files again at the next lookup, whatever their times say: boot's remap, groups and
/// hooks steps may have rewritten them within one tick of the clock file times are kept with.
pub fn forget() {
    CACHE.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// The file's text. PID 1 looks users up several times while it starts: a file whose identity,
/// size and times have not changed since the last read (and no [`forget`] since) is not read
/// again.
pub fn read(path: &Path) -> Result<String, Error> {
    let io = |e| Error::Io(path.to_path_buf(), e);
    let stamp = crate::fsx::Ident::from(&crate::fsx::stat_path(path).map_err(io)?);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, _, text)) = cache.iter().find(|(p, s, _)| p == path && *s == stamp) {
        return Ok(text.clone());
    }
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).map_err(io)?;
    cache.retain(|(p, _, _)| p != path);
    cache.push((path.to_path_buf(), stamp, text.clone()));
    Ok(text)
}

/// Lines worth parsing, with their 1-based numbers: blank lines, comments and NIS `+`/`-`
/// entries are skipped, as glibc does.
fn entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#') && !l.starts_with(['+', '-']))
}

/// What a malformed line does. Identity lookups `Fail` (never guess who someone is from a
/// broken file); boot's uid remap `Skip`s it as glibc does (one bad line elsewhere in the file
/// must not stop the container).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Fail,
    Skip,
}

fn collect<T>(items: impl Iterator<Item = Result<T, Error>>, m: Malformed) -> Result<Vec<T>, Error> {
    match m {
        Malformed::Fail => items.collect(),
        Malformed::Skip => Ok(items.filter_map(Result::ok).collect()),
    }
}

pub fn parse_passwd(path: &Path, text: &str) -> Result<Vec<User>, Error> {
    parse_passwd_as(path, text, Malformed::Fail)
}

pub fn parse_group(path: &Path, text: &str) -> Result<Vec<Group>, Error> {
    parse_group_as(path, text, Malformed::Fail)
}

pub fn parse_passwd_as(path: &Path, text: &str, m: Malformed) -> Result<Vec<User>, Error> {
    let items = entries(text).map(|(line, l)| {
        let bad = |why| Error::Malformed { path: path.to_path_buf(), line, why };
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 {
            return Err(bad("expected 7 ':'-separated fields"));
        }
        Ok(User {
            name: f[0].to_string(),
            uid: f[2].parse().map_err(|_| bad("uid is not a number"))?,
            gid: f[3].parse().map_err(|_| bad("gid is not a number"))?,
            home: f[5].to_string(),
        })
    });
    collect(items, m)
}

pub fn parse_group_as(path: &Path, text: &str, m: Malformed) -> Result<Vec<Group>, Error> {
    let items = entries(text).map(|(line, l)| {
        let bad = |why| Error::Malformed { path: path.to_path_buf(), line, why };
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            return Err(bad("expected 4 ':'-separated fields"));
        }
        Ok(Group {
            name: f[0].to_string(),
            gid: f[2].parse().map_err(|_| bad("gid is not a number"))?,
            members: f[3].split(',').filter(|m| !m.is_empty()).map(str::to_string).collect(),
        })
    });
    collect(items, m)
}

pub fn users() -> Result<Vec<User>, Error> {
    let p = Path::new(PASSWD);
    parse_passwd(p, &read(p)?)
}

pub fn groups() -> Result<Vec<Group>, Error> {
    let p = Path::new(GROUP);
    parse_group(p, &read(p)?)
}

pub fn user_by_name(name: &str) -> Result<Option<User>, Error> {
    Ok(users()?.into_iter().find(|u| u.name == name))
}

/// initgroups(3): the primary gid first, then every group that lists `user` as a member.
pub fn supplementary_gids(groups: &[Group], user: &str, primary: u32) -> Vec<u32> {
    let mut gids = vec![primary];
    for g in groups {
        if g.members.iter().any(|m| m == user) && !gids.contains(&g.gid) {
            gids.push(g.gid);
        }
    }
    gids
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "root:x:0:0:root:/root:/bin/bash\n\n# comment\nhermes:x:10000:10000::/opt/data:/bin/sh\n";
    const GR: &str = "root:x:0:\nhermes:x:10000:\naudio:x:29:hermes,bob\nvideo:x:44:bob\n";

    #[test]
    fn passwd_entries_parse_and_skip_comments() {
        let u = parse_passwd(Path::new("/etc/passwd"), PW).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u[1], User { name: "hermes".into(), uid: 10000, gid: 10000, home: "/opt/data".into() });
    }

    #[test]
    fn malformed_passwd_line_names_file_and_line() {
        let e = parse_passwd(Path::new("/x/passwd"), "root:x:0:0:r:/root:/bin/sh\nbad:x:zz:0::/:/bin/sh\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "/x/passwd:2: malformed entry: uid is not a number");
        let e = parse_group(Path::new("/x/group"), "a:x:1:\nshort:x\n").unwrap_err().to_string();
        assert_eq!(e, "/x/group:2: malformed entry: expected 4 ':'-separated fields");
    }

    #[test]
    fn supplementary_groups_follow_initgroups() {
        let g = parse_group(Path::new("/etc/group"), GR).unwrap();
        assert_eq!(supplementary_gids(&g, "hermes", 10000), vec![10000, 29]);
        assert_eq!(supplementary_gids(&g, "bob", 100), vec![100, 29, 44]);
        assert_eq!(supplementary_gids(&g, "nobody", 65534), vec![65534]);
    }
}
