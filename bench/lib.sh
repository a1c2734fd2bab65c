# Helpers shared by bench/run and bench/smoke (sourced, not executed).

# start_server BIN LOG DB [extra flags…]: start a node on 127.0.0.1:<free port>; sets SERVER_PID
# and SERVER_ADDR. $PIN_SERVER (e.g. "taskset -c 0") prefixes the command when set.
start_server() {
  local bin="$1" log="$2" db="$3"
  shift 3
  # shellcheck disable=SC2086
  $PIN_SERVER "$bin" --listen 127.0.0.1:0 --jwt-secret "$SECRET" \
    --socket-event-limit 1000000 --user-message-limit 1000000 --drain-secs 2 \
    --database-url "sqlite://$db?mode=rwc" "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  wait_listening "$log"
}

# start_node_peer LOG: start the Node.js socket.io peer (bench/peers/node/server.js, its
# node_modules installed) on 127.0.0.1:<free port> with JWT_SECRET="$SECRET"; sets SERVER_PID and
# SERVER_ADDR like start_server, and is stopped by stop_server. The open-files soft limit is raised
# to the hard limit first (Node does not raise it itself); `exec` keeps SERVER_PID the node
# process, so its RSS/CPU are what gets sampled.
start_node_peer() {
  local log="$1"
  local script
  script="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/peers/node/server.js"
  # shellcheck disable=SC2086
  (
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    PORT=0 JWT_SECRET="$SECRET" exec $PIN_SERVER node "$script"
  ) >"$log" 2>&1 &
  SERVER_PID=$!
  wait_listening "$log"
}

# wait_listening LOG: wait until the server $SERVER_PID logs {"message":"listening","addr":…};
# sets SERVER_ADDR. Fails when the server exits first or after 30 s.
wait_listening() {
  local log="$1"
  SERVER_ADDR=""
  for _ in $(seq 1 300); do
    SERVER_ADDR="$(grep -m1 '"message":"listening"' "$log" 2>/dev/null \
      | grep -o '"addr":"[^"]*"' | head -1 | cut -d'"' -f4 || true)"
    [ -n "$SERVER_ADDR" ] && return 0
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "error: the server exited during startup; log:" >&2
      tail -20 "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "error: the server did not report listening within 30 s; log:" >&2
  tail -20 "$log" >&2
  return 1
}

# stop_server: SIGTERM the server started by start_server or start_node_peer, SIGKILL after 10 s.
stop_server() {
  [ -n "${SERVER_PID:-}" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
