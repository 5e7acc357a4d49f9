#!/usr/bin/env bash
# The figures of docs/performance.md "Current results": every scenario against every
# server, three interleaved rounds each, then the cluster three times (about 35 minutes).
#
#   bench/scripts/quiet_window.sh            # from the repository, after `make sync`
#                                            # and `(cd bench/peers/node && npm ci)`
#
# Run it on an otherwise idle machine: callroom-bench pins each server to the first core
# and the generator to the last. The JSON of every run goes to bench/results/ (ignored by
# git), the console tables to bench/results/*.log; `headline.usable` in each JSON says
# whether the generator's core stayed below 70% where the headline was decided.
set -euo pipefail
cd "$(dirname "$0")/../.."
export COLUMNS=200 # the whole table on one line per step
bench=.venv/bin/callroom-bench
out=bench/results
mkdir -p "$out"
echo "start $(date -u +%T) commit $(git rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg)"
run() { # NAME ARGS...: one command, its table in NAME.log
  local name=$1
  shift
  "$bench" "$@" --json "$out/$name.json" >"$out/$name.log" 2>&1
  echo "$name $(date -u +%T)"
}
run compare-join compare join --rounds 3
run compare-storm compare storm --rounds 3
# Steps of 3 s (the default is 5): the default ladders, each server up to its first failed step.
run compare-chat compare chat --rounds 3 --duration 3
run compare-signal compare signal --rounds 3 --duration 3
run compare-bigroom compare bigroom --rounds 3 --duration 3
# Issue 20's size, held longer than one heartbeat interval (20 s), so a sweep runs.
run compare-idle compare idle --rounds 3 --connections 10000 --duration 25
# Two callroom nodes on one Redis that the bench starts (--shards 1), both on the first core.
for round in 1 2 3; do
  run "cluster-chat-$round" cluster --nodes 2 --shards 1 --duration 3 \
    --rates 1000,2000,3000,4000,5000,6000,7000,8000
  run "cluster-signal-$round" cluster --nodes 2 --shards 1 --duration 3 --workload signal \
    --rates 2000,4000,6000,8000,10000,12000,14000,16000,20000
done
echo "end $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
