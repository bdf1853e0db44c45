//! s6's envdir convention: one file per variable, the file's content is the value
//! (C-BOOT-1). Written at boot, read by `with-contenv` and by init for its children.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// Names that cannot be a file in one directory are skipped (returned for a warning).
pub fn storable(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// Read every variable of an envdir, each value the whole file: s6-envdir would cut a value at
/// its first newline, but s6-overlay writes values verbatim and reads them whole (`-L`), so we
/// keep all of it, with NULs turned into newlines as s6-envdir does.
pub fn read(dir: &Path) -> std::io::Result<Vec<(OsString, OsString)>> {
    let mut vars = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        if name.as_bytes().starts_with(b".") || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let mut value = std::fs::read(e.path())?;
        for b in value.iter_mut() {
            if *b == 0 {
                *b = b'\n';
            }
        }
        vars.push((name, OsString::from_vec(value)));
    }
    vars.sort();
    Ok(vars)
}

/// `base` with `overlay` applied on top (overlay wins).
pub fn merge(
    base: impl IntoIterator<Item = (OsString, OsString)>,
    overlay: &[(OsString, OsString)],
) -> Vec<(OsString, OsString)> {
    let mut map: std::collections::BTreeMap<OsString, OsString> = base.into_iter().collect();
    for (k, v) in overlay {
        map.insert(k.clone(), v.clone());
    }
    map.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_keeps_empty_and_dotted_names_and_merges() {
        let d = std::env::temp_dir().join(format!("hi-envdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("EMPTY"), "").unwrap();
        std::fs::write(d.join("a.b"), "x\ny").unwrap();
        std::fs::write(d.join(".hidden"), "no").unwrap();
        let v = read(&d).unwrap();
        assert_eq!(v, vec![("EMPTY".into(), "".into()), ("a.b".into(), "x\ny".into())]);
        let m = merge(vec![("EMPTY".into(), "old".into()), ("Z".into(), "z".into())], &v);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0], ("EMPTY".into(), "".into()));
        assert!(storable(b"a.b") && !storable(b"a/b") && !storable(b"") && !storable(b".."));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
