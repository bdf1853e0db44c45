"""Operators and orchestrators (issue 13): `svc health` and the image's HEALTHCHECK, `svc logs`,
the Compose example, the Kubernetes conditions (non-root, read-only root, no capabilities,
emptyDir /run), a root-owned /run, a shared PID namespace, and HERMES_UID on a read-only root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

from dockerlib import LABEL, REPO, SESSION, Container, Fleet, describe, docker, wait_for

HEALTH_FAST = ["--health-interval", "1s", "--health-timeout", "5s", "--health-retries", "2"]


def health_status(c: Container) -> str:
    return c.inspect("{{if .State.Health}}{{.State.Health.Status}}{{end}}")


def wait_health(c: Container, want: str, timeout: float) -> float:
    start = time.monotonic()
    wait_for(lambda: health_status(c) == want, timeout, f"{c.name} to be {want}",
             lambda: c.inspect("{{json .State.Health}}") + "\n" + c.logs_tail())
    return time.monotonic() - start


# ---------------------------------------------------------------- svc health + HEALTHCHECK


def test_image_healthcheck_reports_healthy_on_a_normal_start(fleet: Fleet) -> None:
    """The image's own HEALTHCHECK (no overrides): `healthy` after boot, dashboard up."""
    c = fleet.run("sleep", "infinity", env={"HERMES_DASHBOARD": "1"})
    assert "hermesinit" in c.inspect("{{json .Config.Healthcheck.Test}}")
    took = wait_health(c, "healthy", 40)
    print(f"healthy {took:.1f} s after boot finished (first check at the 10 s interval)")
    for user in ("hermes", "root"):
        r = c.exec("hermesinit", "svc", "health", user=user)
        assert r.returncode == 0 and r.stdout == "healthy\n", describe(r)
        doc = json.loads(c.ok("hermesinit", "svc", "health", "--json", user=user))
        assert doc == {"healthy": True, "grace_s": 60, "reasons": []}
    # The fields health needs are in the status answer (additive to protocol v1).
    doc = c.svc_status_json()
    assert isinstance(doc.get("main_pid"), int), doc


def test_health_turns_unhealthy_when_the_dashboard_cannot_bind(fleet: Fleet) -> None:
    """hermes-agent 0.19.0 refuses 0.0.0.0 without an auth provider and exits 1: a crash loop."""
    start = time.monotonic()
    c = fleet.run(
        "sleep", "infinity",
        env={"HERMES_DASHBOARD": "1", "HERMES_DASHBOARD_HOST": "0.0.0.0"},
        opts=["--health-cmd", "hermesinit svc health --grace 5", *HEALTH_FAST],
    )
    wait_health(c, "unhealthy", 60)
    print(f"unhealthy {time.monotonic() - start:.1f} s after docker run (grace 5 s, interval 1 s, retries 2)")
    r = c.exec("hermesinit", "svc", "health", "--grace", "5")
    assert r.returncode == 1, describe(r)
    assert re.search(r"^dashboard: crash-looping for \d+ s, last exit 1", r.stdout, re.M), r.stdout
    doc = json.loads(c.exec("hermesinit", "svc", "health", "--grace", "5", "--json", user="root").stdout)
    assert doc["healthy"] is False and any(x.startswith("dashboard: ") for x in doc["reasons"]), doc
    # Within the default grace the same container is still healthy... unless 60 s have passed.
    r = c.exec("hermesinit", "svc", "health", "--grace", "3600")
    assert r.returncode == 0, describe(r)
    # Taken down on purpose: no longer a reason.
    c.ok("hermesinit", "svc", "down", "dashboard")
    c.ok("hermesinit", "svc", "health", "--grace", "5")


