#!/usr/bin/env bash
# The one dependency list. The README's commands, .ci/run and the Dockerfile
# all install from here.
#
#   scripts/deps.sh build     install what building and testing need (default)
#   scripts/deps.sh runtime   install what the binaries need to run
#   scripts/deps.sh list KIND print a list without installing
#
# Only missing packages are installed, so repeated runs are fast.
set -euo pipefail

BUILD_PACKAGES=(
  build-essential cmake pkg-config git
  libcurl4-openssl-dev libjansson-dev libjwt-dev libmicrohttpd-dev libsqlite3-dev
  libssl-dev zlib1g-dev check
  clang-format curl ca-certificates procps
)
RUNTIME_PACKAGES=(
  libcurl4 libjansson4 libjwt0 libmicrohttpd12 libsqlite3-0 libssl3 zlib1g ca-certificates
)

kind=${1:-build}
case "$kind" in
  build) packages=("${BUILD_PACKAGES[@]}") ;;
  runtime) packages=("${RUNTIME_PACKAGES[@]}") ;;
  list)
    case "${2:-build}" in
      build) printf '%s\n' "${BUILD_PACKAGES[@]}" ;;
      runtime) printf '%s\n' "${RUNTIME_PACKAGES[@]}" ;;
      *) echo "usage: $0 list build|runtime" >&2; exit 2 ;;
    esac
    exit 0 ;;
  *) echo "usage: $0 [build|runtime|list build|runtime]" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "deps: missing packages: ${missing[*]}; run as root or install them" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
