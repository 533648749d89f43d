#!/bin/sh
# integration.sh NAME BUILD - runs integrations/NAME/run.sh against the hostmem
# built in BUILD and closes with one line, "integration_NAME: N passed, N failed,
# N skipped", the sum of the groups the script reports (a "NAME: skipped: why"
# line, when its sources are missing, is one skipped; tests/run.sh counts a
# program's last summary line). The script's own lines, FAIL lines included, come first.
name=$1
build=$2
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(sh "$root/integrations/$name/run.sh" "$build" 2>&1)
rc=$?
printf '%s\n' "$out"
printf '%s\n' "$out" | awk -v name="$name" '
    /^[A-Za-z0-9_]+: skipped/ { lines++ }
    /^[A-Za-z0-9_]+: [0-9]+ passed, [0-9]+ failed/ {
        sub(/^[^:]*: /, ""); split($0, f, /[ ,]+/); p += f[1]; q += f[3]; s += f[5]
    }
    END { printf "integration_%s: %d passed, %d failed, %d skipped\n", name, p, q + 0, s ? s : lines }'
exit $rc
