"""Helpers for the Docker contract suite: run containers of the image, talk to
them through `docker exec`, and wait on real signals with deadlines.

Conventions (they are part of what the suite checks):

* `docker exec` runs as **hermes** by default. Hermes itself runs as uid
  10000, so a surface that only works for root is a bug the suite must see.
  Pass ``user="root"`` only where the test needs root.
* Readiness is a real signal: ``hermesinit svc wait --boot`` (C-SVC-6), or
  the ``profile=default`` line of the boot log (C-BOOT-9) while that command
  is missing. Never a sleep. Every wait has a deadline; polling between
  probes is the only pause.
* Every container and volume a test creates is removed by its fleet's
  finalizer, whatever the outcome of the test.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import struct
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
SESSION = uuid.uuid4().hex[:8]
LABEL = "hermesinit-test-session"

HERMES_HOME = "/opt/data"
BOOT_LOG = f"{HERMES_HOME}/logs/container-boot.log"
SCANDIR = "/run/service"
READY_TIMEOUT = 60
# The main program's argv[0] in ps: as given ("sleep") or resolved on PATH ("/usr/bin/sleep").
ARGV0 = r"^(\S*/)?"
POLL = 0.2

T = TypeVar("T")


def docker(*args: str, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; never raises on a non-zero exit, always bounded."""
    return subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        input=input,
        check=False,
    )


def describe(r: subprocess.CompletedProcess[str]) -> str:
    return f"rc={r.returncode}\n--- stdout ---\n{r.stdout[-3000:]}\n--- stderr ---\n{r.stderr[-3000:]}"


