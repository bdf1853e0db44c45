#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit + namespace integration tests, image lints,
# and the Docker contract suite against a freshly built image. Run as root (namespaces, Docker).
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

step "unit and PID-namespace integration tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi

step "shellcheck and hadolint"
mapfile -t shells < <(git ls-files | while read -r f; do
  [ -f "$f" ] && head -c 64 "$f" | grep -qE '^#!.*(ba|da)?sh' && echo "$f"; done)
[ ${#shells[@]} -eq 0 ] || shellcheck "${shells[@]}"
[ ! -f Dockerfile ] || hadolint Dockerfile

if [ -d tests/docker ]; then
  step "Docker contract suite"
  python3 -m pytest -q -p no:cacheprovider tests/docker
fi
