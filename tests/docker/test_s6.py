"""C-S6: the s6 surfaces, driven by the real, unmodified hermes-agent 0.19.0."""

from __future__ import annotations

import json
import re

import pytest

from dockerlib import HERMES_HOME, SCANDIR, Container, Fleet, describe, slot_script, wait_for

UP_LINE = re.compile(r"^up \(pid (\d+)\) \d+ seconds?(, .*)?$")
DOWN_LINE = re.compile(r"^down \((exitcode -?\d+|signal SIG[A-Z0-9]+)\) \d+ seconds?(, .*)?$")


def _state(c: Container, profile_dir: str) -> dict:
    return json.loads(c.read(f"{profile_dir}/gateway_state.json", user="hermes"))


def _wait_gateway_running(c: Container, profile_dir: str, pid: int) -> None:
    """Until the gateway ``pid`` has recorded itself running (its signal handling is set up)."""
    wait_for(lambda: (s := _state(c, profile_dir)).get("pid") == pid and s.get("gateway_state") == "running",
             30, f"gateway {pid} to record gateway_state=running",
             lambda: c.read(f"{profile_dir}/gateway_state.json"))


@pytest.fixture(scope="module")
def gw(module_fleet: Fleet) -> Container:
    """`docker run <image> gateway run`: the supervised default gateway."""
    c = module_fleet.run("gateway", "run")
    c.wait_slot_up("gateway-default", timeout=60)
    return c


# ---------------------------------------------------------------- C-S6-1


def test_c_s6_1_hermes_detects_s6_as_the_hermes_user(gw: Container) -> None:
    assert gw.read("/proc/1/comm", user="hermes").strip() == "s6-svscan"
    assert gw.exec("test", "-d", "/run/s6/basedir").returncode == 0
    out = gw.ok("python3", "-c",
                "from hermes_cli.service_manager import detect_service_manager; print(detect_service_manager())")
    assert out.strip() == "s6"


# ---------------------------------------------------------------- C-S6-8 and the gateway run main program


def test_c_s6_8_gateway_run_is_supervised_with_a_notice(gw: Container) -> None:
    wait_for(lambda: "s6 supervision" in gw.logs(), 30, "Hermes' supervision notice", gw.logs_tail)
    assert "--no-supervise" in gw.logs()
    [main] = wait_for(lambda: gw.find(r"^sleep infinity$"), 10, "the main program to become `sleep infinity`")
    assert main.ppid == 1 and main.uid == 10000, main
    assert len(gw.find(r"/hermes (-p \S+ )?gateway run")) == 1, "one gateway: no run -> start -> run recursion"


@pytest.mark.parametrize(("args", "env"), [(("gateway", "run", "--no-supervise"), {}),
                                            (("gateway", "run"), {"HERMES_GATEWAY_NO_SUPERVISE": "1"})],
                         ids=["flag", "env"])
def test_c_s6_8_no_supervise_runs_the_gateway_in_the_foreground(fleet: Fleet, args, env) -> None:
    c = fleet.run(*args, env=env)
    wait_for(lambda: "Hermes Gateway Starting" in c.logs(), 60, "the foreground gateway banner", c.logs_tail)
    [p] = c.find(r"hermes gateway run")
    assert p.ppid == 1 and "--replace" not in p.args, p
    assert "s6 supervision" not in c.logs()
    assert c.svstat("gateway-default").stdout.startswith("down")
    assert not c.find(r"^sleep infinity$")


# ---------------------------------------------------------------- C-S6-2 / C-S6-3 / C-S6-4


def test_c_s6_3_svstat_up_line_has_the_pid_hermes_parses(gw: Container) -> None:
    r = gw.svstat("gateway-default")
    assert r.returncode == 0, describe(r)
    line = r.stdout.strip()
    m = UP_LINE.match(line)
    assert m and "pgid" not in line, line
    [p] = gw.find(r"gateway run --replace")
    assert int(m.group(1)) == p.pid
    out = gw.ok("python3", "-c", "from hermes_cli.service_manager import S6ServiceManager as M; "
                "m = M(); print(m.is_running('gateway-default'), m._supervised_pid('gateway-default'))")
    assert out.split() == ["True", str(p.pid)], out


