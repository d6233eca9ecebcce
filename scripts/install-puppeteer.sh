#!/usr/bin/env bash
# Installs puppeteer-core (the browser driver only, no bundled browser) for the console's
# Firefox test, which it drives over WebDriver BiDi; cached under ~/.cache/badge/puppeteer.
# Prints the package directory.
set -euo pipefail
dest="${BADGE_PUPPETEER_CACHE:-$HOME/.cache/badge/puppeteer}"
pkg="$dest/node_modules/puppeteer-core"
if [ -f "$pkg/package.json" ]; then
  echo "$pkg"; exit 0
fi
mkdir -p "$dest"
# A machine without Node.js gets Debian's (puppeteer-core 24 needs Node 18 or later).
if ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends nodejs npm >&2
fi
PUPPETEER_SKIP_DOWNLOAD=1 npm install --silent --no-audit --no-fund --prefix "$dest" puppeteer-core@24 >&2
echo "$pkg"
