#!/bin/bash
# The server's CPU time per distinct TokenReview (ES256), from the first review until the
# server is idle again: the usage flush that writes the reviewed tokens' last use counts.
# Compares settings where throughput cannot, as the flush follows the load. Needs a release
# build (cargo build --release -p badge -p badge-perf).
#
#   scripts/cpu-per-distinct-review.sh 10000 off --audit-log-path= --token-usage-tracking=false
#   scripts/cpu-per-distinct-review.sh 10000 tracking --audit-log-path=
#
# N tokens are issued first and the server left to settle; server flags follow the label.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/server.sh
. scripts/lib/server.sh
N=$1 LABEL=$2
shift 2
DIR=$(mktemp -d)
chmod 700 "$DIR"
target/release/badge server --secure-port 0 --data-dir "$DIR" --service-account-signing-key-type ES256 \
  --usage-flush-period=1s "$@" 2>"$DIR/err" >/dev/null &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$DIR"' EXIT
badge_port "$DIR/err" "$SERVER"
wait_for_default_account "$DIR/pki"
LOAD=(target/release/badge-perf load --port "$PORT" --ca "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt"
  --key "$DIR/pki/admin.key" --once --connections 8)
REQUEST='{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}'
for _ in $(seq 1 "$N"); do echo "$REQUEST"; done >"$DIR/requests"
"${LOAD[@]}" --path /api/v1/namespaces/default/serviceaccounts/default/token --bodies "$DIR/requests" \
  --save-tokens "$DIR/tokens" >/dev/null
while read -r TOKEN || [ -n "$TOKEN" ]; do
  echo "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\",\"spec\":{\"token\":\"$TOKEN\"}}"
done <"$DIR/tokens" >"$DIR/reviews"
# User and system time, in clock ticks (1/100 s).
ticks() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
# Idle: at most one tick used in 400 ms.
settle() {
  local before now
  before=$(ticks)
  while true; do
    sleep 0.4
    now=$(ticks)
    [ $((now - before)) -le 1 ] && return
    before=$now
  done
}
settle
START=$(ticks)
"${LOAD[@]}" --path /apis/authentication.k8s.io/v1/tokenreviews --bodies "$DIR/reviews" >/dev/null
settle
END=$(ticks)
echo "$LABEL: $(((END - START) * 10000 / N)) µs of server CPU per review ($((END - START)) ticks for $N)"
