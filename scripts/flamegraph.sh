#!/bin/bash
# A flamegraph of where the server's CPU goes on one token path under badge-perf's load:
# `perf record` (Debian's linux-perf) with DWARF call stacks over the loaded server, folded
# and drawn by inferno (`cargo install inferno`). Needs a release build
# (cargo build --release -p badge -p badge-perf).
#
#   scripts/flamegraph.sh issue ES256      # TokenRequest
#   scripts/flamegraph.sh review RS256     # a TokenReview of one token, cached after the first
#   scripts/flamegraph.sh distinct ES256   # TokenReviews of tokens each reviewed once
#
# Writes bench-results/flamegraphs/PATH-ALG.svg. Audit, last-used tracking and the inventory
# are as the server defaults them; extra server flags follow the algorithm.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/server.sh
. scripts/lib/server.sh
PATH_KIND=$1 ALG=$2
shift 2
BADGE=target/release/badge PERF=target/release/badge-perf
OUT=bench-results/flamegraphs
mkdir -p "$OUT"
DIR=$(mktemp -d)
chmod 700 "$DIR"
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$DIR"' EXIT
"$BADGE" server --secure-port 0 --data-dir "$DIR/data" --service-account-signing-key-type "$ALG" "$@" \
  2>"$DIR/err" >/dev/null &
SERVER=$!
PKI=$DIR/data/pki
badge_port "$DIR/err" "$SERVER"
wait_for_default_account "$PKI"
LOAD=("$PERF" load --port "$PORT" --ca "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key")
ISSUE=/api/v1/namespaces/default/serviceaccounts/default/token
REVIEW=/apis/authentication.k8s.io/v1/tokenreviews
REQUEST='{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}'
review_bodies() {
  sed 's/.*/{"apiVersion":"authentication.k8s.io\/v1","kind":"TokenReview","spec":{"token":"&"}}/' "$1"
}
case "$PATH_KIND" in
  issue)
    echo "$REQUEST" >"$DIR/bodies"
    LOAD+=(--path "$ISSUE" --bodies "$DIR/bodies" --seconds 6)
    ;;
  review)
    for _ in 1 2 3 4; do echo "$REQUEST"; done >"$DIR/mint"
    "${LOAD[@]}" --path "$ISSUE" --bodies "$DIR/mint" --once --save-tokens "$DIR/tokens" >/dev/null
    review_bodies "$DIR/tokens" | head -1 >"$DIR/bodies"
    LOAD+=(--path "$REVIEW" --bodies "$DIR/bodies" --seconds 6)
    ;;
  distinct)
    for _ in $(seq 1 100000); do echo "$REQUEST"; done >"$DIR/mint"
    "${LOAD[@]}" --path "$ISSUE" --bodies "$DIR/mint" --once --save-tokens "$DIR/tokens" >/dev/null
    review_bodies "$DIR/tokens" >"$DIR/bodies"
    LOAD+=(--path "$REVIEW" --bodies "$DIR/bodies" --once)
    ;;
  *)
    echo "PATH is issue, review or distinct" >&2
    exit 2
    ;;
esac
"${LOAD[@]}" >"$DIR/result" &
LOADER=$!
# Past the warm-up (connections, the first verification), inside the load.
sleep 1
perf record -F 499 --call-graph dwarf,16384 -p "$SERVER" -o "$DIR/perf.data" -- sleep 3 2>"$DIR/perf.err" >/dev/null
wait "$LOADER"
perf script -i "$DIR/perf.data" 2>/dev/null | inferno-collapse-perf >"$DIR/folded"
# The folded stacks too, when asked for (FOLDED=path), to read or diff with inferno-diff-folded.
[ -n "${FOLDED:-}" ] && cp "$DIR/folded" "$FOLDED"
inferno-flamegraph --title "badge $PATH_KIND $ALG: $(cat "$DIR/result")" <"$DIR/folded" >"$OUT/$PATH_KIND-$ALG.svg"
echo "$OUT/$PATH_KIND-$ALG.svg: $(cat "$DIR/result")"
