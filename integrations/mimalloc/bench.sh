#!/bin/sh
# bench.sh BUILD - mimalloc's test-stress on hostmem against stock mimalloc.
#
#   sh integrations/mimalloc/bench.sh BUILD     BUILD holds libhostmem.a (e.g. build/)
#
# The same Debian 2.0.9 sources with this directory's patches, built twice with
# $CC (cc) -O2 -DNDEBUG: "stock" with mimalloc's own src/os.c (mmap, mprotect,
# madvise), "hostmem" with os_hostmem.c (one IHostMemoryManager, strict mode).
# test-stress runs at its default scale (25) and rounds (50) with 4, 8 and 32
# threads; stock and hostmem alternate, BENCH_RUNS (5) runs each, and the median
# wall times are printed with their ratio hostmem/stock. BENCH_COMPACT=1 adds
# hostmem in compact mode (HOSTMEM_MI_COMPACT=1), BENCH_AT_ONCE=1 hostmem with its
# deferred discard off (HOSTMEM_MI_PURGE_AT_ONCE=1). One more hostmem run per
# thread count, not timed, reports the calls the layer made. A benchmark: it
# asserts nothing. mimalloc says of its stress test "do not use this test as a
# benchmark"; it is used here because it is what makes mimalloc ask the OS most.
set -u

if [ $# -ne 1 ]; then
    echo "usage: sh integrations/mimalloc/bench.sh BUILD" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "$1" && pwd) || exit 2
library=$build/libhostmem.a
[ -f "$library" ] || { echo "bench: $library is missing (make first)" >&2; exit 2; }
work=$build/integrations/mimalloc/bench
logs=$work/logs
CC=${CC:-cc}
runs=${BENCH_RUNS:-5}
threads=${BENCH_THREADS:-4 8 32}
mkdir -p "$logs"

. "$here/fetch.sh"
upstream=$(mimalloc_fetch "$build" "$logs") || { echo "bench: skipped: $upstream"; exit 0; }
[ "$(mimalloc_version "$upstream")" = 209 ] || { echo "bench: skipped: not mimalloc 2.0.9"; exit 0; }

tree=$work/mimalloc
rm -rf "$tree"
cp -R "$upstream" "$tree"
for patch in "$here"/*.patch; do
    patch -p1 -s -d "$tree" <"$patch" || exit 1
done
includes="-I$tree/include -I$root/include -I$here"
set -e
$CC -O2 -DNDEBUG $includes -c "$tree/src/static.c" -o "$work/static-stock.o"
$CC -O2 -DNDEBUG -DMI_HOSTMEM $includes -c "$tree/src/static.c" -o "$work/static-hostmem.o"
$CC -O2 -DNDEBUG $includes "$tree/test/test-stress.c" "$work/static-stock.o" -pthread \
    -o "$work/stress-stock"
$CC -O2 -DNDEBUG $includes "$tree/test/test-stress.c" "$work/static-hostmem.o" "$library" \
    -pthread -o "$work/stress-hostmem"
set +e

# timed KIND THREADS: one run; prints its wall seconds
timed() {
    case $1 in
    stock) set -- "$work/stress-stock" "$2" ;;
    hostmem) set -- "$work/stress-hostmem" "$2" ;;
    compact) set -- env HOSTMEM_MI_COMPACT=1 "$work/stress-hostmem" "$2" ;;
    atonce) set -- env HOSTMEM_MI_PURGE_AT_ONCE=1 "$work/stress-hostmem" "$2" ;;
    esac
    started=$(date +%s.%N)
    "$@" >"$logs/run.log" 2>&1 || echo "bench: a run failed: $* (see $logs/run.log)" >&2
    awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f\n", b - a }'
}

median() {
    tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

kinds="stock hostmem"
[ "${BENCH_COMPACT:-0}" = 1 ] && kinds="$kinds compact"
[ "${BENCH_AT_ONCE:-0}" = 1 ] && kinds="$kinds atonce"
load=$(awk '{ print $1 }' /proc/loadavg)
echo "# mimalloc 2.0.9 test-stress (scale 25, 50 rounds), -O2 -DNDEBUG, $(nproc) CPUs, load $load"
echo "# medians of $runs alternating runs (wall seconds); ratio = hostmem / stock"
for t in $threads; do
    stock="" hostmem="" compact="" atonce=""
    for i in $(seq "$runs"); do
        for k in $kinds; do
            s=$(timed "$k" "$t")
            eval "$k=\"\$$k $s\""
        done
    done
    ms=$(echo "$stock" | median)
    mh=$(echo "$hostmem" | median)
    line="threads $t: stock $ms s, hostmem $mh s, ratio $(awk -v h="$mh" -v s="$ms" 'BEGIN { printf "%.2f", h / s }')"
    if [ -n "$compact" ]; then
        mc=$(echo "$compact" | median)
        line="$line; compact $mc s, ratio $(awk -v c="$mc" -v s="$ms" 'BEGIN { printf "%.2f", c / s }')"
    fi
    if [ -n "$atonce" ]; then
        ma=$(echo "$atonce" | median)
        line="$line; discard at once $ma s, ratio $(awk -v c="$ma" -v s="$ms" 'BEGIN { printf "%.2f", c / s }')"
    fi
    echo "$line"
    echo "#   runs: stock$stock; hostmem$hostmem${compact:+; compact$compact}${atonce:+; at once$atonce}"
    HOSTMEM_MI_REPORT=1 "$work/stress-hostmem" "$t" >"$logs/calls-$t.log" 2>&1
    grep '^hostmem_mi: hostmem_calls ' "$logs/calls-$t.log" | tail -1 | sed "s/^hostmem_mi: hostmem_calls/#   calls in one hostmem run:/"
done
