#!/usr/bin/env bash
# Server CPU per join of one build: µs of utime + stime (from /proc/PID/stat) per join.
#
#   bench/scripts/join_cpu.sh CHECKOUT [CONNECTIONS]
#
# CHECKOUT is a checkout with its own .venv (`make sync`); its `callroom serve --dev`
# runs on core 0 with the bench's environment, `callroom-bench join` of this checkout
# drives it. A 500-join warm-up first; the figure includes the leaves at the end of the
# run. Used to compare two builds interleaved on a busy machine (docs/performance.md,
# "The join path"): the absolute figures depend on the machine's load, the pairs compare.
set -euo pipefail
checkout=$(cd "$1" && pwd)
connections=${2:-3000}
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
bench=("$here/.venv/bin/callroom-bench" join --url "ws://127.0.0.1:$port" --key-file "$work/.callroom-dev-key.pem")
"${bench[@]}" --connections 500 >/dev/null 2>&1
ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
before=$(ticks)
"${bench[@]}" --connections "$connections" --json "$work/join.json" >/dev/null 2>&1
after=$(ticks)
hz=$(getconf CLK_TCK)
"$here/.venv/bin/python" - "$work/join.json" "$before" "$after" "$hz" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))["result"]
ticks = float(sys.argv[3]) - float(sys.argv[2])
per_join = ticks / float(sys.argv[4]) * 1e6 / result["joined"]
print(f"joined {result['joined']}/{result['connections']}  joins/s {result['joins_per_s']}  "
      f"server CPU per join {per_join:.0f} us")
PY
