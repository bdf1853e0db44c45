"""C-IMG: the image's sources pass hadolint and shellcheck (no Docker needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dockerlib import CI, REPO


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (pip install -r tests/docker/requirements.txt)"
        if CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def _shell_scripts() -> list[Path]:
    """Every shell script the image work owns: scripts/docker-* and docker/**."""
    candidates = sorted(REPO.glob("scripts/docker-*")) + sorted(p for p in (REPO / "docker").rglob("*") if p.is_file())
    scripts = []
    for path in candidates:
        with path.open("rb") as f:
            first = f.readline()
        if path.suffix == ".sh" or (first.startswith(b"#!") and (b"sh" in first.split(b"/")[-1] or b"bash" in first)):
            scripts.append(path)
    return scripts


def test_c_img_dockerfile_is_hadolint_clean() -> None:
    hadolint = _tool("hadolint")
    r = subprocess.run(
        [hadolint, "--config", str(REPO / ".hadolint.yaml"), "--no-color", str(REPO / "Dockerfile")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_c_img_shell_scripts_are_shellcheck_clean() -> None:
    shellcheck = _tool("shellcheck")
    scripts = _shell_scripts()
    assert REPO / "scripts" / "docker-prep" in scripts
    r = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
