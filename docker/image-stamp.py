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

# Hermes Agent's own license, from its installed dist-info.
from importlib.metadata import distribution  # noqa: E402

dist = distribution("hermes-agent")
lic = next(f for f in dist.files or [] if f.name in ("LICENSE", "LICENSE.txt", "LICENSE.md"))
shutil.copyfile(dist.locate_file(lic), "/opt/hermes/LICENSE")
