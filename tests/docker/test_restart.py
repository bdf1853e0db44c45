"""Restart: what a `docker restart` brings back (C-BOOT-7, C-BOOT-9, C-INIT-3, C-S6-3)."""

from __future__ import annotations

from dockerlib import Fleet, describe, wait_for


def _entries(lines: list[str]) -> dict[str, tuple[str, str]]:
    out = {}
    for line in lines:
        fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        out[fields["profile"]] = (fields["prior_state"], fields["action"])
    return out


def test_c_boot_7_running_profile_comes_back_started_and_stopped_stays_down(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    for name in ("runner", "idler"):
        r = c.exec("hermes", "profile", "create", name)
        assert r.returncode == 0, describe(r)
    c.ok("hermes", "-p", "runner", "gateway", "start")
    c.wait_slot_up("gateway-runner")
    c.ok("hermes", "-p", "idler", "gateway", "start")
    c.wait_slot_up("gateway-idler")
    c.ok("hermes", "-p", "idler", "gateway", "stop")
    c.wait_slot_down("gateway-idler")

    before = len(c.boot_lines())
    took = c.restart()
    entries = _entries(c.boot_lines()[before:])
    assert entries["runner"] == ("running", "started"), entries
    assert entries["idler"] == ("stopped", "registered"), entries
    c.wait_slot_up("gateway-runner")
    assert c.svstat("gateway-idler").stdout.startswith("down")
    assert took < 20, f"docker restart took {took:.1f}s"


def test_c_boot_7_live_gateway_sigtermed_by_docker_restart_comes_back(fleet: Fleet) -> None:
    c = fleet.run("gateway", "run")
    c.wait_slot_up("gateway-default", timeout=60)
    before = len(c.boot_lines())
    c.restart()
    entries = _entries(c.boot_lines()[before:])
    # The SIGTERM of `docker restart` is not an operator stop: the intent stays running.
    assert entries["default"] == ("running", "started"), entries
    new = c.wait_slot_up("gateway-default", timeout=60)
    assert [p.pid for p in c.find(r"gateway run --replace")] == [new], "one live supervised gateway"


def test_c_svc_5_gateway_log_file_survives_a_restart(fleet: Fleet) -> None:
    c = fleet.run("gateway", "run")
    c.wait_slot_up("gateway-default", timeout=60)
    current = "/opt/data/logs/gateways/default/current"
    wait_for(lambda: "Hermes Gateway Starting" in c.exec("cat", current).stdout, 30, "the first banner")
    c.restart()
    c.wait_slot_up("gateway-default", timeout=60)
    wait_for(lambda: c.exec("sh", "-c", f"cat /opt/data/logs/gateways/default/@*.s {current} 2>/dev/null")
             .stdout.count("Hermes Gateway Starting") >= 2, 30, "both boots' banners kept in the log directory")
