#!/bin/sh
# Runs every test program in a directory; each prints "<name>: N passed, N failed".
# Appends the counts to build/results so that tests/total.sh can add them up.
label=$1
dir=$2
status=0
mkdir -p build
for t in "$dir"/*; do
    [ -x "$t" ] || continue
    out=$("$t" 2>&1)
    rc=$?
    printf '%s\n' "$out" | grep -E '^(not ok|  FAIL|[A-Za-z0-9_]+: [0-9]+ passed|[A-Za-z0-9_]+: skipped)|ERROR|WARNING: ThreadSanitizer|runtime error' | head -40
    line=$(printf '%s\n' "$out" | grep -E '^[A-Za-z0-9_]+: [0-9]+ passed, [0-9]+ failed' | tail -1)
    if [ -z "$line" ]; then
        echo "[$label] $(basename "$t"): no summary (exit $rc)"
        printf '%s\n' "$out" | tail -20
        echo "$label $(basename "$t") 0 1" >> build/results
        status=1
        continue
    fi
    passed=$(printf '%s' "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\1/')
    failed=$(printf '%s' "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\2/')
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        echo "[$label] $(basename "$t"): exit $rc"
        printf '%s\n' "$out" | tail -20
        failed=1
    fi
    echo "$label $(basename "$t") $passed $failed" >> build/results
    [ "$failed" -eq 0 ] || status=1
done
exit $status
