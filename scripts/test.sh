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

emulator_pid=
cleanup() {
  if [[ -n $emulator_pid ]]; then
    kill -TERM -- "-$emulator_pid" 2>/dev/null || true
    wait "$emulator_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

start_emulator() {
  local port log
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
         echo 18432)
  log="$build/firestore-emulator.log"
  setsid gcloud emulators firestore start --host-port="127.0.0.1:$port" >"$log" 2>&1 &
  emulator_pid=$!
  for _ in $(seq 1 240); do
    if [[ $(curl -fsS "http://127.0.0.1:$port/" 2>/dev/null) == Ok* ]]; then
      export FIRESTORE_EMULATOR_HOST="127.0.0.1:$port"
      echo "firestore emulator on $FIRESTORE_EMULATOR_HOST"
      return 0
    fi
    if ! kill -0 "$emulator_pid" 2>/dev/null; then break; fi
    sleep 0.5
  done
  echo "firestore emulator did not start; see $log" >&2
  tail -n 20 "$log" >&2 || true
  return 1
}

if [[ -z ${FIRESTORE_EMULATOR_HOST:-} ]]; then
  if command -v gcloud >/dev/null 2>&1 && command -v java >/dev/null 2>&1 &&
     gcloud emulators firestore --help >/dev/null 2>&1; then
    start_emulator || { [[ ${REQUIRE_FIRESTORE_EMULATOR:-0} == 1 ]] && exit 1; }
  elif [[ ${REQUIRE_FIRESTORE_EMULATOR:-0} == 1 ]]; then
    echo "the Firestore emulator is required (REQUIRE_FIRESTORE_EMULATOR=1) but gcloud's" \
         "firestore emulator is not installed" >&2
    exit 1
  else
    echo "note: the Firestore emulator is not installed; Firestore tests will be skipped" >&2
  fi
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" "$@"
