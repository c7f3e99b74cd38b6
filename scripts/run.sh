#!/usr/bin/env bash
# Starts the whole system on this machine with the embedded runtime (SQLite
# store, local queue and dispatcher, file blobs) and processes a demo batch:
#
#   scripts/run.sh            # 100 demo images, then keeps serving until Ctrl-C
#   DEMO_IMAGES=1000 scripts/run.sh
#
# Without GEMINI_API_KEY the provider simulator stands in for Gemini (it says
# so in its log). Installs missing build dependencies first (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

CREATOR_PORT=${CREATOR_PORT:-8080}
WORKER_PORT=${WORKER_PORT:-8081}
SIM_PORT=${SIM_PORT:-8090}
DEMO_IMAGES=${DEMO_IMAGES:-100}
export DATA_DIR=${DATA_DIR:-$PWD/data}

scripts/deps.sh build
build=build/release
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target creator worker provider-sim batchd-demo

mkdir -p "$DATA_DIR/logs"
pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

wait_healthy() { # name url
  for _ in $(seq 1 200); do
    if curl -fsS -o /dev/null "$2/healthz" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "$1 did not start; see $DATA_DIR/logs/$1.log" >&2
  exit 1
}

# The simulator always serves the demo images; it also plays Gemini unless a key is set.
PORT=$SIM_PORT "$build/tests/fakes/provider-sim" >"$DATA_DIR/logs/simulator.log" 2>&1 &
pids+=($!)
wait_healthy simulator "http://127.0.0.1:$SIM_PORT"
sim="http://127.0.0.1:$SIM_PORT"
if [[ -z ${GEMINI_API_KEY:-} ]]; then
  echo "GEMINI_API_KEY is not set: the provider simulator at $sim plays Gemini"
  export GEMINI_API_KEY=simulator GEMINI_BASE_URL=$sim
fi
if [[ -z ${RUNWAY_API_KEY:-} ]]; then
  echo "RUNWAY_API_KEY is not set: the provider simulator at $sim plays Runway"
  export RUNWAY_API_KEY="key_$(printf '0%.0s' {1..128})" RUNWAY_BASE_URL=$sim
fi
if [[ -z ${PIXVERSE_API_KEY:-} ]]; then
  echo "PIXVERSE_API_KEY is not set: the provider simulator at $sim plays PixVerse"
  export PIXVERSE_API_KEY=simulator PIXVERSE_BASE_URL=$sim
fi

export WORKER_URL="http://127.0.0.1:$WORKER_PORT/api/batch/worker"
export PUBLIC_URL="http://127.0.0.1:$CREATOR_PORT"
export ALLOW_INSECURE_URLS=true   # the demo images are served over http on loopback
export QUEUE_CONFIG=${QUEUE_CONFIG:-deploy/queue.json}

PORT=$WORKER_PORT "$build/worker/worker" >"$DATA_DIR/logs/worker.log" 2>&1 &
pids+=($!)
wait_healthy worker "http://127.0.0.1:$WORKER_PORT"
PORT=$CREATOR_PORT "$build/creator/creator" >"$DATA_DIR/logs/creator.log" 2>&1 &
pids+=($!)
wait_healthy creator "http://127.0.0.1:$CREATOR_PORT"

echo "creator:   http://127.0.0.1:$CREATOR_PORT   (partner API)"
echo "worker:    http://127.0.0.1:$WORKER_PORT   (push target, local dispatcher inside)"
echo "simulator: http://127.0.0.1:$SIM_PORT   (demo images, provider simulator)"
echo "logs:      $DATA_DIR/logs/   data: $DATA_DIR"
echo

"$build/deploy/local/batchd-demo" "http://127.0.0.1:$CREATOR_PORT" "http://127.0.0.1:$SIM_PORT" "$DEMO_IMAGES"
echo "results on disk: $DATA_DIR/blobs/results/"
echo
echo "serving until Ctrl-C"
wait
