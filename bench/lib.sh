# shellcheck shell=bash
# Helpers shared by bench/run, bench/smoke and bench/peers/smoke (sourced, not executed).

# start_server BIN LOG DB [extra flags…]: start a node on 127.0.0.1:<free port>; sets SERVER_PID
# and SERVER_ADDR. DB is a SQLite file path or a postgres:// URL. $PIN_SERVER (e.g.
# "taskset -c 0") prefixes the command when set. Switchboard raises its own open-files soft limit
# to the hard limit at start (one socket = one file), so it holds up to ~`ulimit -Hn` connections.
start_server() {
  local bin="$1" log="$2" db="$3" url
  shift 3
  case "$db" in
    postgres://* | postgresql://*) url="$db" ;;
    *) url="sqlite://$db?mode=rwc" ;;
  esac
  # shellcheck disable=SC2086
  $PIN_SERVER "$bin" --listen 127.0.0.1:0 --jwt-secret "$SECRET" \
    --socket-event-limit 1000000 --user-message-limit 1000000 --drain-secs 2 \
    --database-url "$url" "$@" >"$log" 2>&1 &
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
    PORT=0 JWT_SECRET="$SECRET" REDIS_URL="${PEER_REDIS_URL:-}" exec $PIN_SERVER node "$script"
  ) >"$log" 2>&1 &
  SERVER_PID=$!
  wait_listening "$log"
}

# Where start_socketioxide_peer and start_bare_peer find the Rust peers (bench/peers/build;
# bench/peers/smoke points it at the debug build).
PEERS_RUST_BIN="${PEERS_RUST_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/peers/rust/target/release}"

# start_rust_peer BIN LOG: start a Rust peer like start_node_peer (PORT=0, JWT_SECRET, and
# REDIS_URL from $PEER_REDIS_URL); sets SERVER_PID and SERVER_ADDR.
start_rust_peer() {
  local bin="$1" log="$2"
  if [ ! -x "$bin" ]; then
    echo "error: $bin is missing: run bench/peers/build first" >&2
    return 1
  fi
  # shellcheck disable=SC2086
  (
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    PORT=0 JWT_SECRET="$SECRET" REDIS_URL="${PEER_REDIS_URL:-}" exec $PIN_SERVER "$bin"
  ) >"$log" 2>&1 &
  SERVER_PID=$!
  wait_listening "$log"
}

# start_socketioxide_peer LOG: the socketioxide peer (bench/peers/rust), like start_node_peer.
start_socketioxide_peer() {
  start_rust_peer "$PEERS_RUST_BIN/socketioxide-peer" "$1"
}

# start_bare_peer LOG: the hand-written tokio-tungstenite relay (bench/peers/rust), like
# start_node_peer; it has no cluster mode.
start_bare_peer() {
  start_rust_peer "$PEERS_RUST_BIN/bare-relay" "$1"
}

# free_port: print a TCP port free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_redis LOG: a dedicated, non-persistent redis-server on 127.0.0.1:<free port> (pinned
# like the servers); sets REDIS_PORT and REDIS_PID. Stopped by stop_redis.
start_redis() {
  local log="$1"
  REDIS_PORT="$(free_port)"
  # shellcheck disable=SC2086
  $PIN_SERVER redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --daemonize no >"$log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 1 100); do
    if [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
      return 0
    fi
    if ! kill -0 "$REDIS_PID" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  echo "error: redis-server did not start; log:" >&2
  tail -20 "$log" >&2
  return 1
}

# stop_redis: stop the redis-server of start_redis.
stop_redis() {
  [ -n "${REDIS_PID:-}" ] || return 0
  kill -TERM "$REDIS_PID" 2>/dev/null || true
  wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=""
}

# start_cluster SERVER N LOG_PREFIX: N nodes of kind SERVER (switchboard, node or socketioxide)
# sharing the Redis of start_redis; node i logs to LOG_PREFIX.i.log. Switchboard nodes also
# share a fresh PostgreSQL database on $BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432,
# dropped by stop_cluster) and need $SERVER_BIN. Sets SERVER_ADDRS and SERVER_PIDS (comma lists).
start_cluster() {
  local kind="$1" n="$2" prefix="$3" i
  local -a addrs=() pids=()
  CLUSTER_PIDS=()
  CLUSTER_DB=""
  local redis="redis://127.0.0.1:$REDIS_PORT"
  if [ "$kind" = switchboard ]; then
    CLUSTER_DB="bench_$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')"
    psql -q "${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}/postgres" \
      -c "CREATE DATABASE $CLUSTER_DB" >/dev/null || {
      echo "error: could not create the PostgreSQL database for the cluster" >&2
      CLUSTER_DB=""
      return 1
    }
  fi
  for i in $(seq 1 "$n"); do
    # One at a time: the first Switchboard node runs the migrations before the others start.
    case "$kind" in
      switchboard)
        start_server "${SERVER_BIN:?}" "$prefix.$i.log" \
          "${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}/$CLUSTER_DB" \
          --redis-url "$redis" --node-id "bench-node-$i"
        ;;
      node) PEER_REDIS_URL="$redis" start_node_peer "$prefix.$i.log" ;;
      socketioxide) PEER_REDIS_URL="$redis" start_socketioxide_peer "$prefix.$i.log" ;;
      *)
        echo "error: start_cluster: no cluster mode for '$kind'" >&2
        return 1
        ;;
    esac || {
      CLUSTER_PIDS+=("$SERVER_PID")
      SERVER_PID=""
      return 1
    }
    CLUSTER_PIDS+=("$SERVER_PID")
    pids+=("$SERVER_PID")
    addrs+=("$SERVER_ADDR")
    SERVER_PID=""
  done
  SERVER_ADDRS="$(IFS=,; echo "${addrs[*]}")"
  SERVER_PIDS="$(IFS=,; echo "${pids[*]}")"
  export SERVER_ADDRS SERVER_PIDS
}

# stop_cluster: SIGTERM every node of start_cluster (SIGKILL after 10 s) and drop its database.
stop_cluster() {
  local pid
  for pid in "${CLUSTER_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${CLUSTER_PIDS[@]}"; do
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  CLUSTER_PIDS=()
  if [ -n "${CLUSTER_DB:-}" ]; then
    psql -q "${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}/postgres" \
      -c "DROP DATABASE IF EXISTS $CLUSTER_DB" >/dev/null 2>&1 || true
    CLUSTER_DB=""
  fi
}
CLUSTER_PIDS=()

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

# stop_server: SIGTERM the server started by start_server or a start_*_peer, SIGKILL after 10 s.
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
