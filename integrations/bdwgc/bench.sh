#!/bin/sh
# bench.sh BUILD - bdwgc's dirty bits four ways: hostmem's write watch against
# stock bdwgc's own virtual dirty bits.
#
#   sh integrations/bdwgc/bench.sh BUILD     BUILD holds libhostmem.a (e.g. build/)
#
# The same Debian libgc 8.2.x sources, configured alike (threads, static,
# -O2 -g), run in incremental mode:
#   kernel    hostmem build (bdwgc-hostmem.patch, GWW_VDB), hostmem's kernel write watch
#   emulated  the same binary, HOSTMEM_EMULATE_WRITE_WATCH=1
#   soft      stock build, SOFT_VDB: soft-dirty bits (/proc/self/clear_refs and
#             /proc/self/pagemap), 8.2's default on Linux x86-64 where the
#             kernel has them (CONFIG_MEM_SOFT_DIRTY); measured only if the
#             stock gctest says "Using soft-dirty bit feature"
#   mprotect  stock build, GC_USE_GETWRITEWATCH=0: MPROTECT_VDB (8.2's runtime
#             switch between its two Linux dirty bits, os_dep.c soft_dirty_init);
#             also what the default falls back to without soft-dirty bits
# on two programs: gctest (GC_ENABLE_INCREMENTAL=1, GC_PRINT_STATS=1: its
# "Completed N collections in M ms" is the collector's total time in full
# collections, its "World-stopped marking took" lines the pauses) and
# bench_heap.c (BENCH_LIVE_MB, default 96, of live nodes and BENCH_MUTATIONS
# million mutations, default 8; its pauses are the world-stopped intervals
# bdwgc reports through GC_set_on_collection_event). Runs alternate (kernel
# emulated soft mprotect, kernel ...), BENCH_RUNS (5) of each; medians are
# printed, and each kind's wall and pause medians over the best stock kind's.
# The hostmem build is run.sh's (run first if missing). A benchmark: it
# asserts nothing; a failed run is counted in the last column.
set -u

if [ $# -ne 1 ]; then
    echo "usage: sh integrations/bdwgc/bench.sh BUILD" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "$1" && pwd) || exit 2
out=$build/integrations/bdwgc
work=$out/bench
logs=$work/logs
CC=${CC:-cc}
runs=${BENCH_RUNS:-5}
live=${BENCH_LIVE_MB:-96}
mutations=${BENCH_MUTATIONS:-8}
mkdir -p "$logs"

if [ ! -f "$out/threads/.libs/libgc.a" ] || [ ! -f "$out/stamp" ]; then
    sh "$here/run.sh" "$build" > "$logs/run.log" 2>&1
    [ -f "$out/threads/.libs/libgc.a" ] || { echo "bench: skipped: the hostmem bdwgc did not build (see $logs/run.log)"; exit 0; }
fi
tree=$(for dir in "$build"/src/libgc-*; do [ -f "$dir/os_dep.c" ] && echo "$dir"; done | sort | tail -1)
[ -n "$tree" ] || { echo "bench: skipped: no libgc source in $build/src"; exit 0; }

stock=$work/stock
if [ ! -f "$stock/gctest" ]; then
    rm -rf "$stock"
    mkdir -p "$stock"
    (
        unset MAKEFLAGS MFLAGS MAKELEVEL CFLAGS LDFLAGS LIBS
        cd "$stock" &&
            "$tree/configure" --enable-static --disable-shared --enable-cplusplus \
                --with-libatomic-ops=none --disable-dependency-tracking CFLAGS="-O2 -g" &&
            make -j2 && make -j2 gctest
    ) > "$logs/stock-build.log" 2>&1 || { echo "bench: skipped: stock bdwgc did not build (see $logs/stock-build.log)"; exit 0; }
fi
set -e
$CC -std=c11 -O2 -g -I"$tree/include" "$here/bench_heap.c" "$stock/.libs/libgc.a" -pthread -o "$work/heap-stock"
$CC -std=c11 -O2 -g -I"$tree/include" "$here/bench_heap.c" "$out/threads/.libs/libgc.a" "$out/gc_hostmem.o" \
    "$build/libhostmem_win32.a" "$build/libhostmem.a" -pthread -o "$work/heap-hostmem"
set +e

