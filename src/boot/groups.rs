//! Device groups: the hermes user joins the group owning the Docker socket
//! (`/var/run/docker.sock`, else `/run/docker.sock`) and each `/dev/dri/*` node, so a socket
//! or GPU passed into the container works for Hermes' tools. The group owning that gid is
//! reused (`video` for gid 44, say); a gid without a group gets one (`hostdocker`, `hostdri`,
//! or that name with the gid appended when the name is taken). gid 0 is never joined. The edit
//! is an atomic rewrite of `/etc/group` (remap's writer), every other byte kept; one log line
//! per group joined, none when hermes already is a member. Identities are resolved at each
//! start, so services and the main program get the new supplementary groups.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

pub const DOCKER_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];
pub const DRI_DIR: &str = "/dev/dri";

/// `(gid, name for a new group, what owns it)` for each device present.
pub fn wanted(sockets: &[&str], dri: &Path) -> Vec<(u32, &'static str, PathBuf)> {
    let mut out = Vec::new();
    if let Some((p, m)) = sockets.iter().find_map(|p| std::fs::metadata(p).ok().map(|m| (PathBuf::from(p), m))) {
        out.push((m.gid(), "hostdocker", p));
    }
    if let Ok(rd) = std::fs::read_dir(dri) {
        let mut nodes: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        nodes.sort();
        for p in nodes {
            if let Ok(m) = std::fs::metadata(&p) {
                if m.file_type().is_char_device() || m.file_type().is_block_device() {
                    out.push((m.gid(), "hostdri", p));
                }
            }
        }
    }
    out
}

fn fields(line: &[u8]) -> Option<Vec<&[u8]>> {
    if line.starts_with(b"#") || line.starts_with(b"+") || line.starts_with(b"-") {
        return None;
    }
    let f: Vec<&[u8]> = line.split(|&b| b == b':').collect();
    (f.len() >= 4).then_some(f)
}

fn gid_of(f: &[&[u8]]) -> Option<u32> {
    std::str::from_utf8(f[2]).ok()?.parse().ok()
}

/// Make `user` (primary gid `user_gid`) a member of a group with each wanted gid. Returns the
/// new file (or `None` when nothing changes) and one line per group joined.
pub fn join(text: &[u8], user: &str, user_gid: u32, wanted: &[(u32, &str)]) -> (Option<Vec<u8>>, Vec<String>) {
    let mut lines: Vec<Vec<u8>> = text.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let mut said = Vec::new();
    let mut done: Vec<u32> = Vec::new();
    for &(gid, new_name) in wanted {
        if gid == 0 || gid == user_gid || done.contains(&gid) {
            continue;
        }
        done.push(gid);
        let found = lines.iter().position(|l| {
            let body = l.strip_suffix(b"\n").unwrap_or(l);
            fields(body).is_some_and(|f| gid_of(&f) == Some(gid))
        });
        match found {
            Some(i) => {
                let nl = lines[i].ends_with(b"\n");
                let body = lines[i].strip_suffix(b"\n").unwrap_or(&lines[i]).to_vec();
                let f = fields(&body).expect("matched above");
                let members = f[3];
                if members.split(|&b| b == b',').any(|m| m.trim_ascii() == user.as_bytes()) {
                    continue;
                }
                let mut new = body.clone();
                if !members.trim_ascii().is_empty() {
                    new.push(b',');
                }
                new.extend_from_slice(user.as_bytes());
                if nl {
                    new.push(b'\n');
                }
                said.push(format!("{user} joined group {} (gid {gid})", String::from_utf8_lossy(f[0])));
                lines[i] = new;
            }
            None => {
                let taken = |n: &str| {
                    lines
                        .iter()
                        .any(|l| fields(l.strip_suffix(b"\n").unwrap_or(l)).is_some_and(|f| f[0] == n.as_bytes()))
                };
                let name = if taken(new_name) { format!("{new_name}{gid}") } else { new_name.to_string() };
                if let Some(last) = lines.last_mut() {
                    if !last.ends_with(b"\n") {
                        last.push(b'\n');
                    }
                }
                lines.push(format!("{name}:x:{gid}:{user}\n").into_bytes());
                said.push(format!("{user} joined group {name} (gid {gid}, created)"));
            }
        }
    }
    if said.is_empty() { (None, said) } else { (Some(lines.concat()), said) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_edit_reuses_creates_and_is_idempotent() {
        let gr = b"root:x:0:\nvideo:x:44:\naudio:x:29:pulse\n# hostdocker:x:1:\nhermes:x:10000:\n";
        let want = [
            (2375, "hostdocker"),
            (44, "hostdri"),
            (29, "hostdri"),
            (0, "hostdri"),
            (10000, "hostdri"),
            (44, "hostdri"),
        ];
        let (new, said) = join(gr, "hermes", 10000, &want);
        let new = String::from_utf8(new.unwrap()).unwrap();
        assert_eq!(
            new,
            "root:x:0:\nvideo:x:44:hermes\naudio:x:29:pulse,hermes\n# hostdocker:x:1:\nhermes:x:10000:\nhostdocker:x:2375:hermes\n"
        );
        assert_eq!(said.len(), 3, "{said:?}");
        assert!(said[0].contains("hostdocker (gid 2375, created)"), "{said:?}");
        let (again, said) = join(new.as_bytes(), "hermes", 10000, &want);
        assert_eq!((again, said.len()), (None, 0));
        // The name is taken by another gid; a file without a final newline.
        let (new, _) = join(b"hostdocker:x:999:", "hermes", 10000, &[(2375, "hostdocker")]);
        assert_eq!(new.unwrap(), b"hostdocker:x:999:\nhostdocker2375:x:2375:hermes\n");
        // A member name that merely contains "hermes" does not count.
        let (new, _) = join(b"docker:x:5:hermes2\n", "hermes", 10000, &[(5, "hostdocker")]);
        assert_eq!(new.unwrap(), b"docker:x:5:hermes2,hermes\n");
    }
}