def test_c_s6_3_svstat_o_fields(gw: Container) -> None:
    pid = gw.wait_slot_up("gateway-default")
    r = gw.svstat("gateway-default", "-o", "up,wantedup,normallyup,pid,exitcode")
    assert r.returncode == 0, describe(r)
    assert r.stdout.split() == ["true", "true", "true", str(pid), "-1"], r.stdout


def test_c_s6_3_svstat_while_a_restart_is_pending_says_want_up(gw: Container) -> None:
    slot_script(gw, "gateway-flappy", "#!/bin/sh\nexit 1\n")

    def pending() -> str:
        r = gw.svstat("gateway-flappy")
        return r.stdout.strip() if r.stdout.startswith("down") and "want up" in r.stdout else ""

    line = wait_for(pending, 20, "a `down …, want up` line while the restart is pending")
    assert DOWN_LINE.match(line) and "exitcode 1" in line, line
    fields = wait_for(lambda: (o := gw.svstat("gateway-flappy", "-o", "up,wantedup,normallyup,pid,exitcode")
                               .stdout.split())[:1] == ["false"] and o, 20, "-o fields while down")
    assert fields == ["false", "true", "true", "-1", "1"], fields
    gw.svc("-d", "gateway-flappy", user="root")


def test_c_s6_3_svstat_without_a_supervisor_fails(gw: Container) -> None:
    r = gw.exec("/command/s6-svstat", "/tmp")
    assert r.returncode == 1 and r.stderr.strip(), describe(r)


def test_c_s6_2_svc_down_and_up_as_hermes(gw: Container) -> None:
    pid = gw.wait_slot_up("gateway-default")
    r = gw.svc("-d", "gateway-default")
    assert r.returncode == 0, describe(r)
    line = gw.wait_slot_down("gateway-default").strip()
    assert DOWN_LINE.match(line) and "normally up" in line, line
    assert not [p for p in gw.procs() if p.pid == pid]
    r = gw.svc("-u", "gateway-default")
    assert r.returncode == 0, describe(r)
    gw.wait_slot_up("gateway-default", not_pid=pid)


@pytest.mark.parametrize("flag", ["-t", "-r"])
def test_c_s6_2_svc_term_and_restart_bring_a_new_pid(gw: Container, flag: str) -> None:
    pid = gw.wait_slot_up("gateway-default")
    r = gw.svc(flag, "gateway-default")
    assert r.returncode == 0, describe(r)
    gw.wait_slot_up("gateway-default", timeout=30, not_pid=pid)


def test_c_s6_2_svc_refuses_a_directory_that_is_not_supervised(gw: Container) -> None:
    r = gw.exec("/command/s6-svc", "-u", "/tmp")
    assert r.returncode != 0 and r.stderr.strip(), describe(r)


def test_c_s6_2_svc_refuses_other_users(gw: Container) -> None:
    r = gw.svc("-d", "gateway-default", user="12345:12345")
    assert r.returncode != 0 and r.stderr.strip(), describe(r)
    assert gw.slot_pid("gateway-default"), "the refused command must not have acted"


def test_c_s6_4_svwait_down_and_timeout(gw: Container) -> None:
    gw.wait_slot_up("gateway-default")
    r = gw.exec("/command/s6-svwait", "-D", "-t", "500", f"{SCANDIR}/gateway-default")
    assert r.returncode == 99, describe(r)
    assert gw.svc("-d", "gateway-default").returncode == 0
    r = gw.exec("/command/s6-svwait", "-D", "-t", "10000", f"{SCANDIR}/gateway-default", timeout=20)
    assert r.returncode == 0, describe(r)
    assert gw.svstat("gateway-default").stdout.startswith("down")
    assert gw.svc("-u", "gateway-default").returncode == 0
    gw.wait_slot_up("gateway-default")


def test_c_s6_4_svscanctl_an_drops_slots_whose_directory_is_gone(gw: Container) -> None:
    slot_script(gw, "gateway-dropme", "#!/bin/sh\nexec sleep 1010\n")
    gw.wait_slot_up("gateway-dropme")
    gw.ok("rm", "-rf", f"{SCANDIR}/gateway-dropme", user="root")
    r = gw.exec("/command/s6-svscanctl", "-an", SCANDIR)
    assert r.returncode == 0, describe(r)
    wait_for(lambda: not gw.find(r"^sleep 1010$"), 15, "the dropped slot's process to end")


