//! Control requests: what PID 1 answers on its socket (C-SVC-6). `control::server` owns the
//! connections (peer check at accept, limits, deadlines); this module turns one request into
//! supervisor calls and an answer, and keeps `wait`s until they are met, time out, or their
//! client hangs up. Nothing here blocks: a wait is an entry in a list, checked every pass.

use crate::control::{self, BootState, Request, Response, WaitFor, server::Server};
use crate::supervisor::Supervisor;
use crate::supervisor::machine::Event;
use std::time::{Duration, Instant};

struct Wait {
    conn: u64,
    /// Named a slot PID 1 had not seen: judged only after the scan directory was read again
    /// (the supervisor's rescan count passed this), so a slot just published is not "gone".
    after_rescan: Option<u64>,
    services: Vec<String>,
    until: WaitFor,
    any: bool,
    deadline: Option<Instant>,
}

/// What PID 1 is doing, as requests see it.
pub struct Ctx<'a> {
    pub sup: &'a mut Supervisor,
    pub server: &'a mut Server,
    pub boot: BootState,
    pub stopping: bool,
    pub main_pid: Option<i32>,
    /// The background part of the ownership sweep has finished (`svc wait --sweep`).
    pub sweep_done: bool,
}

/// Something only the loop can do for a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Todo {
    Nothing,
    /// Read the scan directory now (`s6-svscanctl -a`).
    Rescan,
}

#[derive(Default)]
pub struct Requests {
    waits: Vec<Wait>,
}

fn ok(cx: &Ctx, services: Vec<control::ServiceStatus>) -> Response {
    Response {
        v: control::VERSION,
        ok: true,
        boot: cx.boot,
        services,
        main_pid: cx.main_pid,
        stopping: cx.stopping,
        ..Default::default()
    }
}

impl Requests {
    /// The earliest wait deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.waits.iter().filter_map(|w| w.deadline).min()
    }

    /// A connection is ready: read its request, if whole, and answer it (or keep it waiting).
    pub fn on_conn(&mut self, mut cx: Ctx, id: u64, revents: libc::c_short, now: Instant) -> Todo {
        // The peer's credentials were checked at accept (C-SVC-6).
        let Some(inc) = cx.server.event(id, revents) else { return Todo::Nothing };
        let req = match inc.request {
            Ok(env) => env.request,
            Err(e) => {
                cx.server.error(id, e, now);
                return Todo::Nothing;
            }
        };
        let mut todo = Todo::Nothing;
        let resp = match req {
            Request::Status { services } => match status_of(&mut cx, &services, now) {
                Ok(s) => ok(&cx, s),
                Err(e) => Response::failure(e),
            },
            Request::Rescan { prune: _ } => {
                // Removed directories are always dropped (C-S6-4: Hermes sends -an *before* it
                // deletes the directory, so removal is noticed on its own too).
                if !cx.stopping {
                    todo = Todo::Rescan;
                }
                ok(&cx, Vec::new())
            }
            Request::Wait { services, until, any, timeout_ms } => {
                // A name PID 1 has not seen may be a slot just published: read the scan
                // directory first (the loop answers the wait right after), as commands do.
                let unknown = !cx.stopping && services.iter().any(|n| !cx.sup.knows(n));
                self.waits.push(Wait {
                    conn: id,
                    after_rescan: unknown.then(|| cx.sup.rescans()),
                    services,
                    until,
                    any,
                    // A deadline too far to represent is no deadline (u64::MAX ms is ~584 My).
                    deadline: timeout_ms.and_then(|ms| now.checked_add(Duration::from_millis(ms))),
                });
                if unknown {
                    return Todo::Rescan;
                }
                self.answer_waits(cx, now);
                return Todo::Nothing;
            }
            Request::Up { services } => command(&mut cx, &services, Event::Up, now),
            Request::Once { services } => command(&mut cx, &services, Event::Once, now),
            Request::Down { services } => command(&mut cx, &services, Event::Down, now),
            Request::Restart { services } => command(&mut cx, &services, Event::Restart, now),
            Request::Signal { services, signal } if (1..=64).contains(&signal) => {
                command(&mut cx, &services, Event::Signal(signal), now)
            }
            Request::Signal { signal, .. } => {
                Response::error(control::ErrorCode::BadRequest, format!("invalid signal {signal}"))
            }
        };
        cx.server.reply(id, &resp, now);
        todo
    }

    /// Answer every wait that is met or timed out; forget those whose client is gone.
    pub fn answer_waits(&mut self, cx: Ctx, now: Instant) {
        for w in std::mem::take(&mut self.waits) {
            if !cx.server.is_open(w.conn) {
                continue;
            }
            if w.after_rescan.is_some_and(|n| cx.sup.rescans() <= n) {
                self.waits.push(w);
                continue;
            }
            let met = match w.until {
                WaitFor::Boot => cx.boot != BootState::Running,
                WaitFor::Sweep => cx.sweep_done,
                u => cx.sup.wait_met(&w.services, u, w.any),
            };
            let timed_out = !met && w.deadline.is_some_and(|d| d <= now);
            if met || timed_out {
                let mut r = ok(&cx, cx.sup.status(&w.services).unwrap_or_default());
                r.timed_out = timed_out;
                cx.server.reply(w.conn, &r, now);
            } else {
                self.waits.push(w);
            }
        }
    }
}

/// A status that names a slot not seen yet reads the scan directory first, as commands do.
fn status_of(cx: &mut Ctx, services: &[String], now: Instant) -> Result<Vec<control::ServiceStatus>, control::Failure> {
    if !cx.stopping && services.iter().any(|n| !cx.sup.knows(n)) {
        cx.sup.rescan(now);
    }
    cx.sup.status(services)
}

fn command(cx: &mut Ctx, services: &[String], ev: Event, now: Instant) -> Response {
    match cx.sup.command(services, ev, now) {
        Ok(()) => ok(cx, cx.sup.status(services).unwrap_or_default()),
        Err(e) => Response::failure(e),
    }
}
