"""Build step of the venv stage: stamps and defaults that come from the
installed hermes-agent itself, so they always match its version."""
import pathlib

import hermes_cli
from hermes_cli.default_soul import DEFAULT_SOUL_MD

# Hermes reads its install method from a stamp next to its code: this is a
# container image, rebuilt and re-pulled, never updated in place.
site = pathlib.Path(hermes_cli.__file__).resolve().parent.parent
(site / ".install_method").write_text("docker\n")

# Files hermesinit seeds into HERMES_HOME on first boot, never overwriting.
defaults = pathlib.Path("/opt/hermes/defaults")
defaults.mkdir(parents=True, exist_ok=True)
(defaults / "SOUL.md").write_text(DEFAULT_SOUL_MD + "\n")

# config.yaml: Hermes' own DEFAULT_CONFIG, written by its own save_config
# (defaults kept: this is the documented starting point a user edits). The
# writer targets $HERMES_HOME, so point it at a scratch directory first.
import copy
import os
import shutil
import tempfile

scratch = pathlib.Path(tempfile.mkdtemp(prefix="hermes-defaults-"))
os.environ["HERMES_HOME"] = str(scratch)
from hermes_cli import config as hermes_config  # noqa: E402  (after HERMES_HOME is set)

hermes_config.save_config(copy.deepcopy(hermes_config.DEFAULT_CONFIG), strip_defaults=False)
shutil.copyfile(hermes_config.get_config_path(), defaults / "config.yaml")
shutil.rmtree(scratch)

# .env: every variable Hermes' setup knows (OPTIONAL_ENV_VARS), commented out
# with its description, grouped by category; API_SERVER_KEY is left empty so
# that the first boot fills it with a fresh random key.
lines = [
    "# Hermes Agent environment (seeded on first boot; edit freely).",
    "# Uncomment and set what you use. Generated from hermes-agent's own",
    "# list of settings (hermes_cli.config.OPTIONAL_ENV_VARS).",
    "",
]
by_category: dict[str, list[tuple[str, dict]]] = {}
for key, meta in {**hermes_config.REQUIRED_ENV_VARS, **hermes_config.OPTIONAL_ENV_VARS}.items():
    if key == "API_SERVER_KEY":
        continue
    by_category.setdefault(str(meta.get("category") or "other"), []).append((key, meta))
for category, items in by_category.items():
    lines.append(f"# ── {category} ──")
    for key, meta in items:
        desc = " ".join(str(meta.get("description") or "").split())
        if desc:
            lines.append(f"# {desc}")
        lines.append(f"# {key}=")
    lines.append("")
lines += ["# API server bearer token: generated at first boot when empty.", "API_SERVER_KEY=", ""]
(defaults / ".env").write_text("\n".join(lines))

# Where this hermes-agent's bundled skills are (its get_bundled_skills_dir without the
# override: a `skills` data directory of the venv), or "none": hermesinit's `skills` step reads
# this instead of looking into site-packages at every boot.
import sysconfig  # noqa: E402

bundled = next(
    (p for p in (pathlib.Path(sysconfig.get_path(k)) / "skills" for k in ("data", "purelib", "platlib")) if p.is_dir()),
    None,
)
pathlib.Path("/opt/hermes/bundled-skills").write_text(f"{bundled or 'none'}\n")

# Hermes Agent's own license, from its installed dist-info.
from importlib.metadata import distribution  # noqa: E402

dist = distribution("hermes-agent")
lic = next(f for f in dist.files or [] if f.name in ("LICENSE", "LICENSE.txt", "LICENSE.md"))
shutil.copyfile(dist.locate_file(lic), "/opt/hermes/LICENSE")

# The proof: config.yaml and .env as a fresh volume gets them (seeded from the defaults, then
# an API_SERVER_KEY appended the way hermesinit's `apikey` step does it) are a fixed point of
# hermes-agent's own migrate_config(interactive=False): run against them in a scratch
# HERMES_HOME, in a child with the image's environment, it must change no file, create none,
# print nothing (quiet=False, so whatever boot would log counts) and report nothing. Then
# boot need not run it for a HERMES_HOME whose config.yaml and .env are still exactly these
# (hermesinit's `migrate` step reads /opt/hermes/migrate-proof). Anything else fails the build.
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402


