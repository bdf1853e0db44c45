# Hermes Agent on hermesinit.
#
#   docker build -t hermes-agent .
#   docker run --rm -it -v hermes-data:/opt/data hermes-agent            # interactive hermes
#   docker run -d -v hermes-data:/opt/data hermes-agent gateway run      # supervised gateway
#
# hermesinit (built from this repository) is PID 1, the service supervisor,
# the privilege-drop shim and the s6 command-line surface Hermes Agent calls,
# all in one static binary: no s6-overlay, no tini, no gosu, no shell glue.
#
# Offline builds: scripts/docker-prep fills .docker-cache/rust (the Rust
# toolchain), .docker-cache/vendor (cargo vendor) and .docker-cache/wheels
# (pip download) on the host. The stages below use them when they are in the
# build context and fetch from static.rust-lang.org / crates.io / PyPI when
# they are not.

# ---------------------------------------------------------------- hermesinit
FROM debian:trixie-slim AS hermesinit
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# hermesinit ships linked with musl: static glibc spends 0.3-0.6 ms of every
# start probing the CPU (68 cpuid instructions, each a VM exit), musl none
# (BENCHMARKS.md). Debian's rustc has no musl std, so the Rust project's own
# toolchain is installed, pinned by docker/rust-toolchain.sha256. gcc is the
# linker; musl's C library and start files come with the musl std.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl gcc libc6-dev xz-utils \
    && rm -rf /var/lib/apt/lists/*

# The pinned list at a path of its own; then the prefetched archives, when
# present (the list, copied along, only keeps the source list from being
# empty). A cached archive that fails its check is downloaded again.
COPY docker/rust-toolchain.sha256 /tmp/rust.sha256
COPY docker/rust-toolchain.sha256 .docker-cache/rus[t] /tmp/rust/
WORKDIR /tmp/rust
RUN set -eu; \
    sums=/tmp/rust.sha256; \
    dist=$(sed -n 's/^# dist //p' "$sums"); \
    check() { awk -v f="$1" '!/^#/ && $2 == f' "$sums" | sha256sum --check --quiet -; }; \
    awk -v cpu="-$(uname -m)-" '!/^#/ && index($2, cpu) { print $2 }' "$sums" > /tmp/rust.wanted; \
    [ -s /tmp/rust.wanted ] || { echo "no Rust toolchain pinned for $(uname -m) in docker/rust-toolchain.sha256" >&2; exit 1; }; \
    while read -r f; do \
        if ! { [ -f "$f" ] && check "$f"; }; then \
            rm -f "$f"; \
            curl -fsSL --retry 3 --proto '=https' -o "$f" "$dist/$f"; \
            check "$f"; \
        fi; \
        tar -xJf "$f"; \
        "${f%.tar.xz}/install.sh" --prefix=/usr/local --disable-ldconfig >/dev/null; \
        rm -rf "$f" "${f%.tar.xz}"; \
    done < /tmp/rust.wanted; \
    ls "$(rustc --print target-libdir --target "$(uname -m)-unknown-linux-musl")"/libstd-*.rlib >/dev/null

WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# Prefetched crates, when present. The glob lets the build go on without
# them; Cargo.lock only keeps the source list from being empty.
COPY Cargo.lock .docker-cache/vendo[r] /src/.vendor/

# Relative relocations packed as DT_RELR (musl 1.2.4+ applies them in a
# static PIE): start-up reads a bitmap of ~1 KB instead of ~60 KB of .rela.dyn.
ENV RUSTFLAGS="-C link-arg=-Wl,-z,pack-relative-relocs"

# Warm the dependency cache with a stand-in crate so that a change to src/
# only rebuilds hermesinit itself. Best effort: the real build below is the
# one that must succeed.
RUN set -eu; \
    rm /src/.vendor/Cargo.lock; \
    if [ -n "$(ls -A /src/.vendor)" ]; then \
        mkdir -p "$HOME/.cargo"; \
        printf '[source.crates-io]\nreplace-with = "vendored-sources"\n\n[source.vendored-sources]\ndirectory = "/src/.vendor"\n' \
            > "$HOME/.cargo/config.toml"; \
    fi; \
    mkdir src; \
    echo 'fn main() {}' > src/main.rs; \
    : > src/lib.rs; \
    cargo build --release --locked --target "$(uname -m)-unknown-linux-musl" \
        || echo "dependency warm-up failed; the real build will say why" >&2; \
    rm -rf src

COPY src ./src
RUN set -eu; \
    find src -type f -exec touch {} +; \
    target="$(uname -m)-unknown-linux-musl"; \
    cargo build --release --locked --target "$target"; \
    bin="target/$target/release/hermesinit"; \
    if readelf -l "$bin" | grep -q 'program interpreter'; then \
        echo "hermesinit is not statically linked" >&2; exit 1; \
    fi; \
    "$bin" --version; \
    install -D -m 0755 "$bin" /out/hermesinit

# ------------------------------------------------------------ hermes-agent
FROM debian:trixie-slim AS venv
ARG HERMES_VERSION=0.19.0

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# Prefetched wheels, when present (docker/README.md keeps the list non-empty).
COPY docker/README.md .docker-cache/wheel[s] /tmp/wheels/
COPY docker/image-stamp.py /tmp/image-stamp.py

# Everything under /opt/hermes is root-owned and read-only for the runtime
# user; pip is removed once hermes-agent is in (lazy installs are disabled).
RUN set -eu; \
    python3 -m venv /opt/hermes/.venv; \
    if ls /tmp/wheels/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /tmp/wheels; fi; \
    /opt/hermes/.venv/bin/pip install --no-cache-dir --disable-pip-version-check "$@" "hermes-agent==${HERMES_VERSION}"; \
    /opt/hermes/.venv/bin/pip uninstall --yes --disable-pip-version-check pip; \
    /opt/hermes/.venv/bin/python /tmp/image-stamp.py

# ------------------------------------------------------------------ runtime
# Ordered for the layer cache: what changes most often (hermesinit itself,
# then hermes-agent) comes last, after every other step.
FROM debian:trixie-slim

# python3: the venv's interpreter. procps: ps/pgrep for operators.
# execline: `#!/command/execlineb -P` run scripts and cont-init hooks written
# for s6-overlay (its programs are linked into /command below, as there).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates execline procps python3 \
    && rm -rf /var/lib/apt/lists/*

# The runtime user. The image stays USER root: hermesinit boots as root and
# drops to hermes for every service and for the main program.
#
# One binary, many names: hermesinit picks its role from argv[0], so every
# entry point is a link to /usr/local/bin/hermesinit (copied in last).
#
# /var/lib/hermesinit is root's alone: boot keeps its memo of the last config
# migration there, on the container's own filesystem, out of hermes' reach.
#
# The runtime directories under /run are made here too, so that a container
# started with --user 10000:10000 (no root to create them at boot) still gets
# its env snapshot, scan directory and control socket. A root boot empties
# and re-owns them; the sticky bit keeps root's socket out of hermes' reach.
RUN set -eu; \
    groupadd --gid 10000 hermes; \
    useradd --uid 10000 --gid hermes --home-dir /opt/data --no-create-home --shell /bin/bash hermes; \
    install -d -o hermes -g hermes -m 0755 /opt/data; \
    install -d -m 0755 /command /opt/hermes/bin /etc/cont-init.d /etc/hermesinit /run/s6 /run/s6/basedir; \
    install -d -o hermes -g hermes -m 0755 /run/service; \
    install -d -o hermes -g hermes -m 0750 /run/s6/container_environment; \
    install -d -o root -g hermes -m 1775 /run/hermesinit; \
    install -d -o root -g root -m 0700 /var/lib/hermesinit; \
    ln -s /usr/local/bin/hermesinit /init; \
    ln -s /usr/local/bin/hermesinit /opt/hermes/bin/hermes; \
    for tool in s6-svc s6-svstat s6-svscanctl s6-svwait s6-setuidgid s6-log with-contenv; do \
        ln -s /usr/local/bin/hermesinit "/command/$tool"; \
    done; \
    for prog in $(dpkg -L execline); do \
        case "$prog" in /usr/bin/*|/usr/lib/execline/bin/*) ;; *) continue ;; esac; \
        if [ -f "$prog" ] && [ -x "$prog" ] && [ ! -e "/command/${prog##*/}" ]; then \
            ln -s "$prog" "/command/${prog##*/}"; \
        fi; \
    done; \
    test -x /command/execlineb

ENV HERMES_HOME=/opt/data \
    HERMES_WRITE_SAFE_ROOT=/opt/data \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HERMES_DISABLE_LAZY_INSTALLS=1 \
    PATH=/opt/hermes/bin:/opt/hermes/.venv/bin:/opt/data/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /opt/data
ENTRYPOINT ["/init"]
CMD []

# Healthy once boot has finished, the main program runs and every service wanted up is up or
# has been failing for less than 60 s (`hermesinit svc health --help`). The dashboard binds in
# 1.4-2.4 s and a gateway prints its banner ~1 s after start, so the first check (10 s in)
# normally reports healthy; a crash loop turns the container unhealthy after ~60 s + 3 checks.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["hermesinit", "svc", "health"]

COPY docker/config.yaml /etc/hermesinit/config.yaml
COPY docker/profile-hermes.sh /etc/profile.d/hermes-venv.sh

ARG HERMES_VERSION=0.19.0
LABEL org.opencontainers.image.title="hermes-agent (hermesinit)" \
      org.opencontainers.image.description="Hermes Agent with hermesinit as PID 1" \
      org.opencontainers.image.version="${HERMES_VERSION}"
COPY --from=venv /opt/hermes /opt/hermes
COPY --from=hermesinit /out/hermesinit /usr/local/bin/hermesinit
# Legacy entry point (`--entrypoint /usr/bin/tini`): a real file, not a link
# to /init; hermesinit's "tini" role drops tini's options and then is /init.
RUN ln -f /usr/local/bin/hermesinit /usr/bin/tini

# Last: the legacy builder gives every step after a VOLUME an anonymous
# volume that it never removes.
VOLUME ["/opt/data"]
