"""C-MAIN: what `docker run <image> ARGS…` runs, as whom, where, with which env."""

from __future__ import annotations

import time

import pytest

from dockerlib import Fleet, describe


def test_c_main_1_no_args_runs_hermes(fleet: Fleet) -> None:
    # Unconfigured and without a terminal, hermes prints its first-run notice
    # and exits 1; that exit code is the container's (C-INIT-2).
    r = fleet.once()
    assert "hermes setup" in r.stdout + r.stderr, describe(r)
    assert r.returncode == 1, describe(r)


def test_c_main_2_leading_dash_goes_to_hermes_version(fleet: Fleet) -> None:
    r = fleet.once("--version")
    assert r.returncode == 0, describe(r)
    assert "Hermes Agent v0.19.0" in r.stdout, describe(r)


def test_c_main_2_leading_dash_goes_to_hermes_help(fleet: Fleet) -> None:
    r = fleet.once("--help")
    assert r.returncode == 0, describe(r)
    assert "usage: hermes" in r.stdout, describe(r)


@pytest.mark.parametrize("word", ["mcp", "login"])
def test_c_main_3_mcp_and_login_go_to_hermes_not_the_programs(fleet: Fleet, word: str) -> None:
    r = fleet.once(word, "--help")
    assert r.returncode == 0, describe(r)
    assert f"usage: hermes {word}" in r.stdout + r.stderr, describe(r)


def test_c_main_4_executable_on_path_runs_directly_sleep(fleet: Fleet) -> None:
    start = time.monotonic()
    r = fleet.once("sleep", "1")
    assert r.returncode == 0, describe(r)
    assert time.monotonic() - start >= 1.0


def test_c_main_4_executable_on_path_runs_directly_bash(fleet: Fleet) -> None:
    r = fleet.once("bash", "-c", "echo ok")
    assert r.returncode == 0 and r.stdout.splitlines()[-1:] == ["ok"], describe(r)


def test_c_main_4_executable_on_path_runs_directly_echo(fleet: Fleet) -> None:
    r = fleet.once("echo", "hello", "world")
    assert r.returncode == 0 and r.stdout.splitlines()[-1:] == ["hello world"], describe(r)


def test_c_main_4_sh_exit_code_is_the_containers(fleet: Fleet) -> None:
    r = fleet.once("sh", "-c", "exit 42")
    assert r.returncode == 42, describe(r)


def test_c_main_5_chat_help_goes_to_hermes(fleet: Fleet) -> None:
    r = fleet.once("chat", "--help")
    assert r.returncode == 0, describe(r)
    assert "usage: hermes chat" in r.stdout, describe(r)
    assert "Traceback" not in r.stderr


def test_c_main_5_gateway_help_goes_to_hermes(fleet: Fleet) -> None:
    r = fleet.once("gateway", "--help")
    assert r.returncode == 0, describe(r)
    assert "usage: hermes gateway" in r.stdout, describe(r)


def test_c_main_6_main_program_runs_as_hermes_with_home_opt_data(fleet: Fleet) -> None:
    r = fleet.once("sh", "-c", 'id -u; id -g; id -G; echo "$HOME"; pwd')
    assert r.returncode == 0, describe(r)
    uid, gid, groups, home, cwd = r.stdout.splitlines()[-5:]
    assert (uid, gid, home) == ("10000", "10000", "/opt/data"), describe(r)
    assert "10000" in groups.split()
    assert cwd == "/opt/data", "the image's WORKDIR is kept"


def test_c_main_6_workdir_from_docker_run_is_kept(fleet: Fleet) -> None:
    r = fleet.once("sh", "-c", "pwd", opts=["-w", "/tmp"])
    assert r.returncode == 0 and r.stdout.splitlines()[-1:] == ["/tmp"], describe(r)


def test_c_main_7_main_program_sees_the_container_environment(fleet: Fleet) -> None:
    r = fleet.once(
        "sh", "-c",
        'echo "foo=$FOO"; echo "home=$HERMES_HOME"; echo "unbuf=$PYTHONUNBUFFERED"; echo "empty=${EMPTY-unset}."',
        env={"FOO": "bar baz", "EMPTY": ""},
    )
    assert r.returncode == 0, describe(r)
    lines = r.stdout.splitlines()
    for want in ("foo=bar baz", "home=/opt/data", "unbuf=1", "empty=."):
        assert want in lines, describe(r)


def test_c_main_8_arbitrary_user_is_refused_with_the_remedy(fleet: Fleet) -> None:
    r = fleet.once("sh", "-c", "echo MAIN-RAN", opts=["--user", "1000:1000"])
    assert r.returncode == 1, describe(r)
    assert "MAIN-RAN" not in r.stdout
    assert "HERMES_UID" in r.stderr and "PUID" in r.stderr, describe(r)


def test_c_main_8_user_10000_works(fleet: Fleet) -> None:
    r = fleet.once("sh", "-c", "id -u; echo MAIN-RAN", opts=["--user", "10000:10000"])
    assert r.returncode == 0, describe(r)
    assert r.stdout.splitlines()[-2:] == ["10000", "MAIN-RAN"], describe(r)


def test_c_main_8_user_10000_still_gets_the_snapshot_and_the_supervisor(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity", opts=["--user", "10000:10000"])
    assert c.read("/run/s6/container_environment/HERMES_HOME", user="hermes") == "/opt/data"
    r = c.exec("hermesinit", "svc", "status")
    assert r.returncode == 0 and "gateway-default" in r.stdout, describe(r)
