//! `hermesinit svc health`: one status request, judged here (the server stays dumb).
//!
//! Healthy when boot has finished, the container is not stopping, the main program runs, and
//! every service that is wanted up is up — or has been failing for less than the grace. A
//! service counts as failing from its first crash since its last stable run (the streak the
//! backoff counts, `failing_since_ms`); a wanted-up service that is not up and never crashed
//! (starting, stopping for a restart) counts from its last transition. A service that is up
//! again after crashes is healthy once its current run is older than the grace or its
//! streak is younger than it, so a single crash never flips the container's health, but a
//! service that keeps dying after short runs does.

use crate::control::{BootState, Response, ServiceState, ServiceStatus};

pub const DEFAULT_GRACE_S: u64 = 60;

fn last_exit(s: &ServiceStatus) -> String {
    match &s.last_exit {
        Some(crate::control::Exit { code: Some(c), .. }) => format!("last exit {c}"),
        Some(crate::control::Exit { signal: Some(g), .. }) => format!("last killed by signal {g}"),
        _ => "no exit yet".into(),
    }
}

/// Why the container is unhealthy (empty: healthy). `now_ms`: wall clock, ms since the epoch.
pub fn reasons(r: &Response, now_ms: u64, grace_ms: u64) -> Vec<String> {
    let mut out = Vec::new();
    match r.boot {
        BootState::Done => {}
        BootState::Running => out.push("boot: still running".to_string()),
    }
    if r.stopping {
        out.push("container: stopping".into());
    } else if r.boot == BootState::Done && r.main_pid.is_none() {
        out.push("main program: not running".into());
    }
    let secs = |from: u64| now_ms.saturating_sub(from) / 1000;
    for s in r.services.iter().filter(|s| s.wanted_up) {
        let failing = s.failing_since_ms.filter(|&t| now_ms.saturating_sub(t) >= grace_ms);
        if s.state == ServiceState::Up {
            // Up again after crashes: still failing while its run is shorter than the grace.
            if let Some(t) = failing {
                if now_ms.saturating_sub(s.since_ms) < grace_ms {
                    out.push(format!(
                        "{}: crash-looping for {} s, {}, up again for {} s",
                        s.name,
                        secs(t),
                        last_exit(s),
                        secs(s.since_ms)
                    ));
                }
            }
            continue;
        }
        if let Some(t) = failing {
            out.push(format!("{}: crash-looping for {} s, {}", s.name, secs(t), last_exit(s)));
        } else if s.failing_since_ms.is_none() && now_ms.saturating_sub(s.since_ms) >= grace_ms {
            out.push(format!("{}: {} for {} s, wanted up", s.name, s.state, secs(s.since_ms)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Exit;

    const NOW: u64 = 1_000_000_000;
    const G: u64 = 60_000;

    fn ok(services: Vec<ServiceStatus>) -> Response {
        Response { v: 1, ok: true, boot: BootState::Done, main_pid: Some(7), services, ..Default::default() }
    }

    fn svc(state: &str, since_ago_ms: u64, failing_ago_ms: Option<u64>) -> ServiceStatus {
        ServiceStatus {
            name: "gateway-coder".into(),
            state: state.parse().unwrap(),
            since_ms: NOW - since_ago_ms,
            wanted_up: true,
            failing_since_ms: failing_ago_ms.map(|a| NOW - a),
            last_exit: failing_ago_ms.map(|_| Exit { code: Some(1), signal: None }),
            ..Default::default()
        }
    }

    /// Protocol v1 stays compatible both ways: an answer without the new fields parses, and the
    /// new fields are left out while empty.
    #[test]
    fn status_fields_are_additive() {
        let old = r#"{"v":1,"ok":true,"timed_out":false,"boot":"done","services":[{"name":"a","state":"up",
            "pid":3,"since_ms":5,"wanted_up":true,"normally_up":true,"restarts":0,"last_exit":null,
            "restart_in_ms":null,"kind":"s6","has_logger":false}]}"#;
        let r: Response = serde_json::from_str(old).unwrap();
        assert_eq!((r.main_pid, r.stopping, r.services[0].failing_since_ms), (None, false, None));
        let text =
            serde_json::to_string(&Response { v: 1, ok: true, services: vec![svc("up", 0, None)], ..r }).unwrap();
        assert!(!text.contains("main_pid") && !text.contains("stopping") && !text.contains("failing_since"), "{text}");
    }

    #[test]
    fn healthy_when_booted_main_runs_and_services_up() {
        assert!(reasons(&ok(vec![svc("up", 1000, None)]), NOW, G).is_empty());
        // Wanted down: not our business.
        let mut down = svc("down", 500_000, Some(500_000));
        down.wanted_up = false;
        assert!(reasons(&ok(vec![down]), NOW, G).is_empty());
    }

    #[test]
    fn boot_stop_and_main_program_count() {
        let mut r = ok(vec![]);
        r.boot = BootState::Running;
        assert_eq!(reasons(&r, NOW, G), vec!["boot: still running"]);
        let mut r = ok(vec![]);
        r.main_pid = None;
        assert_eq!(reasons(&r, NOW, G), vec!["main program: not running"]);
        r.stopping = true;
        assert_eq!(reasons(&r, NOW, G), vec!["container: stopping"]);
    }

    #[test]
    fn crash_loops_fail_after_the_grace_only() {
        assert!(reasons(&ok(vec![svc("backoff", 1000, Some(30_000))]), NOW, G).is_empty());
        assert_eq!(
            reasons(&ok(vec![svc("backoff", 1000, Some(75_000))]), NOW, G),
            vec!["gateway-coder: crash-looping for 75 s, last exit 1"]
        );
        // Up for a moment inside a long streak: still failing; up past the grace: healthy.
        assert_eq!(reasons(&ok(vec![svc("up", 2000, Some(75_000))]), NOW, G).len(), 1);
        assert!(reasons(&ok(vec![svc("up", 61_000, Some(3_600_000))]), NOW, G).is_empty());
        // Stuck without a crash (e.g. a stop that never ends) past the grace.
        assert_eq!(
            reasons(&ok(vec![svc("stopping", 90_000, None)]), NOW, G),
            vec!["gateway-coder: stopping for 90 s, wanted up"]
        );
    }
}
