# shellcheck shell=sh
# Hermes Agent: login shells (`bash -l`, `su - hermes`) get the privilege-drop
# shim and the venv first on PATH, as the image's ENV has it.
PATH="/opt/hermes/bin:/opt/hermes/.venv/bin:$PATH"
export PATH