def _cpu_reader(c: Container):
    """The container's CPU time in µs, read on the host (so reading it costs the container nothing)."""
    cid = c.inspect("{{.Id}}")
    v1 = f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage"
    v2 = [f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat", f"/sys/fs/cgroup/docker/{cid}/cpu.stat"]
    if os.path.exists(v1):
        return lambda: int(open(v1).read()) // 1000
    for p in v2:
        if os.path.exists(p):
            return lambda p=p: int(re.search(r"^usage_usec (\d+)", open(p).read(), re.M).group(1))
    return None


def test_health_check_cpu_cost(fleet: Fleet) -> None:
    """What one `svc health` costs the container (client + PID 1's answer), next to `true`."""
    c = fleet.run("sleep", "infinity", env={"HERMES_DASHBOARD": "1"}, opts=["--no-healthcheck"])
    c.ok("hermesinit", "svc", "wait", "--up", "--timeout", "30", "dashboard")
    read = _cpu_reader(c)
    if read is None:
        pytest.skip("the container's cgroup is not visible on this host")
    n = 30

    def cost(*argv: str) -> float:
        before = read()
        for _ in range(n):
            c.exec(*argv, user="root")
        return (read() - before) / n

    base = cost("true")
    health = cost("hermesinit", "svc", "health")
    # Without docker exec's own setup (runc runs in the container's cgroup): 200 in one exec.
    m = 200

    def loop(cmd: str) -> float:
        before = read()
        c.sh_ok(f"i=0; while [ $i -lt {m} ]; do {cmd} >/dev/null; i=$((i+1)); done", user="root")
        return (read() - before) / m

    t_loop, h_loop = loop("/bin/true"), loop("hermesinit svc health")
    pid1 = [int(x) for x in c.ok("cat", "/proc/1/stat").rsplit(")", 1)[1].split()[11:13]]
    print(f"container CPU per `docker exec` (mean of {n}): `true` {base:.0f} us, `hermesinit svc health` "
          f"{health:.0f} us; in one exec (mean of {m}): /bin/true {t_loop:.0f} us, svc health {h_loop:.0f} us "
          f"(marginal {h_loop - t_loop:.0f} us); PID 1 total utime+stime {pid1} ticks")
    assert h_loop - t_loop < 10_000, (t_loop, h_loop)


# ---------------------------------------------------------------- svc logs


LOGGER_SPEC = """\
command: [/bin/sh, -c, 'i=0; while :; do i=$((i+1)); echo "line $i"; sleep 0.01; done']
user: hermes
log:
  stdout: false
  dir: /opt/data/logs/ticker
  max_bytes: 4000
  keep: 5
"""


def test_svc_logs(fleet: Fleet) -> None:
    c = fleet.run("gateway", "run", env={"HERMES_DASHBOARD": "1"})
    wait_for(lambda: "Hermes Gateway Starting" in c.exec(
        "hermesinit", "svc", "logs", "gateway-default", "-n", "200").stdout, 60, "the gateway banner in svc logs")
    for user in ("hermes", "root"):
        out = c.ok("hermesinit", "svc", "logs", "gateway-default", "-n", "3", user=user)
        lines = out.splitlines()
        assert 1 <= len(lines) <= 3, out
        assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9}  ", l) for l in lines), out
    raw = c.ok("hermesinit", "svc", "logs", "--raw", "-n", "200", "gateway-default")
    assert "Hermes Gateway Starting" in raw and not re.search(r"^\d{4}-\d\d-\d\d ", raw, re.M), raw
    assert "Hermes Gateway Starting" in c.ok("hermesinit", "svc", "logs", "--since", "10m", "gateway-default")
    assert c.ok("hermesinit", "svc", "logs", "--since", "0s", "gateway-default").strip() == ""
    # Refusals: not a service; logging disabled (the dashboard writes to docker logs only).
    r = c.exec("hermesinit", "svc", "logs", "nosuch")
    assert r.returncode == 1 and "no such service" in r.stderr, describe(r)
    r = c.exec("hermesinit", "svc", "logs", "dashboard")
    assert r.returncode == 1 and "disabled" in r.stderr, describe(r)
    r = c.exec("hermesinit", "svc", "logs", "-n", "x", "gateway-default")
    assert r.returncode == 2, describe(r)
    # A symlinked log directory is refused when root reads it (hermes may plant one).
    c.sh_ok("ln -s /etc /opt/data/logs/gateways/evil")
    c.sh_ok("mkdir /run/service/.gateway-evil && printf 'command: [/bin/sleep, infinity]\\nuser: hermes\\n"
            "log: {dir: /opt/data/logs/gateways/evil}\\n' > /run/service/.gateway-evil/hermesinit.yaml "
            "&& mv /run/service/.gateway-evil /run/service/gateway-evil", user="root")
    wait_for(lambda: c.exec("hermesinit", "svc", "status", "gateway-evil").returncode == 0, 20, "the evil slot")
    r = c.exec("hermesinit", "svc", "logs", "gateway-evil", user="root")
    assert r.returncode == 1 and "passwd" not in r.stdout, describe(r)

    # Rotation: archives are reached by -n, and -f follows across rotations without a gap.
    c.sh_ok(f"mkdir /run/service/.ticker && cat > /run/service/.ticker/hermesinit.yaml <<'EOF'\n{LOGGER_SPEC}EOF\n"
            "mv /run/service/.ticker /run/service/ticker", user="root")
    def archives() -> int:
        return int(c.exec("sh", "-c", "ls /opt/data/logs/ticker | grep -c '^@' || true").stdout.strip() or 0)

    wait_for(lambda: archives() >= 2, 30, "two archives")
    out = c.ok("hermesinit", "svc", "logs", "--raw", "-n", "150", "ticker")
    nums = [int(l.split()[1]) for l in out.splitlines()]
    assert len(nums) == 150 and nums == list(range(nums[0], nums[0] + 150)), out[:400]
    r = c.exec("timeout", "3", "hermesinit", "svc", "logs", "-f", "-n", "1", "--raw", "ticker", timeout=30)
    nums = [int(l.split()[1]) for l in r.stdout.splitlines()]
    # ~100 lines a second, 4000-byte files of ~45 lines: several rotations in 3 s.
    assert len(nums) > 100 and nums == list(range(nums[0], nums[0] + len(nums))), r.stdout[:400]


