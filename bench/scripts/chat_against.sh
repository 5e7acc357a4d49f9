#!/usr/bin/env bash
# The chat scenario against one build: its `callroom serve --dev` on core 0, driven by
# this checkout's `callroom-bench chat` (the generator on the last core).
#
#   bench/scripts/chat_against.sh CHECKOUT [RATES]
#
# CHECKOUT is a checkout with its own .venv (`make sync`). Used to compare two builds
# interleaved on one machine (docs/performance.md, "Chat before and after"): run it
# for each build in turn, twice or more, and compare the best steps and the server CPU
# at the same rate.
set -euo pipefail
checkout=$(cd "$1" && pwd)
rates=${2:-4000,5000,6000,7000,8000,9000,10000}
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
port=$("$here/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cd "$work"
env LOBBY_ENABLED=false RATE_LIMIT_PER_SECOND=1000000 RATE_LIMIT_BURST=1000000 \
  MAX_CONNECTIONS_PER_IP=1000000 MAX_CONNECTIONS=1000000 MAX_ROOM_SIZE=100000 \
  LOG_LEVEL=WARNING DATABASE_URL="sqlite:///$work/bench.db" \
  taskset -c 0 "$checkout/.venv/bin/python" -m callroom serve --dev --port "$port" \
  >server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 150); do
  curl -sf "http://127.0.0.1:$port/ws/health" >/dev/null && break
  sleep 0.2
done
COLUMNS=200 "$here/.venv/bin/callroom-bench" chat --url "ws://127.0.0.1:$port" \
  --key-file "$work/.callroom-dev-key.pem" --server-pid "$server" --rates "$rates" --duration "${DURATION:-3}"
