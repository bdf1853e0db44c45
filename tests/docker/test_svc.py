"""C-SVC: the dashboard service, gateway slots, restart policy, logs and the operator CLI."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

import pytest

from dockerlib import HERMES_HOME, SCANDIR, Container, Fleet, describe, docker, service_state, slot_script, wait_for

DASHBOARD = r"dashboard --host \S+ --port \d+ --no-open"
TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\s+")


def _log_times(c: Container, needle: str) -> list[float]:
    """When Docker received each container output line containing ``needle`` (epoch seconds)."""
    r = docker("logs", "--timestamps", c.name)
    times = []
    for line in (r.stdout + r.stderr).splitlines():
        stamp, _, text = line.partition(" ")
        if needle in text:
            day, _, frac = stamp.rstrip("Z").partition(".")
            times.append(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp() + float(f"0.{frac or 0}"))
    return sorted(times)


def _dashboard(c: Container) -> list:
    return c.find(DASHBOARD)


def _status(c: Container, name: str, user: str = "hermes") -> str | None:
    return service_state(c.svc_status_json(user=user), name)


# ---------------------------------------------------------------- C-SVC-1 / C-SVC-4: bind refusal

STORM_WINDOW = 60  # seconds of refusals looked at; the other tests of this module run meanwhile
REFUSAL = "Refusing to bind dashboard"


@pytest.fixture(scope="module")
def refusing(module_fleet: Fleet) -> Container:
    """0.0.0.0 without an auth provider: every dashboard start refuses to bind and exits 1."""
    c = module_fleet.run("sleep", "infinity", env={"HERMES_DASHBOARD": "1", "HERMES_DASHBOARD_HOST": "0.0.0.0"})
    wait_for(lambda: REFUSAL in c.logs(), 60, "the first refusal", c.logs_tail)
    return c


def test_c_svc_1_bind_refusal_is_restarted(refusing: Container) -> None:
    # Started first in this module, looked at again by its last test.
    wait_for(lambda: len(_log_times(refusing, REFUSAL)) >= 2, 30, "a second start after the refusal")
    # C-SVC-4: the backoff is visible in status.
    wait_for(lambda: _status(refusing, "dashboard") == "backoff", 30, "status to show the backoff")


# ---------------------------------------------------------------- C-SVC-1


def test_c_svc_1_dashboard_off_reads_down_with_no_process(idle: Container) -> None:
    assert _status(idle, "dashboard") == "down"
    human = idle.ok("hermesinit", "svc", "status", "dashboard")
    assert "down" in human, human
    assert not _dashboard(idle), idle.procs()


@pytest.mark.parametrize("value", ["0", "false", "on", "enabled", ""])
def test_c_svc_1_dashboard_stays_off_for_untrue_values(fleet: Fleet, value: str) -> None:
    c = fleet.run("sleep", "infinity", env={"HERMES_DASHBOARD": value})
    assert _status(c, "dashboard") == "down"
    assert not _dashboard(c)


@pytest.fixture(scope="module")
def dash(module_fleet: Fleet) -> Container:
    c = module_fleet.run("sleep", "infinity", env={"HERMES_DASHBOARD": "yes", "HERMES_DASHBOARD_PORT": "9120",
                                                   "FOO": "container-env"})
    wait_for(lambda: c.listening(9120), 60, "the dashboard on 127.0.0.1:9120", c.logs_tail)
    return c


def test_c_svc_1_dashboard_on_listens_on_the_port_override(dash: Container) -> None:
    assert dash.listening(9120)
    assert not dash.listening(9119)
    assert _status(dash, "dashboard") == "up"


def test_c_svc_1_dashboard_runs_as_hermes_without_insecure(dash: Container) -> None:
    [p] = _dashboard(dash)
    assert "--host 127.0.0.1 --port 9120 --no-open" in p.args, p.args
    assert "--insecure" not in p.args
    assert p.uid == 10000
    env = dash.environ(p.pid)
    assert env.get("HOME") == "/opt/data" and env.get("FOO") == "container-env", env


def test_c_svc_1_dashboard_is_restarted_after_kill_9(dash: Container) -> None:
    [old] = _dashboard(dash)
    dash.ok("kill", "-9", str(old.pid), user="root")
    new = wait_for(lambda: [p for p in _dashboard(dash) if p.pid != old.pid], 15, "a new dashboard pid",
                   dash.logs_tail)
    assert len(new) == 1
    wait_for(lambda: dash.listening(9120), 30, "the restarted dashboard to listen", dash.logs_tail)


# ---------------------------------------------------------------- C-SVC-2 / C-SVC-5


@pytest.fixture(scope="module")
def gw(module_fleet: Fleet) -> Container:
    c = module_fleet.run("gateway", "run", env={"FOO": "container-env"})
    c.wait_slot_up("gateway-default", timeout=60)
    return c


def test_c_svc_2_default_gateway_runs_as_hermes_with_its_env(gw: Container) -> None:
    [p] = gw.find(r"gateway run --replace")
    assert re.search(r"/hermes gateway run --replace$", p.args) and " -p " not in p.args, p.args
    assert p.uid == 10000
    assert gw.ok("readlink", f"/proc/{p.pid}/cwd").strip() == "/opt/data"  # as hermes: root lacks SYS_PTRACE
    env = gw.environ(p.pid)
    for key, value in {"HERMES_S6_SUPERVISED_CHILD": "1", "HERMES_SUPERVISED_CHILD": "1", "HOME": "/opt/data",
                       "FOO": "container-env", "HERMES_HOME": "/opt/data"}.items():
        assert env.get(key) == value, (key, env.get(key))


def test_c_svc_2_profile_gateway_runs_with_p(gw: Container) -> None:
    r = gw.exec("hermes", "profile", "create", "svcprof")
    assert r.returncode == 0 and "Could not register" not in r.stdout + r.stderr, describe(r)
    gw.ok("hermes", "-p", "svcprof", "gateway", "start")
    pid = gw.wait_slot_up("gateway-svcprof")
    [p] = [p for p in gw.procs() if p.pid == pid]
    assert p.args.endswith("hermes -p svcprof gateway run --replace"), p.args
    assert p.uid == 10000
    gw.ok("hermes", "-p", "svcprof", "gateway", "stop")
    gw.wait_slot_down("gateway-svcprof")


def test_c_svc_5_gateway_banner_reaches_docker_logs_and_the_log_file(gw: Container) -> None:
    current = f"{HERMES_HOME}/logs/gateways/default/current"
    wait_for(lambda: "Hermes Gateway Starting" in gw.exec("cat", current).stdout, 30, "the banner in current",
             gw.logs_tail)
    wait_for(lambda: "Hermes Gateway Starting" in gw.logs(), 10, "the banner in docker logs", gw.logs_tail)
    logs = gw.logs()
    assert "⚕" in logs
    text = gw.read(current, user="hermes")
    assert "⚕" in text
    banner = next(line for line in text.splitlines() if "Hermes Gateway Starting" in line)
    assert TIMESTAMPED.match(banner), f"no timestamp prefix in the file: {banner!r}"
    raw = next(line for line in logs.splitlines() if "Hermes Gateway Starting" in line)
    assert not TIMESTAMPED.match(raw), f"docker logs get raw lines: {raw!r}"
    assert gw.owner(current) == "hermes:hermes"


# ---------------------------------------------------------------- C-SVC-3 / C-SVC-4

STARTS = "/tmp/starts"


def _starts(c: Container, slot: str) -> list[float]:
    r = c.exec("cat", f"{STARTS}.{slot}", user="root")
    return [float(x) for x in r.stdout.split()] if r.returncode == 0 else []


HERMES_FINISH = ("from hermes_cli.service_manager import S6ServiceManager as M; "
                 "print(M._render_finish_script(), end='')")


def _exiting_slot(c: Container, slot: str, how: str) -> None:
    """A gateway slot laid out as Hermes lays it out (its own `finish`), whose
    run script records each start and then exits as told."""
    finish = c.ok("python3", "-c", HERMES_FINISH)
    slot_script(c, slot, f"#!/bin/sh\ndate +%s.%N >> {STARTS}.{slot}\n{how}\n", finish=finish)


@pytest.mark.parametrize(("slot", "how"), [("gateway-exit0", "exit 0"), ("gateway-exit78", "exit 78")])
def test_c_svc_3_gateway_exit_0_or_78_stays_down(idle: Container, slot: str, how: str) -> None:
    _exiting_slot(idle, slot, how)
    wait_for(lambda: _starts(idle, slot), 15, f"{slot} to start once")
    idle.wait_slot_down(slot)
    time.sleep(3)  # the observation window: a restart would come within it
    assert len(_starts(idle, slot)) == 1, _starts(idle, slot)
    assert idle.svstat(slot).stdout.startswith("down"), idle.svstat(slot).stdout


@pytest.mark.parametrize(("slot", "how"), [("gateway-exit1", "exit 1"), ("gateway-killed", "kill -9 $$")])
def test_c_svc_3_gateway_other_exits_and_signals_restart(idle: Container, slot: str, how: str) -> None:
    _exiting_slot(idle, slot, f"sleep 0.5; {how}")
    wait_for(lambda: len(_starts(idle, slot)) >= 2, 15, f"{slot} to be restarted")
    idle.svc("-d", slot, user="root")


def test_c_svc_4_crash_loop_backs_off(idle: Container) -> None:
    slot = "gateway-crashloop"
    _exiting_slot(idle, slot, "exit 1")
    wait_for(lambda: len(_starts(idle, slot)) >= 4, 30, "four starts of the crash loop")
    time.sleep(10)  # observation window
    starts = _starts(idle, slot)
    idle.svc("-d", slot, user="root")
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps[0] < 2.0, f"the first restart is fast: {gaps}"
    assert gaps[-1] > 2 * gaps[0] and gaps[-1] >= 2.0, f"repeated crashes back off: {gaps}"
    assert len(starts) <= 10, f"{len(starts)} starts in ~{starts[-1] - starts[0]:.0f}s: {gaps}"


# ---------------------------------------------------------------- C-SVC-6


def test_c_svc_6_status_works_for_root_and_hermes(idle: Container) -> None:
    for user in ("hermes", "root"):
        r = idle.exec("hermesinit", "svc", "status", user=user)
        assert r.returncode == 0 and r.stdout.strip(), describe(r)
        assert _status(idle, "dashboard", user=user) == "down"


def test_c_svc_6_other_users_may_not_control_services(dash: Container) -> None:
    r = dash.exec("hermesinit", "svc", "down", "dashboard", user="12345:12345")
    assert r.returncode != 0 and r.stderr.strip(), describe(r)
    assert dash.listening(9120), "the refused request must not have acted"


def test_c_svc_6_other_users_are_refused_even_status(idle: Container) -> None:
    # The contract refuses the CLI to users other than root and hermes, status included.
    r = idle.exec("hermesinit", "svc", "status", user="12345:12345")
    assert r.returncode != 0 and r.stderr.strip(), describe(r)


def test_c_svc_6_boot_wait_returns_when_boot_finished(idle: Container) -> None:
    r = idle.exec("hermesinit", "svc", "wait", "--boot", "--timeout", "10")
    assert r.returncode == 0, describe(r)


def test_c_svc_6_down_up_restart_as_hermes(dash: Container) -> None:
    dash.ok("hermesinit", "svc", "down", "dashboard")
    wait_for(lambda: not _dashboard(dash), 15, "the dashboard to stop")
    assert _status(dash, "dashboard") == "down"
    dash.ok("hermesinit", "svc", "up", "dashboard")
    wait_for(lambda: dash.listening(9120), 60, "the dashboard back up", dash.logs_tail)
    assert _status(dash, "dashboard") == "up"
    [old] = _dashboard(dash)
    dash.ok("hermesinit", "svc", "restart", "dashboard")
    wait_for(lambda: [p for p in _dashboard(dash) if p.pid != old.pid], 30, "a restarted dashboard")


# ---------------------------------------------------------------- C-SVC-7


def test_c_svc_7_dot_prefixed_entries_are_ignored(idle: Container) -> None:
    slot_script(idle, "gateway-hidden", "#!/bin/sh\ntouch /tmp/hidden-ran\nexec sleep 1000\n", publish=False)
    idle.sh_ok(f"mv {SCANDIR}/.gateway-hidden.build {SCANDIR}/.gateway-hidden && "
               f"/command/s6-svscanctl -a {SCANDIR}", user="root")
    slot_script(idle, "gateway-visible", "#!/bin/sh\ntouch /tmp/visible-ran\nexec sleep 1000\n")
    wait_for(lambda: idle.exists("/tmp/visible-ran"), 15, "the visible slot to start")
    assert not idle.exists("/tmp/hidden-ran")
    idle.svc("-d", "gateway-visible", user="root")


def test_c_svc_7_removed_slot_is_stopped_without_a_rescan(idle: Container) -> None:
    slot_script(idle, "gateway-ephemeral", "#!/bin/sh\nexec sleep 1001\n")
    idle.wait_slot_up("gateway-ephemeral")
    idle.ok("rm", "-rf", f"{SCANDIR}/gateway-ephemeral", user="root")
    wait_for(lambda: not idle.find(r"^sleep 1001$"), 15, "the removed slot's process to die")


def test_c_svc_7_stale_build_dirs_are_removed_at_boot(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    c.sh_ok(f"mkdir -p {SCANDIR}/.gateway-old.tmp {SCANDIR}/.gateway-old.tmp123/log", user="root")
    c.restart()
    left = c.ok("ls", "-A", SCANDIR).split()
    assert not [e for e in left if e.startswith(".gateway-") and ".tmp" in e], left


# ---------------------------------------------------------------- C-SVC-8


def test_c_svc_8_service_gets_a_session_clean_signals_and_no_extra_fds(idle: Container) -> None:
    slot_script(idle, "gateway-clean", "#!/bin/sh\nexec sleep 1002\n")
    pid = idle.wait_slot_up("gateway-clean")
    [p] = [p for p in idle.procs() if p.pid == pid]
    assert p.args == "sleep 1002" and p.sid == p.pid and p.pgid == p.pid, p
    status = idle.proc_status(pid)
    assert int(status["SigBlk"], 16) == 0, status["SigBlk"]
    assert int(status["SigIgn"], 16) == 0, status["SigIgn"]
    fds = sorted(int(fd) for fd in idle.ok("ls", f"/proc/{pid}/fd", user="root").split())
    assert fds == [0, 1, 2], fds
    idle.svc("-d", "gateway-clean", user="root")


def test_c_svc_8_stopping_a_service_kills_its_process_group(idle: Container) -> None:
    slot_script(idle, "gateway-family", "#!/bin/sh\nsleep 1003 &\nsleep 1004 &\nwait\n")
    idle.wait_slot_up("gateway-family")
    wait_for(lambda: len(idle.find(r"^sleep 100[34]$")) == 2, 10, "both children")
    idle.svc("-d", "gateway-family", user="root")
    wait_for(lambda: not idle.find(r"^sleep 100[34]$"), 15, "the children to die with the service")


def test_c_svc_4_bind_refusal_is_not_a_restart_storm(refusing: Container) -> None:
    # Kept last in the module: by now the window has (mostly) passed.
    first = _log_times(refusing, REFUSAL)[0]
    time.sleep(max(0.0, first + STORM_WINDOW - time.time()))  # the observation window, not a wait for an event
    times = [t for t in _log_times(refusing, REFUSAL) if t <= first + STORM_WINDOW]
    gaps = [round(b - a, 1) for a, b in zip(times, times[1:], strict=False)]
    # Each start takes ~2-4 s to refuse. s6's fixed 1 s restart meant a refusal every ~4 s (13 a minute in
    # the field) at a constant gap; a backoff keeps restarting, ever more slowly.
    assert len(times) >= 4, f"restarted after each refusal: {gaps}"
    assert len(times) <= 10, f"{len(times)} refusals in {STORM_WINDOW}s: {gaps}"
    # A gap is the dashboard's own time to refuse (2-4 s, 7-10 s on a loaded machine) plus the
    # backoff (0, 0.5, 1, 2, 4, 8 s…): the backoff alone puts the last gap 3 s or more above the
    # early ones, whatever the refusal itself costs.
    assert gaps[-1] >= min(gaps[:3]) + 3, f"the gaps between refusals must grow: {gaps}"
