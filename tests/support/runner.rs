//! The one hang-guarded process runner of every test helper (`harness`, `s6_common`,
//! `boot_common` include it): start a command in its own process group with its output
//! captured, wait with a deadline, and on a hang kill the whole group and fail the test with
//! what it printed.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// A command still running; `wait` collects it. Dropped uncollected (a test that panicked
/// first), its whole process group is killed: no namespace outlives its test.
pub struct Running {
    child: std::process::Child,
    t0: Instant,
    ho: Option<std::thread::JoinHandle<String>>,
    he: Option<std::thread::JoinHandle<String>>,
    desc: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Start `cmd` with stdin closed, stdout and stderr captured, as leader of its own process group.
pub fn start(mut cmd: Command) -> Running {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let t0 = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let ho = reader(child.stdout.take().unwrap());
    let he = reader(child.stderr.take().unwrap());
    Running { child, t0, ho: Some(ho), he: Some(he), desc: format!("{cmd:?}") }
}

/// Run a command with a hard timeout (the whole process group is killed at the deadline).
pub fn run(cmd: Command, timeout: Duration) -> Out {
    start(cmd).wait(timeout)
}

impl Running {
    /// The host pid of the first child of the started command (unshare's PID 1 of the new
    /// namespace) once it executes a file whose path ends with `exe`.
    pub fn pid1(&self, exe: &str) -> i32 {
        let u = self.child.id();
        for _ in 0..1000 {
            if let Ok(c) = std::fs::read_to_string(format!("/proc/{u}/task/{u}/children")) {
                if let Some(p) = c.split_whitespace().next() {
                    let link = std::fs::read_link(format!("/proc/{p}/exe")).unwrap_or_default();
                    if link.to_string_lossy().ends_with(exe) {
                        return p.parse().unwrap();
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("PID 1 of the namespace did not become {exe}");
    }

    /// Send `sig` to that PID 1.
    pub fn signal(&self, exe: &str, sig: i32) {
        // SAFETY: plain kill(2) on a process of this test.
        unsafe { libc::kill(self.pid1(exe), sig) };
    }

    pub fn wait(mut self, timeout: Duration) -> Out {
        let code = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st.code().unwrap_or(-1);
            }
            if self.t0.elapsed() > timeout {
                self.kill();
                let (out, err) = self.output();
                panic!("hang guard: still running after {timeout:?}: {}\nstdout:\n{out}\nstderr:\n{err}", self.desc);
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let elapsed = self.t0.elapsed();
        let (stdout, stderr) = self.output();
        Out { code, stdout, stderr, elapsed }
    }

    /// Kill the whole process group and reap the leader.
    fn kill(&mut self) {
        // SAFETY: signalling our own child's process group.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }

    /// What the command printed (its pipes are at EOF once the group is gone).
    fn output(&mut self) -> (String, String) {
        let take =
            |h: &mut Option<std::thread::JoinHandle<String>>| h.take().and_then(|h| h.join().ok()).unwrap_or_default();
        (take(&mut self.ho), take(&mut self.he))
    }
}