def wait_for(probe: Callable[[], T], timeout: float, what: str, diag: Callable[[], str] | None = None) -> T:
    """Poll ``probe`` until it returns something truthy, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: T = probe()
    while not last:
        if time.monotonic() >= deadline:
            extra = f"\n{diag()}" if diag else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(POLL)
        last = probe()
    return last


@dataclass
class Proc:
    pid: int
    ppid: int
    pgid: int
    sid: int
    tpgid: int
    uid: int
    stat: str
    args: str


class Container:
    def __init__(self, name: str, image: str) -> None:
        self.name = name
        self.image = image

    def __repr__(self) -> str:
        return f"Container({self.name})"

    # -- docker exec ---------------------------------------------------------

    def exec(
        self,
        *argv: str,
        user: str = "hermes",
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        timeout: float = 60,
        detach: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        opts = ["-u", user]
        for k, v in (env or {}).items():
            opts += ["-e", f"{k}={v}"]
        if workdir:
            opts += ["-w", workdir]
        if detach:
            opts.append("-d")
        return docker("exec", *opts, self.name, *argv, timeout=timeout)

    def sh(self, script: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.exec("sh", "-c", script, **kw)

    def ok(self, *argv: str, **kw: Any) -> str:
        """exec that must succeed; returns stdout."""
        r = self.exec(*argv, **kw)
        assert r.returncode == 0, f"{self.name}: {argv} as {kw.get('user', 'hermes')} failed\n{describe(r)}"
        return r.stdout

    def sh_ok(self, script: str, **kw: Any) -> str:
        return self.ok("sh", "-c", script, **kw)

    # -- state ---------------------------------------------------------------

    def inspect(self, fmt: str) -> str:
        return docker("inspect", "-f", fmt, self.name).stdout.strip()

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def exit_code(self) -> int:
        return int(self.inspect("{{.State.ExitCode}}"))

    def logs(self) -> str:
        r = docker("logs", self.name, timeout=60)
        return r.stdout + r.stderr

    def logs_tail(self, n: int = 60) -> str:
        return "--- docker logs (tail) ---\n" + "\n".join(self.logs().splitlines()[-n:])

    def wait_exit(self, timeout: float = 60) -> int:
        """Wait until the container has stopped; its exit code."""
        wait_for(lambda: not self.running(), timeout, f"{self.name} to exit", self.logs_tail)
        return self.exit_code()

    # -- files ---------------------------------------------------------------

    def read(self, path: str, user: str = "root") -> str:
        return self.ok("cat", path, user=user)

    def exists(self, path: str, user: str = "root") -> bool:
        return self.exec("test", "-e", path, user=user).returncode == 0

    def owner(self, path: str) -> str:
        """``user:group`` of a path (lstat: a symlink's own owner)."""
        return self.ok("stat", "-c", "%U:%G", path, user="root").strip()

    def boot_lines(self) -> list[str]:
        r = self.exec("cat", BOOT_LOG, user="root")
        return r.stdout.splitlines() if r.returncode == 0 else []

    def default_boot_lines(self) -> int:
        return sum(1 for line in self.boot_lines() if " profile=default " in f"{line} ")

    # -- processes -------------------------------------------------------------

    def procs(self) -> list[Proc]:
        out = self.ok("ps", "-eo", "pid=,ppid=,pgid=,sid=,tpgid=,uid=,stat=,args=", user="root")
        rows = []
        for line in out.splitlines():
            parts = line.split(None, 7)
            if len(parts) < 7:
                continue
            args = parts[7] if len(parts) == 8 else ""
            rows.append(Proc(*(int(p) for p in parts[:6]), parts[6], args))
        return rows

    def find(self, pattern: str) -> list[Proc]:
        """Processes whose full command line matches ``pattern`` (a regex)."""
        rx = re.compile(pattern)
        return [p for p in self.procs() if rx.search(p.args) and not p.args.startswith("ps -eo")]

    def environ(self, pid: int, user: str = "hermes") -> dict[str, str]:
        """A process's environment, read as its own user (root lacks CAP_SYS_PTRACE here)."""
        r = self.exec("cat", f"/proc/{pid}/environ", user=user)
        env = {}
        for item in r.stdout.split("\0"):
            if "=" in item:
                k, _, v = item.partition("=")
                env[k] = v
        return env

    def proc_status(self, pid: int) -> dict[str, str]:
        out = self.ok("cat", f"/proc/{pid}/status", user="root")
        return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)

    def listening(self, port: int, host: str = "127.0.0.1") -> bool:
        """A TCP socket in LISTEN on host:port, read from /proc/net/tcp (no ss/netstat needed)."""
        want_port = f"{port:04X}"
        want_host = "".join(f"{int(o):02X}" for o in reversed(host.split(".")))
        out = self.exec("cat", "/proc/net/tcp").stdout
        for line in out.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":
                h, _, p = fields[1].partition(":")
                if p == want_port and h == want_host:
                    return True
        return False

    # -- readiness -------------------------------------------------------------

    def wait_ready(self, timeout: float = READY_TIMEOUT, boots_before: int = 0) -> None:
        """Wait until boot has finished (C-BOOT-9 / C-SVC-6).

        First the real command, ``hermesinit svc wait --boot``; while hermesinit
        lacks it, the ``profile=default`` boot-log line of *this* boot (there
        must be more of them than ``boots_before``).
        """
        deadline = time.monotonic() + timeout
        r = self.exec("hermesinit", "svc", "wait", "--boot", "--timeout", str(int(timeout)), timeout=timeout + 15)
        if r.returncode == 0:
            return
        remaining = max(0.0, deadline - time.monotonic())

        def booted() -> bool:
            if not self.running():
                raise AssertionError(f"{self.name} exited during boot (rc={self.exit_code()})\n{self.logs_tail()}")
            return self.default_boot_lines() > boots_before

        wait_for(
            booted,
            remaining,
            f"{self.name} to finish booting (`hermesinit svc wait --boot` said: {r.stdout.strip()} {r.stderr.strip()})",
            self.logs_tail,
        )

    def restart(self, timeout: float = 60) -> float:
        """`docker restart`, then wait for the new boot. Returns the restart's duration."""
        before = self.default_boot_lines()
        start = time.monotonic()
        r = docker("restart", "-t", "30", self.name, timeout=timeout)
        took = time.monotonic() - start
        assert r.returncode == 0, describe(r)
        self.wait_ready(boots_before=before)
        return took

    # -- s6 surfaces ----------------------------------------------------------

    def svstat(self, slot: str, *opts: str, user: str = "hermes") -> subprocess.CompletedProcess[str]:
        return self.exec("/command/s6-svstat", *opts, f"{SCANDIR}/{slot}", user=user)

    def svc(self, flag: str, slot: str, user: str = "hermes") -> subprocess.CompletedProcess[str]:
        return self.exec("/command/s6-svc", flag, f"{SCANDIR}/{slot}", user=user)

    def slot_pid(self, slot: str) -> int | None:
        """The pid s6-svstat reports for an up slot, else None."""
        r = self.svstat(slot)
        m = re.search(r"\(pid (\d+)\)", r.stdout) if r.returncode == 0 and r.stdout.startswith("up ") else None
        return int(m.group(1)) if m else None

    def wait_slot_up(self, slot: str, timeout: float = 30, not_pid: int | None = None) -> int:
        return wait_for(
            lambda: (pid := self.slot_pid(slot)) and pid != not_pid and pid,
            timeout,
            f"{slot} up" + (f" with a pid other than {not_pid}" if not_pid else ""),
            lambda: f"svstat: {self.svstat(slot).stdout}{self.svstat(slot).stderr}\n{self.logs_tail()}",
        )

    def wait_slot_down(self, slot: str, timeout: float = 30) -> str:
        def down() -> str:
            r = self.svstat(slot)
            return r.stdout if r.returncode == 0 and r.stdout.startswith("down") else ""

        return wait_for(down, timeout, f"{slot} down", self.logs_tail)

    def svc_status_json(self, user: str = "hermes") -> Any:
        r = self.exec("hermesinit", "svc", "status", "--json", user=user)
        assert r.returncode == 0, f"hermesinit svc status --json as {user}\n{describe(r)}"
        return json.loads(r.stdout)


def service_state(doc: Any, name: str) -> str | None:
    """The state string of service ``name`` in `hermesinit svc status --json`.

    Accepts a list of objects with a ``name``, or a map keyed by name (also
    under a top-level ``services`` key); the state is the ``state`` (or
    ``status``) field.
    """
    if isinstance(doc, dict) and "services" in doc:
        doc = doc["services"]
    entry = None
    if isinstance(doc, dict):
        entry = doc.get(name)
    elif isinstance(doc, list):
        entry = next((e for e in doc if isinstance(e, dict) and e.get("name") == name), None)
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        for key in ("state", "status"):
            if isinstance(entry.get(key), str):
                return entry[key]
    return None


