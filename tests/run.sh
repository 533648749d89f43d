#!/bin/sh
# Runs every test program in a directory; each closes with
# "<name>: N passed, N failed[, N skipped]". Shows the lines that matter (failures,
# sanitizer reports, summaries, and every skip message whole: a line
# "<name>: skipped..." with the lines that continue it, up to the next record),
# and appends "<label> <program> passed failed skipped" to build/results, which
# tests/total.sh adds up. A program whose summary has no skipped count counts one
# skip for each "<name>: skipped" line it printed.
label=$1
dir=$2
status=0
mkdir -p build
for t in "$dir"/*; do
    [ -x "$t" ] || continue
    out=$("$t" 2>&1)
    rc=$?
    printf '%s\n' "$out" | awk '
        # a record: a summary or message of a program or test, a result, a failure
        function record(line) {
            return line ~ /^[A-Za-z0-9_][A-Za-z0-9_ .-]*: / || line ~ /^(not )?ok( |$)/ || line ~ /^  FAIL/
        }
        /^[A-Za-z0-9_]+: skipped/ { print; more = 10; next }
        more > 0 && $0 != "" && !record($0) { print; more--; next }
        { more = 0 }
        /^(not ok|  FAIL|[A-Za-z0-9_]+: [0-9]+ passed)|ERROR|WARNING: ThreadSanitizer|runtime error/ { print }
    ' | head -60
    line=$(printf '%s\n' "$out" | grep -E '^[A-Za-z0-9_]+: [0-9]+ passed, [0-9]+ failed' | tail -1)
    if [ -z "$line" ]; then
        echo "[$label] $(basename "$t"): no summary (exit $rc)"
        printf '%s\n' "$out" | tail -20
        echo "$label $(basename "$t") 0 1 0" >> build/results
        status=1
        continue
    fi
    passed=$(printf '%s' "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\1/')
    failed=$(printf '%s' "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\2/')
    skipped=$(printf '%s' "$line" | sed -nE 's/.*: [0-9]+ passed, [0-9]+ failed, ([0-9]+) skipped.*/\1/p')
    [ -n "$skipped" ] || skipped=$(printf '%s\n' "$out" | grep -cE '^[A-Za-z0-9_]+: skipped')
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        echo "[$label] $(basename "$t"): exit $rc"
        printf '%s\n' "$out" | tail -20
        failed=1
    fi
    echo "$label $(basename "$t") $passed $failed $skipped" >> build/results
    [ "$failed" -eq 0 ] || status=1
done
exit $status