# ---------------------------------------------------------------- C-S6-5


def test_c_s6_5_down_file_registers_without_starting(gw: Container) -> None:
    slot_script(gw, "gateway-lazy", "#!/bin/sh\ntouch /tmp/lazy-ran\nexec sleep 1011\n", down=True)
    line = gw.wait_slot_down("gateway-lazy").strip()
    assert "normally up" not in line, line
    assert not gw.exists("/tmp/lazy-ran")
    assert gw.svc("-u", "gateway-lazy").returncode == 0
    gw.wait_slot_up("gateway-lazy")
    assert "normally down" in gw.svstat("gateway-lazy").stdout
    gw.svc("-d", "gateway-lazy")


@pytest.mark.parametrize(("how", "args"), [("exit 3", "3 0"), ("kill -9 $$", "256 9")])
def test_c_s6_5_finish_gets_exit_code_and_signal(gw: Container, how: str, args: str) -> None:
    slot = f"gateway-fin{args.split()[0]}"
    slot_script(gw, slot, f"#!/bin/sh\n{how}\n", finish=f'#!/bin/sh\necho "$1 $2" >> /tmp/{slot}.finish\nexit 125\n')
    wait_for(lambda: gw.exists(f"/tmp/{slot}.finish"), 15, "the finish script")
    gw.wait_slot_down(slot)
    assert gw.read(f"/tmp/{slot}.finish").split("\n")[0] == args
    assert gw.read(f"/tmp/{slot}.finish").count("\n") == 1, "finish exiting 125 keeps the service down"


def test_c_s6_5_log_run_gets_the_services_stdout(gw: Container) -> None:
    slot_script(gw, "gateway-logged", "#!/bin/sh\necho logged-line-1\necho logged-line-2\nexec sleep 1012\n",
                log_run="#!/bin/sh\nexec s6-log 1 n10 s1000000 T /tmp/logged\n")
    wait_for(lambda: "logged-line-2" in gw.exec("cat", "/tmp/logged/current", user="root").stdout, 15,
             "the log service to write current", gw.logs_tail)
    wait_for(lambda: "logged-line-2" in gw.logs(), 10, "the `1` directive to copy to docker logs")
    gw.svc("-d", "gateway-logged", user="root")


# ---------------------------------------------------------------- C-S6-7


def test_c_s6_7_setuidgid_loads_supplementary_groups(gw: Container) -> None:
    gw.sh_ok("getent group extra4444 || groupadd -g 4444 extra4444; usermod -aG extra4444 hermes", user="root")
    out = gw.ok("/command/s6-setuidgid", "hermes", "sh", "-c", "id -u; id -g; id -G", user="root")
    uid, gid, groups = out.splitlines()
    assert (uid, gid) == ("10000", "10000")
    assert sorted(groups.split()) == ["10000", "4444"], groups


def test_c_s6_7_s6_log_rotates_and_loses_no_line(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    lines = 120_000  # ~11.5 MB: eleven rotations at 1,000,000 bytes, ten archives kept
    c.sh_ok(
        f"mkdir -p /tmp/rot && seq -f 'line-%08g-padding-padding-padding-padding-padding-padding-padding-pad' {lines}"
        f" | /command/s6-log 1 n10 s1000000 T /tmp/rot > /dev/null"
    )
    listing = c.ok("ls", "/tmp/rot").split()
    archives = sorted(f for f in listing if f.startswith("@") and f.endswith(".s"))
    assert "current" in listing
    assert len(archives) == 10, listing
    sizes = [int(c.ok("stat", "-c", "%s", f"/tmp/rot/{a}")) for a in archives]
    assert max(sizes) <= 1_000_000, sizes
    text = c.ok("sh", "-c", "cat /tmp/rot/@*.s /tmp/rot/current")
    numbers = [int(line.split("line-")[1][:8]) for line in text.splitlines()]
    assert numbers == list(range(numbers[0], lines + 1)), "lines lost or out of order"
    first = text.splitlines()[0]
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9}  line-", first), first


