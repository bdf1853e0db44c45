//! What the supervisor tells about its services: snapshots for the control protocol, wait
//! conditions, and s6's `supervise/status` record kept in step with each machine.

use super::*;

impl Supervisor {
    /// How many times the scan directory has been read.
    pub fn rescans(&self) -> u64 {
        self.rescans
    }

    /// Is `name` a live slot?
    pub fn knows(&self, name: &str) -> bool {
        self.slots.get(name).is_some_and(|s| !s.removed)
    }

    /// Keep `supervise/status` in step with the machine (rewritten only when it changed).
    pub(super) fn publish_status(&mut self, name: &str, now: Instant) {
        let scan_dir = &self.cfg.scan_dir;
        // Once the container stops nobody is left to read it, and PID 1's exit releases the
        // lock (s6-svok then says "not supervised"): the stop path writes no status files.
        if self.shutting_down {
            return;
        }
        let Some(s) = self.slots.get_mut(name) else { return };
        if s.supervise.is_none() || s.removed {
            return;
        }
        let st = status_of(name, s, now, SystemTime::now());
        let rec = crate::s6::status::Snapshot::from_status(&st, st.normally_up, false).pack();
        if let Some(sv) = s.supervise.as_mut() {
            sv.write_status(scan_dir, name, s.dir.inode, rec);
        }
    }

    pub fn status(&self, names: &[String]) -> Result<Vec<ServiceStatus>, Failure> {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let pick: Vec<&String> = if names.is_empty() { self.slots.keys().collect() } else { names.iter().collect() };
        pick.into_iter()
            .map(|n| {
                let s = self
                    .slots
                    .get(n)
                    .filter(|s| !s.removed)
                    .ok_or_else(|| Failure::new(ErrorCode::NoSuchService, format!("{n}: no such service")))?;
                Ok(status_of(n, s, now, wall_now))
            })
            .collect()
    }

    pub fn wait_met(&self, names: &[String], until: control::WaitFor, any: bool) -> bool {
        let pick: Vec<&Slot> = if names.is_empty() {
            self.slots.values().filter(|s| !s.removed).collect()
        } else {
            names.iter().filter_map(|n| self.slots.get(n)).collect()
        };
        let ok = |s: &&Slot| match until {
            control::WaitFor::Up => matches!(s.m.state, State::Up { .. }),
            // s6's "down": the process is gone (a stopping one still counts as up).
            control::WaitFor::Down => s.m.pid().is_none(),
            control::WaitFor::Finished => s.m.is_idle() && s.finish_pid.is_none(),
            control::WaitFor::Boot | control::WaitFor::Sweep => true,
        };
        // A named service that is gone counts as down/finished.
        let missing = names.iter().filter(|n| !self.slots.contains_key(*n)).count();
        let missing_ok = matches!(until, control::WaitFor::Down | control::WaitFor::Finished);
        if any {
            pick.iter().any(ok) || (missing > 0 && missing_ok)
        } else {
            pick.iter().all(ok) && (missing == 0 || missing_ok)
        }
    }
}

pub(super) fn wall(since: Instant, wall_now: SystemTime, now: Instant) -> SystemTime {
    wall_now.checked_sub(now.saturating_duration_since(since)).unwrap_or(wall_now)
}

pub(super) fn status_of(name: &str, s: &Slot, now: Instant, wall_now: SystemTime) -> ServiceStatus {
    let since = wall(s.m.since, wall_now, now);
    ServiceStatus {
        name: name.to_string(),
        state: s.m.state.wire(),
        pid: s.m.pid(),
        since_ms: since.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64,
        wanted_up: s.m.wanted_up,
        normally_up: !s.dir.down_file,
        restarts: s.m.failures,
        last_exit: s.m.last_exit.map(|e| match e {
            Exit::Code(c) => control::Exit { code: Some(c), signal: None },
            Exit::Signal(g) => control::Exit { code: None, signal: Some(g) },
        }),
        restart_in_ms: match s.m.state {
            State::Backoff { until } => Some(until.saturating_duration_since(now).as_millis() as u64),
            _ => None,
        },
        kind: s.dir.kind.wire(),
        has_logger: s.logger.is_some(),
        failing_since_ms: s.m.failing_since.map(|t| {
            wall(t, wall_now, now).duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
        }),
        log_dir: match &s.dir.kind {
            Kind::Native(spec) => spec.log.dir.as_ref().map(|d| d.display().to_string()),
            _ => None,
        },
    }
}
