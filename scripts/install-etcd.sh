#!/usr/bin/env bash
# Prints the path of a real etcd server binary, installing Debian's etcd-server package
# when none is on the PATH. The etcd tests start it on loopback ports.
set -euo pipefail
if [ -n "${BADGE_ETCD:-}" ] && [ -x "$BADGE_ETCD" ]; then
  echo "$BADGE_ETCD"
  exit 0
fi
if ! command -v etcd >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq etcd-server >&2
fi
command -v etcd