def fnv1a64(data: bytes) -> str:
    """FNV-1a, 64 bits: hermesinit checks with it that the defaults are the proven ones."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def files_of(root: pathlib.Path) -> dict[str, tuple]:
    """Every non-directory under root with what a change would move. Directories are left
    out: any hermes-agent process makes and chmods its own (ensure_hermes_home)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_dir() and not p.is_symlink():
            continue
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
        out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_ino,
                                         st.st_mtime_ns, st.st_ctime_ns, digest)
    return out


home = pathlib.Path(tempfile.mkdtemp(prefix="hermes-proof-"))
for name, mode in (("config.yaml", 0o640), ("SOUL.md", 0o644)):
    shutil.copyfile(defaults / name, home / name)
    os.chmod(home / name, mode)
env_lines = (defaults / ".env").read_bytes().splitlines(keepends=True)
kept = [line for line in env_lines if not re.match(rb"\s*(export\s+)?API_SERVER_KEY\s*=", line)]
assert len(env_lines) - len(kept) == 1, "the default .env has exactly one API_SERVER_KEY= line"
env_body = b"".join(kept)
if env_body and not env_body.endswith(b"\n"):
    env_body += b"\n"
(home / ".env").write_bytes(env_body + b"API_SERVER_KEY=" + secrets.token_hex(32).encode() + b"\n")
os.chmod(home / ".env", 0o600)

PROOF_RUN = """
import contextlib, io, json
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    from hermes_cli.config import check_config_version, migrate_config
    before, latest = check_config_version()
    results = migrate_config(interactive=False, quiet=False)
    after, _ = check_config_version()
print(json.dumps({"versions": [before, after, latest], "results": results, "output": out.getvalue()}))
"""
before = files_of(home)
run = subprocess.run(
    [sys.executable, "-c", PROOF_RUN],
    cwd=home,
    capture_output=True,
    text=True,
    timeout=300,
    env={
        "PATH": "/opt/hermes/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "HERMES_HOME": str(home),
        "HERMES_WRITE_SAFE_ROOT": str(home),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HERMES_DISABLE_LAZY_INSTALLS": "1",
    },
)
after = files_of(home)
problems = []
if run.returncode != 0 or run.stderr:
    problems.append(f"exit {run.returncode}, stderr {run.stderr!r}")
else:
    got = json.loads(run.stdout)
    b, a, latest = got["versions"]
    if not b == a == latest:
        problems.append(f"config version {b} -> {a}, latest {latest}")
    if any(got["results"].get(k) for k in ("env_added", "config_added", "warnings")) or set(got["results"]) - {
        "env_added", "config_added", "warnings"
    }:
        problems.append(f"it reported {got['results']!r}")
    if got["output"]:
        problems.append(f"it printed {got['output']!r}")
for name in sorted(set(before) | set(after)):
    if before.get(name) != after.get(name):
        problems.append(f"{name}: {before.get(name)!r} -> {after.get(name)!r}")
shutil.rmtree(home)
if problems:
    sys.exit("migrate_config does not leave the seeded defaults alone:\n  " + "\n  ".join(problems))

# What was proven: the whole config.yaml, and .env up to its API_SERVER_KEY line (any 64 hex
# digits there: a key cannot hold anything .env's sanitizer acts on).
# Written here, in the step that installed hermes-agent: the version it names is the venv's.
proven = {"config.yaml": (defaults / "config.yaml").read_bytes(), ".env": env_body}
pathlib.Path("/opt/hermes/migrate-proof").write_text(
    "hermesinit migrate-proof 1\n"
    f"hermes-agent {dist.version}\n"
    + "".join(f"{name} {len(data)} {fnv1a64(data)}\n" for name, data in proven.items())
)
