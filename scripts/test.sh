#!/usr/bin/env bash
# Runs every test (unit, contract, integration) in a Debug build with
# AddressSanitizer and UndefinedBehaviorSanitizer. Exits non-zero on any
# failure. Installs missing build dependencies first (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh build
scripts/check-style.sh

build=build/debug
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$build" -j"$(nproc)"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" "$@"
