#!/usr/bin/env bash
# The benchmark: builds a Release build and runs the local stack under load.
#
#   tests/load/run.sh            # both scenarios, 3 runs each, medians printed
#   RUNS=5 IMAGES=1000 tests/load/run.sh
#
# Scenario 1: provider simulator at zero latency, 1,000 images: items per
#             second, CPU ms per item (creator, worker), peak RSS.
# Scenario 2: 2 s simulated provider latency, 100 concurrent dispatches:
#             measured total time vs the ideal images x latency / concurrency.
# Scenario 3: BACKEND=gcp on Google's Firestore emulator: Firestore reads and
#             writes per processed item, counted by the proxy.
# Scenario 4: a 10,000-image batch against fake Cloud Tasks with 20 ms per
#             createTask: when the creator answers, tasks created per second.
# Scenarios 3 and 4 need the Firestore emulator (started here when installed).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh build
build=build/release
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target batchd-bench batchd-bench-gcp >/dev/null
RUNS=${RUNS:-3}
IMAGES=${IMAGES:-1000}
echo "== scenario 1: zero provider latency"
"$build/tests/load/batchd-bench" --images "$IMAGES" --latency-ms 0 --concurrency 100 --runs "$RUNS"
echo
echo "== scenario 2: 2 s provider latency, 100 concurrent dispatches"
"$build/tests/load/batchd-bench" --images "$IMAGES" --latency-ms 2000 --concurrency 100 --runs "$RUNS"

# shellcheck source=scripts/emulator.sh
source scripts/emulator.sh
if emulator_start "$build/firestore-emulator.log"; then
  echo
  echo "== scenario 3: Firestore operations per processed item (BACKEND=gcp)"
  "$build/tests/load/batchd-bench-gcp" ops --images 200 --runs "$RUNS"
  echo
  echo "== scenario 4: enqueue of 10,000 images, 20 ms per createTask"
  "$build/tests/load/batchd-bench-gcp" enqueue --images 10000 --latency-ms 20 --runs "$RUNS"
else
  echo "(scenarios 3 and 4 skipped: no Firestore emulator)"
fi