# one KIND PROGRAM: one run; prints "wall gc_ms pause_total_ms pause_max_ms" or "fail"
one() {
    case $1 in
    kernel) set -- "$2" hostmem env ;;
    emulated) set -- "$2" hostmem env HOSTMEM_EMULATE_WRITE_WATCH=1 ;;
    soft) set -- "$2" stock env ;;
    mprotect) set -- "$2" stock env GC_USE_GETWRITEWATCH=0 ;;
    esac
    program=$1
    build_kind=$2
    shift 2
    case $program in
    gctest)
        if [ "$build_kind" = hostmem ]; then binary=$out/threads/gctest; else binary=$stock/gctest; fi
        started=$(date +%s.%N)
        if "$@" GC_ENABLE_INCREMENTAL=1 GC_PRINT_STATS=1 "$binary" > "$logs/run.out" 2>&1; then
            awk -v a="$started" -v b="$(date +%s.%N)" '
                /^Completed [0-9]+ collections in/ { ms = $5 }
                /^World-stopped marking took/ { p = $4 + $6 / 1e6; total += p; if (p > max) max = p }
                END { printf "%.3f %s %.1f %.2f\n", b - a, ms, total, max }' "$logs/run.out"
        else
            echo fail
        fi
        ;;
    heap)
        started=$(date +%s.%N)
        if "$@" "$work/heap-$build_kind" "$live" "$mutations" > "$logs/run.out" 2>&1; then
            awk -v a="$started" -v b="$(date +%s.%N)" '
                /^bench_heap:/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
                END { printf "%.3f - %s %s\n", b - a, v["pause_total_ms"], v["pause_max_ms"] }' "$logs/run.out"
        else
            echo fail
        fi
        ;;
    esac
    cp "$logs/run.out" "$logs/last-$program-$kind.out"
}

median() {
    tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END {
        if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Which dirty bits the stock build really uses here (gctest says it with GC_PRINT_STATS).
vdb() {
    env "$@" GC_ENABLE_INCREMENTAL=1 GC_PRINT_STATS=1 "$stock/gctest" 2>&1 |
        grep -m1 -E 'Using soft-dirty bit feature|Soft-dirty bit is not supported|Running on old kernel' ||
        echo "MPROTECT_VDB (soft-dirty not tried)"
}
soft_vdb=$(vdb)
mprotect_vdb=$(vdb GC_USE_GETWRITEWATCH=0)
kinds="kernel emulated mprotect"
case $soft_vdb in
"Using soft-dirty bit feature") kinds="kernel emulated soft mprotect" ;;
esac
echo "# bdwgc $(basename "$tree") incremental, $(nproc) CPUs, $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# stock default: $soft_vdb; stock GC_USE_GETWRITEWATCH=0: $mprotect_vdb"
case $kinds in
*soft*) ;;
*) echo "# soft: not measured (this kernel has no soft-dirty bits; stock's default is mprotect here)" ;;
esac
echo "# medians of $runs alternating runs; bench_heap $live MiB live, $mutations M mutations"
echo "# gc_ms: gctest's collector time; pause: world-stopped, total and longest per run (ms)"
echo "# wall_ratio, pause_ratio: over the best stock kind (lowest median) on that program"
printf '%-8s %-9s %9s %9s %14s %14s %10s %11s %6s\n' program kind wall_s gc_ms pause_total_ms \
    pause_max_ms wall_ratio pause_ratio failed
for program in gctest heap; do
    for kind in $kinds; do eval "r_${kind}_wall='' r_${kind}_gc='' r_${kind}_pt='' r_${kind}_pm='' r_${kind}_fail=0"; done
    i=0
    while [ "$i" -lt "$runs" ]; do
        for kind in $kinds; do
            result=$(one "$kind" "$program")
            if [ "$result" = fail ]; then
                eval "r_${kind}_fail=\$((r_${kind}_fail + 1))"
                continue
            fi
            set -- $result
            eval "r_${kind}_wall=\"\$r_${kind}_wall $1\""
            [ "$2" != - ] && eval "r_${kind}_gc=\"\$r_${kind}_gc $2\""
            [ "$3" != - ] && eval "r_${kind}_pt=\"\$r_${kind}_pt $3\""
            [ "$4" != - ] && eval "r_${kind}_pm=\"\$r_${kind}_pm $4\""
        done
        i=$((i + 1))
    done
    best_wall='' best_pause=''
    for kind in $kinds; do
        eval "wall=\$r_${kind}_wall pt=\$r_${kind}_pt"
        eval "m_${kind}_wall=$(echo "$wall" | median) m_${kind}_pt=$(echo "$pt" | median)"
        case $kind in
        soft | mprotect)
            eval "w=\$m_${kind}_wall p=\$m_${kind}_pt"
            best_wall=$(awk -v a="$w" -v b="$best_wall" 'BEGIN { print (b == "" || a + 0 < b + 0) ? a : b }')
            best_pause=$(awk -v a="$p" -v b="$best_pause" 'BEGIN { print (b == "" || a + 0 < b + 0) ? a : b }')
            ;;
        esac
    done
    for kind in $kinds; do
        eval "gc=\$r_${kind}_gc pm=\$r_${kind}_pm nfail=\$r_${kind}_fail w=\$m_${kind}_wall p=\$m_${kind}_pt"
        printf '%-8s %-9s %9s %9s %14s %14s %10s %11s %6s\n' "$program" "$kind" "$w" \
            "$(echo "$gc" | median)" "$p" "$(echo "$pm" | median)" \
            "$(awk -v a="$w" -v b="$best_wall" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "-" }')" \
            "$(awk -v a="$p" -v b="$best_pause" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "-" }')" "$nfail"
    done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
