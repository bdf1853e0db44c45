"""C-BOOT: what hermesinit does as root before services and the main program."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from dockerlib import ARGV0, BOOT_LOG, HERMES_HOME, SCANDIR, Container, Fleet, describe, docker, wait_for

SUBTREES = ["profiles", "cron", "sessions", "logs", "hooks", "memories", "skills", "skins", "plans",
            "workspace", "home", "pairing", "platforms/pairing"]
STATE_FILES = ["auth.json", "auth.lock", ".env", "state.db", "state.db-wal", "state.db-shm", "gateway.lock",
               "gateway_state.json", "config.yaml"]
BOOT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} profile=(?P<profile>\S+) prior_state=(?P<prior>\S+)"
    r" action=(?P<action>started|registered)(?: prior_exit=(?:clean|unclean|unknown))?$"
)


def _hooks(tmp_path: Path, scripts: dict[str, str], mode: int = 0o755) -> str:
    """A host directory of hook scripts, to bind-mount on /etc/cont-init.d."""
    d = tmp_path / "cont-init.d"
    d.mkdir()
    d.chmod(0o755)
    for name, body in scripts.items():
        p = d / name
        p.write_text(body)
        p.chmod(mode if not name.endswith(".noexec") else 0o644)
    return f"{d}:/etc/cont-init.d:ro"


def _boot_entries(lines: list[str]) -> dict[str, tuple[str, str]]:
    out = {}
    for line in lines:
        m = BOOT_LINE.match(line)
        assert m, f"boot log line does not match the contract format: {line!r}"
        out[m["profile"]] = (m["prior"], m["action"])
    return out


# ---------------------------------------------------------------- C-BOOT-1


def test_c_boot_1_environment_snapshot_keeps_every_variable(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity", env={"FOO": "bar baz", "EMPTY": "", "DOTTED.NAME": "dv"})
    envdir = "/run/s6/container_environment"
    assert c.read(f"{envdir}/FOO") == "bar baz"
    assert c.read(f"{envdir}/DOTTED.NAME") == "dv"
    assert c.exists(f"{envdir}/EMPTY") and c.read(f"{envdir}/EMPTY") == ""
    assert c.read(f"{envdir}/HERMES_HOME") == "/opt/data", "Dockerfile ENV belongs to the snapshot"


def test_c_s6_7_with_contenv_applies_the_snapshot(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity", env={"FOO": "from-docker-run"})
    out = c.ok("/command/with-contenv", "sh", "-c", 'echo "foo=$FOO"', user="root", env={"FOO": "from-exec"})
    assert out.strip() == "foo=from-docker-run"


# ---------------------------------------------------------------- C-BOOT-2


@pytest.mark.parametrize(
    ("env", "uid", "gid"),
    [
        ({"HERMES_UID": "1234", "HERMES_GID": "2345"}, 1234, 2345),
        ({"PUID": "1500", "PGID": "1600"}, 1500, 1600),
        ({"HERMES_UID": "1234", "PUID": "1500", "HERMES_GID": "2345", "PGID": "1600"}, 1234, 2345),
        ({"PUID": "99", "PGID": "100"}, 99, 100),
    ],
    ids=["hermes-names", "puid-pgid", "hermes-names-win", "nas-low-ids"],
)
def test_c_boot_2_uid_gid_remap(fleet: Fleet, env: dict[str, str], uid: int, gid: int) -> None:
    c = fleet.run("sleep", "infinity", env=env)
    assert c.ok("id", "-u", "hermes").strip() == str(uid)
    assert c.ok("id", "-g", "hermes").strip() == str(gid)
    assert c.ok("stat", "-c", "%u:%g", HERMES_HOME).strip() == f"{uid}:{gid}"
    [main] = c.find(ARGV0 + r"sleep infinity$")
    assert main.uid == uid, "the main program runs as the remapped hermes"
    logs = c.logs()
    assert re.search(rf"UID\D*{uid}\b", logs) and re.search(rf"GID\D*{gid}\b", logs), c.logs_tail()
    r = c.exec("hermesinit", "svc", "status")
    assert r.returncode == 0, "the remapped hermes user may use the operator CLI\n" + describe(r)


@pytest.mark.parametrize("bad", ["abc", "0", "70000", "-5", "12a"])
def test_c_boot_2_invalid_ids_are_ignored_with_a_warning(fleet: Fleet, bad: str) -> None:
    c = fleet.run("sleep", "infinity", env={"HERMES_UID": bad, "HERMES_GID": bad})
    assert c.ok("id", "-u", "hermes").strip() == "10000"
    assert c.ok("id", "-g", "hermes").strip() == "10000"
    assert "HERMES_UID" in c.logs(), "the warning names the variable\n" + c.logs_tail()


def test_c_boot_2_remap_is_not_a_recursive_walk_of_the_home(fleet: Fleet) -> None:
    vol = fleet.volume()
    first = fleet.run("sleep", "infinity", opts=["-v", f"{vol}:/opt/data"])
    first.sh_ok("mkdir -p /opt/data/host-share && echo x > /opt/data/host-share/f && echo y > /opt/data/sessions/s")
    docker("rm", "-f", first.name)
    second = fleet.run("sleep", "infinity", env={"HERMES_UID": "1234", "HERMES_GID": "2345"},
                       opts=["-v", f"{vol}:/opt/data"])
    # sessions/ is a bulk tree: healed by the background part of the sweep, after readiness.
    second.ok("hermesinit", "svc", "wait", "--sweep", "--timeout", "60")
    assert second.ok("stat", "-c", "%u:%g", "/opt/data/sessions/s").strip() == "1234:2345"
    assert second.ok("stat", "-c", "%u:%g", "/opt/data/host-share/f").strip() == "10000:10000", \
        "a subtree outside the contract list is not re-owned"


# ---------------------------------------------------------------- C-BOOT-3


def test_c_boot_3_root_written_state_is_healed_after_restart(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    files = [f"{HERMES_HOME}/{f}" for f in STATE_FILES]
    files += [f"{HERMES_HOME}/{d}/root-written/x" for d in SUBTREES]
    script = ["set -e"]
    for f in files:
        script.append(f"mkdir -p $(dirname {f}) && echo '{{}}' > {f} && chmod 600 {f}")
    script.append("mkdir -p /opt/data/host-share && echo keep > /opt/data/host-share/f")
    script.append("chown -R 4242:4242 /opt/data/host-share")
    c.sh_ok("\n".join(script), user="root")
    assert c.owner(f"{HERMES_HOME}/auth.json") == "root:root"
    c.restart()
    # The bulk trees are healed by the background part of the sweep, after readiness.
    c.ok("hermesinit", "svc", "wait", "--sweep", "--timeout", "60")
    wrong = [f"{f} {c.owner(f)}" for f in files if c.owner(f) != "hermes:hermes"]
    wrong += [f"{d} {c.owner(d)}" for d in {str(Path(f).parent) for f in files} if c.owner(d) != "hermes:hermes"]
    assert not wrong, "still not hermes-owned after the boot sweep:\n" + "\n".join(sorted(wrong))
    assert c.read(f"{HERMES_HOME}/auth.json", user="hermes").strip() == "{}"
    assert c.ok("stat", "-c", "%u:%g", "/opt/data/host-share/f").strip() == "4242:4242", \
        "files outside the contract list keep their owner"


def test_c_boot_3_symlinks_are_never_followed_and_refusals_are_logged(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    c.sh_ok(
        "set -e\n"
        "echo secret > /opt/victim-file && chmod 600 /opt/victim-file\n"
        "mkdir -p /opt/victim-dir && echo secret > /opt/victim-dir/f\n"
        "rm -f /opt/data/auth.json && ln -s /opt/victim-file /opt/data/auth.json\n"
        "rm -rf /opt/data/sessions && ln -s /opt/victim-dir /opt/data/sessions\n"
        "mkdir -p /opt/data/cron && ln -s /opt/victim-file /opt/data/cron/evil\n"
        "echo x > /opt/data/cron/root-file",
        user="root",
    )
    c.restart()
    c.ok("hermesinit", "svc", "wait", "--sweep", "--timeout", "60")  # sessions/ is a bulk tree
    for victim in ("/opt/victim-file", "/opt/victim-dir", "/opt/victim-dir/f"):
        assert c.owner(victim) == "root:root", f"{victim} was chowned through a symlink"
    assert c.owner("/opt/data/cron/root-file") == "hermes:hermes", "the sweep goes on after a refusal"
    refusals = [line for line in c.logs().splitlines() if "refusing" in line]
    assert any("/opt/data/auth.json" in line for line in refusals), c.logs_tail()
    assert any("/opt/data/sessions" in line for line in refusals), c.logs_tail()


# ---------------------------------------------------------------- C-BOOT-4


def test_c_boot_4_seeded_directories_exist_and_are_hermes_owned(idle: Container) -> None:
    for d in ["logs", "logs/gateways", *SUBTREES]:
        path = f"{HERMES_HOME}/{d}"
        assert idle.exec("test", "-d", path).returncode == 0, f"{path} missing"
        assert idle.owner(path) == "hermes:hermes", path


def test_c_boot_4_soul_md_is_seeded_once_and_never_overwritten(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    assert c.read(f"{HERMES_HOME}/SOUL.md", user="hermes") == c.read("/opt/hermes/defaults/SOUL.md")
    assert c.owner(f"{HERMES_HOME}/SOUL.md") == "hermes:hermes"
    c.sh_ok(f"echo 'my own persona' > {HERMES_HOME}/SOUL.md")
    c.restart()
    assert c.read(f"{HERMES_HOME}/SOUL.md", user="hermes") == "my own persona\n"


# ---------------------------------------------------------------- C-BOOT-5

# A hook sees the volume as the built-in steps left it (C-BOOT-6), before any
# gateway starts and rewrites its state file.
COPY_STATE_HOOK = """#!/bin/sh
if [ -f /opt/data/gateway_state.json ]; then cp /opt/data/gateway_state.json /run/state-at-boot.json; fi
stat -c %U:%G /opt/data/gateway_state.json > /run/state-owner-at-boot 2>/dev/null || true
"""


def test_c_boot_5_bootstrap_state_seeds_running(fleet: Fleet, tmp_path: Path) -> None:
    c = fleet.run("sleep", "infinity", env={"HERMES_GATEWAY_BOOTSTRAP_STATE": "running"},
                  opts=["-v", _hooks(tmp_path, {"50-copy-state": COPY_STATE_HOOK})])
    assert json.loads(c.read("/run/state-at-boot.json")) == {"gateway_state": "running"}
    assert c.read("/run/state-owner-at-boot").strip() == "hermes:hermes"
    assert _boot_entries(c.boot_lines())["default"] == ("running", "started")
    c.wait_slot_up("gateway-default")


def test_c_boot_5_bootstrap_state_never_overwrites(fleet: Fleet, tmp_path: Path) -> None:
    c = fleet.run("sleep", "infinity", env={"HERMES_GATEWAY_BOOTSTRAP_STATE": "running"},
                  opts=["-v", _hooks(tmp_path, {"50-copy-state": COPY_STATE_HOOK})])
    c.ok("hermes", "gateway", "stop")  # through s6: desired_state=stopped
    c.wait_slot_down("gateway-default")
    c.restart()
    state = json.loads(c.read("/run/state-at-boot.json"))
    assert state.get("desired_state") == "stopped", state
    assert c.boot_lines()[-1].split()[1:4] == ["profile=default", "prior_state=stopped", "action=registered"]


def test_c_boot_5_bootstrap_state_refuses_a_symlink(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity", env={"HERMES_GATEWAY_BOOTSTRAP_STATE": "running"})
    c.sh_ok("rm -f /opt/data/gateway_state.json && ln -s /tmp/pwned /opt/data/gateway_state.json", user="root")
    c.restart()
    assert not c.exists("/tmp/pwned"), "wrote through a symlink"
    assert any("refusing" in line and "gateway_state.json" in line for line in c.logs().splitlines()), c.logs_tail()


# ---------------------------------------------------------------- C-BOOT-6

TRACE_HOOK = """#!/bin/sh
{
  echo "uid=$(id -u)"
  echo "path=$PATH"
  echo "foo=$FOO"
  echo "hermes_home=$HERMES_HOME"
  [ "$(stat -c %U /opt/data/logs 2>/dev/null)" = hermes ] && echo "seeded=yes"
  [ -f /opt/data/SOUL.md ] && echo "soul=yes"
  if grep -q ' profile=default ' /opt/data/logs/container-boot.log 2>/dev/null; then
    echo "boot-line-before-hooks=yes"
  else
    echo "boot-line-before-hooks=no"
  fi
  echo "order=10"
} >> /run/hook-trace
printf 'from-hook' > /run/s6/container_environment/FROM_HOOK
"""


def test_c_boot_6_hooks_run_in_order_as_root_with_the_env_after_builtins(fleet: Fleet, tmp_path: Path) -> None:
    hooks = _hooks(tmp_path, {
        "10-trace": TRACE_HOOK,
        "20-second": "#!/bin/sh\necho order=20 >> /run/hook-trace\n",
        "15-skipped.noexec": "#!/bin/sh\necho order=15 >> /run/hook-trace\n",
    })
    c = fleet.run("sh", "-c", 'echo "main-sees=$FROM_HOOK"; exec sleep infinity',
                  env={"FOO": "bar"}, opts=["-v", hooks])
    trace = c.read("/run/hook-trace").splitlines()
    assert "uid=0" in trace
    assert "foo=bar" in trace and "hermes_home=/opt/data" in trace
    path = next(line for line in trace if line.startswith("path="))
    assert "/command" in path[5:].split(":"), f"hooks get /command on PATH (C-IMG-4): {path}"
    assert "seeded=yes" in trace and "soul=yes" in trace, "hooks run after the built-in steps"
    assert "boot-line-before-hooks=no" in trace, "the profile=default line comes after the hooks"
    assert [line for line in trace if line.startswith("order=")] == ["order=10", "order=20"], trace
    wait_for(lambda: "main-sees=from-hook" in c.logs(), 10, "the main program to see the hook's env", c.logs_tail)
    logs = c.logs()
    assert "10-trace" in logs and "20-second" in logs, "each hook's start and exit are logged\n" + c.logs_tail()


def test_c_boot_6_failing_hook_stops_the_container(fleet: Fleet, tmp_path: Path) -> None:
    hooks = _hooks(tmp_path, {
        "10-fails": "#!/bin/sh\necho hook-failing\nexit 3\n",
        "20-after": "#!/bin/sh\necho AFTER-RAN\n",
    })
    c = fleet.run("sh", "-c", "echo MAIN-RAN; exec sleep infinity", opts=["-v", hooks], ready=False)
    code = c.wait_exit(60)
    logs = c.logs()
    assert code != 0, logs
    assert "fatal: stopping the container" in logs, logs
    assert "MAIN-RAN" not in logs and "AFTER-RAN" not in logs, logs


def test_c_boot_6_refused_chown_warns_and_goes_on(fleet: Fleet) -> None:
    # Without CAP_CHOWN the sweep for the remapped uid cannot work: a warning, not a failure.
    r = fleet.once("sh", "-c", "echo MAIN-RAN", env={"HERMES_UID": "1234"}, opts=["--cap-drop", "CHOWN"])
    assert r.returncode == 0, describe(r)
    assert "MAIN-RAN" in r.stdout
    assert "warn" in (r.stdout + r.stderr).lower(), describe(r)


# ---------------------------------------------------------------- C-BOOT-7


def test_c_boot_7_profiles_are_reconciled_from_their_state(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    profiles = {
        "alpha": '{"gateway_state":"running"}',
        "beta": '{"gateway_state":"running","desired_state":"stopped"}',
        "gamma": '{"gateway_state":"draining"}',
        "delta": "{not json",
        "eps": None,  # no state file
        "zeta": '{"gateway_state":"startup_failed"}',
        "default": '{"gateway_state":"running"}',
        "Bad_Name": '{"gateway_state":"running"}',
    }
    script = ["set -e", "cd /opt/data"]
    for name, state in profiles.items():
        script.append(f"mkdir -p profiles/{name} && echo persona > profiles/{name}/SOUL.md")
        if state is not None:
            script.append(f"printf '%s' '{state}' > profiles/{name}/gateway_state.json")
    script.append("mkdir -p profiles/no-soul")
    script.append("""printf '%s' '{"gateway_state":"running"}' > profiles/no-soul/gateway_state.json""")
    for where in ("profiles/beta", "."):
        script.append(f"echo 4242 > {where}/gateway.pid && echo '[]' > {where}/processes.json")
    c.sh_ok("\n".join(script))
    before = len(c.boot_lines())
    c.restart()
    entries = _boot_entries(c.boot_lines()[before:])
    assert entries == {
        "default": ("None", "registered"),
        "alpha": ("running", "started"),
        "beta": ("stopped", "registered"),
        "gamma": ("running", "started"),
        "delta": ("None", "registered"),
        "eps": ("None", "registered"),
        "zeta": ("startup_failed", "registered"),
    }, entries
    slots = sorted(c.ok("ls", SCANDIR).split())
    assert [s for s in slots if s.startswith("gateway-")] == sorted(f"gateway-{p}" for p in entries)
    c.wait_slot_up("gateway-alpha")
    c.wait_slot_up("gateway-gamma")
    for slot in ("gateway-default", "gateway-beta", "gateway-delta", "gateway-eps", "gateway-zeta"):
        assert c.svstat(slot).stdout.startswith("down"), f"{slot}: {c.svstat(slot).stdout}"
    for where in ("profiles/beta", "."):
        for stale in ("gateway.pid", "processes.json"):
            assert not c.exists(f"{HERMES_HOME}/{where}/{stale}"), f"stale {where}/{stale} left"
    logs = c.logs()
    assert "profiles/default" in logs, "profiles/default/ is skipped with a warning\n" + c.logs_tail()
    assert "Bad_Name" in logs, "an invalid profile name is skipped with a warning\n" + c.logs_tail()


# ---------------------------------------------------------------- C-BOOT-8


def test_c_boot_8_legacy_gateway_run_seeds_running_intent(fleet: Fleet, tmp_path: Path) -> None:
    before = int(time.time()) - 5
    c = fleet.run("gateway", "run", opts=["-v", _hooks(tmp_path, {"50-copy-state": COPY_STATE_HOOK})])
    state = json.loads(c.read("/run/state-at-boot.json"))
    assert state["gateway_state"] == "running" and state["desired_state"] == "running", state
    assert state["migrated_from"] == "legacy-container-cmd", state
    assert isinstance(state["timestamp"], int) and before <= state["timestamp"] <= time.time() + 5, state
    assert _boot_entries(c.boot_lines())["default"] == ("running", "started")


@pytest.mark.parametrize(
    ("args", "env"),
    [(("gateway", "run", "--no-supervise"), {}), (("gateway", "run"), {"HERMES_GATEWAY_NO_SUPERVISE": "1"})],
    ids=["flag", "env"],
)
def test_c_boot_8_no_supervise_gateway_run_is_not_migrated(fleet: Fleet, tmp_path: Path, args, env) -> None:
    c = fleet.run(*args, env=env, opts=["-v", _hooks(tmp_path, {"50-copy-state": COPY_STATE_HOOK})])
    assert not c.exists("/run/state-at-boot.json"), c.read("/run/state-at-boot.json")
    assert _boot_entries(c.boot_lines())["default"] == ("None", "registered")


# ---------------------------------------------------------------- C-BOOT-9


def test_c_boot_9_boot_log_has_one_line_per_slot_per_boot(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    first = c.boot_lines()
    assert _boot_entries(first) == {"default": ("None", "registered")}, first
    c.restart()
    lines = c.boot_lines()
    assert len(lines) == 2 and _boot_entries(lines[1:]) == {"default": ("None", "registered")}, lines
    assert c.owner(BOOT_LOG) == "hermes:hermes"


def test_c_boot_9_boot_log_rotates_at_256_kib(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    c.sh_ok(f"head -c 300000 /dev/zero | tr '\\0' 'x' >> {BOOT_LOG}")
    c.restart()
    rotated = int(c.ok("stat", "-c", "%s", f"{BOOT_LOG}.1").strip())
    assert rotated >= 256 * 1024
    lines = c.boot_lines()
    assert len(lines) == 1 and _boot_entries(lines) == {"default": ("None", "registered")}, lines


# ---------------------------------------------------------------- C-BOOT-10


def test_c_boot_10_dashboard_container_registers_no_gateway_slots(fleet: Fleet) -> None:
    c = fleet.run("dashboard", "--no-open", ready=False)
    wait_for(lambda: c.listening(9119), 90, "the dashboard main program on 127.0.0.1:9119", c.logs_tail)
    slots = c.ok("ls", "-A", SCANDIR).split()
    assert not [s for s in slots if s.startswith("gateway-")], slots
