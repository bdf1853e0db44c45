"""Parity with the upstream image's boot and entry points (issue 11): device groups, the
stale install stamp, first-boot seeding of .env / config.yaml / SOUL.md, API_SERVER_KEY,
config migration, auth.json bootstrap, bundled skills, a read-only volume, the legacy
/usr/bin/tini entry point, execline, and the image payload."""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

from dockerlib import HERMES_HOME, SCANDIR, Container, Fleet, describe, docker, slot_script, wait_for

ENV_FILE = f"{HERMES_HOME}/.env"
CONFIG = f"{HERMES_HOME}/config.yaml"
KEY_LINE = re.compile(r"^API_SERVER_KEY=([0-9a-f]{64})$", re.M)


def _stat(c: Container, path: str) -> str:
    return c.ok("stat", "-c", "%U:%G %a", path, user="root").strip()


def _digest(c: Container, *paths: str) -> str:
    return c.ok("sha256sum", *paths, user="root")


# ------------------------------------------------------------------ seeding, key, skills


def test_fresh_volume_is_seeded_and_a_restart_changes_nothing(fleet: Fleet) -> None:
    vol = fleet.volume()
    c = fleet.run("sleep", "infinity", opts=["-v", f"{vol}:/opt/data"])
    assert _stat(c, ENV_FILE) == "hermes:hermes 600"
    assert _stat(c, CONFIG) == "hermes:hermes 640"
    assert _stat(c, f"{HERMES_HOME}/SOUL.md").startswith("hermes:hermes ")
    env = c.read(ENV_FILE, user="hermes")
    keys = KEY_LINE.findall(env)
    assert len(keys) == 1, env
    assert "OPENROUTER_API_KEY=" in env, "the keys Hermes' setup knows are listed"
    assert keys[0] not in c.logs(), "the generated key is never logged"
    assert "generated a new API_SERVER_KEY" in c.logs()
    # config.yaml is hermes-agent's own default config, readable by Hermes itself.
    cfg = c.ok("/opt/hermes/.venv/bin/python", "-c",
               "import json; from hermes_cli.config import load_config; print(json.dumps(sorted(load_config())))")
    assert "model" in json.loads(cfg)
    assert c.read(CONFIG, user="hermes").startswith(c.read("/opt/hermes/defaults/config.yaml")[:40])
    logs = c.logs()
    # The seeded config.yaml and .env are what the image build proved migrate_config leaves
    # alone (test_config_migration_is_skipped_only_when_proven below).
    assert "boot: migrate: skipped: config.yaml and .env seeded from this image's defaults" in logs, c.logs_tail()
    # The 0.19.0 wheel ships no bundled skills directory: nothing to sync (as upstream's boot).
    assert "boot: skills: skipped: this hermes-agent ships no bundled skills directory" in logs
    before = _digest(c, ENV_FILE, CONFIG, f"{HERMES_HOME}/SOUL.md")

    c.restart()
    assert _digest(c, ENV_FILE, CONFIG, f"{HERMES_HOME}/SOUL.md") == before
    assert (_stat(c, ENV_FILE), _stat(c, CONFIG)) == ("hermes:hermes 600", "hermes:hermes 640")
    logs = c.logs()
    assert logs.count("generated a new API_SERVER_KEY") == 1
    assert "boot: apikey: API_SERVER_KEY is set" in logs


def _last_boot(c: Container) -> str:
    """The log of the container's latest boot."""
    return "boot: env:" + c.logs().rsplit("boot: env:", 1)[1]


MIGRATE_BY_HAND = (
    "from hermes_cli.config import migrate_config; "
    "print(migrate_config(interactive=False, quiet=False))"
)


