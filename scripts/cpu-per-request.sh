#!/bin/bash
# The server's CPU time per request (ES256), from the first request until the server is
# idle again: the usage flush that writes the records and last uses the requests made counts.
# Native, so hashing and AES run with the CPU's instructions (callgrind hides them), and it
# compares settings where throughput cannot, as the flush follows the load. Needs a release
# build (cargo build --release -p badge -p badge-perf).
#
#   scripts/cpu-per-request.sh distinct 10000 off --audit-log-path= --token-usage-tracking=false
#   scripts/cpu-per-request.sh issue 20000 on
#
# PATH is issue (a TokenRequest), review (a cached TokenReview of one token) or distinct
# (TokenReviews of N tokens issued first, each reviewed once); server flags follow the label.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/server.sh
. scripts/lib/server.sh
PATH_KIND=$1 N=$2 LABEL=$3
shift 3
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
ISSUE=/api/v1/namespaces/default/serviceaccounts/default/token
review() { echo "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\",\"spec\":{\"token\":\"$1\"}}"; }
case "$PATH_KIND" in
  issue)
    for _ in $(seq 1 "$N"); do echo "$REQUEST"; done >"$DIR/bodies"
    LOAD+=(--path "$ISSUE")
    ;;
  review | distinct)
    COUNT=$N
    [ "$PATH_KIND" = review ] && COUNT=1
    for _ in $(seq 1 "$COUNT"); do echo "$REQUEST"; done >"$DIR/requests"
    "${LOAD[@]}" --path "$ISSUE" --bodies "$DIR/requests" --save-tokens "$DIR/tokens" >/dev/null
    if [ "$PATH_KIND" = review ]; then
      BODY=$(review "$(head -n1 "$DIR/tokens")")
      for _ in $(seq 1 "$N"); do echo "$BODY"; done >"$DIR/bodies"
    else
      while read -r TOKEN || [ -n "$TOKEN" ]; do review "$TOKEN"; done <"$DIR/tokens" >"$DIR/bodies"
    fi
    LOAD+=(--path /apis/authentication.k8s.io/v1/tokenreviews)
    ;;
  *) echo "unknown path $PATH_KIND" >&2; exit 2 ;;
esac
# User and system time, in clock ticks (1/100 s).
ticks() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
# Idle: at most one tick used in 1.5 s, longer than the usage flush period (1 s), so that
# the window cannot end between two flushes with the last one still to come.
settle() {
  local before now
  before=$(ticks)
  while true; do
    sleep 1.5
    now=$(ticks)
    [ $((now - before)) -le 1 ] && return
    before=$now
  done
}
settle
START=$(ticks)
"${LOAD[@]}" --bodies "$DIR/bodies" >/dev/null
settle
END=$(ticks)
echo "$LABEL: $(awk -v t=$((END - START)) -v n="$N" 'BEGIN{printf "%.1f", t * 10000 / n}') µs of server CPU per $PATH_KIND request ($((END - START)) ticks for $N)"
