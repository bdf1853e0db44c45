"""C-SEC: a hostile hermes user, from `docker exec --user hermes`, never gets uid or gid 0.

Each attack writes its payload's `id` into /opt/data; root-only places (/opt/hermes,
/etc/cont-init.d) must stay untouched, and no process but PID 1 may run as root.
"""

from __future__ import annotations

import pytest

from dockerlib import Container, Fleet, wait_for

PRELUDE = (
    "set -u; S=/run/service; D=/opt/data; "
    "stage() { rm -rf $S/.$1; mkdir -p $S/.$1; }; pub() { mv $S/.$1 $S/$1; }; "
    "script() { printf '#!/bin/sh\\n%s\\n' \"$2\" > $1; chmod 755 $1; }; "
)

ATTACKS = PRELUDE + (
    # 1-2: native specs without user:, and with user: root / hermes:0.
    "stage n1; printf 'command: [/bin/sh, -c, \"id -u > /opt/data/n1; id -G >> /opt/data/n1; exec sleep 1000\"]\\n'"
    " > $S/.n1/hermesinit.yaml; pub n1; "
    "stage n2; printf 'command: [/bin/sh, -c, \"id -u > /opt/data/n2; exec sleep 1000\"]\\nuser: root\\n'"
    " > $S/.n2/hermesinit.yaml; pub n2; "
    "stage n3; printf 'command: [/bin/sh, -c, \"id -G > /opt/data/n3; exec sleep 1000\"]\\nuser: \"hermes:0\"\\n'"
    " > $S/.n3/hermesinit.yaml; pub n3; "
    # 3: run a symlink to a root-owned program, finish a hermes script.
    "stage s1; ln -s /bin/false $S/.s1/run; script $S/.s1/finish 'id -u > /opt/data/s1; id > /opt/hermes/pwn-s1'; pub s1; "
    # 4: log/run a symlink to /bin/sh; the service prints commands.
    "stage s2; script $S/.s2/run 'echo \"id > /opt/hermes/pwn-s2\"; exec sleep 1000'; mkdir $S/.s2/log; "
    "ln -s /bin/sh $S/.s2/log/run; pub s2; "
    # 5: a log dir through a symlink into a root-only place.
    "ln -sfn /etc/cont-init.d $D/evil-logs; "
    "stage n4; printf 'command: [/bin/echo, hi]\\nlog: {dir: /opt/data/evil-logs/x}\\n' > $S/.n4/hermesinit.yaml; pub n4; "
    "stage n5; printf 'command: [/bin/echo, hi]\\nlog: {dir: /etc/cont-init.d}\\n' > $S/.n5/hermesinit.yaml; pub n5; "
    "sleep 2; echo done"
)


@pytest.fixture(scope="module")
def attacked(module_fleet: Fleet) -> Container:
    c = module_fleet.run("sleep", "infinity")
    out = c.sh_ok(ATTACKS)
    assert "done" in out
    return c


def test_c_sec_1_native_specs_run_as_the_directory_owner(attacked: Container) -> None:
    c = attacked
    wait_for(lambda: c.exists("/opt/data/n1") and c.exists("/opt/data/n2") and c.exists("/opt/data/n3"), 20,
             "native payloads ran", c.logs_tail)
    assert c.read("/opt/data/n1").split()[0] == "10000"
    assert c.read("/opt/data/n2").strip() == "10000"
    assert "0" not in c.read("/opt/data/n3").split()
    assert "0" not in c.read("/opt/data/n1").split()[1:]


def test_c_sec_1_symlinked_programs_are_refused(attacked: Container) -> None:
    c = attacked
    logs = c.logs()
    assert "refusing run: a symlink" in logs
    assert "refusing log/run: a symlink" in logs
    assert not c.exists("/opt/data/s1") or c.read("/opt/data/s1").strip() != "0"
    for f in ("pwn-s1", "pwn-s2"):
        assert not c.exists(f"/opt/hermes/{f}")


def test_c_sec_2_log_dirs_never_reach_root_only_places(attacked: Container) -> None:
    c = attacked
    assert c.ok("ls", "-A", "/etc/cont-init.d", user="root").split() == []
    assert "refusing to follow /opt/data/evil-logs" in c.logs()


def test_c_sec_1_nothing_but_pid_1_runs_as_root(attacked: Container) -> None:
    root = [p for p in attacked.procs() if p.uid == 0 and p.pid != 1 and not p.args.startswith("ps -eo")]
    assert root == [], root


def test_c_sec_2_planted_gateway_log_symlink_is_refused_across_restart(fleet: Fleet) -> None:
    # Escalation 5: logs/gateways/default -> /etc/cont-init.d with the gateway stamped running.
    vol = fleet.volume()
    c = fleet.run("sleep", "infinity", opts=["-v", f"{vol}:/opt/data"])
    c.sh_ok("mkdir -p /opt/data/logs/gateways && rm -rf /opt/data/logs/gateways/default && "
            "ln -s /etc/cont-init.d /opt/data/logs/gateways/default && "
            "echo '{\"gateway_state\":\"running\"}' > /opt/data/gateway_state.json")
    c.restart()
    wait_for(lambda: "gateway-default" in c.logs(), 20, "gateway slot registered", c.logs_tail)
    assert c.ok("ls", "-A", "/etc/cont-init.d", user="root").split() == []
