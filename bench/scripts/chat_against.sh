#!/usr/bin/env bash
# The chat scenario against one build: its `callroom serve --dev` on core 0, driven by
# this checkout's `callroom-bench chat` (the generator on the last core).
#
#   bench/scripts/chat_against.sh CHECKOUT [RATES]    # DURATION=S: seconds per step (3)
#
# CHECKOUT is a checkout with its own .venv (`make sync`). Used to compare two builds
# interleaved on one machine (docs/performance.md, "Chat before and after"): run it
# for each build in turn, twice or more, and compare the best steps and the server CPU
# at the same rate.
set -euo pipefail
source "$(dirname "$0")/dev_server.sh"
start_dev_server "$1"
rates=${2:-4000,5000,6000,7000,8000,9000,10000}
COLUMNS=200 "$here/.venv/bin/callroom-bench" chat --url "ws://127.0.0.1:$port" \
  --key-file "$work/.callroom-dev-key.pem" --server-pid "$server" --rates "$rates" \
  --duration "${DURATION:-3}"
