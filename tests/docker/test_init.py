"""C-INIT: hermesinit as PID 1 (reaping, exit codes, stop, signals, TTY, not PID 1)."""

from __future__ import annotations

import re
import time

import pytest

from dockerlib import ARGV0, Container, Fleet, describe, docker, pty_run, wait_for

# hermesinit logs the main program's command line, so every marker a test
# looks for in the output is assembled at run time ("RE""ADY" prints READY)
# and never appears verbatim in the command.

# A main program that reports the signals it receives, as the dumb-init/tini
# suites do with their signal echo helpers.
SIGNAL_ECHO = r"""
import signal, sys, time
def report(sig, frame):
    print("echo-" + "got " + signal.Signals(sig).name, flush=True)
for name in sys.argv[1:]:
    signal.signal(getattr(signal, "SIG" + name), report)
print("echo-" + "ready", flush=True)
while True:
    time.sleep(3600)
"""


def test_c_init_1_orphaned_zombies_are_reaped(idle: Container) -> None:
    r = idle.sh("for i in 1 2 3 4 5; do ( ( sleep 0.1 & ) & ); done; sleep 1")
    assert r.returncode == 0, describe(r)

    def no_zombies() -> bool:
        return not [p for p in idle.procs() if p.stat.startswith("Z")]

    wait_for(no_zombies, 10, "no zombie (Z) rows in ps",
             lambda: "\n".join(f"{p.pid} {p.ppid} {p.stat} {p.args}" for p in idle.procs()))


@pytest.mark.parametrize("code", [0, 1, 2, 42, 125, 126, 127, 128, 129, 137, 143, 254, 255])
def test_c_init_2_container_exits_with_the_cmds_exit_code(fleet: Fleet, code: int) -> None:
    r = fleet.once("sh", "-c", f"exit {code}")
    assert r.returncode == code, describe(r)


@pytest.mark.parametrize(("sig", "num"), [("TERM", 15), ("KILL", 9), ("USR1", 10), ("HUP", 1)])
def test_c_init_2_cmd_killed_by_signal_n_gives_128_plus_n(fleet: Fleet, sig: str, num: int) -> None:
    r = fleet.once("sh", "-c", f"kill -{sig} $$")
    assert r.returncode == 128 + num, describe(r)


def _stop(c: Container, grace: int = 30) -> float:
    start = time.monotonic()
    r = docker("stop", "-t", str(grace), c.name, timeout=grace + 30)
    assert r.returncode == 0, describe(r)
    return time.monotonic() - start