# ---------------------------------------------------------------- Compose


def _compose(project: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker" / "compose.yaml"), "-p", project, *args],
        env={**os.environ, "HERMES_IMAGE": os.environ.get("HERMES_TEST_IMAGE") or _image_tag()},
        capture_output=True, text=True, timeout=timeout, check=False,
    )


_TAG: list[str] = []


def _image_tag() -> str:
    return _TAG[0]


def test_compose_example(image: str) -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed (test.sh installs Debian's docker-compose)")
    _TAG[:] = [image]
    project = f"hermesops{SESSION}{uuid.uuid4().hex[:6]}"
    try:
        r = _compose(project, "up", "-d")
        assert r.returncode == 0, describe(r)
        [cid] = _compose(project, "ps", "-q", "hermes").stdout.split()
        c = Container(cid, image)
        took = wait_health(c, "healthy", 90)
        print(f"compose: healthy {took:.1f} s after `up -d` returned")
        r = _compose(project, "exec", "-T", "hermes", "hermes", "profile", "create", "opsprof")
        assert r.returncode == 0, describe(r)
        wait_for(lambda: c.exec("hermesinit", "svc", "status", "gateway-opsprof").returncode == 0, 30,
                 "the new profile's gateway slot")
        assert c.owner("/opt/data/profiles/opsprof") == "hermes:hermes"
        assert c.exec("hermesinit", "svc", "health").returncode == 0
    finally:
        r = _compose(project, "down", "-v", "--remove-orphans")
    assert r.returncode == 0, describe(r)
    flt = ["--filter", f"label=com.docker.compose.project={project}"]
    assert docker("ps", "-aq", *flt).stdout.strip() == ""
    assert docker("volume", "ls", "-q", *flt).stdout.strip() == ""
    assert docker("network", "ls", "-q", *flt).stdout.strip() == ""


# ---------------------------------------------------------------- Kubernetes conditions


@pytest.fixture
def run_dir():
    """An empty host directory of mode 1777, bind-mounted on /run: what an emptyDir is."""
    d = tempfile.mkdtemp(prefix="hermesinit-run-")
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


K8S = ["--read-only", "--tmpfs", "/tmp", "--user", "10000:10000", "--cap-drop", "ALL",
       "--security-opt", "no-new-privileges"]


def test_kubernetes_conditions(fleet: Fleet, run_dir: str) -> None:
    vol = fleet.volume()  # a fresh named volume copies the image's /opt/data: owned by 10000
    c = fleet.run("gateway", "run", env={"HERMES_DASHBOARD": "1"},
                  opts=[*K8S, "-v", f"{vol}:/opt/data", "-v", f"{run_dir}:/run"], ready=False)
    # readiness probe
    r = c.exec("hermesinit", "svc", "wait", "--boot", "--timeout", "60", timeout=75)
    assert r.returncode == 0, describe(r) + c.logs_tail()
    pid = c.wait_slot_up("gateway-default", timeout=60)
    assert c.proc_status(pid)["Uid"].split()[0] == "10000"
    c.ok("hermesinit", "svc", "wait", "--up", "--timeout", "30", "dashboard")
    # liveness probe
    r = c.exec("hermesinit", "svc", "health")
    assert r.returncode == 0, describe(r)
    assert c.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"
    logs = c.logs()
    assert "fatal" not in logs, logs
    start = time.monotonic()
    r = docker("stop", "-t", "20", c.name, timeout=40)
    took = time.monotonic() - start
    assert r.returncode == 0 and took < 10, (took, c.logs_tail())
    assert c.exit_code() in (0, 143), c.logs_tail()
    print(f"k8s conditions: stopped in {took:.2f} s, exit {c.exit_code()}")


def test_root_owned_run_is_reported_and_falls_back(fleet: Fleet) -> None:
    """`--tmpfs /run` (root-owned, 0755) under --user 10000: say so, and keep `svc` working."""
    c = fleet.run("sleep", "infinity", env={"HERMES_DASHBOARD": "1"},
                  opts=["--tmpfs", "/run", "--user", "10000:10000"], ready=False)
    r = c.exec("hermesinit", "svc", "wait", "--boot", "--timeout", "60", timeout=75)
    assert r.returncode == 0, describe(r) + c.logs_tail()
    logs = c.logs()
    assert "/run is not writable" in logs and "/tmp/hermesinit-10000" in logs, logs
    for user in ("hermes", "root"):
        c.ok("hermesinit", "svc", "wait", "--up", "--timeout", "30", "dashboard", user=user)
        c.ok("hermesinit", "svc", "health", user=user)
    assert c.ok("stat", "-c", "%U %a", "/tmp/hermesinit-10000").split()[0] == "hermes"
    # A stranger's directory of that name is never trusted (another container's /tmp here is ours
    # alone, so show the rule with the client: a 0777 directory is ignored).
    c.sh_ok("chmod 0777 /tmp/hermesinit-10000")
    r = c.exec("hermesinit", "svc", "status")
    assert r.returncode == 111, describe(r)
    c.sh_ok("chmod 0755 /tmp/hermesinit-10000")
    c.ok("hermesinit", "svc", "status")


# ---------------------------------------------------------------- shared PID namespace


def test_shared_pid_namespace_never_signals_strangers(fleet: Fleet) -> None:
    """C-INIT-6: ours joins a sidecar's PID namespace; stopping ours leaves the sidecar alone."""
    side = fleet.run("sh", "-c", "(setsid sleep 2001 &); exec sleep infinity")
    before = {p.pid: p.args for p in side.procs() if not p.args.startswith("ps -eo")}
    # Ours: a main program, plus an orphan in its own session that ours inherits as subreaper.
    ours = fleet.run("sh", "-c", "(setsid sleep 1001 &); exec sleep infinity",
                     opts=["--pid", f"container:{side.name}"])
    assert "not running as PID 1" in ours.logs(), ours.logs()
    [orphan] = [p for p in side.procs() if p.args == "sleep 1001"]
    start = time.monotonic()
    r = docker("stop", "-t", "20", ours.name, timeout=40)
    took = time.monotonic() - start
    assert r.returncode == 0, describe(r)
    after = {p.pid: p.args for p in side.procs() if not p.args.startswith("ps -eo")}
    assert after == before, (before, after)  # the sidecar's PID 1, its sleeps, its orphan
    assert orphan.pid not in after
    assert took < 10, (took, ours.logs_tail())
    print(f"shared pid ns: ours stopped in {took:.2f} s (exit {ours.exit_code()}), sidecar untouched")


# ---------------------------------------------------------------- HERMES_UID on a read-only root


def test_remap_on_a_read_only_root_is_fatal_and_names_the_fix(fleet: Fleet) -> None:
    r = fleet.once("true", env={"HERMES_UID": "1000"},
                   opts=["--read-only", "--tmpfs", "/run", "--tmpfs", "/tmp"])
    out = r.stdout + r.stderr
    assert r.returncode == 1, describe(r)
    assert "fatal: stopping the container" in out and "read-only" in out and "HERMES_UID" in out, out
    # The same without a change asked for boots fine on a read-only root.
    r = fleet.once("true", env={"HERMES_UID": "10000"}, opts=["--read-only", "--tmpfs", "/run", "--tmpfs", "/tmp"])
    assert r.returncode == 0, describe(r)
