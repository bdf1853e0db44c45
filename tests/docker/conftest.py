"""Docker contract suite: session setup.

    python3 -m pytest -q tests/docker

builds the image with scripts/docker-prep (base image from debootstrap when
the engine has none, crates and wheels prefetched on the host) and runs every
test against it. HERMES_TEST_IMAGE=<tag> uses an existing image instead;
HERMES_IMAGE=<tag> names the image to build (two checkouts sharing one
Docker engine should not share a tag).

No Docker: the tests are skipped on a developer machine and FAIL when CI is
set (CI must never pass by running nothing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from dockerlib import CI, REPO, Fleet, docker, sweep_session

DEFAULT_TIMEOUT = 300  # per test; every wait inside has its own, shorter deadline
_IMAGE = pytest.StashKey[tuple]()


def _docker_problem() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        r = docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if r.returncode != 0:
        return f"the Docker daemon is unreachable: {r.stderr.strip()}"
    return None


def _prepare_image() -> tuple[str | None, str | None]:
    """(image, None) or (None, why not)."""
    problem = _docker_problem()
    if problem:
        return None, problem
    given = os.environ.get("HERMES_TEST_IMAGE")
    if given:
        if docker("image", "inspect", given).returncode != 0:
            return None, f"HERMES_TEST_IMAGE={given} does not exist"
        return given, None
    image = os.environ.get("HERMES_IMAGE", "hermesinit-hermes:test")  # the tag docker-prep builds
    log = tempfile.NamedTemporaryFile(prefix="docker-prep-", suffix=".log", delete=False)
    with log:
        r = subprocess.run(
            [str(REPO / "scripts" / "docker-prep")],
            cwd=REPO,
            env={**os.environ, "HERMES_IMAGE": image},
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=3600,
            check=False,
        )
    if r.returncode != 0:
        with open(log.name, encoding="utf-8", errors="replace") as f:
            tail = "".join(f.readlines()[-40:])
        return None, f"scripts/docker-prep failed (rc={r.returncode}, full log {log.name}):\n{tail}"
    os.unlink(log.name)
    return image, None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "timeout(seconds): per-test deadline (pytest-timeout)")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every test gets a hard deadline (when pytest-timeout is installed).
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))
    # Build once, before the first test, so the build is not charged to any
    # test's deadline.
    if config.option.collectonly:
        return
    if any("image" in getattr(item, "fixturenames", ()) for item in items):
        config.stash[_IMAGE] = _prepare_image()


@pytest.fixture(scope="session")
def image(pytestconfig: pytest.Config) -> Iterator[str]:
    tag, why = pytestconfig.stash.get(_IMAGE, (None, "image not prepared"))
    if tag is None:
        if CI or os.environ.get("HERMES_TEST_IMAGE") or _docker_problem() is None:
            pytest.fail(f"no image to test: {why}", pytrace=False)
        pytest.skip(f"Docker is not available: {why}")
    yield tag
    sweep_session()


@pytest.fixture
def fleet(image: str) -> Iterator[Fleet]:
    """Containers for one test; removed whatever the outcome."""
    f = Fleet(image)
    yield f
    f.cleanup()


@pytest.fixture(scope="module")
def module_fleet(image: str) -> Iterator[Fleet]:
    """Containers shared by the tests of one module; removed at its end."""
    f = Fleet(image)
    yield f
    f.cleanup()


@pytest.fixture(scope="module")
def idle(module_fleet: Fleet):
    """One booted container running `sleep infinity`, shared within a module."""
    return module_fleet.run("sleep", "infinity")
