# Shared by the profiling scripts: waiting for a badge server started in the background.

# Sets PORT from the server's log ($1, its stderr) once it serves. Fails, showing the end of
# the log, when the server ($2, its pid) exits first or nothing serves within two minutes.
badge_port() {
  PORT=
  for _ in $(seq 1 1200); do
    PORT=$(grep -o 'serving securely on 127.0.0.1:[0-9]*' "$1" | sed 's/.*://' || true)
    [ -n "$PORT" ] && return 0
    if ! kill -0 "$2" 2>/dev/null; then
      echo "badge exited before serving:" >&2
      tail -n 20 "$1" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "badge did not serve within two minutes" >&2
  return 1
}

# Waits (at most two minutes) until the server on PORT is ready and its controllers have
# made the default ServiceAccount the tokens are issued for; $1 is its pki directory (admin
# credentials).
wait_for_default_account() {
  for _ in $(seq 1 1200); do
    curl -sf --cacert "$1/ca.crt" --cert "$1/admin.crt" --key "$1/admin.key" \
      "https://127.0.0.1:$PORT/api/v1/namespaces/default/serviceaccounts/default" >/dev/null && return 0
    sleep 0.1
  done
  echo "no default ServiceAccount within two minutes" >&2
  return 1
}
