//! The split ownership sweep (issue 12, part 3), with hermesinit as PID 1 of a namespace: the
//! files a service reads at start are healed before the main program starts; the bulk trees
//! after, in the background, and `hermesinit svc wait --sweep` returns once they are.

mod harness;
use harness::{BIN, Root, secs};

#[test]
fn bulk_trees_are_healed_in_the_background_and_svc_wait_sweep_returns() {
    let root = Root::new("sweepsplit");
    // Root-owned state and a root-owned bulk tree, as a root `docker exec` leaves them.
    let pre = "mkdir -p /opt/data/sessions/a /opt/data/profiles/p; echo '{}' > /opt/data/auth.json; \
               echo x > /opt/data/profiles/p/config.yaml; \
               i=0; while [ $i -lt 2000 ]; do : > /opt/data/sessions/a/s$i.json; i=$((i+1)); done; \
               chown -R 0:0 /opt/data/sessions /opt/data/profiles /opt/data/auth.json;";
    let main = format!(
        "echo auth-owner=$(stat -c %u /opt/data/auth.json) profile-owner=$(stat -c %u /opt/data/profiles/p/config.yaml); \
         {BIN} svc wait --boot --timeout 10 && echo booted; \
         {BIN} svc wait --sweep --timeout 60 && echo swept; \
         echo wrong=$(find /opt/data/sessions ! -user 10000 | wc -l)"
    );
    let out = root.run_ns(true, pre, &format!("exec {BIN} init sh -c \"$1\""), &[&main], &[], secs(120));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("auth-owner=10000 profile-owner=10000"), "healed before start: {}", out.stdout);
    assert!(out.stdout.contains("booted") && out.stdout.contains("swept"), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("wrong=0"), "{}", out.stdout);
    assert!(out.stderr.contains("(bulk trees next, in the background)"), "{}", out.stderr);
    let done: Vec<&str> = out.stderr.lines().filter(|l| l.contains("boot: sweep=done: background part:")).collect();
    assert_eq!(done.len(), 1, "{}", out.stderr);
    assert!(!done[0].contains("changed 0,"), "{}", done[0]);
}
