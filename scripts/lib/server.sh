# Shared by the profiling scripts: waiting for a badge server started in the background.

# Sets PORT from the server's log ($1, its stderr) once it serves; empty after two minutes.
badge_port() {
  PORT=
  for _ in $(seq 1 1200); do
    PORT=$(grep -o 'serving securely on 127.0.0.1:[0-9]*' "$1" | sed 's/.*://' || true)
    [ -n "$PORT" ] && return
    sleep 0.1
  done
}

# Waits until the server on PORT is ready and its controllers have made the default
# ServiceAccount the tokens are issued for; $1 is its pki directory (admin credentials).
wait_for_default_account() {
  until curl -sf --cacert "$1/ca.crt" --cert "$1/admin.crt" --key "$1/admin.key" \
    "https://127.0.0.1:$PORT/api/v1/namespaces/default/serviceaccounts/default" >/dev/null; do
    sleep 0.1
  done
}
