#!/bin/bash
# Instructions per request in the server, counted by callgrind: exact and repeatable where a
# shared machine's throughput is not. Needs valgrind and a release build
# (cargo build --release -p badge -p badge-perf).
#
#   scripts/count-instructions.sh review 2000 off --audit-log-path= --token-usage-tracking=false
#   scripts/count-instructions.sh issue 1000 on --usage-flush-period=1s
#   scripts/count-instructions.sh ceiling 2000 ceiling
#
# PATH is review (a cached TokenReview), distinct (TokenReviews of N tokens issued first,
# each reviewed once), issue (a TokenRequest) or ceiling (badge-perf's ceiling server, the
# same TLS and HTTP stack answering a fixed reply, under the body the ceiling row sends it);
# the label names the callgrind output (target/callgrind/LABEL.*), for
# `callgrind_annotate --inclusive=yes`. Server flags follow the label (not for ceiling).
# KEY_TYPE=RS256 signs with RSA instead of the default ES256.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/server.sh
. scripts/lib/server.sh
PATH_KIND=$1 N=$2 LABEL=$3
shift 3
BADGE=target/release/badge PERF=target/release/badge-perf
OUT=target/callgrind/$LABEL
mkdir -p target/callgrind
rm -f "$OUT".*
DIR=$(mktemp -d)
chmod 700 "$DIR"
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$DIR"' EXIT
if [ "$PATH_KIND" = ceiling ]; then
  valgrind --tool=callgrind --callgrind-out-file="$OUT.%p" --dump-instr=no \
    "$PERF" ceiling "$DIR" 2>"$DIR/err" >"$DIR/port" &
  SERVER=$!
  PORT=
  for _ in $(seq 1 1200); do
    PORT=$(head -n1 "$DIR/port")
    [ -n "$PORT" ] && break
    sleep 0.1
  done
  BODY="{\"pad\":\"$(printf 'y%.0s' $(seq 1 1000))\"}"
  for _ in $(seq 1 200); do echo "$BODY"; done >"$DIR/warm"
  for _ in $(seq 1 "$N"); do echo "$BODY"; done >"$DIR/bodies"
  LOAD=("$PERF" load --port "$PORT" --ca "$DIR/ca.crt" --path / --once --connections 4)
else
  valgrind --tool=callgrind --callgrind-out-file="$OUT.%p" --dump-instr=no \
    "$BADGE" server --secure-port 0 --data-dir "$DIR" --service-account-signing-key-type "${KEY_TYPE:-ES256}" "$@" \
    2>"$DIR/err" >/dev/null &
  SERVER=$!
  badge_port "$DIR/err" "$SERVER"
  wait_for_default_account "$DIR/pki"
  ADMIN=(--cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key")
  ISSUE=/api/v1/namespaces/default/serviceaccounts/default/token
  REQUEST='{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}'
  LOAD=("$PERF" load --port "$PORT" --ca "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt"
    --key "$DIR/pki/admin.key" --once --connections 4)
  review() { echo "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\",\"spec\":{\"token\":\"$1\"}}"; }
  case "$PATH_KIND" in
    issue)
      for _ in $(seq 1 200); do echo "$REQUEST"; done >"$DIR/warm"
      for _ in $(seq 1 "$N"); do echo "$REQUEST"; done >"$DIR/bodies"
      LOAD+=(--path "$ISSUE")
      ;;
    review)
      TOKEN=$(curl -s "${ADMIN[@]}" -H 'content-type: application/json' -X POST -d "$REQUEST" \
        "https://127.0.0.1:$PORT$ISSUE" | python3 -c 'import json,sys;print(json.load(sys.stdin)["status"]["token"])')
      BODY=$(review "$TOKEN")
      for _ in $(seq 1 200); do echo "$BODY"; done >"$DIR/warm"
      for _ in $(seq 1 "$N"); do echo "$BODY"; done >"$DIR/bodies"
      LOAD+=(--path /apis/authentication.k8s.io/v1/tokenreviews)
      ;;
    distinct)
      # The tokens are issued before the count starts; each is reviewed once, the first 200
      # as the warm-up.
      for _ in $(seq 1 $((N + 200))); do echo "$REQUEST"; done >"$DIR/requests"
      "${LOAD[@]}" --path "$ISSUE" --bodies "$DIR/requests" --save-tokens "$DIR/tokens" >/dev/null
      while read -r TOKEN || [ -n "$TOKEN" ]; do review "$TOKEN"; done <"$DIR/tokens" >"$DIR/reviews"
      head -n 200 "$DIR/reviews" >"$DIR/warm"
      tail -n +201 "$DIR/reviews" >"$DIR/bodies"
      LOAD+=(--path /apis/authentication.k8s.io/v1/tokenreviews)
      ;;
    *) echo "unknown path $PATH_KIND" >&2; exit 2 ;;
  esac
fi
"${LOAD[@]}" --bodies "$DIR/warm" >/dev/null
sleep "${SETTLE:-0.5}"
callgrind_control -z "$SERVER" >/dev/null 2>&1
"${LOAD[@]}" --bodies "$DIR/bodies" >"$DIR/result"
sleep "${SETTLE:-0.5}"
callgrind_control -d "$SERVER" >/dev/null 2>&1
TOTAL=$(callgrind_annotate "$OUT.$SERVER.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$LABEL: $((TOTAL / N)) instructions a request ($(cat "$DIR/result")), $OUT.$SERVER.1"
