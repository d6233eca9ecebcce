#!/bin/bash
# Instructions per request in the server, counted by callgrind: exact and repeatable where a
# shared machine's throughput is not. Needs valgrind and a release build
# (cargo build --release -p badge -p badge-perf).
#
#   scripts/count-instructions.sh review 2000 off --audit-log-path= --token-usage-tracking=false
#   scripts/count-instructions.sh issue 1000 on --usage-flush-period=1s
#
# PATH is review (a cached TokenReview) or issue (a TokenRequest); the label names the
# callgrind output (target/callgrind/LABEL.*), for `callgrind_annotate --inclusive=yes`.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH_KIND=$1 N=$2 LABEL=$3
shift 3
BADGE=target/release/badge PERF=target/release/badge-perf
OUT=target/callgrind/$LABEL
mkdir -p target/callgrind
rm -f "$OUT".*
DIR=$(mktemp -d)
chmod 700 "$DIR"
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$DIR"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$OUT.%p" --dump-instr=no \
  "$BADGE" server --secure-port 0 --data-dir "$DIR" --service-account-signing-key-type ES256 "$@" \
  2>"$DIR/err" >/dev/null &
SERVER=$!
PORT=
for _ in $(seq 1 1200); do
  PORT=$(grep -o 'serving securely on 127.0.0.1:[0-9]*' "$DIR/err" | sed 's/.*://' || true)
  [ -n "$PORT" ] && break
  sleep 0.1
done
ADMIN=(--cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key")
until curl -s --cacert "$DIR/pki/ca.crt" "https://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.1; done
ISSUE=/api/v1/namespaces/default/serviceaccounts/default/token
REQUEST='{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}'
if [ "$PATH_KIND" = issue ]; then
  BODY=$REQUEST TARGET=$ISSUE
else
  TOKEN=$(curl -s "${ADMIN[@]}" -H 'content-type: application/json' -X POST -d "$REQUEST" \
    "https://127.0.0.1:$PORT$ISSUE" | python3 -c 'import json,sys;print(json.load(sys.stdin)["status"]["token"])')
  BODY="{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\",\"spec\":{\"token\":\"$TOKEN\"}}"
  TARGET=/apis/authentication.k8s.io/v1/tokenreviews
fi
for _ in $(seq 1 200); do echo "$BODY"; done >"$DIR/warm"
for _ in $(seq 1 "$N"); do echo "$BODY"; done >"$DIR/bodies"
LOAD=("$PERF" load --port "$PORT" --ca "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" \
  --key "$DIR/pki/admin.key" --path "$TARGET" --once --connections 4)
"${LOAD[@]}" --bodies "$DIR/warm" >/dev/null
sleep "${SETTLE:-0.5}"
callgrind_control -z "$SERVER" >/dev/null 2>&1
"${LOAD[@]}" --bodies "$DIR/bodies" >"$DIR/result"
sleep "${SETTLE:-0.5}"
callgrind_control -d "$SERVER" >/dev/null 2>&1
TOTAL=$(callgrind_annotate "$OUT.$SERVER.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$LABEL: $((TOTAL / N)) instructions a request ($(cat "$DIR/result")), $OUT.$SERVER.1"
