#!/usr/bin/env bash
# Fails when a C file is not clang-formatted or uses a banned function
# (STYLE.md item 11: sprintf, strcpy, strcat, strtok, atoi, gmtime, localtime).
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
mapfile -t files < <(git ls-files '*.c' '*.h' 2>/dev/null || find common creator worker tests -name '*.[ch]')
if ((${#files[@]})); then
  if ! clang-format --dry-run --Werror "${files[@]}" 2>/tmp/clang-format.$$; then
    echo "style: these files need clang-format -i:" >&2
    grep -oE '^[^:]+\.[ch]' /tmp/clang-format.$$ | sort -u >&2
    status=1
  fi
  rm -f /tmp/clang-format.$$
  if grep -nE '\b(sprintf|strcpy|strcat|strtok|atoi|gmtime|localtime)\s*\(' "${files[@]}"; then
    echo "style: banned functions above (use snprintf, str_copy, strtoll, gmtime_r)" >&2
    status=1
  fi
fi
exit $status
