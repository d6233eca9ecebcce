#!/usr/bin/env bash
# Runs the whole test suite: installs the real kubectl if missing, then every unit,
# conformance and end-to-end test (nextest when available, cargo test otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
BADGE_KUBECTL="${BADGE_KUBECTL:-$(bash scripts/install-kubectl.sh)}"
export BADGE_KUBECTL
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace "$@"
fi
