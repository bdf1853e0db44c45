#!/bin/sh
# The upstream approach to the boot, for row 4 of bench/run: what the s6-overlay image's
# cont-init scripts do (stage2-hook.sh, then 02-reconcile-profiles), written in POSIX sh for the
# same steps hermesinit's boot runs, in the same order; then the main program ("$@") runs as
# hermes through s6-setuidgid, as upstream's main-wrapper does.
#
# Kinder to upstream than the real thing: s6-overlay's own start-up (s6-svscan, s6-rc-init,
# s6-rc change, the oneshot plumbing) is not counted, and the profile reconcile that upstream
# runs as a Python module (`hermes_cli.container_boot`, an interpreter start plus imports) is
# a few lines of shell here.
set -eu
HERMES_HOME=${HERMES_HOME:-/opt/data}
ENVDIR=/run/s6/container_environment
SCAN=${HERMESINIT_SCAN_DIR:-/run/service}

# env: the container environment, one file per variable (s6-overlay: s6-dumpenv).
mkdir -p "$ENVDIR" /run/s6/basedir
env | while IFS= read -r kv; do
  case $kv in *=*) ;; *) continue ;; esac
  name=${kv%%=*}
  case $name in ''|*/*|.|..) continue ;; esac
  printf '%s' "${kv#*=}" > "$ENVDIR/$name"
done
chgrp -R hermes "$ENVDIR"

# remap: HERMES_UID/HERMES_GID (PUID/PGID) → usermod/groupmod; nothing asked here.
if [ -n "${HERMES_UID:-${PUID:-}}" ]; then
  usermod -u "${HERMES_UID:-$PUID}" hermes
fi

# scandir: fresh scan directory.
rm -rf "$SCAN"
mkdir -p "$SCAN"
chown hermes:hermes "$SCAN"

# sweep: upstream's stage2-hook — the volume root, every hermes subtree fixed with
# find ! -user/! -group … -exec chown, profiles re-owned with chown -R on every boot, then the
# top-level state files.
SUBTREES="profiles cron sessions logs hooks memories skills skins plans workspace home pairing platforms/pairing lazy-packages backups"
mkdir -p "$HERMES_HOME"
[ "$(stat -c %u:%g "$HERMES_HOME")" = "$(id -u hermes):$(id -g hermes)" ] || chown hermes:hermes "$HERMES_HOME"
for d in $SUBTREES; do
  if [ -d "$HERMES_HOME/$d" ] && [ ! -L "$HERMES_HOME/$d" ]; then
    find "$HERMES_HOME/$d" \( ! -user hermes -o ! -group hermes \) -exec chown -h hermes:hermes {} +
  fi
done
[ -d "$HERMES_HOME/profiles" ] && chown -R hermes:hermes "$HERMES_HOME/profiles"
for f in auth.json auth.lock .env config.yaml SOUL.md gateway.pid gateway.lock gateway_state.json \
         processes.json active_profile state.db state.db-wal state.db-shm; do
  p="$HERMES_HOME/$f"
  if [ -L "$p" ]; then echo "stage2: refusing to chown symlink $p" >&2; continue; fi
  [ -e "$p" ] && chown hermes:hermes "$p" && chmod u+rw "$p"
done
[ -e "$HERMES_HOME/.env" ] && chmod go-rwx "$HERMES_HOME/.env"

# seed: the hermes directories and default files, never overwriting.
for d in $SUBTREES logs/gateways; do
  [ -d "$HERMES_HOME/$d" ] || { mkdir -p "$HERMES_HOME/$d"; chown hermes:hermes "$HERMES_HOME/$d"; }
done
if [ -d /opt/hermes/defaults ]; then
  for f in /opt/hermes/defaults/*; do
    [ -e "$f" ] || continue
    t="$HERMES_HOME/$(basename "$f")"
    [ -e "$t" ] || { cp "$f" "$t"; chown hermes:hermes "$t"; }
  done
fi

# state + reconcile + bootlog: one slot per profile with SOUL.md (gateway-default always).
log="$HERMES_HOME/logs/container-boot.log"
slot() { # profile dir
  name=$1 dir=$2
  state=None
  if [ -f "$dir/gateway_state.json" ]; then
    state=$(sed -n 's/.*"desired_state": *"\([a-z]*\)".*/\1/p' "$dir/gateway_state.json")
    [ -n "$state" ] || state=$(sed -n 's/.*"gateway_state": *"\([a-z]*\)".*/\1/p' "$dir/gateway_state.json")
    [ -n "$state" ] || state=None
  fi
  rm -f "$dir/gateway.pid" "$dir/processes.json"
  s="$SCAN/gateway-$name"
  mkdir -p "$SCAN/.gateway-$name.tmp"
  printf 'longrun\n' > "$SCAN/.gateway-$name.tmp/type"
  action=registered
  case $state in running|draining|degraded) action=started ;; *) : > "$SCAN/.gateway-$name.tmp/down" ;; esac
  mv "$SCAN/.gateway-$name.tmp" "$s"
  printf '%s profile=%s prior_state=%s action=%s\n' "$(date +%Y-%m-%dT%H:%M:%S%z)" "$name" "$state" "$action" >> "$log"
}
if [ -d "$HERMES_HOME/profiles" ]; then
  for p in "$HERMES_HOME"/profiles/*/; do
    n=$(basename "$p")
    [ -f "$p/SOUL.md" ] && [ "$n" != default ] && slot "$n" "$p"
  done
fi
slot default "$HERMES_HOME"
chown hermes:hermes "$log"

# hooks: /etc/cont-init.d would run here (none in the benchmark).
exec s6-setuidgid hermes "$@"
