#!/usr/bin/env bash
# Runs the whole test suite: installs the real kubectl if missing, then every unit,
# conformance and end-to-end test (nextest when available, cargo test otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
BADGE_KUBECTL="${BADGE_KUBECTL:-$(bash scripts/install-kubectl.sh)}"
export BADGE_KUBECTL
# The etcd backend's conformance and high-availability tests start a real etcd.
BADGE_ETCD="${BADGE_ETCD:-$(bash scripts/install-etcd.sh)}"
export BADGE_ETCD
# The outside verifier of the OIDC tests: PyJWT with the cryptography backend.
python3 -c "import jwt, cryptography" 2>/dev/null || python3 -m pip install --quiet pyjwt cryptography >&2
# The ExternalJWTSigner tests' gRPC client, generated at test time from upstream's messages.
python3 -c "import grpc, grpc_tools" 2>/dev/null || python3 -m pip install --quiet grpcio grpcio-tools >&2
# The console's browser test: Debian's chromium (installed when missing; the install is
# timed on stderr) driven by playwright-core.
BADGE_CHROMIUM="${BADGE_CHROMIUM:-$(bash scripts/install-chromium.sh)}"
BADGE_PLAYWRIGHT="${BADGE_PLAYWRIGHT:-$(bash scripts/install-playwright.sh)}"
export BADGE_CHROMIUM BADGE_PLAYWRIGHT
# The same flow in Debian's Firefox (ESR), driven by puppeteer-core over WebDriver BiDi.
BADGE_FIREFOX="${BADGE_FIREFOX:-$(bash scripts/install-firefox.sh)}"
BADGE_PUPPETEER="${BADGE_PUPPETEER:-$(bash scripts/install-puppeteer.sh)}"
export BADGE_FIREFOX BADGE_PUPPETEER
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace "$@"
fi
