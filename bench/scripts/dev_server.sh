# Sourced by the scripts that measure one build (join_cpu.sh, chat_against.sh): start
# CHECKOUT's `callroom serve --dev` on core 0 with the bench's limits (callroom_bench's
# BENCH_ENV) in a fresh working directory, wait until it answers, stop it on exit.
#
#   start_dev_server CHECKOUT    # sets $here, $work, $port and $server
start_dev_server() {
  local checkout
  checkout=$(cd "$1" && pwd)
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  work=$(mktemp -d)
  port=$("$here/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  (
    cd "$work"
    exec env LOBBY_ENABLED=false RATE_LIMIT_PER_SECOND=1000000 RATE_LIMIT_BURST=1000000 \
      MAX_CONNECTIONS_PER_IP=1000000 MAX_CONNECTIONS=1000000 MAX_ROOM_SIZE=100000 \
      LOG_LEVEL=WARNING DATABASE_URL="sqlite:///$work/bench.db" \
      taskset -c 0 "$checkout/.venv/bin/python" -m callroom serve --dev --port "$port" \
      >"$work/server.log" 2>&1
  ) &
  server=$!
  trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
  for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$port/ws/health" >/dev/null && return 0
    sleep 0.2
  done
  echo "the server of $checkout did not answer in 30 s: $(tail -5 "$work/server.log")" >&2
  exit 2
}
