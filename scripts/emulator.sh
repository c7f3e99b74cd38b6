# Sourced by scripts/test.sh and tests/load/run.sh: starts Google's Firestore
# emulator on a free loopback port unless FIRESTORE_EMULATOR_HOST is already
# set, exports FIRESTORE_EMULATOR_HOST, and stops it when the shell exits.
#   emulator_start LOGFILE   returns 1 when the emulator is missing or fails
emulator_pid=
emulator_stop() {
  if [[ -n $emulator_pid ]]; then
    kill -TERM -- "-$emulator_pid" 2>/dev/null || true
    wait "$emulator_pid" 2>/dev/null || true
    emulator_pid=
  fi
}

emulator_available() {
  command -v gcloud >/dev/null 2>&1 && command -v java >/dev/null 2>&1 &&
    gcloud emulators firestore --help >/dev/null 2>&1
}

emulator_start() {
  local log=$1 port
  [[ -n ${FIRESTORE_EMULATOR_HOST:-} ]] && return 0
  emulator_available || return 1
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
         echo 18432)
  setsid gcloud emulators firestore start --host-port="127.0.0.1:$port" >"$log" 2>&1 &
  emulator_pid=$!
  trap emulator_stop EXIT
  for _ in $(seq 1 240); do
    if [[ $(curl -fsS "http://127.0.0.1:$port/" 2>/dev/null) == Ok* ]]; then
      export FIRESTORE_EMULATOR_HOST="127.0.0.1:$port"
      echo "firestore emulator on $FIRESTORE_EMULATOR_HOST"
      return 0
    fi
    kill -0 "$emulator_pid" 2>/dev/null || break
    sleep 0.5
  done
  echo "firestore emulator did not start; see $log" >&2
  tail -n 20 "$log" >&2 || true
  emulator_stop
  return 1
}
