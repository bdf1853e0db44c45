"""C-SHIM: /opt/hermes/bin/hermes drops `docker exec` root to hermes before Hermes runs."""

from __future__ import annotations

import pytest

from dockerlib import HERMES_HOME, Container, Fleet, describe, wait_for

CONFIG = f"{HERMES_HOME}/config.yaml"
TRUTHY = ["1", "true", "TRUE", "True", "yes", "YES", "Yes"]
FALSY = ["0", "false", "no", "", "garbage", "2", "yEs", "on", "FALSE"]


def _config_set_owner(c: Container, user: str = "root", env: dict[str, str] | None = None) -> str:
    """`hermes config set x 1` through the shim; the owner of the config.yaml it wrote."""
    c.ok("rm", "-f", CONFIG, user="root")
    r = c.exec("hermes", "config", "set", "x", "1", user=user, env=env)
    assert r.returncode == 0, describe(r)
    return c.owner(CONFIG)


def test_c_shim_2_root_docker_exec_writes_hermes_owned_files(idle: Container) -> None:
    assert _config_set_owner(idle) == "hermes:hermes"


def test_c_shim_1_user_hermes_works_without_a_drop(idle: Container) -> None:
    assert _config_set_owner(idle, user="hermes") == "hermes:hermes"


def test_c_shim_1_other_non_root_user_keeps_its_identity(idle: Container) -> None:
    home = "/tmp/hermes-home-12345"
    idle.ok("install", "-d", "-o", "12345", "-g", "12345", home, user="root")
    r = idle.exec("hermes", "config", "set", "x", "1", user="12345:12345", env={"HERMES_HOME": home})
    assert r.returncode == 0, describe(r)
    assert idle.ok("stat", "-c", "%u:%g", f"{home}/config.yaml", user="root").strip() == "12345:12345"


def test_c_shim_2_dropped_process_has_hermes_groups_and_home(idle: Container) -> None:
    # A long-lived hermes command started through the shim as root: look at
    # the running process itself.
    idle.exec("hermes", "dashboard", "--port", "9391", "--no-open", user="root", detach=True)
    pid = wait_for(lambda: [p.pid for p in idle.find(r"dashboard --port 9391")], 30,
                   "the shim-started dashboard")[0]
    try:
        status = idle.proc_status(pid)
        assert status["Uid"].split() == ["10000"] * 4, status["Uid"]
        assert status["Gid"].split() == ["10000"] * 4, status["Gid"]
        assert status["Groups"].split() == ["10000"], status["Groups"]
        env = idle.environ(pid)
        assert env.get("HOME") == "/opt/data", env.get("HOME")
    finally:
        idle.exec("kill", str(pid), user="root")


@pytest.fixture(scope="module")
def optout_box(module_fleet: Fleet) -> Container:
    """Root-run Hermes leaves root-owned files behind on purpose: not in `idle`."""
    return module_fleet.run("sleep", "infinity")


@pytest.mark.parametrize("value", TRUTHY)
def test_c_shim_3_truthy_opt_out_keeps_root(optout_box: Container, value: str) -> None:
    assert _config_set_owner(optout_box, env={"HERMES_DOCKER_EXEC_AS_ROOT": value}) == "root:root"


@pytest.mark.parametrize("value", FALSY)
def test_c_shim_3_other_values_do_not_opt_out(idle: Container, value: str) -> None:
    assert _config_set_owner(idle, env={"HERMES_DOCKER_EXEC_AS_ROOT": value}) == "hermes:hermes"


def test_c_shim_2_every_file_under_hermes_home_is_readable_by_hermes(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    c.ok("touch", "/tmp/before-exec", user="root")
    for args in (["config", "set", "e2e.marker", "1"], ["profile", "create", "shimcheck"], ["profile", "list"]):
        r = c.exec("hermes", *args, user="root")
        assert r.returncode == 0, describe(r)
    unreadable = c.ok("find", HERMES_HOME, "!", "-readable", "-print")
    assert unreadable == "", f"unreadable by hermes:\n{unreadable}"
    not_hermes = c.ok("find", HERMES_HOME, "-newer", "/tmp/before-exec", "!", "-user", "hermes", "-print", user="root")
    assert not_hermes == "", f"written by a root docker exec but not hermes-owned:\n{not_hermes}"


def test_c_shim_4_no_hermes_user_exits_126_with_the_remedy(fleet: Fleet) -> None:
    r = fleet.once("-c", "userdel hermes && exec /opt/hermes/bin/hermes --version",
                   opts=["--entrypoint", "/bin/sh"])
    assert r.returncode == 126, describe(r)
    assert "--user hermes" in r.stderr and "HERMES_DOCKER_EXEC_AS_ROOT=1" in r.stderr, describe(r)
    assert "Hermes Agent v" not in r.stdout, "ran on as root"


def test_c_shim_4_failed_setuid_exits_126_never_runs_as_root(fleet: Fleet) -> None:
    r = fleet.once("--version", opts=["--entrypoint", "/opt/hermes/bin/hermes",
                                      "--cap-drop", "SETUID", "--cap-drop", "SETGID"])
    assert r.returncode == 126, describe(r)
    assert "--user hermes" in r.stderr and "HERMES_DOCKER_EXEC_AS_ROOT=1" in r.stderr, describe(r)
    assert "Hermes Agent v" not in r.stdout, "ran on as root"


def test_c_shim_4_missing_real_binary_exits_127(fleet: Fleet) -> None:
    r = fleet.once("-c", "rm /opt/hermes/.venv/bin/hermes && exec /opt/hermes/bin/hermes --version",
                   opts=["--entrypoint", "/bin/sh"])
    assert r.returncode == 127, describe(r)
    assert r.stderr.strip(), "exit 127 needs a message on stderr"


@pytest.mark.parametrize("path", ["/opt/hermes/bin", "/opt/hermes/bin:/opt/hermes/bin:/usr/bin:/bin"])
def test_c_shim_5_never_reenters_itself_whatever_path_holds(idle: Container, path: str) -> None:
    for user in ("root", "hermes"):
        r = idle.exec("/opt/hermes/bin/hermes", "--version", user=user, env={"PATH": path}, timeout=30)
        assert r.returncode == 0, describe(r)
        assert "Hermes Agent v0.19.0" in r.stdout, describe(r)
