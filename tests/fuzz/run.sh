#!/usr/bin/env bash
# Coverage-guided fuzzing with clang's libFuzzer (the ctest runs use a plain
# mutation driver instead). Each target starts from its seeds (written to
# a corpus directory) and runs for SECONDS (default 60):
#
#   tests/fuzz/run.sh                      # every target
#   SECONDS_PER_TARGET=600 tests/fuzz/run.sh fuzz_create_request
#
# A crash leaves a reproducer (crash-*) in build/fuzz/<target>/; replay it
# with the target itself: build/fuzz/tests/fuzz/<target> crash-...
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh build
command -v clang >/dev/null || { echo "clang is needed: apt-get install clang" >&2; exit 1; }
# The seeds come from the plain builds of the same targets.
cmake -S . -B build/debug -DCMAKE_BUILD_TYPE=Debug >/dev/null
build=build/fuzz
CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DFUZZ_LIBFUZZER=ON >/dev/null
targets=("$@")
((${#targets[@]})) || targets=(fuzz_create_request fuzz_task_body fuzz_codecs fuzz_google fuzz_providers)
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >/dev/null
cmake --build build/debug -j"$(nproc)" --target "${targets[@]}" >/dev/null
for t in "${targets[@]}"; do
  corpus="$build/$t/corpus"
  mkdir -p "$corpus"
  "build/debug/tests/fuzz/$t" --write-seeds "$corpus"
  (cd "$build/$t" && ASAN_OPTIONS=detect_leaks=1 "../tests/fuzz/$t" -max_total_time="${SECONDS_PER_TARGET:-60}" \
     -max_len=65536 corpus)
done