# ---------------------------------------------------------------- profile lifecycle (C-S6-2..5, C-SVC-7)


def test_c_s6_profile_create_registers_a_down_slot(gw: Container) -> None:
    r = gw.exec("hermes", "profile", "create", "coder", user="root")
    assert r.returncode == 0 and "Could not register" not in r.stdout + r.stderr, describe(r)
    assert gw.exists(f"{SCANDIR}/gateway-coder")
    assert gw.svstat("gateway-coder").stdout.startswith("down")


def test_c_s6_profile_gateway_start_stop_restart(gw: Container) -> None:
    if not gw.exists(f"{SCANDIR}/gateway-coder"):
        gw.ok("hermes", "profile", "create", "coder")
    profile_dir = f"{HERMES_HOME}/profiles/coder"

    r = gw.exec("hermes", "-p", "coder", "gateway", "start")
    assert r.returncode == 0, describe(r)
    pid = gw.wait_slot_up("gateway-coder")
    [p] = [p for p in gw.procs() if p.pid == pid]
    assert "-p coder gateway run --replace" in p.args
    wait_for(lambda: "Hermes Gateway Starting" in gw.exec("cat", f"{HERMES_HOME}/logs/gateways/coder/current").stdout,
             30, "the coder banner in its log file", gw.logs_tail)

    _wait_gateway_running(gw, profile_dir, pid)

    r = gw.exec("hermes", "-p", "coder", "gateway", "restart")
    assert r.returncode == 0, describe(r)
    pid = gw.wait_slot_up("gateway-coder", not_pid=pid)
    _wait_gateway_running(gw, profile_dir, pid)

    log = f"{profile_dir}/logs/gateway.log"
    seen = len(gw.read(log).splitlines())
    r = gw.exec("hermes", "-p", "coder", "gateway", "stop")
    assert r.returncode == 0, describe(r)
    gw.wait_slot_down("gateway-coder")

    def since_stop() -> str:
        return "\n".join(gw.read(log).splitlines()[seen:])

    # s6-svstat's "(pid N)" let Hermes write its planned-stop marker naming this
    # gateway, so the gateway takes the stop as intentional...
    wait_for(lambda: "as a planned gateway stop" in since_stop(), 15, "the gateway to take the stop as planned",
             since_stop)
    # ...and records gateway_state=stopped. Except when hermes-agent's own race
    # hits (0.19.0, with s6-overlay too): its planned-stop watcher, a 0.5 s poll,
    # consumes the marker between the CLI's write and the SIGTERM `s6-svc -d`
    # sends; the handler then takes that SIGTERM, arriving during the teardown,
    # as unexpected and persists "running". Reproduced by hand by sending the
    # SIGTERM right after the marker disappears.
    race = re.compile(r"Received UNKNOWN as a planned gateway stop.*\n(.*\n)*.*Received SIGTERM — initiating"
                      r"(.*\n)*.*persisting gateway_state=running")
    wait_for(lambda: _state(gw, profile_dir).get("gateway_state") == "stopped" or race.search(since_stop()), 15,
             "gateway_state=stopped", lambda: gw.read(f"{profile_dir}/gateway_state.json") + since_stop())


def test_c_s6_profile_delete_removes_the_slot_and_its_gateway(gw: Container) -> None:
    gw.ok("hermes", "profile", "create", "doomed")
    gw.ok("hermes", "-p", "doomed", "gateway", "start")
    gw.wait_slot_up("gateway-doomed")
    r = gw.exec("hermes", "profile", "delete", "doomed", "-y")
    assert r.returncode == 0 and "Could not unregister" not in r.stdout + r.stderr, describe(r)
    wait_for(lambda: not gw.find(r"-p doomed gateway run"), 20, "the deleted profile's gateway to end")
    assert not gw.exists(f"{SCANDIR}/gateway-doomed")


def test_c_s6_6_invalid_profile_names_get_no_slot(gw: Container) -> None:
    gw.exec("hermes", "profile", "create", "Bad_Name")
    assert not gw.exists(f"{SCANDIR}/gateway-Bad_Name")
