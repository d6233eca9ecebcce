#!/usr/bin/env bash
# Installs Debian's Firefox (ESR) for the console's browser tests when it is missing, and
# prints its path. The first install downloads about 80 MB of packages.
set -euo pipefail
bin="${BADGE_FIREFOX:-/usr/bin/firefox-esr}"
if [ -x "$bin" ]; then
  echo "$bin"; exit 0
fi
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends firefox-esr >&2
echo "installed firefox-esr in $(( $(date +%s) - start ))s" >&2
echo "$bin"