def test_config_migration_is_skipped_only_when_proven(fleet: Fleet) -> None:
    vol = fleet.volume()
    c = fleet.run("sleep", "infinity", opts=["-v", f"{vol}:/opt/data"])
    boot = _last_boot(c)
    assert ("boot: migrate: skipped: config.yaml and .env seeded from this image's defaults, which "
            "hermes-agent 0.19.0's migrate_config leaves alone (proven at image build)") in boot, boot
    assert "[config-migrate]" not in boot, boot
    # What boot recognised is what the build proved: the default config.yaml, and the default
    # .env with its empty API_SERVER_KEY= line replaced by the generated key at the end.
    assert c.read(CONFIG) == c.read("/opt/hermes/defaults/config.yaml")
    env, default_env = c.read(ENV_FILE), c.read("/opt/hermes/defaults/.env")
    assert KEY_LINE.fullmatch(env.splitlines()[-1]), env[-200:]
    assert env[: env.rindex("API_SERVER_KEY=")] == default_env.replace("API_SERVER_KEY=\n", ""), "apikey's form"
    # ... and it is still a fixed point here: hermes-agent's own migration, run by hand, changes
    # nothing and reports nothing.
    before = _digest(c, ENV_FILE, CONFIG)
    out = c.ok("/opt/hermes/.venv/bin/python", "-c", MIGRATE_BY_HAND, workdir=HERMES_HOME)
    assert out.strip() == "{'env_added': [], 'config_added': [], 'warnings': []}", out
    assert _digest(c, ENV_FILE, CONFIG) == before
    # Nothing hermes may touch holds the memo.
    r = c.exec("ls", "/var/lib/hermesinit")
    assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
    assert c.ok("stat", "-c", "%U:%G %a", "/var/lib/hermesinit", user="root").strip() == "root:root 700"

    # A restart of untouched files: recognised again, no memo needed.
    c.restart()
    boot = _last_boot(c)
    assert "boot: migrate: skipped: config.yaml and .env still this image's defaults" in boot, boot
    assert not c.exists("/var/lib/hermesinit/migrate")

    # An edited config.yaml: the migration runs on the next boot, is remembered (it changed
    # nothing and said nothing but its summary), and the boot after that skips it.
    c.sh_ok(f"echo '# edited by hand' >> {CONFIG}")
    c.restart()
    boot = _last_boot(c)
    assert "[config-migrate] config version 33 -> 33" in boot, boot
    assert re.search(r"boot: migrate: done: .*; remembered \(", boot), boot
    c.restart()
    boot = _last_boot(c)
    assert ("boot: migrate: skipped: config.yaml and .env are as hermes-agent 0.19.0 last migrated them "
            "(memo in /var/lib/hermesinit)") in boot, boot
    assert "[config-migrate]" not in boot, boot

    # Any change since, even one that keeps the bytes (a chmod moves ctime), runs it again.
    c.sh_ok(f"chmod 600 {CONFIG}")
    c.restart()
    assert "[config-migrate] config version" in _last_boot(c), c.logs_tail()
    c.sh_ok(f"printf '# mine\\n' >> {ENV_FILE}")
    c.restart()
    assert "[config-migrate] config version" in _last_boot(c), c.logs_tail()
    c.restart()
    assert "last migrated them" in _last_boot(c), c.logs_tail()

    # A new container on the same volume has no memo: it migrates, as it must after an upgrade.
    docker("rm", "-f", c.name)
    c2 = fleet.run("sleep", "infinity", opts=["-v", f"{vol}:/opt/data"])
    assert "[config-migrate] config version" in _last_boot(c2), c2.logs_tail()


def test_bundled_skills_are_synced_by_hermes_agents_own_code(fleet: Fleet, tmp_path: Path) -> None:
    bundled = tmp_path / "bundled"
    (bundled / "demo").mkdir(parents=True)
    (bundled / "demo" / "SKILL.md").write_text("---\nname: demo\ndescription: a demo skill\n---\nDo the demo.\n")
    for p in (tmp_path, bundled, bundled / "demo"):
        p.chmod(0o755)
    (bundled / "demo" / "SKILL.md").chmod(0o644)
    c = fleet.run("sleep", "infinity", env={"HERMES_BUNDLED_SKILLS": "/opt/bundled-skills"},
                  opts=["-v", f"{bundled}:/opt/bundled-skills:ro"])
    assert re.search(r"\[skills-sync\] Done: 1 new, 0 updated", c.logs()), c.logs_tail()
    assert c.read(f"{HERMES_HOME}/skills/demo/SKILL.md", user="hermes").endswith("Do the demo.\n")
    assert c.owner(f"{HERMES_HOME}/skills/demo/SKILL.md") == "hermes:hermes"
    c.restart()
    assert re.search(r"\[skills-sync\] Done: 0 new, 0 updated, 1 unchanged", c.logs()), c.logs_tail()


