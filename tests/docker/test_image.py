"""C-IMG: the image's layout, user, environment and entry point."""

from __future__ import annotations

import json

import pytest

from dockerlib import HERMES_HOME, Container, docker

S6_TOOLS = ("s6-svc", "s6-svstat", "s6-svscanctl", "s6-svwait", "s6-setuidgid", "s6-log", "with-contenv")
PATH_PREFIX = "/opt/hermes/bin:/opt/hermes/.venv/bin:/opt/data/.local/bin:"
ELF_HAS_INTERP = """
import struct, sys
data = open(sys.argv[1], "rb").read()
assert data[:4] == b"\\x7fELF" and data[4] == 2, "not a 64-bit ELF"
phoff, = struct.unpack_from("<Q", data, 0x20)
phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
print(any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3 for i in range(phnum)))
"""


@pytest.fixture(scope="module")
def config(image: str) -> dict:
    r = docker("image", "inspect", image)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]["Config"]


def _env(config: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in config["Env"])


def test_c_img_1_hermes_user_is_uid_10000_with_home_opt_data(idle: Container) -> None:
    fields = idle.ok("getent", "passwd", "hermes").strip().split(":")
    assert fields[2:4] == ["10000", "10000"] and fields[5] == "/opt/data", fields
    assert idle.ok("getent", "group", "hermes").strip().split(":")[2] == "10000"


def test_c_img_1_image_user_is_root(config: dict) -> None:
    assert config.get("User") in ("", "root", "0", None)


def test_c_img_2_hermes_home_is_opt_data_and_a_volume(config: dict) -> None:
    assert _env(config)["HERMES_HOME"] == "/opt/data"
    assert "/opt/data" in (config.get("Volumes") or {})


def test_c_img_2_install_tree_is_root_owned_and_not_writable_by_hermes(idle: Container) -> None:
    assert idle.owner("/opt/hermes") == "root:root"
    writable = idle.ok("find", "/opt/hermes", "-xdev", "!", "-type", "l", "-writable", "-print", "-quit")
    assert writable == "", f"hermes can write into the install tree: {writable}"
    not_root = idle.ok("find", "/opt/hermes", "-xdev", "(", "!", "-user", "root", "-o", "!", "-group", "root", ")",
                       "-print", "-quit", user="root")
    assert not_root == "", f"not root-owned: {not_root}"


def test_c_img_2_real_cli_is_hermes_agent_0_19_0_in_the_venv(idle: Container) -> None:
    out = idle.ok("/opt/hermes/.venv/bin/hermes", "--version")
    assert "Hermes Agent v0.19.0" in out, out
    assert idle.ok("/opt/hermes/.venv/bin/python", "-c",
                   "import importlib.metadata as m; print(m.version('hermes-agent'))").strip() == "0.19.0"


def test_c_img_3_path_starts_with_the_shim_the_venv_and_user_bin(config: dict, idle: Container) -> None:
    assert _env(config)["PATH"].startswith(PATH_PREFIX)
    assert idle.sh_ok('printf %s "$PATH"').startswith(PATH_PREFIX)
    assert idle.sh_ok("command -v hermes").strip() == "/opt/hermes/bin/hermes"


@pytest.mark.parametrize("tool", S6_TOOLS)
def test_c_img_4_s6_tools_are_links_to_hermesinit_in_command(idle: Container, tool: str) -> None:
    assert idle.ok("readlink", "-f", f"/command/{tool}").strip() == "/usr/local/bin/hermesinit"


def test_c_img_4_s6_directories_exist_and_basedir_is_readable_by_hermes(idle: Container) -> None:
    for path in ("/run/service", "/run/s6/basedir", "/run/s6/container_environment"):
        assert idle.exec("test", "-d", path).returncode == 0, f"{path} is not a directory"
    assert idle.exec("test", "-r", "/run/s6/basedir", "-a", "-x", "/run/s6/basedir").returncode == 0


def test_c_img_4_command_is_not_on_a_docker_exec_path(idle: Container) -> None:
    path = idle.sh_ok('printf %s "$PATH"')
    assert "/command" not in path.split(":"), path


def test_c_img_4_command_is_on_the_main_programs_path(fleet) -> None:
    r = fleet.once("sh", "-c", 'printf %s "$PATH"')
    assert r.returncode == 0, r.stderr
    assert "/command" in r.stdout.split(":"), r.stdout


def test_c_img_5_base_is_debian_13_trixie(idle: Container) -> None:
    release = idle.ok("cat", "/etc/os-release")
    assert 'VERSION_ID="13"' in release and "VERSION_CODENAME=trixie" in release, release


def test_c_img_6_python_is_unbuffered_and_lazy_installs_disabled(config: dict) -> None:
    env = _env(config)
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HERMES_DISABLE_LAZY_INSTALLS"] == "1"


def test_c_img_entrypoint_is_init_and_cmd_is_empty(config: dict) -> None:
    assert config["Entrypoint"] == ["/init"]
    assert not config.get("Cmd")


@pytest.mark.parametrize("link", ["/init", "/opt/hermes/bin/hermes"])
def test_c_img_init_and_shim_are_links_to_hermesinit(idle: Container, link: str) -> None:
    assert idle.ok("readlink", "-f", link).strip() == "/usr/local/bin/hermesinit"


def test_c_img_hermesinit_is_on_path_and_statically_linked(idle: Container) -> None:
    assert idle.sh_ok("command -v hermesinit").strip() == "/usr/local/bin/hermesinit"
    # No PT_INTERP program header: no dynamic loader, nothing to resolve at run time.
    has_interp = idle.ok("python3", "-c", ELF_HAS_INTERP, "/usr/local/bin/hermesinit").strip()
    assert has_interp == "False"


def test_c_img_no_s6_overlay_tini_or_gosu(idle: Container) -> None:
    # /usr/bin/tini exists, but it is hermesinit's legacy entry point (test_parity.py).
    for path in ("/package", "/etc/s6-overlay", "/etc/services.d", "/usr/local/bin/gosu"):
        assert not idle.exists(path), f"{path} should not be in the image"
    idle.ok("cmp", "-s", "/usr/bin/tini", "/usr/local/bin/hermesinit")
    for prog in ("gosu", "s6-svscan", "s6-supervise"):
        assert idle.sh(f"command -v {prog}").returncode != 0, f"{prog} is on PATH"


def test_c_img_cont_init_d_exists_and_is_empty(idle: Container) -> None:
    assert idle.ok("ls", "-A", "/etc/cont-init.d", user="root") == ""


def test_c_img_ships_hermesinit_config_and_default_soul(idle: Container) -> None:
    assert idle.exists("/etc/hermesinit/config.yaml")
    assert idle.owner("/etc/hermesinit/config.yaml") == "root:root"
    soul = idle.read("/opt/hermes/defaults/SOUL.md", user="hermes")
    assert "Hermes Agent" in soul, soul


def test_c_img_hermes_home_is_the_working_directory_and_hermes_owned(config: dict, idle: Container) -> None:
    assert config.get("WorkingDir") == HERMES_HOME
    assert idle.owner(HERMES_HOME) == "hermes:hermes"
