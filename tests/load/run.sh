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
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh build
build=build/release
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target batchd-bench creator worker provider-sim >/dev/null
RUNS=${RUNS:-3}
IMAGES=${IMAGES:-1000}
echo "== scenario 1: zero provider latency"
"$build/tests/load/batchd-bench" --images "$IMAGES" --latency-ms 0 --concurrency 100 --runs "$RUNS"
echo
echo "== scenario 2: 2 s provider latency, 100 concurrent dispatches"
"$build/tests/load/batchd-bench" --images "$IMAGES" --latency-ms 2000 --concurrency 100 --runs "$RUNS"