class Fleet:
    """Containers and volumes of one scope; ``cleanup`` removes them all."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def new_name(self) -> str:
        """A unique container name, removed at cleanup (for `docker run` done by hand)."""
        name = f"hermesinit-test-{SESSION}-{uuid.uuid4().hex[:8]}"
        self.containers.append(name)
        return name

    def _opts(self, env: dict[str, str] | None, opts: Sequence[str]) -> list[str]:
        out = ["--label", f"{LABEL}={SESSION}", *opts]
        for k, v in (env or {}).items():
            out += ["-e", f"{k}={v}"]
        return out

    def run(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        opts: Sequence[str] = (),
        ready: bool = True,
    ) -> Container:
        """`docker run -d` the image with ``args`` as the container command."""
        name = self.new_name()
        r = docker("run", "-d", "--name", name, *self._opts(env, opts), self.image, *args, timeout=60)
        assert r.returncode == 0, f"docker run failed\n{describe(r)}"
        c = Container(name, self.image)
        if ready:
            c.wait_ready()
        return c

    def once(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        opts: Sequence[str] = (),
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """`docker run` in the foreground; the container's exit code and output."""
        name = self.new_name()
        try:
            return docker("run", "--name", name, *self._opts(env, opts), self.image, *args, timeout=timeout)
        finally:
            docker("rm", "-f", "-v", name, timeout=60)

    def volume(self) -> str:
        name = f"hermesinit-test-{SESSION}-{uuid.uuid4().hex[:8]}"
        self.volumes.append(name)
        r = docker("volume", "create", "--label", f"{LABEL}={SESSION}", name)
        assert r.returncode == 0, describe(r)
        return name

    def cleanup(self) -> None:
        for name in self.containers:
            docker("rm", "-f", "-v", name, timeout=90)
        for name in self.volumes:
            docker("volume", "rm", "-f", name, timeout=60)
        self.containers.clear()
        self.volumes.clear()


def sweep_session() -> None:
    """Remove whatever this session left behind (a test killed mid-way)."""
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}={SESSION}").stdout.split()
    if ids:
        docker("rm", "-f", "-v", *ids, timeout=120)
    vols = docker("volume", "ls", "-q", "--filter", f"label={LABEL}={SESSION}").stdout.split()
    if vols:
        docker("volume", "rm", "-f", *vols, timeout=60)


# -- a real terminal for `docker run -t` ---------------------------------------------


def pty_run(
    argv: Sequence[str],
    steps: Iterable[tuple[str, str]] = (),
    timeout: float = 60,
    cols: int = 123,
    rows: int = 40,
) -> tuple[str, int]:
    """Run ``argv`` (a `docker run -t …`) on a fresh pseudo-terminal.

    ``steps`` are (text to wait for, bytes to type) pairs, played in order.
    Returns everything the terminal showed and the exit code; the client is
    killed (and the test fails) at the deadline.
    """
    import fcntl
    import pty
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # child: the docker client on the pty
        try:
            os.execvp(argv[0], list(argv))
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    out = b""
    pending = list(steps)
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        while True:
            if time.monotonic() >= deadline:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                break
            ready, _, _ = select.select([fd], [], [], POLL)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            if pending and pending[0][0].encode() in out:
                os.write(fd, pending.pop(0)[1].encode())
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = out.decode("utf-8", "replace")
    if timed_out:
        raise AssertionError(f"{shlex.join(argv)} did not finish within {timeout}s; terminal showed:\n{text[-3000:]}")
    return text, os.waitstatus_to_exitcode(status)


# -- small helpers for hand-written s6 service directories ---------------------------


def slot_script(c: Container, slot: str, run: str, *, finish: str | None = None, down: bool = False,
                log_run: str | None = None, publish: bool = True) -> None:
    """Write ``/run/service/<slot>`` (C-S6-5 format) as root, built under a dot name
    and renamed into place (C-SVC-7), then ask for a rescan (C-S6-4)."""
    tmp = f"{SCANDIR}/.{slot}.build"
    script = [f"set -eu; rm -rf {tmp}; mkdir -p {tmp}", f"echo longrun > {tmp}/type"]

    def put(path: str, body: str) -> None:
        script.append(f"cat > {path} <<'__EOF__'\n{body}\n__EOF__\nchmod 0755 {path}")

    put(f"{tmp}/run", run)
    if finish is not None:
        put(f"{tmp}/finish", finish)
    if log_run is not None:
        script.append(f"mkdir -p {tmp}/log")
        put(f"{tmp}/log/run", log_run)
    if down:
        script.append(f"touch {tmp}/down")
    if publish:
        script.append(f"mv {tmp} {SCANDIR}/{slot}")
        script.append(f"/command/s6-svscanctl -a {SCANDIR}")
    c.sh_ok("\n".join(script), user="root")
