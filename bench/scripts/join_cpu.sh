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
source "$(dirname "$0")/dev_server.sh"
start_dev_server "$1"
connections=${2:-3000}
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
