//! The exec helpers (C-S6-7) against the real tools, in a jail with a `hermes` user that is
//! also in group `audio`: `s6-setuidgid` (same ids, groups, exit codes and messages as Debian's
//! s6-setuidgid 2.11) and `with-contenv` (the snapshot applied as `s6-envdir -Lfn` applies it,
//! as s6-overlay's with-contenv does).

mod s6_common;
use s6_common::{Jail, REAL_PATH, real_s6_available};
use std::time::Duration;

const GROUPS: &str = "sed -i 's/^audio:x:29:.*$/audio:x:29:hermes/' $R/etc/group;";

fn jail_sh(jail: &Jail, pre: &str, script: &str) -> s6_common::Out {
    jail.run(&format!("{GROUPS}{pre}"), &[("PATH", REAL_PATH)], &["/bin/sh", "-c", script], Duration::from_secs(60))
}

/// C-S6-7: initgroups → gid → uid → exec, for every account spelling, like the real tool.
#[test]
fn c_s6_7_setuidgid_matches_real_s6_setuidgid() {
    if !real_s6_available("c_s6_7_setuidgid_matches_real_s6_setuidgid") {
        return;
    }
    let jail = Jail::new("setuidgid");
    let script = r#"
for tool in /usr/bin/s6-setuidgid /command/s6-setuidgid; do
  for spec in hermes nobody root 10000:10000 65534:29 '' nosuchuser 10000 hermes:audio 'x:1'; do
    o=$($tool "$spec" id 2>&1); echo "| $spec -> rc=$? $o"
  done
  for prog in /nonexistent /etc/passwd; do o=$($tool root $prog 2>&1); echo "| exec $prog -> rc=$? $o"; done
  o=$($tool 2>&1); echo "| no args -> rc=$? $o"
  o=$($tool hermes 2>&1); echo "| no prog -> rc=$? $o"
  o=$(HOME=/root $tool hermes sh -c 'echo "$HOME $(id -un)"' 2>&1); echo "| env kept -> rc=$? $o"
  o=$(setpriv --reuid 10000 --regid 10000 --init-groups $tool hermes id 2>&1); echo "| as hermes -> rc=$? $o"
  echo "| --"
done
"#;
    let out = jail_sh(&jail, "", script);
    let said = out.said();
    let halves: Vec<&[String]> = said.split(|l| l == "--").filter(|h| !h.is_empty()).collect();
    assert_eq!(halves.len(), 2, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(halves[1], halves[0], "ours (right) vs real (left)");
    assert!(halves[0].iter().any(|l| l.starts_with("hermes -> rc=0 uid=10000(hermes) gid=10000(hermes) groups=10000(hermes),29(audio)")), "{said:?}");
}

/// C-S6-7, C-BOOT-1: with-contenv applies the snapshot like `s6-envdir -Lfn`: values are whole
/// files (newlines kept), snapshot wins, other variables stay; S6_KEEP_ENV=1 skips it.
#[test]
fn c_s6_7_with_contenv_applies_the_snapshot_like_s6_envdir() {
    if !real_s6_available("c_s6_7_with_contenv_applies_the_snapshot_like_s6_envdir") {
        return;
    }
    let jail = Jail::new("contenv");
    let pre = "E=$R/run/s6/container_environment; mkdir -p $E; printf 'snap' > $E/FOO; printf 'a\\nb\\n' > $E/MULTI; \
               printf 'x\\000y' > $E/NUL; printf 'v' > $E/a.b; printf 'hide' > $E/.hidden; printf '/usr/bin:/bin' > $E/PATH; \
               printf '%s' '/opt/data' > $E/HERMES_HOME;";
    let script = r#"
E=/run/s6/container_environment
real=$(FOO=orig KEEP=1 s6-envdir -Lfn $E env -0 | sort -z | tr '\000\n' '|~')
ours=$(FOO=orig KEEP=1 /command/with-contenv env -0 | sort -z | tr '\000\n' '|~')
echo "| real: $real"
echo "| ours: $ours"
echo "| keep: $(FOO=orig S6_KEEP_ENV=1 /command/with-contenv sh -c 'echo $FOO')"
echo "| command: $(PATH=/command:/usr/bin:/bin /command/with-contenv sh -c 'echo $PATH')"
: > $E/EMPTY; echo "| empty: $(EMPTY=x /command/with-contenv sh -c 'echo "[${EMPTY-unset}]"')"
rm -rf $E; o=$(/command/with-contenv true 2>&1); echo "| missing: rc=$? $o"
"#;
    let out = jail_sh(&jail, pre, script);
    let said = out.said();
    let get = |p: &str| {
        said.iter()
            .find_map(|l| l.strip_prefix(p))
            .unwrap_or_else(|| panic!("{p}: {said:?}\n{}", out.stderr))
            .to_string()
    };
    assert_eq!(get("ours: "), get("real: "));
    assert!(get("ours: ").contains("FOO=snap|") && get("ours: ").contains("MULTI=a~b~|"), "{}", get("ours: "));
    assert!(get("ours: ").contains("NUL=x~y|"), "NUL bytes become newlines: {}", get("ours: "));
    assert!(get("ours: ").contains("KEEP=1|") && get("ours: ").contains("a.b=v|") && !get("ours: ").contains("hide"));
    assert_eq!(get("keep: "), "orig");
    // On purpose unlike s6-envdir (which unsets it): an empty file is a variable set empty.
    assert_eq!(get("empty: "), "[]");
    assert_eq!(get("command: "), "/command:/usr/bin:/bin", "/command stays (first) on PATH for run scripts");
    assert!(get("missing: ").starts_with("rc=111 s6-envdir: fatal: unable to envdir"), "{}", get("missing: "));
}
