#!/usr/bin/env bash
# Runs every test (unit, contract, integration) in a Debug build with
# AddressSanitizer and UndefinedBehaviorSanitizer. Exits non-zero on any
# failure. Installs missing build dependencies first (as root).
#
# The Firestore tests run against Google's own emulator (gcloud emulators
# firestore), started here on a free port. Without it they are skipped with
# a message, unless REQUIRE_FIRESTORE_EMULATOR=1 (CI), which fails instead.
# Extra arguments go to ctest, e.g. scripts/test.sh -R e2e
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh build
scripts/check-style.sh

build=build/debug
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$build" -j"$(nproc)"

# shellcheck source=scripts/emulator.sh
source scripts/emulator.sh
if ! emulator_start "$build/firestore-emulator.log"; then
  if [[ ${REQUIRE_FIRESTORE_EMULATOR:-0} == 1 ]]; then
    echo "the Firestore emulator is required (REQUIRE_FIRESTORE_EMULATOR=1) but could not be" \
         "started: is gcloud's firestore emulator installed?" >&2
    exit 1
  fi
  echo "note: no Firestore emulator; the Firestore and Google-mode tests will be skipped" >&2
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" "$@"
