#!/usr/bin/env bash
# Installs playwright-core (the browser driver only, no bundled browser) for the console's
# browser tests, cached under ~/.cache/badge/playwright. Prints the package directory.
set -euo pipefail
dest="${BADGE_PLAYWRIGHT_CACHE:-$HOME/.cache/badge/playwright}"
pkg="$dest/node_modules/playwright-core"
if [ -f "$pkg/package.json" ]; then
  echo "$pkg"; exit 0
fi
mkdir -p "$dest"
# A machine without Node.js gets Debian's (playwright-core needs Node 18 or later).
if ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends nodejs npm >&2
fi
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund --prefix "$dest" playwright-core@1.57 >&2
echo "$pkg"