def test_c_init_3_docker_stop_of_an_idle_container_is_prompt(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    took = _stop(c)
    # sleep dies of the SIGTERM at once: PID 1 must exit then, not after a
    # grace period (here 30 s) and not by Docker's SIGKILL (exit 137).
    assert c.exit_code() == 143, c.logs_tail()
    assert took < 10, f"docker stop took {took:.1f}s"


def test_c_init_3_docker_stop_with_dashboard_and_two_gateways_is_prompt(fleet: Fleet) -> None:
    c = fleet.run("gateway", "run", env={"HERMES_DASHBOARD": "1"})
    r = c.exec("hermes", "profile", "create", "coder")
    assert r.returncode == 0, describe(r)
    r = c.exec("hermes", "-p", "coder", "gateway", "start")
    assert r.returncode == 0, describe(r)
    c.wait_slot_up("gateway-default")
    c.wait_slot_up("gateway-coder")
    wait_for(lambda: c.listening(9119), 60, "the dashboard on 127.0.0.1:9119", c.logs_tail)
    assert len(c.find(r"gateway run --replace")) == 2, c.procs()
    took = _stop(c)
    # The gateways exit ~0.6 s after SIGTERM; nothing may wait for the grace period.
    assert took < 10, f"docker stop took {took:.1f}s"
    assert c.exit_code() != 137, "PID 1 was SIGKILLed by Docker"


def test_c_init_3_log_lines_before_the_stop_are_in_docker_logs(fleet: Fleet) -> None:
    c = fleet.run("sh", "-c", "echo before-stop-\"\"line; exec sleep infinity")
    _stop(c)
    assert "before-stop-line" in c.logs()


def test_c_init_3_docker_kill_term_gives_the_cmds_exit_code(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    r = docker("kill", "-s", "TERM", c.name)
    assert r.returncode == 0, describe(r)
    assert c.wait_exit(30) == 143, c.logs_tail()


@pytest.mark.parametrize("sig", ["HUP", "USR1", "USR2", "WINCH"])
def test_c_init_4_signals_to_pid_1_are_forwarded_to_the_cmd(fleet: Fleet, sig: str) -> None:
    c = fleet.run("python3", "-c", SIGNAL_ECHO, sig)
    wait_for(lambda: "echo-ready" in c.logs(), 30, "the signal echo to start", c.logs_tail)
    r = docker("kill", "-s", sig, c.name)
    assert r.returncode == 0, describe(r)
    wait_for(lambda: f"echo-got SIG{sig}" in c.logs(), 10, f"SIG{sig} to reach the main program", c.logs_tail)
    assert c.running(), "a forwarded signal must not stop the container"


def test_c_init_4_cmd_leads_its_own_process_group_in_the_tty_foreground(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity", opts=["-t"])
    [main] = c.find(ARGV0 + r"sleep infinity$")
    assert main.pid != 1 and main.pgid == main.pid, main
    assert main.tpgid == main.pgid, f"not the foreground process group of the TTY: {main}"


def test_c_init_5_tty_reaches_the_cmd(image: str, fleet: Fleet) -> None:
    name = fleet.new_name()
    probe = 'if [ -t 1 ]; then echo "TTY""=yes COLS=$(tput cols)"; else echo "TTY""=no"; fi'
    out, rc = pty_run(["docker", "run", "--rm", "-t", "--name", name, image, "sh", "-c", probe], timeout=60)
    m = re.search(r"TTY=(\w+)(?: COLS=(\d*))?", out)
    assert m and m.group(1) == "yes", out
    assert m.group(2) and int(m.group(2)) > 0, out
    assert rc == 0, out


def test_c_init_5_ctrl_c_reaches_the_cmd(image: str, fleet: Fleet) -> None:
    name = fleet.new_name()
    script = 'trap "echo GOT-""INT; exit 7" INT; echo "RE""ADY"; while :; do sleep 0.1; done'
    out, rc = pty_run(["docker", "run", "--rm", "-it", "--name", name, image, "sh", "-c", script],
                      steps=[("READY", "\x03")], timeout=60)
    assert "GOT-INT" in out, out
    assert rc == 7, out


def test_c_init_5_interactive_hermes_works(image: str, fleet: Fleet) -> None:
    name = fleet.new_name()
    out, rc = pty_run(["docker", "run", "--rm", "-it", "--name", name, image],
                      steps=[("Run setup now? [Y/n]", "n\r")], timeout=90)
    assert "Run setup now? [Y/n]" in out, out
    assert "You can run 'hermes setup' at any time" in out, out
    assert rc == 1, out


def test_c_init_6_not_pid_1_keeps_working(fleet: Fleet) -> None:
    r = fleet.once("sh", "-c", 'echo MAIN-"RAN"; exit 3', opts=["--init"])
    assert r.returncode == 3, describe(r)
    assert "MAIN-RAN" in r.stdout
    assert "can only run as pid 1" not in (r.stdout + r.stderr).lower()


def test_c_init_6_not_pid_1_boots_and_reaps_as_a_subreaper(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity", opts=["--init"])
    assert c.exec("sh", "-c", "( ( sleep 0.1 & ) & ); sleep 1").returncode == 0
    wait_for(lambda: not [p for p in c.procs() if p.stat.startswith("Z")], 10, "no zombies under --init")
    assert c.running()


def test_c_init_7_garbage_in_the_scan_directory_does_not_kill_pid_1(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    c.sh_ok(
        "set -e; cd /run/service; "
        "mkdir -p empty-dir norun/log; echo longrun > norun/type; "
        "mkdir notexec; echo longrun > notexec/type; printf 'not a script' > notexec/run; "
        "echo plain > a-file; ln -s /nonexistent dangling; "
        "mkdir badtype; echo 'bundle' > badtype/type; printf '#!/bin/sh\\nexec sleep 1000\\n' > badtype/run; "
        "chmod +x badtype/run; printf '\\377\\376' > badtype/down; "
        "/command/s6-svscanctl -a /run/service || true",
        user="root",
    )
    r = c.exec("hermesinit", "svc", "status")
    assert c.running(), c.logs_tail()
    assert r.returncode == 0, describe(r)
