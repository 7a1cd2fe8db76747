#!/usr/bin/env bash
# Background exec activity, as on any ordinary machine: shell scripts, PATH walks with misses,
# short-lived processes, about RATE execs a second, until killed. The live tests run beside it
# (tests/busy.py starts it for them); run it by hand beside the whole suite with
#   bash tests/busy.sh 100 & bash .ci/run; kill %1
set -u
rate=${1:-100}
dir=$(mktemp -d /tmp/ttpsensor-busy.XXXXXX)
trap 'rm -rf "$dir"' EXIT
printf '#!/bin/sh\n/bin/true "$@"\n' > "$dir/script.sh"
printf '#!/usr/bin/env sh\nexit 0\n' > "$dir/env-script.sh"
chmod 755 "$dir/script.sh" "$dir/env-script.sh"
# Each round execs about ten times: two scripts (plus what they run), a PATH walk with two
# misses before /usr/bin, and a few plain binaries.
pause=$(awk -v r="$rate" 'BEGIN { printf "%.3f", 10 / r }')
while :; do
  "$dir/script.sh" busy-background
  "$dir/env-script.sh"
  PATH="$dir/missing-a:$dir/missing-b:/usr/bin:/bin" env true busy-background
  /bin/true busy-background
  sh -c 'exit 0'
  date +%s > /dev/null
  sleep "$pause"
done
