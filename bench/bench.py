#!/usr/bin/env python3
"""hermesinit benchmarks, side by side with tini, dumb-init, catatonit, s6 and supervisord.

Run through `bench/run` (which installs the anchors, builds hermesinit and the `hb` helper).
Every init runs as PID 1 of a fresh PID + mount namespace (`unshare --pid --fork --mount-proc
--mount --propagation private`) on a fake root: /etc/passwd and /etc/group with the `hermes`
user bind-mounted, a tmpfs on /run and a fake /opt — the host's files are never touched.
Timestamps come from the static C helper `hb` (CLOCK_MONOTONIC, shared across namespaces), not
from a shell. Contenders run interleaved within each round (the order rotates), so slow drifts
of this shared machine hit all of them alike.
"""

import argparse
import calendar
import threading
import datetime
import hashlib
import json
import os
import platform
import random
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# Rows D (docker): the key of each case's samples, and its measure in the table.
DOCKER_CASES = (("run", "`docker run --rm IMG true`"),
                ("stop-idle", "`docker stop`, idle (`sleep infinity`)"),
                ("stop-gateway", "`docker stop`, one gateway (hermesinit: supervised; tini: main program)"))

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "hermes:x:10000:10000::/opt/data:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
GROUP = "root:x:0:\nhermes:x:10000:\nnogroup:x:65534:\n"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Every boot step: skipped for the rows that compare the bare init/supervisor (row 3 says "no
# boot steps"; the others measure stop, respawn, logging, memory…). Row 4 runs the full boot.
ALL_BOOT_STEPS = "env,remap,groups,scandir,volume,sweep,seed,stamp,apikey,auth,migrate,skills,modes,state,reconcile,dashboard,hooks,bootlog"

# The upstream (s6-overlay image) privilege-drop shim, as the seeds describe it: root →
# `s6-setuidgid hermes` → the real binary; strict truthiness for the opt-out.
SH_SHIM = """#!/bin/sh
# Upstream-style shim (s6-overlay image): drop root to hermes with s6-setuidgid.
real=/opt/hermes/.venv/bin/hermes
if [ "$(id -u)" = "0" ]; then
  case "${HERMES_DOCKER_EXEC_AS_ROOT:-}" in
    1|true|TRUE|True|yes|YES|Yes) exec "$real" "$@" ;;
  esac
  if ! command -v s6-setuidgid >/dev/null 2>&1; then
    echo "hermes: s6-setuidgid missing; use --user hermes or HERMES_DOCKER_EXEC_AS_ROOT=1" >&2
    exit 126
  fi
  exec s6-setuidgid hermes "$real" "$@"
fi
exec "$real" "$@"
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def write(path, text, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    if mode is not None:
        os.chmod(path, mode)


def parse_kv(text):
    """'a 1 b 2' lines → {'a': 1, 'b': 2} (ints where possible)."""
    out = {}
    for line in text.splitlines():
        toks = line.split()
        for i in range(0, len(toks) - 1, 2):
            try:
                out[toks[i]] = int(toks[i + 1])
            except ValueError:
                out[toks[i]] = toks[i + 1]
    return out


class Stats:
    def __init__(self, xs):
        self.xs = sorted(xs)

    @property
    def ok(self):
        return bool(self.xs)

    @property
    def median(self):
        return statistics.median(self.xs) if self.xs else float("nan")

    @property
    def lo(self):
        return self.xs[0] if self.xs else float("nan")

    @property
    def hi(self):
        return self.xs[-1] if self.xs else float("nan")

    def q(self, p):
        if not self.xs:
            return float("nan")
        k = (len(self.xs) - 1) * p
        f = int(k)
        c = min(f + 1, len(self.xs) - 1)
        return self.xs[f] + (self.xs[c] - self.xs[f]) * (k - f)


def fmt(v, unit):
    if v != v:  # nan
        return "n/a"
    if unit == "ms":
        if v >= 100:
            return f"{v:.0f} ms"
        if v >= 10:
            return f"{v:.1f} ms"
        if v >= 1:
            return f"{v:.2f} ms"
        return f"{v:.3f} ms"
    if unit == "us":
        return f"{v:.0f} µs" if v >= 10 else f"{v:.1f} µs"
    if unit == "lines/s":
        return f"{v / 1e6:.2f} M lines/s"
    if unit == "MB":
        return f"{v:.2f} MB"
    if unit == "%":
        return f"{v:.3f} %"
    if unit == "B":
        return f"{v / 1e6:.2f} MB"
    return f"{v:.3g} {unit}"


def fmt_stats(s, unit):
    if not s.ok:
        return "n/a"
    if len(s.xs) == 1:
        return fmt(s.median, unit)
    return f"{fmt(s.median, unit)} ({fmt(s.lo, unit).split()[0]}–{fmt(s.hi, unit)})"


class Bench:
    def __init__(self, args):
        self.args = args
        self.hi_src = args.hermesinit
        self.hb_src = args.hb
        self.rounds = args.rounds
        self.quick = args.quick
        self.w = tempfile.mkdtemp(prefix="hib-", dir="/tmp")
        os.chmod(self.w, 0o755)
        self.results = {}  # row id → dict
        self.load0 = read_load()
        self.notes = []
        self.setup_root()

    # ---- environment -------------------------------------------------------------------

    def p(self, *parts):
        return os.path.join(self.w, *parts)

    def setup_root(self):
        w = self.w
        os.makedirs(self.p("bin"), mode=0o755)
        self.hi = self.p("bin", "hermesinit")
        self.hb = self.p("bin", "hb")
        shutil.copy2(self.hi_src, self.hi)
        shutil.copy2(self.hb_src, self.hb)
        write(self.p("passwd"), PASSWD)
        write(self.p("group"), GROUP)
        os.makedirs(self.p("opt", "hermes", ".venv", "bin"))
        os.makedirs(self.p("opt", "hermes", "bin"))
        os.makedirs(self.p("opt", "hermes", "bin-sh"))
        os.makedirs(self.p("opt", "data"))
        os.chown(self.p("opt", "data"), 10000, 10000)
        # The real CLI stand-in: the static helper, which exits 0 at once when called `hermes`.
        shutil.copy2(self.hb_src, self.p("opt", "hermes", ".venv", "bin", "hermes"))
        os.symlink(self.hi, self.p("opt", "hermes", "bin", "hermes"))
        write(self.p("opt", "hermes", "bin-sh", "hermes"), SH_SHIM, 0o755)
        write(self.p("opt", "hermes", "defaults", "SOUL.md"), "You are Hermes.\n", 0o644)
        self.fifo = self.p("ready.fifo")
        os.mkfifo(self.fifo, 0o666)
        os.chmod(self.fifo, 0o666)
        os.makedirs(self.p("empty"), mode=0o755)
        for d in ("cfg", "run"):
            os.makedirs(self.p(d), mode=0o777)
            os.chmod(self.p(d), 0o777)
        self.hi_config("base", "")

    def hi_config(self, name, extra, scan=None):
        """Write a hermesinit config; returns its path."""
        scan = scan or self.p("empty")
        text = (f"scan_dir: {scan}\n"
                f"cont_init_dir: {self.p('empty')}\n"
                f"env_dir: /run/s6/container_environment\n"
                "kill_grace_ms: 3000\n" + extra)
        path = self.p("cfg", name + ".yaml")
        write(path, text)
        return path

    def env(self, cfg=None, extra=None, boot=False):
        e = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8",
             "HERMESINIT_CONFIG": cfg or self.p("cfg", "base.yaml"),
             "HERMES_HOME": "/opt/data"}
        if not boot:
            e["HERMESINIT_SKIP"] = ALL_BOOT_STEPS
        for kv in self.args.env:
            k, _, v = kv.partition("=")
            e[k] = v
        if extra:
            e.update(extra)
        return e

    def ns(self, cmd, pre="", pid1=True):
        """argv that runs `cmd` (exec'd) as PID 1 of a fresh PID + mount namespace on the fake root."""
        w = self.w
        setup = ("set -e; mount -t tmpfs -o mode=0755 tmpfs /run; "
                 f"mount --bind {w}/passwd /etc/passwd; mount --bind {w}/group /etc/group; "
                 f"mount --bind {w}/opt /opt; {pre} set +e; exec \"$@\"")
        argv = ["unshare"]
        if pid1:
            argv += ["--pid", "--fork", "--mount-proc"]
        argv += ["--mount", "--propagation", "private", "--", "/bin/sh", "-c", setup, "sh"]
        return argv + list(cmd)

    def drain_fifo(self):
        fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
        try:
            while True:
                try:
                    if not os.read(fd, 4096):
                        break
                except BlockingIOError:
                    break
        finally:
            os.close(fd)

    def stopbench(self, cmd, ready, settle_ms, env, timeout=30, pre=""):
        self.drain_fifo()
        argv = [self.hb, "stopbench", "-f", self.fifo, "-n", str(ready), "-s", str(settle_ms),
                "-t", str(timeout), "--"] + self.ns(cmd, pre=pre)
        r = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=timeout * 3)
        kv = parse_kv(r.stdout)
        if "stop_ns" not in kv or kv["stop_ns"] < 0:
            raise RuntimeError(f"stopbench failed: {r.stdout} {r.stderr[-2000:]}")
        return kv

    def order(self, names, r):
        k = r % len(names)
        return names[k:] + names[:k]

    def run_rounds(self, names, rounds, one):
        """one(name, round) → value or None; returns {name: [values]}."""
        out = {n: [] for n in names}
        errors = {n: [] for n in names}
        for r in range(rounds):
            for n in self.order(names, r):
                try:
                    v = one(n, r)
                    if v is not None:
                        out[n].append(v)
                except Exception as e:  # noqa: BLE001 — a failed sample is reported, not fatal
                    errors[n].append(str(e))
                    log(f"  ! {n}: {str(e)[:300]}")
        for n, es in errors.items():
            if es:
                self.notes.append(f"{n}: {len(es)} failed sample(s), first: {es[0][:200]}")
        return out

    def parity_rounds(self, floor):
        """Rounds for a row whose goal is parity with an anchor: at least `floor`, whatever the
        mode. With 5 rounds their medians moved ±15 % between runs on this VM, so the verdict was
        a coin toss. Floors by cost: rows 1 and 3 41 (~10 s for both), row 10 21 (~2.5 s a
        round), rows D 15 (D3 ~10 s a sample)."""
        return max(floor, self.rounds)

    # ---- service trees -----------------------------------------------------------------

    def tree(self, kind, n, svc_args, tag, log_lines=True, user="hermes"):
        """A scan directory / config with n services running `hb svc_args…` (with logging).
        Returns (init argv, env, ready count contributed by services)."""
        base = self.p(tag, kind)
        if os.path.exists(base):
            shutil.rmtree(base)
        os.makedirs(base)
        os.chmod(self.p(tag), 0o755)
        os.chmod(base, 0o755)
        logs = os.path.join(base, "logs")
        os.makedirs(logs)
        os.chown(logs, 10000, 10000)
        names = [f"svc{i:02d}" for i in range(1, n + 1)]
        if kind == "hermesinit":
            scan = os.path.join(base, "scan")
            for nm in names:
                args = [self.hb] + [a.replace("{name}", nm) for a in svc_args]
                spec = {"command": args}
                if user:
                    spec["user"] = user
                if log_lines:
                    spec["log"] = {"stdout": True, "dir": os.path.join(logs, nm)}
                write(os.path.join(scan, nm, "hermesinit.yaml"), json.dumps(spec) + "\n")
            cfg = self.hi_config(f"{tag}-tree", "", scan=scan)
            return cfg, scan, names
        if kind == "s6":
            scan = os.path.join(base, "scan")
            for nm in names:
                d = os.path.join(scan, nm)
                os.makedirs(d)
                args = [a.replace("{name}", nm) for a in svc_args]
                if user:
                    # A run script as Hermes writes them: sh, then s6-setuidgid, then the program.
                    write(os.path.join(d, "run"),
                          "#!/bin/sh\nexec s6-setuidgid " + user + " " + self.hb + " "
                          + " ".join(shq(a) for a in args) + "\n", 0o755)
                else:
                    # No shell at all: `run` is the helper itself, reading its arguments from hb-args.
                    os.symlink(self.hb, os.path.join(d, "run"))
                    write(os.path.join(d, "hb-args"), "\n".join(args) + "\n")
                if log_lines:
                    ld = os.path.join(logs, nm)
                    os.makedirs(ld)
                    os.chown(ld, 10000, 10000)
                    write(os.path.join(d, "log", "run"),
                          "#!/bin/sh\nexec s6-setuidgid hermes s6-log 1 n10 s1000000 T " + ld + "\n", 0o755)
            return None, scan, names
        if kind == "supervisord":
            conf = os.path.join(base, "supervisord.conf")
            text = ("[supervisord]\nnodaemon=true\nuser=root\n"
                    f"logfile={base}/supervisord.log\npidfile={base}/supervisord.pid\n"
                    "loglevel=warn\n\n")
            for nm in names:
                args = [self.hb] + [a.replace("{name}", nm) for a in svc_args]
                text += (f"[program:{nm}]\ncommand={' '.join(shq(a) for a in args)}\n"
                         "autorestart=true\nstartretries=1000000\n")
                if user:
                    text += f"user={user}\n"
                if log_lines:
                    text += (f"stdout_logfile={logs}/{nm}.log\nredirect_stderr=true\n"
                             "stdout_logfile_maxbytes=1000000\nstdout_logfile_backups=10\n")
                text += "\n"
            write(conf, text)
            return conf, None, names
        raise ValueError(kind)

    def tree_cmd(self, kind, cfg, scan, main):
        if kind == "hermesinit":
            return [self.hi, "init"] + main, self.env(cfg)
        if kind == "s6":
            # s6-svscan supervises at most 500 services (a logger counts as one) unless told.
            n = len([d for d in os.listdir(scan) if not d.startswith(".")])
            opts = ["-c", str(2 * n + 10)] if 2 * n > 500 else []
            return ["s6-svscan"] + opts + [scan], self.env()
        if kind == "supervisord":
            return ["supervisord", "-n", "-c", cfg], self.env()
        raise ValueError(kind)

    # ---- rows --------------------------------------------------------------------------

    def inits_simple(self, main):
        """The single-program inits, each running `main` as its child."""
        return {
            "hermesinit": ([self.hi, "init"] + main, self.env()),
            "tini": (["tini", "--"] + main, self.env()),
            "dumb-init": (["dumb-init"] + main, self.env()),
            "catatonit": (["catatonit", "--"] + main, self.env()),
        }

    def row1(self):
        log("row 1: SIGTERM → exit (main program exits at once on TERM)")
        inits = self.inits_simple([self.hb, "ready", self.fifo])
        names = list(inits)
        res = self.run_rounds(names, self.parity_rounds(41), lambda n, r: self.stopbench(
            inits[n][0], 1, 50, inits[n][1])["stop_ns"] / 1e6)
        self.results[1] = {"unit": "ms", "samples": res}

    def row2(self):
        log("row 2: SIGTERM → exit with 10 services with logging")
        kinds = ["hermesinit", "s6", "supervisord"]
        setups = {}
        for k in kinds:
            cfg, scan, names = self.tree(k, 10, ["ready", self.fifo, "{name} started"], "r2")
            main = [self.hb, "ready", self.fifo] if k == "hermesinit" else []
            cmd, env = self.tree_cmd(k, cfg, scan, main)
            setups[k] = (cmd, env, 11 if k == "hermesinit" else 10)
        rounds = max(3, self.rounds // 2)
        res = self.run_rounds(kinds, rounds, lambda n, r: self.stopbench(
            setups[n][0], setups[n][2], 300, setups[n][1], timeout=40)["stop_ns"] / 1e6)
        self.results[2] = {"unit": "ms", "samples": res}

    def row3(self):
        log("row 3: init start → main program exec (`true`), no boot steps")
        main = [self.hb, "stamp", "M"]
        inits = self.inits_simple(main)
        # Extra, outside the goal: hermesinit with its whole default boot on an empty volume.
        os.makedirs(self.p("r3", "scan"), exist_ok=True)
        os.chmod(self.p("r3"), 0o755)
        cfg = self.hi_config("r3-boot", "", scan=self.p("r3", "scan"))
        inits["hermesinit (full boot, empty volume)"] = ([self.hi, "init"] + main, self.env(cfg, boot=True))
        names = list(inits)

        def one(n, r):
            cmd, env = inits[n]
            t0 = time.monotonic_ns()
            pr = subprocess.run(self.ns([self.hb, "execstamp", "E"] + cmd), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, timeout=30)
            t1 = time.monotonic_ns()
            kv = parse_kv(pr.stdout)
            if "E" not in kv or "M" not in kv:
                raise RuntimeError(f"no stamps: {pr.stdout!r} {pr.stderr[-500:]!r}")
            self.results.setdefault("3-total", {}).setdefault(n, []).append((t1 - t0) / 1e6)
            return (kv["M"] - kv["E"]) / 1e6
        res = self.run_rounds(names, self.parity_rounds(41), one)
        self.results[3] = {"unit": "ms", "samples": res}

    def row5(self):
        log("row 5: respawn latency after a crash (first restart)")
        kinds = ["hermesinit", "s6", "supervisord"]
        state = self.p("r5", "state")

        def setups(delay):
            out = {}
            for k in kinds:
                cfg, scan, names = self.tree(k, 1, ["crasher", state, self.fifo, str(delay)], "r5",
                                             log_lines=False, user=None)
                main = [self.hb, "ready", self.fifo] if k == "hermesinit" else []
                cmd, env = self.tree_cmd(k, cfg, scan, main)
                out[k] = (cmd, env, 2 if k == "hermesinit" else 1)
            return out

        def one(st, n):
            if os.path.exists(state):
                os.unlink(state)
            cmd, env, ready = st[n]
            self.stopbench(cmd, ready, 0, env, timeout=20)
            text = open(state).read().split("\n")
            s = [int(x.split()[1]) for x in text if x.startswith("S ")]
            x = [int(x.split()[1]) for x in text if x.startswith("X ")]
            if len(s) < 2 or not x:
                raise RuntimeError(f"crasher state: {text}")
            return (s[1] - x[0]) / 1e6
        rounds = self.rounds if not self.quick else max(3, self.rounds // 2)
        # The service dies 100 ms after it started (a crash "at once", after the supervisor's own
        # start-up is over); s6-supervise then holds the restart until 1 s after the last start.
        st = setups(100)
        res = self.run_rounds(kinds, rounds, lambda n, r: one(st, n))
        # And a crash 1.1 s after the start, where no supervisor holds the restart back: the bare
        # cost of noticing the exit and starting the service again.
        st = setups(1100)
        late = self.run_rounds(kinds, max(3, rounds // 2), lambda n, r: one(st, n))
        self.results[5] = {"unit": "ms", "samples": res, "late": late}

    def ns_pids(self, pid1):
        """Every process of the PID namespace whose PID 1 has host pid `pid1`."""
        try:
            target = os.readlink(f"/proc/{pid1}/ns/pid")
        except OSError:
            return []
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{d}/ns/pid") == target:
                    out.append(int(d))
            except OSError:
                pass
        return out

    def cpu_ticks(self, pids):
        tot = 0
        for p in pids:
            try:
                st = open(f"/proc/{p}/stat").read()
            except OSError:
                continue
            f = st[st.rindex(")") + 2:].split()
            # fields after the comm: state(0) … utime(11) stime(12) cutime(13) cstime(14)
            tot += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        return tot

    def start_tree(self, cmd, env, ready, timeout=30, stdout=subprocess.DEVNULL):
        """Start a namespace; wait for `ready` bytes on the FIFO. Returns (Popen, pid1)."""
        self.drain_fifo()
        fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
        pr = subprocess.Popen(self.ns(cmd), env=env, stdout=stdout, stderr=subprocess.DEVNULL,
                              start_new_session=True)
        got = 0
        deadline = time.monotonic() + timeout
        try:
            while got < ready and time.monotonic() < deadline:
                r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
                if r:
                    try:
                        got += len(os.read(fd, 64))
                    except BlockingIOError:
                        pass
        finally:
            os.close(fd)
        pid1 = None
        for _ in range(400):
            try:
                c = open(f"/proc/{pr.pid}/task/{pr.pid}/children").read().split()
                if c:
                    pid1 = int(c[0])
                    break
            except OSError:
                pass
            time.sleep(0.005)
        if got < ready or pid1 is None:
            self.kill_tree(pr, pid1)
            raise RuntimeError(f"not ready ({got}/{ready})")
        return pr, pid1

    def kill_tree(self, pr, pid1, sig=signal.SIGTERM, timeout=40):
        try:
            if pid1:
                os.kill(pid1, sig)
            pr.wait(timeout=timeout)
        except Exception:  # noqa: BLE001
            try:
                os.killpg(pr.pid, signal.SIGKILL)
            except OSError:
                pass
            if pid1:
                try:
                    os.kill(pid1, signal.SIGKILL)
                except OSError:
                    pass
            pr.wait()

    def row6(self):
        secs = self.args.cpu_seconds
        log(f"row 6: CPU in {secs} s of a service that exits at once, forever")
        kinds = ["hermesinit", "s6", "supervisord"]
        ticks_file = self.p("r6", "ticks")
        hz = os.sysconf("SC_CLK_TCK")
        out = {}
        spawns = {}
        for k in kinds:
            cfg, scan, names = self.tree(k, 1, ["tick", ticks_file], "r6", log_lines=False, user=None)
            main = [self.hb, "ready", self.fifo] if k == "hermesinit" else []
            cmd, env = self.tree_cmd(k, cfg, scan, main)
            if k == "s6":
                # s6-supervise execs ./run: the helper reads `tick FILE` from hb-args, no shell.
                pass
            if os.path.exists(ticks_file):
                os.unlink(ticks_file)
            self.drain_fifo()
            pr = subprocess.Popen(self.ns(cmd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
            time.sleep(1.0)
            pid1 = int(open(f"/proc/{pr.pid}/task/{pr.pid}/children").read().split()[0])
            c0 = self.cpu_ticks(self.ns_pids(pid1))
            n0 = os.path.getsize(ticks_file) if os.path.exists(ticks_file) else 0
            time.sleep(secs)
            c1 = self.cpu_ticks(self.ns_pids(pid1))
            n1 = os.path.getsize(ticks_file) if os.path.exists(ticks_file) else 0
            self.kill_tree(pr, pid1)
            cpu_s = (c1 - c0) / hz
            out[k] = [100.0 * cpu_s / secs]
            spawns[k] = n1 - n0
            log(f"  {k}: {cpu_s * 1000:.0f} ms CPU, {n1 - n0} spawns")
        self.results[6] = {"unit": "%", "samples": out, "spawns": spawns, "secs": secs}

    def make_lines(self):
        path = self.p("data", "lines.txt")
        if os.path.exists(path):
            return path
        os.makedirs(self.p("data"), mode=0o755, exist_ok=True)
        n = self.args.lines
        filler = "x" * 100
        with open(path, "w") as f:
            chunk = []
            for i in range(n):
                head = f"line {i:09d} "
                chunk.append(head + filler[: 99 - len(head)] + "\n")
                if len(chunk) == 10000:
                    f.write("".join(chunk))
                    chunk = []
            f.write("".join(chunk))
        os.chmod(path, 0o644)
        return path

    def row7(self):
        log("row 7: log fan-out throughput (stdout + rotated, timestamped file)")
        data = self.make_lines()
        nlines = self.args.lines
        base = self.p("r7")
        os.makedirs(base, exist_ok=True)
        os.chmod(base, 0o777)
        last_line = f"line {nlines - 1:09d} "

        def sink(to_pipe):
            """Where the container's stdout goes: a pipe drained (and counted) by `wc -l`; a pipe read
            (and counted) here, with a 2 s stall half-way ("stall"); or /dev/null."""
            if to_pipe == "stall":
                r, w = os.pipe()
                res = {"count": 0}

                def reader():
                    got, stalled = 0, False
                    while True:
                        b = os.read(r, 1 << 16)
                        if not b:
                            break
                        got += len(b)
                        res["count"] += b.count(b"\n")
                        if not stalled and got >= nlines * 50:
                            time.sleep(2.0)
                            stalled = True
                    os.close(r)
                t = threading.Thread(target=reader, daemon=True)
                t.start()
                return (t, res), os.fdopen(w, "wb")
            if to_pipe:
                wc = subprocess.Popen(["wc", "-l"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                return wc, wc.stdin
            return None, open(os.devnull, "wb")

        def collect(wc, out):
            out.close()
            if wc is None:
                return None
            if isinstance(wc, tuple):
                wc[0].join(timeout=120)
                return wc[1]["count"]
            count = int(wc.stdout.read().split()[0])
            wc.wait(timeout=60)
            return count

        def last_of(logdir):
            cur = open(os.path.join(logdir, "current"), "rb").read().decode().splitlines()
            return cur[-1] if cur else ""

        def hi(to_pipe):
            logdir = os.path.join(base, "hi-log")
            shutil.rmtree(logdir, ignore_errors=True)
            scan = os.path.join(base, "scan")
            shutil.rmtree(scan, ignore_errors=True)
            stamp = os.path.join(base, "start")
            hwm = os.path.join(base, "hwm")
            for f in (stamp, hwm):
                if os.path.exists(f):
                    os.unlink(f)
            # The service is `cat FILE` (after a stamp of its start time); PID 1 fans its output out.
            spec = {"command": [self.hb, "stampto", stamp, "/bin/cat", data], "user": "hermes",
                    "log": {"stdout": True, "dir": logdir}}
            write(os.path.join(scan, "logsvc", "hermesinit.yaml"), json.dumps(spec) + "\n")
            cfg = self.hi_config("r7", "", scan=scan)
            # The main program waits until the service is down (PID 1 has drained its pipe by then),
            # then reads PID 1's peak RSS; PID 1 then stops and exits.
            waiter = f"{self.hi} svc wait --down --timeout 120 logsvc; grep VmHWM /proc/1/status > {hwm}"
            wc, out = sink(to_pipe)
            errf = os.path.join(base, "hi-stderr")
            with open(errf, "wb") as ef:
                pr = subprocess.Popen(self.ns([self.hi, "init", "/bin/sh", "-c", waiter]), env=self.env(cfg),
                                      stdout=out, stderr=ef)
                out.close()
                pr.wait(timeout=300)
            t_end = time.monotonic_ns()
            count = collect(wc, out)
            reported[0] = sum(int(m) for m in re.findall(r"container stdout: (\d+) line\(s\) dropped",
                                                           open(errf, errors="replace").read()))
            t0 = int(open(stamp).read())
            kb = int(open(hwm).read().split()[1])
            return t_end - t0, kb, count, last_of(logdir)

        def s6log(to_pipe):
            logdir = os.path.join(base, "s6-log")
            shutil.rmtree(logdir, ignore_errors=True)
            wc, out = sink(to_pipe)
            with open(data, "rb") as inp:
                pr = subprocess.Popen([self.hb, "runrss", "s6-log", "1", "n10", "s1000000", "T", logdir],
                                      stdin=inp, stdout=out, stderr=subprocess.PIPE, text=True)
                out.close()
                err = pr.communicate(timeout=300)[1]
            reported[0] = 0
            count = collect(wc, out)
            kv = parse_kv(err.splitlines()[-1])
            return kv["elapsed_ns"], kv["maxrss_kb"], count, last_of(logdir)

        fns = {"hermesinit": hi, "s6-log": s6log}
        rss = {k: [] for k in fns}
        checks = []
        null = {k: [] for k in fns}
        drops = {k: [] for k in fns}
        stall = {k: [] for k in fns}
        reported = [0]

        def one(n, r):
            dt, kb, count, last = fns[n](True)
            rss[n].append(kb / 1024.0)
            drops[n].append(nlines - count)
            if last_line not in last:
                checks.append(f"{n}: last line missing from the file; last file line {last[:60]!r}")
            # Same with the container's stdout on /dev/null.
            dt2, kb2, _, _ = fns[n](False)
            null[n].append(nlines / (dt2 / 1e9))
            # And with a reader that stops for 2 s half-way (past the 1 s stall limit).
            dt3, _, count3, last3 = fns[n]("stall")
            stall[n].append({"missing": nlines - count3, "reported": reported[0], "secs": dt3 / 1e9,
                             "file_last": last_line in last3})
            if last_line not in last3:
                checks.append(f"{n}: last line missing from the file after a stalled reader")
            return nlines / (dt / 1e9)
        rounds = max(3, self.rounds // 3)
        res = self.run_rounds(list(fns), rounds, one)
        self.results[7] = {"unit": "lines/s", "samples": res, "rss": rss, "checks": checks, "null": null,
                           "drops": drops, "stall": stall}
        for c in checks:
            self.notes.append("row 7 check: " + c)

    def row_scale(self):
        """Row S: 1, 10, 100, 1000 services with logging, hermesinit vs the s6 tree of the same
        size (supervisord up to 100): SIGTERM → exit, PSS of the supervising processes, idle CPU,
        status latency. One namespace per sample measures all four."""
        ns_ = [int(x) for x in self.args.scale.split(",") if x.strip()]
        secs = 5.0 if self.quick else 60.0
        log(f"row S: scaling with N services ({ns_}), idle CPU over {secs} s")
        out = {}
        for n in ns_:
            kinds = ["hermesinit", "s6"] + (["supervisord"] if n <= 100 else [])
            setups = {}
            for k in kinds:
                cfg, scan, names = self.tree(k, n, ["ready", self.fifo, "{name} started"], f"rS{n}")
                main = [self.hb, "ready", self.fifo] if k == "hermesinit" else []
                if k == "hermesinit":
                    sock = self.p(f"rS{n}", "ctl", "control.sock")
                    os.makedirs(os.path.dirname(sock), exist_ok=True)
                    cfg = self.hi_config(f"rS{n}-tree", f"control_socket: {sock}\n", scan=scan)
                cmd, env = self.tree_cmd(k, cfg, scan, main)
                setups[k] = (cmd, env, n + 1 if k == "hermesinit" else n, cfg, scan, names)
            res = {k: {"stop_ms": [], "pss_mb": [], "cpu_pct": [], "status_ms": []} for k in kinds}

            def one(k, r):
                cmd, env, ready, cfg, scan, names = setups[k]
                pr, pid1 = self.start_tree(cmd, env, ready, timeout=300)
                try:
                    time.sleep(1.0 if n < 1000 else 3.0)
                    pss, _, _ = self.pss(self.ns_pids(pid1))
                    hz = os.sysconf("SC_CLK_TCK")
                    pids = self.ns_pids(pid1)
                    sup = [p for p in pids if self.exe_of(p) != "hb"]
                    c0 = self.cpu_ticks(sup)
                    time.sleep(secs)
                    c1 = self.cpu_ticks(sup)
                    lat = []
                    for _ in range(5):
                        t = time.monotonic_ns()
                        if k == "hermesinit":
                            subprocess.run([self.hi, "svc", "status"], env={"PATH": PATH, "HERMESINIT_CONFIG": cfg},
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
                        elif k == "s6":
                            # s6 has no whole-tree status: one s6-svstat per service, as a script would.
                            for nm in names:
                                subprocess.run(["s6-svstat", os.path.join(scan, nm)], stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL)
                        else:
                            lat = None
                            break
                        lat.append((time.monotonic_ns() - t) / 1e6)
                    pfd = os.pidfd_open(pid1)
                    t = time.monotonic_ns()
                    os.kill(pid1, signal.SIGTERM)
                    select.select([pfd], [], [], 120)
                    stop = (time.monotonic_ns() - t) / 1e6
                    os.close(pfd)
                finally:
                    self.kill_tree(pr, pid1)
                res[k]["stop_ms"].append(stop)
                res[k]["pss_mb"].append(pss / 1024.0)
                res[k]["cpu_pct"].append(100.0 * (c1 - c0) / hz / secs)
                if lat:
                    res[k]["status_ms"].append(Stats(lat).median)
                return stop
            rounds = 1 if (self.quick or n >= 1000) else max(1, self.rounds // 5)
            self.run_rounds(kinds, rounds, one)
            out[n] = res
            shutil.rmtree(self.p(f"rS{n}"), ignore_errors=True)
        self.results["S"] = {"scale": out, "secs": secs}

    def exe_of(self, p):
        try:
            return os.path.basename(os.readlink(f"/proc/{p}/exe"))
        except OSError:
            return ""

    def row_idle(self):
        """Row Z: voluntary context switches of PID 1 over an idle window, hermesinit vs s6-svscan,
        10 silent services with logging each."""
        secs = 10.0 if self.quick else 60.0
        log(f"row Z: PID 1 wake-ups over {secs} s idle")
        kinds = ["hermesinit", "s6"]
        setups = {}
        for k in kinds:
            cfg, scan, names = self.tree(k, 10, ["ready", self.fifo, "{name} started"], "rZ")
            main = [self.hb, "ready", self.fifo] if k == "hermesinit" else []
            cmd, env = self.tree_cmd(k, cfg, scan, main)
            setups[k] = (cmd, env, 11 if k == "hermesinit" else 10)
        # Interleaved: both trees run at once over the same window.
        running = {}
        try:
            for k in kinds:
                cmd, env, ready = setups[k]
                running[k] = self.start_tree(cmd, env, ready)
            time.sleep(1.0)

            def vcs(pid):
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("voluntary_ctxt_switches:"):
                        return int(line.split()[1])
                return 0
            a = {k: vcs(running[k][1]) for k in kinds}
            time.sleep(secs)
            b = {k: vcs(running[k][1]) for k in kinds}
        finally:
            for k, (pr, pid1) in running.items():
                self.kill_tree(pr, pid1)
        self.results["Z"] = {"secs": secs, "wakeups": {k: b[k] - a[k] for k in kinds}}

    def pss(self, pids, exclude_exe=("hb",)):
        tot_pss = tot_rss = 0
        procs = []
        for p in pids:
            try:
                exe = os.path.basename(os.readlink(f"/proc/{p}/exe"))
                comm = open(f"/proc/{p}/comm").read().strip()
            except OSError:
                continue
            if exe in exclude_exe:
                continue
            try:
                for line in open(f"/proc/{p}/smaps_rollup"):
                    if line.startswith("Pss:"):
                        tot_pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        tot_rss += int(line.split()[1])
            except OSError:
                continue
            procs.append(comm)
        return tot_pss, tot_rss, procs

    def row8(self):
        log("row 8: memory (PSS) of every supervising/logging process, 10 services")
        kinds = ["hermesinit", "s6", "supervisord"]
        setups = {}
        for k in kinds:
            cfg, scan, names = self.tree(k, 10, ["ready", self.fifo, "{name} started"], "r8")
            main = [self.hb, "ready", self.fifo] if k == "hermesinit" else []
            cmd, env = self.tree_cmd(k, cfg, scan, main)
            setups[k] = (cmd, env, 11 if k == "hermesinit" else 10)
        extra = {k: {"rss": [], "procs": []} for k in kinds}

        def one(n, r):
            cmd, env, ready = setups[n]
            pr, pid1 = self.start_tree(cmd, env, ready)
            try:
                time.sleep(1.0)
                pss, rss, procs = self.pss(self.ns_pids(pid1))
            finally:
                self.kill_tree(pr, pid1)
            extra[n]["rss"].append(rss / 1024.0)
            extra[n]["procs"].append(len(procs))
            extra[n]["names"] = sorted(set(procs))
            return pss / 1024.0
        rounds = max(3, self.rounds // 3)
        res = self.run_rounds(kinds, rounds, one)
        self.results[8] = {"unit": "MB", "samples": res, "extra": extra}

    def row9(self):
        log("row 9: `hermes` shim overhead (root → hermes, exec a trivial target)")
        n = 200 if self.quick else 500
        variants = {
            "direct": "/opt/hermes/.venv/bin/hermes",
            "hermesinit": "/opt/hermes/bin/hermes",
            "sh+s6-setuidgid": "/opt/hermes/bin-sh/hermes",
        }
        script = "for r in $(seq 1 %d); do\n" % self.rounds
        for r_names in [list(variants)]:
            for v in r_names:
                script += f"  echo \"{v} $({self.hb} execbench {n} {variants[v]})\"\n"
        script += "done\n"
        pr = subprocess.run(self.ns(["/bin/sh", "-c", script]), env=self.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, timeout=1200)
        med = {v: [] for v in variants}
        for line in pr.stdout.splitlines():
            v, rest = line.split(" ", 1) if not line.startswith("sh+") else ("sh+s6-setuidgid", line.split(" ", 1)[1])
            kv = parse_kv(rest)
            if kv.get("failed", 1) != 0:
                self.notes.append(f"row 9: {v} failed runs: {rest}")
            med[v].append(kv["median_ns"] / 1e3)
        # Added time per exec, round by round (same round = same machine state).
        added = {"hermesinit": [], "sh+s6-setuidgid": []}
        for i in range(min(len(x) for x in med.values())):
            for v in added:
                added[v].append(med[v][i] - med["direct"][i])
        self.results[9] = {"unit": "us", "samples": added, "raw": med, "n": n}

    def row10(self):
        n = self.args.orphans
        log(f"row 10: orphan storm ({n} orphans)")
        inits = self.inits_simple([self.hb, "storm", str(n)])
        names = list(inits)

        def one(k, r):
            cmd, env = inits[k]
            pr = subprocess.run(self.ns(cmd), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, timeout=120)
            kv = parse_kv(pr.stdout)
            if "storm_ns" not in kv:
                raise RuntimeError(f"storm: {pr.stdout!r} {pr.stderr[-500:]!r}")
            return kv["storm_ns"] / 1e6
        # Noisy: the kernel's reaping dominates, not the init.
        res = self.run_rounds(names, self.parity_rounds(21), one)
        self.results[10] = {"unit": "ms", "samples": res}

    def row11(self):
        log("row 11: stripped static binary size")
        sizes = {"hermesinit": os.path.getsize(self.hi_src)}
        for name, path in (("tini-static", "/usr/bin/tini-static"), ("catatonit", "/usr/bin/catatonit")):
            if os.path.exists(path):
                sizes[name] = os.path.getsize(path)
        s6bins = ["s6-svscan", "s6-supervise", "s6-log", "s6-svc", "s6-svstat", "s6-svscanctl", "s6-svwait",
                  "s6-setuidgid", "s6-envdir", "s6-dumpenv", "s6-applyuidgid", "s6-envuidgid", "s6-notifyoncheck",
                  "s6-svok", "s6-svlisten1", "s6-ftrigrd"]
        tot = 0
        found = []
        for b in s6bins:
            p = shutil.which(b)
            if p:
                tot += os.path.getsize(os.path.realpath(p))
                found.append(b)
        libs = 0
        for lib in ("libs6.so", "libskarnet.so", "libexecline.so"):
            for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"):
                cands = [f for f in os.listdir(d) if f.startswith(lib)] if os.path.isdir(d) else []
                if cands:
                    libs += os.path.getsize(os.path.realpath(os.path.join(d, cands[0])))
                    break
        sizes["s6 set (Debian, dynamic)"] = tot + libs
        self.results[11] = {"unit": "B", "samples": {k: [v] for k, v in sizes.items()},
                            "s6_detail": f"{len(found)} binaries ({', '.join(found)}) = {tot} B + "
                                         f"libs6/libskarnet/libexecline = {libs} B"}

    # ---- row 4: boot -------------------------------------------------------------------

    def make_volume(self, root, nfiles, bad_pct):
        """A HERMES_HOME with nfiles files spread over the usual subtrees, all hermes-owned except
        bad_pct % root-owned ones (returned, so they can be reset after each run)."""
        if os.path.exists(root):
            shutil.rmtree(root)
        os.makedirs(root)
        subtrees = [("workspace", 0.425), ("sessions", 0.2), ("skills", 0.15), ("logs", 0.1), ("memories", 0.05),
                    ("profiles/coder", 0.05), ("home", 0.025)]
        bad = []
        made = 0
        rnd = random.Random(42)
        if nfiles:
            # cron/ is healed before services start, and hermes-agent bounds it: jobs.json plus at
            # most `cron.output_retention` (default 50) run outputs per job. 20 busy jobs, whatever
            # the volume's size.
            os.makedirs(os.path.join(root, "cron", "output"))
            with open(os.path.join(root, "cron", "jobs.json"), "w") as fh:
                fh.write("{}")
            for job in range(20):
                d = os.path.join(root, "cron", "output", f"job{job:02d}")
                os.makedirs(d)
                for run in range(50):
                    with open(os.path.join(d, f"2026-11-{run % 28 + 1:02d}_{run:04d}.md"), "w") as fh:
                        fh.write("x")
            made += 1 + 20 * 50
        for sub, frac in subtrees:
            cnt = int(nfiles * frac)
            per_dir = 500
            for i in range(cnt):
                d = os.path.join(root, sub, f"d{i // per_dir:04d}")
                if i % per_dir == 0:
                    os.makedirs(d, exist_ok=True)
                f = os.path.join(d, f"f{i:06d}")
                with open(f, "w") as fh:
                    fh.write("x")
                made += 1
        subprocess.run(["chown", "-R", "10000:10000", root], check=True)
        if bad_pct:
            allf = [os.path.join(dp, f) for dp, dn, fn in os.walk(root) for f in fn]
            bad = rnd.sample(allf, int(len(allf) * bad_pct / 100))
        return made, bad

    def reset_bad(self, bad):
        for f in bad:
            os.chown(f, 0, 0)

    def row4(self):
        log("row 4: boot to readiness (full boot) vs the upstream shell approach")
        if not self.boot_landed():
            self.results[4] = {"skipped": "boot steps have not landed in this build (boot::run is a no-op)"}
            log("  skipped: boot steps not in this build")
            return
        upstream = os.path.join(HERE, "upstream", "stage2-boot.sh")
        vols = [("empty volume", 0, 0), (f"{self.args.volume_files // 1000}k files, all right",
                                         self.args.volume_files, 0),
                (f"{self.args.volume_files // 1000}k files, 1% root-owned", self.args.volume_files, 1)]
        if self.args.big_volume_files:
            vols.append((f"{self.args.big_volume_files // 1000}k files, 1% root-owned", self.args.big_volume_files, 1))
        out = {}
        sweep = {}
        for label, nfiles, bad_pct in vols:
            vol = self.p("r4", "vol")
            made, bad = self.make_volume(vol, nfiles, bad_pct)
            os.chmod(self.p("r4"), 0o755)
            cfg = self.hi_config("r4", "", scan=self.p("r4", "scan"))
            os.makedirs(self.p("r4", "scan"), exist_ok=True)
            os.makedirs(self.p("r4", "scan-up"), exist_ok=True)
            pre = f"mount --bind {vol} /opt/data;"
            # M: readiness (the main program runs). S: the whole sweep is complete — for hermesinit
            # once `svc wait --sweep` returns (its bulk trees are healed in the background), for the
            # upstream shell at M already (its sweep is synchronous). Both mains are the same sh.
            main_hi = ["/bin/sh", "-c", f"{self.hb} stamp M; {self.hi} svc wait --sweep --timeout 900; {self.hb} stamp S"]
            main_up = ["/bin/sh", "-c", f"{self.hb} stamp M; {self.hb} stamp S"]
            cmds = {
                "hermesinit": ([self.hi, "init"] + main_hi, self.env(cfg, boot=True)),
                "upstream sh": (["/bin/sh", upstream] + main_up,
                                self.env(extra={"HERMESINIT_SCAN_DIR": self.p("r4", "scan-up")})),
            }
            sweep[label] = {n: [] for n in cmds}

            def one(n, r):
                self.reset_bad(bad)
                # The boot log and the seeded files of the previous run go: every run is a first boot
                # of the image on this volume (the sweep sees the same tree each time).
                for f in ("logs/container-boot.log", "SOUL.md", "gateway_state.json"):
                    try:
                        os.unlink(os.path.join(vol, f))
                    except OSError:
                        pass
                # What the bench itself just dirtied (the tree, the re-broken owners, the previous
                # run's fixes) is written back now, not during the boot it times: a real volume is
                # at rest when its container starts.
                at_rest(vol)
                cmd, env = cmds[n]
                pr = subprocess.run(self.ns([self.hb, "execstamp", "E"] + cmd, pre=pre), env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
                kv = parse_kv(pr.stdout)
                if "M" not in kv or "S" not in kv:
                    raise RuntimeError(f"no main stamp: {pr.stdout!r} {pr.stderr[-800:]!r}")
                bl = os.path.join(vol, "logs", "container-boot.log")
                if not os.path.exists(bl) or "profile=default" not in open(bl).read():
                    raise RuntimeError(f"{n}: no profile=default line in the boot log")
                left = [f for f in bad if os.stat(f).st_uid != 10000]
                if left:
                    raise RuntimeError(f"{n}: {len(left)} files still not hermes-owned")
                sweep[label][n].append((kv["S"] - kv["E"]) / 1e6)
                return (kv["M"] - kv["E"]) / 1e6
            # 3 rounds at least, the 1M-file volume too: two gave medians 1.4x and 2.3x the
            # empty volume's in runs an hour apart.
            rounds = max(3, self.rounds // 3)
            out[label] = self.run_rounds(list(cmds), rounds, one)
            out[label]["_files"] = made
            out[label]["_bad"] = len(bad)
        shutil.rmtree(self.p("r4", "vol"), ignore_errors=True)
        self.results[4] = {"unit": "ms", "volumes": out, "sweep": sweep}

    def boot_landed(self):
        # boot::run is a no-op until the boot steps land: then the binary knows the boot log.
        data = open(self.hi_src, "rb").read()
        return b"container-boot.log" in data

    # ---- docker --------------------------------------------------------------------------

    def docker_rows(self):
        """Rows D: the hermesinit image against a tini variant of the same image (same base, same
        venv, same seeded volume; tini-static as PID 1, no supervision, running as hermes). Each
        case runs both images interleaved, the order alternating per round; wall time of the
        docker CLI. Also one record row (no anchor): stop with the dashboard and 2 gateways."""
        img = self.args.image
        if not shutil.which("docker"):
            self.results["docker"] = {"skipped": "no docker CLI"}
            return
        r = subprocess.run(["docker", "image", "inspect", img], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode != 0:
            self.results["docker"] = {"skipped": f"image {img} does not exist (built by the image work)"}
            log(f"docker rows skipped: no image {img}")
            return
        image_id = docker_out(["image", "inspect", "-f", "{{.Id}}", img])
        created = docker_out(["image", "inspect", "-f", "{{.Created}}", img])
        anchor, anchor_id = self.tini_anchor_image(img, image_id)
        log(f"docker rows with {img} against {anchor}")
        # A Docker daemon's own spread here is ±10-50 % within a run, the goal 5 % (9 rounds gave
        # D2 1.08x, 21 rounds of the same images an hour later 0.95x).
        rounds = self.parity_rounds(15)
        names = ["hermesinit", "tini"]
        images = {"hermesinit": img, "tini": anchor}
        res = {"run": {}, "stop-idle": {}, "stop-gateway": {}}
        split = {k: {n: {} for n in names} for k in ("stop-idle", "stop-gateway")}
        boot = {"boot": [], "migrate": [], "ready": []}
        ups = []

        def one_run(n, r):
            dt, p = timed(["docker", "run", "--rm", images[n], "true"])
            if p.returncode != 0:
                raise RuntimeError(f"docker run --rm {images[n]} true: exit {p.returncode}: {p.stderr[-300:]}")
            if n == "hermesinit":
                for key, pat in (("boot", r"boot: finished in ([0-9.]+) ms"),
                                 ("migrate", r"boot: migrate: .*\(([0-9.]+) ms\)"),
                                 ("ready", r"INFO ready in ([0-9.]+) ms")):
                    m = re.search(pat, p.stderr)
                    if m:
                        boot[key].append(float(m.group(1)))
            return dt

        def stop_timed(case, n, cid):
            """Time `docker stop`; split it with the daemon's exit time and the log timestamps."""
            w0 = time.time()
            dt, p = timed(["docker", "stop", cid])
            w1 = w0 + dt / 1e3
            if p.returncode != 0:
                raise RuntimeError(f"docker stop: exit {p.returncode}: {p.stderr[-300:]}")
            fin = parse_docker_ts(docker_out(["inspect", "-f", "{{.State.FinishedAt}}", cid]))
            logs = subprocess.run(["docker", "logs", "-t", "--since", f"{w0 - 1:.3f}", cid], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, errors="replace").stdout
            sp = split[case][n]
            # PID 1 no longer logs a stop it was asked for (each line woke the log reader
            # mid-stop), so the gateway's own line is the first mark of the stop.
            marks = {"gateway saw SIGTERM": "Shutdown context: signal=SIGTERM",
                     "gateway exited (PID 1's log)": "INFO service gateway-default: exited"}
            for label, needle in marks.items():
                for ln in logs.splitlines():
                    if needle in ln:
                        t = parse_docker_ts(ln.split(" ", 1)[0])
                        if t == t and t >= w0 - 0.01:
                            sp.setdefault(label, []).append((t - w0) * 1e3)
                        break
            if fin == fin:
                sp.setdefault("container exit", []).append((fin - w0) * 1e3)
                sp.setdefault("exit → CLI return", []).append((w1 - fin) * 1e3)
            if case == "stop-gateway":
                # The gateway's own measure of its teardown (INFO, so only in its log file): what
                # is left of "gateway exited" after it is the interpreter's own exit.
                p = subprocess.run(["docker", "cp", f"{cid}:/opt/data/logs/gateway.log", "-"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                m = re.findall(rb"Gateway stopped \(total teardown ([0-9.]+)s\)", p.stdout)
                if m:
                    sp.setdefault("gateway's own teardown (its log)", []).append(float(m[-1]) * 1e3)
            return dt

        # Readiness is read without `docker exec` (docker top, docker logs); each side then gets the
        # same number of execs before its stop: an exec session costs the stop's teardown a few ms
        # (measured ~5 ms, either image), so hermesinit's `svc` probes are matched by `true` on tini.
        def exec_probe(n, cid, hermesinit_argv):
            argv = ["hermesinit"] + hermesinit_argv if n == "hermesinit" else ["true"]
            p = subprocess.run(["docker", "exec", cid] + argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, timeout=60)
            if p.returncode != 0:
                raise RuntimeError(f"docker exec {' '.join(argv)}: exit {p.returncode}")
            return p.stdout

        def has_sleep(cid):
            return any(ln.endswith("sleep infinity") for ln in docker_top(cid))

        def one_idle(n, r):
            cid = docker_run_d([images[n], "sleep", "infinity"])
            try:
                # hermesinit starts its main program once boot has finished.
                wait_until(lambda: has_sleep(cid), 60, "`sleep infinity` never ran")
                exec_probe(n, cid, ["svc", "wait", "--boot", "--timeout", "5"])
                time.sleep(1)
                return stop_timed("stop-idle", n, cid)
            finally:
                docker_rm(cid)

        banner = "Hermes Gateway Starting"

        def one_gateway(n, r):
            if n == "hermesinit":
                # The image's supervised default gateway (README, docker/compose.yaml): boot's
                # reconcile starts the `gateway-default` slot and the main program `hermes gateway
                # run` hands over to the supervisor, then execs `sleep infinity`.
                cid = docker_run_d([img, "gateway", "run"])
            else:
                cid = docker_run_d([anchor, "/opt/hermes/.venv/bin/hermes", "gateway", "run"])
            try:
                wait_until(lambda: banner in docker_logs(cid), 120, "the gateway never printed its banner")
                if n == "hermesinit":
                    wait_until(lambda: has_sleep(cid), 60, "the main program never became `sleep infinity`")
                exec_probe(n, cid, ["svc", "wait", "--boot", "--timeout", "5"])
                time.sleep(1.5)
                top = docker_top(cid)
                if not any("python3" in ln and "hermes gateway run" in ln for ln in top):
                    raise RuntimeError("no gateway process before the stop: " + " | ".join(top))
                st = exec_probe(n, cid, ["svc", "status"])
                if n == "hermesinit":
                    state = parse_status(st)
                    if state.get("gateway-default") != "up":
                        raise RuntimeError(f"gateway-default is {state.get('gateway-default')} before the stop")
                time.sleep(1)
                return stop_timed("stop-gateway", n, cid)
            finally:
                docker_rm(cid)

        def one_full(n, r):
            cid = docker_run_d(["-e", "HERMES_DASHBOARD=1", img, "gateway", "run"])
            try:
                wait_boot(cid)
                subprocess.run(["docker", "exec", "-u", "hermes", cid, "hermes", "profile", "create", "second"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
                subprocess.run(["docker", "exec", "-u", "hermes", cid, "hermes", "-p", "second", "gateway", "start"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
                time.sleep(5)
                up = sorted(k for k, v in svc_status(cid).items() if v == "up")
                dt, p = timed(["docker", "stop", cid])
                if p.returncode != 0:
                    raise RuntimeError(f"docker stop: exit {p.returncode}: {p.stderr[-300:]}")
                ups.append(",".join(up) or "none")
                return dt
            finally:
                docker_rm(cid)

        log(f"  D1 docker run --rm true ({rounds} rounds)")
        res["run"] = self.run_rounds(names, rounds, one_run)
        log(f"  D2 docker stop, idle ({rounds} rounds)")
        res["stop-idle"] = self.run_rounds(names, rounds, one_idle)
        log(f"  D3 docker stop, one gateway ({rounds} rounds)")
        res["stop-gateway"] = self.run_rounds(names, rounds, one_gateway)
        # A record without an anchor: a few rounds tell its size.
        d4 = max(5, rounds // 3)
        log(f"  D4 docker stop, dashboard + 2 gateways ({d4} rounds, hermesinit only)")
        record = {"stop (dashboard + 2 gateways)": self.run_rounds(["hermesinit"], d4, one_full)["hermesinit"]}
        self.results["docker"] = {"unit": "ms", "samples": res, "record": record, "split": split, "boot": boot,
                                  "up": ups, "image": image_id, "created": created, "anchor": anchor,
                                  "anchor_id": anchor_id, "rounds": rounds, "d4_rounds": d4}
        if any(u != "dashboard,gateway-default,gateway-second" for u in ups):
            self.notes.append("docker: services up before the stop with dashboard + 2 gateways were "
                              + "; ".join(sorted(set(ups))) + " (wanted dashboard, gateway-default, gateway-second)")

    def tini_anchor_image(self, img, image_id):
        """`<img>-tini-anchor`: FROM the hermesinit image (same layers), tini-static as PID 1 and
        USER hermes, HOME=/opt/data, no healthcheck; /opt/data holds what hermesinit's boot leaves
        on a fresh volume (config.yaml, .env with its API key, SOUL.md, the directories), so that
        the gateway under tini starts with the same configuration as the supervised one. Rebuilt
        when the base image id, tini or this recipe changes (label hermesinit.bench.anchor)."""
        tini = "/usr/bin/tini-static"
        if not os.path.exists(tini):
            raise RuntimeError(f"{tini} missing (Debian's tini package; bench/run installs it)")
        repo, _, tag = img.rpartition(":") if ":" in img.rsplit("/", 1)[-1] else (img, "", "latest")
        anchor = f"{repo}:{tag}-tini-anchor"
        with open(tini, "rb") as f:
            tini_sum = hashlib.sha256(f.read()).hexdigest()
        recipe = "\n".join([
            f"FROM {img}",
            "COPY tini-anchor /usr/local/bin/tini-anchor",
            "COPY --chown=10000:10000 data/ /opt/data/",
            "USER hermes",
            "ENV HOME=/opt/data",
            "HEALTHCHECK NONE",
            'ENTRYPOINT ["/usr/local/bin/tini-anchor", "--"]',
            "CMD []",
        ]) + "\n"
        key = hashlib.sha256((recipe + image_id + tini_sum).encode()).hexdigest()[:32]
        have = subprocess.run(["docker", "image", "inspect", "-f", '{{index .Config.Labels "hermesinit.bench.anchor"}}',
                               anchor], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if have.returncode == 0 and have.stdout.strip() == key:
            return anchor, docker_out(["image", "inspect", "-f", "{{.Id}}", anchor])
        log(f"building the tini anchor image {anchor} from {img} ({image_id[:19]}…)")
        ctx = self.p("docker-anchor")
        shutil.rmtree(ctx, ignore_errors=True)
        os.makedirs(ctx)
        shutil.copy(tini, os.path.join(ctx, "tini-anchor"))
        # The volume as hermesinit's boot leaves it on first start (seed, apikey, migrate).
        cid = docker_out(["create", img, "true"])
        try:
            subprocess.run(["docker", "start", "-a", cid], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=True, timeout=300)
            subprocess.run(["docker", "cp", f"{cid}:/opt/data", os.path.join(ctx, "data")], check=True,
                           stdout=subprocess.DEVNULL, timeout=120)
        finally:
            docker_rm(cid)
        for stale in ("logs/container-boot.log",):
            try:
                os.unlink(os.path.join(ctx, "data", stale))
            except FileNotFoundError:
                pass
        write(os.path.join(ctx, "Dockerfile"), recipe + f"LABEL hermesinit.bench.anchor={key} "
              f"hermesinit.bench.base={image_id}\n")
        env = dict(os.environ)
        if subprocess.run(["docker", "buildx", "version"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode != 0:
            env["DOCKER_BUILDKIT"] = "0"  # no buildx plugin: the classic builder (offline, FROM a local id)
        p = subprocess.run(["docker", "build", "-q", "-t", anchor, ctx], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=900)
        shutil.rmtree(ctx, ignore_errors=True)
        if p.returncode != 0:
            raise RuntimeError(f"docker build of {anchor} failed: {p.stderr[-1000:]}")
        return anchor, docker_out(["image", "inspect", "-f", "{{.Id}}", anchor])

    # ---- report --------------------------------------------------------------------------

    def med(self, row, name):
        return Stats(self.results[row]["samples"].get(name, [])).median

    def table(self):
        R = self.results
        rows = []  # (id, measure, hermesinit, anchors text, ratio text, goal, verdict)

        def add(i, measure, hi, anchors, ratio, goal, ok):
            verdict = "n/a" if ok is None else ("PASS" if ok else "MISS")
            rows.append((str(i), measure, hi, anchors, ratio, goal, verdict))

        def simple(i, measure, unit, anchor_names, goal_anchor, goal_factor, goal_text):
            if i not in R:
                return
            s = R[i]["samples"]
            hi = Stats(s["hermesinit"])
            anchors = "; ".join(f"{n} {fmt_stats(Stats(s[n]), unit)}" for n in anchor_names if n in s)
            ga = Stats(s.get(goal_anchor, []))
            ratio = hi.median / ga.median if ga.ok and hi.ok and ga.median else float("nan")
            add(i, measure, fmt_stats(hi, unit), anchors, f"{ratio:.2f}× {goal_anchor}",
                goal_text, None if ratio != ratio else ratio <= goal_factor)

        simple(1, "SIGTERM → PID 1 exit", "ms", ["tini", "dumb-init", "catatonit"], "tini", 1.0, "≤ 1.0× tini")
        if 2 in R:
            s = R[2]["samples"]
            hi, s6, sd = Stats(s["hermesinit"]), Stats(s["s6"]), Stats(s["supervisord"])
            r1 = hi.median / s6.median if s6.ok and hi.ok else float("nan")
            r2 = sd.median / hi.median if sd.ok and hi.ok else float("nan")
            add(2, "SIGTERM → exit, 10 services with logging", fmt_stats(hi, "ms"),
                f"s6 tree {fmt_stats(s6, 'ms')}; supervisord {fmt_stats(sd, 'ms')}",
                f"{r1:.2f}× s6; supervisord {r2:.0f}× slower",
                "≤ 1.0× s6; ≥ 10× faster than supervisord",
                None if r1 != r1 or r2 != r2 else (r1 <= 1.0 and r2 >= 10))
        simple(3, "init start → main program exec", "ms", ["tini", "dumb-init", "catatonit"], "tini", 1.0,
               "≤ 1.0× tini")
        if 4 in R:
            if "skipped" in R[4]:
                add(4, "boot to readiness (full boot)", "—", "upstream shell boot", "—", "≥ 5× faster",
                    None)
            else:
                vols = R[4]["volumes"]
                empty = Stats(vols.get("empty volume", {}).get("hermesinit", []))
                for label, s in vols.items():
                    hi, up = Stats(s["hermesinit"]), Stats(s["upstream sh"])
                    r = up.median / hi.median if hi.ok and up.ok else float("nan")
                    if label == "empty volume" or not empty.ok:
                        add(4, f"boot to readiness, {label}", fmt_stats(hi, "ms"),
                            f"upstream shell {fmt_stats(up, 'ms')}", f"{r:.1f}× faster", "≥ 5× faster",
                            None if r != r else r >= 5)
                    else:
                        re_ = hi.median / empty.median if hi.ok else float("nan")
                        add(4, f"boot to readiness, {label}", fmt_stats(hi, "ms"),
                            f"upstream shell {fmt_stats(up, 'ms')}", f"{r:.1f}× faster; {re_:.1f}× empty",
                            "≥ 10× faster; ≤ 2× empty", None if r != r else (r >= 10 and re_ <= 2))
                    sw = R[4].get("sweep", {}).get(label)
                    if sw and label != "empty volume":
                        hs, us = Stats(sw["hermesinit"]), Stats(sw["upstream sh"])
                        q = hs.median / us.median if hs.ok and us.ok else float("nan")
                        add(4, f"boot to sweep complete, {label}", fmt_stats(hs, "ms"),
                            f"upstream shell {fmt_stats(us, 'ms')}", f"{q:.2f}× upstream", "≤ 1.0× upstream",
                            None if q != q else q <= 1.0)
        if 5 in R:
            s = R[5]["samples"]
            hi = Stats(s["hermesinit"])
            add(5, "respawn latency (first restart)", fmt_stats(hi, "ms"),
                "; ".join(f"{n} {fmt_stats(Stats(s[n]), 'ms')}" for n in ("s6", "supervisord") if n in s),
                f"{Stats(s['s6']).median / hi.median:.0f}× faster than s6" if hi.ok and Stats(s["s6"]).ok else "—",
                "≤ 20 ms", None if not hi.ok else hi.median <= 20)
        if 6 in R:
            s = R[6]["samples"]
            sp = R[6]["spawns"]
            hi = Stats(s["hermesinit"])
            add(6, f"CPU in {R[6]['secs']} s, service that exits at once", f"{fmt(hi.median, '%')} of a core "
                f"({sp['hermesinit']} spawns)",
                "; ".join(f"{n} {fmt(Stats(s[n]).median, '%')} ({sp[n]} spawns)" for n in ("s6", "supervisord")),
                "—", "≤ 2% of one core", None if not hi.ok else hi.median <= 2.0)
        if 7 in R:
            s = R[7]["samples"]
            hi, sl = Stats(s["hermesinit"]), Stats(s["s6-log"])
            rh, rs = Stats(R[7]["rss"]["hermesinit"]), Stats(R[7]["rss"]["s6-log"])
            r = hi.median / sl.median if hi.ok and sl.ok else float("nan")
            add(7, "log fan-out, 1M lines of 100 B", f"{fmt_stats(hi, 'lines/s')}, peak RSS {rh.hi:.1f} MB",
                f"s6-log {fmt_stats(sl, 'lines/s')}, peak RSS {rs.hi:.1f} MB", f"{r:.2f}× s6-log",
                "≥ 1.0× s6-log, RSS ≤ 4 MB", None if r != r else (r >= 1.0 and rh.hi <= 4.0))
            dr = R[7]["drops"]
            add(7, "lines missing on stdout, live pipe reader (each round)",
                ", ".join(str(x) for x in dr["hermesinit"]),
                "s6-log " + ", ".join(str(x) for x in dr["s6-log"]), "—", "0 in every round",
                bool(dr["hermesinit"]) and all(x == 0 for x in dr["hermesinit"]))
            st = R[7].get("stall", {})
            if st.get("hermesinit"):
                def one_stall(v):
                    return (f"{v['missing']:,} missing ({v['reported']:,} reported), "
                            f"{v['secs']:.2f} s, file {'complete' if v['file_last'] else 'INCOMPLETE'}")
                add(7, "reader stalls 2 s mid-run (stall limit 1 s)",
                    "; ".join(one_stall(v) for v in st["hermesinit"]),
                    "s6-log " + "; ".join(f"{v['missing']:,} missing, {v['secs']:.2f} s" for v in st.get("s6-log", [])),
                    "—", "drops counted = missing; file complete",
                    all(v["missing"] == v["reported"] and v["file_last"] for v in st["hermesinit"]))
        if 8 in R:
            s = R[8]["samples"]
            ex = R[8]["extra"]
            hi, s6, sd = Stats(s["hermesinit"]), Stats(s["s6"]), Stats(s["supervisord"])
            r = hi.median / s6.median if hi.ok and s6.ok else float("nan")

            def procs(k):
                return f"{Stats(ex[k]['procs']).median:.0f} proc"
            add(8, "PSS of supervising/logging processes, 10 services",
                f"{fmt(hi.median, 'MB')} ({procs('hermesinit')})",
                f"s6 tree {fmt(s6.median, 'MB')} ({procs('s6')}); supervisord {fmt(sd.median, 'MB')} "
                f"({procs('supervisord')})", f"{r:.2f}× s6", "≤ 1/3 of s6 (0.33×)",
                None if r != r else r <= 1 / 3)
        if 9 in R:
            s = R[9]["samples"]
            hi, sh = Stats(s["hermesinit"]), Stats(s["sh+s6-setuidgid"])
            r = hi.median / sh.median if hi.ok and sh.ok and sh.median else float("nan")
            add(9, "`hermes` shim: added time per exec (root → hermes)", fmt_stats(hi, "us"),
                f"/bin/sh shim + s6-setuidgid {fmt_stats(sh, 'us')}", f"{r:.2f}×", "≤ 0.5× its added time",
                None if r != r else r <= 0.5)
        simple(10, f"orphan storm ({self.args.orphans} orphans) → no zombie left", "ms",
               ["tini", "catatonit", "dumb-init"], "tini", 1.0, "≤ 1.0× tini")
        if 11 in R:
            s = R[11]["samples"]
            hi = s["hermesinit"][0]
            add(11, "stripped static binary size", f"{hi:,} B ({hi / 1e6:.2f} MB)",
                "; ".join(f"{n} {v[0]:,} B" for n, v in s.items() if n != "hermesinit"), "—", "≤ 2.5 MB",
                hi <= 2_500_000)
        if "Z" in R:
            z = R["Z"]
            w = z["wakeups"]
            add("Z", f"PID 1 voluntary context switches, {z['secs']:.0f} s idle, 10 services with logging",
                str(w["hermesinit"]), f"s6-svscan {w['s6']}", "—", "≤ s6-svscan; ~0", w["hermesinit"] <= max(2, w["s6"]))
        if "S" in R:
            sc = R["S"]["scale"]
            keys = sorted(sc, key=int)

            def med(k, n, m):
                return Stats(sc[n].get(k, {}).get(m, []))

            for m, label, unit in (("stop_ms", "SIGTERM → exit", "ms"), ("pss_mb", "PSS of supervising processes", "MB"),
                                   ("cpu_pct", f"idle CPU over {R['S']['secs']:.0f} s", "%"),
                                   ("status_ms", "status of every service (svc status / N× s6-svstat)", "ms")):
                ratios = []
                for n in keys:
                    hi, s6 = med("hermesinit", n, m), med("s6", n, m)
                    sd = med("supervisord", n, m)
                    r = hi.median / s6.median if hi.ok and s6.ok and s6.median else float("nan")
                    ratios.append(r)
                    anchors = f"s6 {fmt(s6.median, unit) if s6.ok else 'n/a'}"
                    if sd.ok:
                        anchors += f"; supervisord {fmt(sd.median, unit)}"
                    add("S", f"{label}, N={n}", fmt(hi.median, unit) if hi.ok else "n/a", anchors,
                        f"{r:.2f}× s6" if r == r else "—", "ratio to s6 not growing with N", None)
                good = [x for x in ratios if x == x]
                if len(good) >= 2:
                    grows = good[-1] > good[0] * 1.5 and good[-1] > 0.05
                    rows[-1] = rows[-1][:6] + ("MISS" if grows else "PASS",)
        if "docker" in R and "samples" in R["docker"]:
            d = R["docker"]
            for i, (k, measure) in enumerate(DOCKER_CASES, 1):
                s = d["samples"].get(k, {})
                hi, ti = Stats(s.get("hermesinit", [])), Stats(s.get("tini", []))
                r = hi.median / ti.median if hi.ok and ti.ok and ti.median else float("nan")
                add(f"D{i}", measure, fmt_stats(hi, "ms"), f"tini image {fmt_stats(ti, 'ms')}",
                    f"{r:.2f}× tini" if r == r else "—", "≤ 1.05× tini", None if r != r else r <= 1.05)
            for k, v in d.get("record", {}).items():
                add(f"D{len(DOCKER_CASES) + 1}", f"`docker {k}`", fmt_stats(Stats(v), "ms"), "—", "—",
                    "(record)", None)
        return rows

    def render(self, rows):
        head = ("#", "measure", "hermesinit median (min–max)", "anchors median (min–max)", "ratio", "goal", "")
        allr = [head] + rows
        widths = [max(len(r[i]) for r in allr) for i in range(len(head))]
        lines = []
        for j, r in enumerate(allr):
            lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def markdown(self, rows, command, machine):
        md = []
        per_row = []
        for k in (1, 2, 3, 5, 7, 8, 9, 10):
            if k in self.results and "samples" in self.results[k]:
                per_row.append(f"{k}: {len(self.results[k]['samples'].get('hermesinit', []))}")
        if 4 in self.results and "volumes" in self.results[4]:
            per_row.append(f"4: {len(next(iter(self.results[4]['volumes'].values()))['hermesinit'])}")
        if "docker" in self.results and "rounds" in self.results["docker"]:
            per_row.append(f"D: {self.results['docker']['rounds']}")
        md.append(f"Measured {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} "
                  f"with `{command.strip()}` (rounds per row: {', '.join(sorted(per_row, key=row_order))}; "
                  "row 6 is one window per contender).")
        md.append("")
        md.append(f"Machine: {machine}; load average at start {self.load0}, at end {read_load()} "
                  "(a shared machine: other work ran alongside).")
        md.append("")
        md.append("| # | measure | hermesinit | anchors | ratio | goal | |")
        md.append("|---|---|---|---|---|---|---|")
        for r in rows:
            md.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
        md.append("")
        details = self.details()
        if details:
            md.append("Details:")
            md.append("")
            md.extend(details)
            md.append("")
        if self.notes:
            md.append("Notes from this run:")
            md.append("")
            md.extend(f"- {n}" for n in self.notes)
            md.append("")
        return "\n".join(md)

    def details(self):
        R = self.results
        out = []
        if 3 in R and "3-total" in R:
            tot = R["3-total"]
            out.append("- Row 3, whole run (fork of `unshare` → its exit, namespace setup included): " + "; ".join(
                f"{n} {fmt(Stats(v).median, 'ms')}" for n, v in tot.items()))
        if 2 in R:
            out.append(f"- Row 2 rounds: {len(R[2]['samples']['hermesinit'])}.")
        if 5 in R:
            out.append("- Row 5 with the crash 1.1 s after the start (no 1 s rule applies): " + "; ".join(
                f"{k} {fmt_stats(Stats(v), 'ms')}" for k, v in R[5]["late"].items()))
        if 6 in R:
            out.append(f"- Row 6 spawns in the window: " + ", ".join(f"{k} {v}" for k, v in R[6]["spawns"].items()))
        if 7 in R:
            rs = R[7]["rss"]
            out.append("- Row 7 peak RSS (MB, each round): " + "; ".join(
                f"{k} {', '.join(f'{x:.2f}' for x in v)}" for k, v in rs.items()))
            out.append("- Row 7 lines missing on stdout (of " + f"{self.args.lines:,}" + ", each round; the file "
                       "always had the last line): " + "; ".join(
                           f"{k} {', '.join(str(x) for x in v)}" for k, v in R[7]["drops"].items()))
            out.append("- Row 7 with stdout on /dev/null instead of a pipe: " + "; ".join(
                f"{k} {fmt_stats(Stats(v), 'lines/s')}" for k, v in R[7]["null"].items()))
        if 8 in R:
            ex = R[8]["extra"]
            out.append("- Row 8 processes counted: " + "; ".join(
                f"{k}: {Stats(v['procs']).median:.0f} ({', '.join(v.get('names', []))}), RSS sum "
                f"{Stats(v['rss']).median:.2f} MB" for k, v in ex.items()))
        if 9 in R:
            raw = R[9]["raw"]
            out.append(f"- Row 9 per-exec medians over {R[9]['n']} runs × {len(raw['direct'])} rounds: " + "; ".join(
                f"{k} {fmt(Stats(v).median, 'us')}" for k, v in raw.items()))
        if 11 in R:
            out.append(f"- Row 11 s6 set: {R[11]['s6_detail']}; s6-overlay's own scripts and static builds are "
                       "not installable offline here, so the Debian (dynamic) s6 binaries stand in.")
        if 4 in R and "skipped" in R[4]:
            out.append(f"- Row 4 skipped: {R[4]['skipped']}.")
        if 4 in R and "volumes" in R[4]:
            for label, s in R[4]["volumes"].items():
                out.append(f"- Row 4 {label}: {s['_files']} files, {s['_bad']} root-owned before each run.")
            out.append("- Row 4 'sweep complete': hermesinit = its main program's `svc wait --sweep` returned "
                       "(the bulk trees are healed in the background); upstream = its main program started "
                       "(its sweep is synchronous).")
        if "docker" in R:
            d = R["docker"]
            if "skipped" in d:
                out.append(f"- Docker rows skipped: {d['skipped']}.")
            else:
                out.append(f"- Rows D: `{self.args.image}` ({d['image'][:19]}…) against `{d['anchor']}` "
                           f"({d['anchor_id'][:19]}…), {d['rounds']} rounds each "
                           f"(D4 {d.get('d4_rounds', d['rounds'])}), wall time of the docker CLI.")
                b = d.get("boot", {})
                if b.get("boot"):
                    out.append("- Row D1, hermesinit's own log: " + "; ".join(
                        f"{lab} {fmt_stats(Stats(b[k]), 'ms')}" for k, lab in
                        (("boot", "boot finished in"), ("migrate", "of which `migrate`"),
                         ("ready", "main program started (`ready in`)")) if b.get(k)) + ".")
                # Offsets after the stop began are listed first, then the spans (durations).
                spans = ("gateway's own teardown (its log)", "exit → CLI return")
                for i, k in ((2, "stop-idle"), (3, "stop-gateway")):
                    sp = d.get("split", {}).get(k, {})
                    parts = []
                    for n in ("hermesinit", "tini"):
                        marks = sp.get(n, {})
                        if marks:
                            parts.append(f"{n}: " + ", ".join(
                                f"{lab} +{fmt(Stats(v).median, 'ms')}" for lab, v in
                                sorted(marks.items(), key=lambda kv: Stats(kv[1]).median)
                                if lab not in spans)
                                + "".join(f"; {lab} {fmt(Stats(marks[lab]).median, 'ms')}"
                                          for lab in spans if lab in marks))
                    if parts:
                        out.append(f"- Row D{i}, medians after `docker stop` started (container log timestamps "
                                   "and the daemon's FinishedAt): " + " — ".join(parts) + ".")
        return out


def at_rest(path):
    """Write back what is dirty and flush the disk's cache, so the next timed run pays for
    neither. sync(2) alone is not enough: on ext4 without a journal (this VM's) it writes the
    inode-table blocks after its cache flush, so they wait in the disk's volatile cache and the
    next fsync anywhere on the filesystem pays for them (10,000 chowns then sync: 75-85 ms for
    the next fsync of a 1 KB file, 0.3 ms for the one after). An fsync always flushes the cache."""
    os.sync()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- docker helpers (rows D) ------------------------------------------------------------


def timed(argv, timeout=300):
    """Wall time of a command (ms) and its CompletedProcess."""
    t0 = time.monotonic_ns()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                       timeout=timeout)
    return (time.monotonic_ns() - t0) / 1e6, p


def docker_out(args, timeout=120):
    p = subprocess.run(["docker"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}…: exit {p.returncode}: {p.stderr.strip()[-300:]}")
    return p.stdout.strip()


def docker_run_d(args):
    return docker_out(["run", "-d"] + args)


def docker_rm(cid):
    # -v: the image declares VOLUME /opt/data; without it every sample leaves an anonymous volume.
    subprocess.run(["docker", "rm", "-f", "-v", cid], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def docker_top(cid):
    """The command line of each of the container's processes (`docker top … -o pid,args`, pid dropped)."""
    p = subprocess.run(["docker", "top", cid, "-o", "pid,args"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       text=True)
    return [ln.split(None, 1)[1].strip() for ln in p.stdout.splitlines()[1:] if len(ln.split(None, 1)) == 2]


def docker_logs(cid):
    return subprocess.run(["docker", "logs", cid], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace").stdout


def wait_until(pred, timeout, what, nap=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(nap)
    raise RuntimeError(what)


def wait_boot(cid, timeout=60):
    """hermesinit's readiness: boot finished, services and the main program started."""
    wait_until(lambda: subprocess.run(["docker", "exec", cid, "hermesinit", "svc", "wait", "--boot", "--timeout", "1"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0,
               timeout, "container never ready (svc wait --boot)")


def svc_status(cid):
    """`hermesinit svc status` → {service: state}."""
    return parse_status(subprocess.run(["docker", "exec", cid, "hermesinit", "svc", "status"], stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True).stdout)


def parse_status(text):
    """`hermesinit svc status` output → {service: state}."""
    return {ln.split()[0]: ln.split()[1] for ln in text.splitlines()[1:] if len(ln.split()) > 1}


def parse_docker_ts(s):
    """RFC 3339 with nanoseconds (docker inspect / docker logs -t) → epoch seconds; nan if not one."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", s.strip())
    if not m:
        return float("nan")
    secs = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    return secs + (int(m.group(2)) / 10 ** len(m.group(2)) if m.group(2) else 0.0)


def row_order(x):
    """'3: 5' / 'D: 3' → sort key: numbered rows first, in order, then the lettered ones."""
    k = x.split(":")[0]
    return (0, int(k), "") if k.isdigit() else (1, 0, k)


def shq(s):
    if re.fullmatch(r"[A-Za-z0-9_./:=+-]+", s):
        return s
    return "'" + s.replace("'", "'\\''") + "'"


def read_load():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs (`nproc` {subprocess.run(['nproc'], stdout=subprocess.PIPE, text=True).stdout.strip()}), " \
           f"{cpu}, Linux {platform.release()}"


def update_benchmarks_md(path, section):
    begin, end = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\n" + begin + "\n" + end + "\n"
    if begin not in text:
        text += "\n" + begin + "\n" + end + "\n"
    a = text.index(begin) + len(begin)
    b = text.index(end)
    text = text[:a] + "\n" + section.rstrip() + "\n" + text[b:]
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds, 10 s CPU window, 200k lines")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--only", default="", help="comma-separated rows, e.g. 1,2,3 (D or docker = docker rows)")
    ap.add_argument("--hermesinit", required=True)
    ap.add_argument("--hb", required=True)
    ap.add_argument("--cpu-seconds", type=float, default=None)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--orphans", type=int, default=10_000)
    ap.add_argument("--volume-files", type=int, default=100_000)
    ap.add_argument("--big-volume-files", type=int, default=1_000_000,
                    help="row 4's big volume (1% root-owned); 0 = none")
    ap.add_argument("--scale", default="1,10,100,1000", help="row S: service counts")
    ap.add_argument("--image", default="hermesinit-hermes:test")
    ap.add_argument("--write", default=os.path.join(REPO, "BENCHMARKS.md"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--command", default="bench/run")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--env", action="append", default=[], metavar="K=V",
                    help="extra environment for every run (experiments with an instrumented build)")
    args = ap.parse_args()
    if args.rounds is None:
        args.rounds = 5 if args.quick else 15
    if args.cpu_seconds is None:
        args.cpu_seconds = 10.0 if args.quick else 60.0
    if os.geteuid() != 0:
        sys.exit("bench: must run as root (namespaces, bind mounts, chown)")
    only = set(x.strip() for x in args.only.split(",") if x.strip())
    if only & {"docker", "d"}:
        only = (only - {"docker", "d"}) | {"D"}
    b = Bench(args)
    log(f"work dir {b.w}; {args.rounds} rounds")
    steps = [("1", b.row1), ("2", b.row2), ("3", b.row3), ("4", b.row4), ("5", b.row5), ("6", b.row6),
             ("7", b.row7), ("8", b.row8), ("9", b.row9), ("10", b.row10), ("11", b.row11),
             ("S", b.row_scale), ("Z", b.row_idle),
             ("D", b.docker_rows)]
    try:
        for key, fn in steps:
            if only and key not in only:
                continue
            t = time.monotonic()
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                import traceback
                traceback.print_exc()
                b.notes.append(f"row {key} failed: {e}")
            log(f"  ({time.monotonic() - t:.1f} s)")
    finally:
        if not args.keep:
            shutil.rmtree(b.w, ignore_errors=True)
    rows = b.table()
    print(b.render(rows))
    for d in b.details():
        print(d)
    for n in b.notes:
        print("note: " + n)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "last.json"), "w") as f:
        json.dump({str(k): v for k, v in b.results.items()}, f, indent=1, default=str)
    if args.only and not args.no_write:
        # The results section is one run's whole table: a partial run would replace it with
        # just its own rows and lose the others.
        log(f"--only: {args.write} left as it is (its table holds one run of every row); "
            "the rows above are in bench/results/last.json")
    elif not args.no_write:
        update_benchmarks_md(args.write, b.markdown(rows, args.command, machine()))
        log(f"wrote {args.write}")


if __name__ == "__main__":
    main()