def test_modes_are_restored_and_an_empty_key_is_replaced_at_every_boot(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    c.sh_ok(f"chmod 644 {ENV_FILE}; chmod 600 {CONFIG}; chown root {CONFIG}; "
            f"printf 'A=1\\nAPI_SERVER_KEY=\\n' > {ENV_FILE}", user="root")
    c.restart()
    assert (_stat(c, ENV_FILE), _stat(c, CONFIG)) == ("hermes:hermes 600", "hermes:hermes 640")
    env = c.read(ENV_FILE, user="hermes")
    assert env.startswith("A=1\nAPI_SERVER_KEY=") and len(KEY_LINE.findall(env)) == 1, env


def test_existing_files_are_never_overwritten(fleet: Fleet) -> None:
    vol = fleet.volume()
    prep = fleet.run("sleep", "infinity", opts=["-v", f"{vol}:/opt/data"])
    prep.sh_ok(f"printf 'API_SERVER_KEY=mine\\n' > {ENV_FILE}; echo 'model: {{default: x}}' > {CONFIG}; "
               f"echo persona > {HERMES_HOME}/SOUL.md")
    docker("rm", "-f", prep.name)
    c = fleet.run("sleep", "infinity", opts=["-v", f"{vol}:/opt/data"],
                  env={"HERMES_SKIP_CONFIG_MIGRATION": "1"})
    assert c.read(ENV_FILE, user="hermes") == "API_SERVER_KEY=mine\n"
    assert c.read(f"{HERMES_HOME}/SOUL.md", user="hermes") == "persona\n"
    assert "x" in c.read(CONFIG, user="hermes")
    assert "boot: migrate: skipped (HERMES_SKIP_CONFIG_MIGRATION)" in c.logs()


def test_stale_install_stamp_is_removed_and_others_kept(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    c.sh_ok(f"printf ' docker\\n' > {HERMES_HOME}/.install_method", user="root")
    c.restart()
    assert not c.exists(f"{HERMES_HOME}/.install_method")
    c.sh_ok(f"echo pip > {HERMES_HOME}/.install_method")
    c.restart()
    assert c.read(f"{HERMES_HOME}/.install_method") == "pip\n"


def test_planted_symlinks_are_refused(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    c.sh_ok("echo 'API_SERVER_KEY=' > /tmp/victim-env && echo docker > /tmp/victim-stamp", user="root")
    c.sh_ok(f"rm -f {ENV_FILE} && ln -s /tmp/victim-env {ENV_FILE} && ln -s /tmp/victim-stamp {HERMES_HOME}/.install_method")
    c.restart()
    assert c.read("/tmp/victim-env") == "API_SERVER_KEY=\n"
    assert c.read("/tmp/victim-stamp") == "docker\n"
    assert c.ok("readlink", ENV_FILE).strip() == "/tmp/victim-env"
    logs = c.logs()
    assert "refusing to read or rewrite symlink /opt/data/.env" in logs
    assert "refusing to read symlink /opt/data/.install_method" in logs


# ------------------------------------------------------------------ auth.json


def test_auth_json_bootstrap_is_written_once_and_never_shown(fleet: Fleet) -> None:
    secret = f"tok-{uuid.uuid4().hex}"
    value = json.dumps({"version": 1, "providers": {"x": {"access_token": secret}}}, indent=1) + "\n"
    vol = fleet.volume()
    c = fleet.run("sleep", "infinity", opts=["-v", f"{vol}:/opt/data"],
                  env={"HERMES_AUTH_JSON_BOOTSTRAP": value})
    assert c.read(f"{HERMES_HOME}/auth.json", user="hermes") == value, "byte for byte"
    assert _stat(c, f"{HERMES_HOME}/auth.json") == "hermes:hermes 600"
    assert secret not in c.logs()
    assert c.sh("grep -rl tok- /run/s6/container_environment", user="root").stdout == ""
    assert not c.exists("/run/s6/container_environment/HERMES_AUTH_JSON_BOOTSTRAP")
    main = c.find(r"^(\S*/)?sleep infinity$")[0].pid
    assert "HERMES_AUTH_JSON_BOOTSTRAP" not in c.environ(main), "nor in what the main program inherits"
    c.sh_ok(f"echo '{{\"rotated\": 1}}' > {HERMES_HOME}/auth.json")
    c.restart()
    assert c.read(f"{HERMES_HOME}/auth.json", user="hermes") == '{"rotated": 1}\n', "never overwritten"
    assert secret not in c.logs()


def test_auth_json_rebootstrap_replaces_only_a_dead_nous_session(fleet: Fleet) -> None:
    vol = fleet.volume()
    prep = fleet.run("sleep", "infinity", opts=["-v", f"{vol}:/opt/data"])
    dead = {"version": 1, "providers": {"nous": {"last_auth_error": {"relogin_required": True}},
                                         "other": {"k": "v"}}}
    prep.sh_ok(f"cat > {HERMES_HOME}/auth.json <<'EOF'\n{json.dumps(dead)}\nEOF")
    docker("rm", "-f", prep.name)
    seed = {"version": 1, "providers": {"nous": {"client_id": "hermes-cli-vps", "access_token": "A-new",
                                                 "refresh_token": "R-new"}}}
    c = fleet.run("sleep", "infinity", opts=["-v", f"{vol}:/opt/data"],
                  env={"HERMES_AUTH_JSON_BOOTSTRAP": json.dumps(seed), "HERMES_AUTH_JSON_REBOOTSTRAP": "1"})
    doc = json.loads(c.read(f"{HERMES_HOME}/auth.json", user="hermes"))
    assert doc["providers"]["nous"]["refresh_token"] == "R-new"
    assert doc["providers"]["other"] == {"k": "v"}
    assert _stat(c, f"{HERMES_HOME}/auth.json") == "hermes:hermes 600"
    assert "R-new" not in c.logs() and "rebootstrap: reseeded" in c.logs()
    c.restart()  # healthy now: a restart with the same variables is a no-op
    assert "rebootstrap: no-op (not_terminal)" in c.logs()


# ------------------------------------------------------------------ device groups


def test_docker_socket_group_is_joined_once(fleet: Fleet, tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"
    sock.write_text("")
    os.chown(sock, 0, 2375)
    c = fleet.run("sleep", "infinity", opts=["-v", f"{sock}:/var/run/docker.sock"])
    assert c.ok("getent", "group", "2375").strip() == "hostdocker:x:2375:hermes"
    assert "2375" in c.ok("id", "-G").split(), "a docker exec as hermes has the group"
    pid = c.find(r"^(\S*/)?sleep infinity$")[0].pid
    assert "2375" in c.proc_status(pid)["Groups"].split(), "and so has the main program"
    c.restart()
    assert c.logs().count("hermes joined group hostdocker (gid 2375, created)") == 1
    assert c.ok("grep", "-c", ":2375:", "/etc/group").strip() == "1"


def test_an_existing_group_is_reused_and_gid_0_never_joined(fleet: Fleet, tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"
    sock.write_text("")
    os.chown(sock, 0, 44)  # `video` in Debian
    c = fleet.run("sleep", "infinity", opts=["-v", f"{sock}:/run/docker.sock"])
    assert c.ok("getent", "group", "video").strip().endswith(":44:hermes")
    os.chown(sock, 0, 0)
    r = fleet.run("sleep", "infinity", opts=["-v", f"{sock}:/run/docker.sock"])
    assert "0" not in r.ok("id", "-G").split()


def test_dri_nodes_groups_are_joined(fleet: Fleet, tmp_path: Path) -> None:
    dri = tmp_path / "dri"
    dri.mkdir()
    dri.chmod(0o755)
    node = dri / "renderD128"
    os.mknod(node, 0o660 | 0o020000, os.makedev(1, 3))  # a character device, like /dev/null
    os.chown(node, 0, 2376)
    c = fleet.run("sleep", "infinity", opts=["-v", f"{dri}:/dev/dri"])
    assert c.ok("getent", "group", "2376").strip() == "hostdri:x:2376:hermes"
    assert "2376" in c.ok("id", "-G").split()


# ------------------------------------------------------------------ read-only volume


def test_read_only_volume_stops_the_container_naming_the_mount(fleet: Fleet) -> None:
    vol = fleet.volume()
    r = fleet.once("true", opts=["-v", f"{vol}:/opt/data:ro"])
    out = r.stdout + r.stderr
    assert r.returncode != 0, describe(r)
    assert "fatal: stopping the container" in out, out
    assert "read-only mount /opt/data" in out, out


# ------------------------------------------------------------------ legacy entry points


def test_tini_is_a_real_file_and_drops_its_options(fleet: Fleet) -> None:
    opts = ["--entrypoint", "/usr/bin/tini"]
    r = fleet.once("-g", "--", "/opt/hermes/docker/entrypoint.sh", "chat", "--help", opts=opts)
    assert r.returncode == 0, describe(r)
    assert "usage" in r.stdout.lower() and "chat" in r.stdout, describe(r)
    r = fleet.once("-g", "--", "/opt/hermes/docker/entrypoint.sh", "sleep", "1", opts=opts)
    assert r.returncode == 0, describe(r)
    r = fleet.once("-s", "-p", "SIGKILL", "-e", "143", "--", "sh", "-c", "exit 7", opts=opts)
    assert r.returncode == 7, describe(r)
    r = fleet.once("--version", opts=opts)
    assert r.returncode == 0 and r.stdout.startswith("tini version"), describe(r)
    r = fleet.once("-c", "test -f /usr/bin/tini && test ! -L /usr/bin/tini && "
                   "cmp -s /usr/bin/tini /usr/local/bin/hermesinit",
                   opts=["--entrypoint", "/bin/sh"])
    assert r.returncode == 0, describe(r)


def test_foreign_user_is_refused_as_not_supported(fleet: Fleet) -> None:
    r = fleet.once("true", opts=["--user", "4242:4242"])
    assert r.returncode == 1
    assert "not supported" in r.stderr and "HERMES_UID" in r.stderr and "PUID" in r.stderr, describe(r)


# ------------------------------------------------------------------ execline


def test_execline_run_script_and_cont_init_hook(fleet: Fleet, tmp_path: Path) -> None:
    hooks = tmp_path / "cont-init.d"
    hooks.mkdir()
    hooks.chmod(0o755)
    hook = hooks / "10-execline"
    hook.write_text("#!/command/execlineb -P\n"
                    "foreground { redirfd -w 1 /run/hook-ran echo hook-ok }\n"
                    "exit 0\n")
    hook.chmod(0o755)
    c = fleet.run("sleep", "infinity", opts=["-v", f"{hooks}:/etc/cont-init.d:ro"])
    assert c.read("/run/hook-ran").strip() == "hook-ok"
    assert c.ok("readlink", "-f", "/command/execlineb").strip().endswith("/execlineb")
    slot_script(c, "el", "#!/command/execlineb -P\nfdmove -c 2 1\nforeground { echo el-started }\n"
                          "s6-setuidgid hermes\nsleep 1000")
    pid = c.wait_slot_up("el")
    assert c.proc_status(pid)["Uid"].split()[0] == "10000"
    wait_for(lambda: "el-started" in c.logs(), 30, "the execline service's output", c.logs_tail)
    r = c.exec("/command/s6-svstat", f"{SCANDIR}/el")
    assert r.stdout.startswith("up (pid "), describe(r)


# ------------------------------------------------------------------ image payload


def test_image_payload(fleet: Fleet) -> None:
    c = fleet.run("sleep", "infinity")
    env = dict(line.split("=", 1) for line in json.loads(docker("image", "inspect", c.image).stdout)[0]
               ["Config"]["Env"])
    assert env["HERMES_WRITE_SAFE_ROOT"] == "/opt/data"
    path = c.ok("bash", "-lc", 'echo "$PATH"').strip()
    assert path.startswith("/opt/hermes/bin:/opt/hermes/.venv/bin:"), path
    out = c.ok("su", "-", "hermes", "-c", "command -v python; id -un", user="root").split()
    assert out == ["/opt/hermes/.venv/bin/python", "hermes"], out
    lic = c.read("/opt/hermes/LICENSE", user="hermes")
    assert "MIT" in lic or "License" in lic, lic[:200]
    assert c.owner("/opt/hermes/LICENSE") == "root:root"
