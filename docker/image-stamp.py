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
