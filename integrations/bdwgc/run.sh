#!/bin/sh
# bdwgc (the Boehm-Demers-Weiser collector) on hostmem's write watch: fetches
# Debian's libgc source, patches it (bdwgc-hostmem.patch) so that a Linux build
# takes its heap sections from one IHostMemoryManager with MEM_WRITE_WATCH and
# reads dirty pages with GetWriteWatch, builds it with and without threads,
# and runs the programs of its own `make check` on it in each mode:
#
#   full        not incremental (no write watch asked)
#   incremental GC_ENABLE_INCREMENTAL=1, the kernel's write watch
#   emulated    GC_ENABLE_INCREMENTAL=1, HOSTMEM_EMULATE_WRITE_WATCH=1
#
# then budget.c under commit budgets. Usage:
#
#   sh integrations/bdwgc/run.sh BUILD
#
# BUILD is hostmem's build directory (libhostmem.a, libhostmem_win32.a); the
# script works only under BUILD/src (the fetched source, shared) and
# BUILD/integrations/bdwgc. It prints one line a group,
#   bdwgc_<group>: N passed, N failed
# with a FAIL line for each failure, and exits non-zero on any. Without the
# source: `bdwgc: skipped: <why>`, unless HOSTMEM_REQUIRE_INTEGRATIONS=1 (CI).
#
# Each program leaves a line of the manager's counts at exit (gc_hostmem.c,
# GC_HOSTMEM_REPORT); the checks read them. A test that failed after hostmem
# refused a write-watched reservation for memory (the emulation keeps 1,024
# a manager, docs/writewatch.md) fails, and its FAIL line says so.
set -u

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: sh integrations/bdwgc/run.sh BUILD   (BUILD: hostmem's build directory)" >&2
    exit 2
fi
BUILD=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$BUILD/integrations/bdwgc
SRC=$BUILD/src
CC=${CC:-cc}
mkdir -p "$OUT"

total_failed=0
passed=0
failed=0

pass() { passed=$((passed + 1)); }
fail() {
    failed=$((failed + 1))
    echo "  FAIL bdwgc_$group $*"
}
end_group() {
    echo "bdwgc_$group: $passed passed, $failed failed"
    total_failed=$((total_failed + failed))
    passed=0
    failed=0
}
finish() {
    [ "$total_failed" -eq 0 ]
    exit $?
}
skip() {
    if [ "${HOSTMEM_REQUIRE_INTEGRATIONS:-0}" = 1 ]; then
        echo "  FAIL bdwgc: $1 (HOSTMEM_REQUIRE_INTEGRATIONS=1: CI must not skip)"
        echo "bdwgc: 0 passed, 1 failed"
        exit 1
    fi
    echo "bdwgc: skipped: $1"
    echo "bdwgc: 0 passed, 0 failed"
    exit 0
}

# ---- the source -------------------------------------------------------------
find_source() {
    for dir in "$SRC"/libgc-*; do
        [ -f "$dir/os_dep.c" ] && [ -x "$dir/configure" ] && echo "$dir"
    done | sort | tail -1
}
for lib in libhostmem.a libhostmem_win32.a; do
    if [ ! -f "$BUILD/$lib" ]; then
        echo "  FAIL bdwgc: $BUILD/$lib is missing (run make first)"
        echo "bdwgc: 0 passed, 1 failed"
        exit 1
    fi
done
tree=$(find_source)
if [ -z "$tree" ]; then
    command -v apt-get >/dev/null 2>&1 || skip "apt-get is not available to fetch Debian's libgc source"
    mkdir -p "$SRC"
    if ! (cd "$SRC" && apt-get source libgc) > "$OUT/apt-get-source.log" 2>&1; then
        skip "apt-get source libgc failed: $(grep -E '^E:' "$OUT/apt-get-source.log" | head -1) (no deb-src entry? see $OUT/apt-get-source.log)"
    fi
    tree=$(find_source)
    [ -n "$tree" ] || skip "apt-get source libgc unpacked no source tree (is dpkg-dev installed? see $OUT/apt-get-source.log)"
fi

# ---- the builds -------------------------------------------------------------
group=build
pass # the source is here

OUR_CFLAGS="-std=c11 -O2 -g -Wall -Wextra -Werror -I$HERE -I$ROOT/include"
if $CC $OUR_CFLAGS -c "$HERE/gc_hostmem.c" -o "$OUT/gc_hostmem.o" > "$OUT/glue-build.log" 2>&1; then
    pass
else
    fail "gc_hostmem.c did not build: $(head -5 "$OUT/glue-build.log" | tr '\n' ' ')"
    end_group
    finish
fi

patched=$OUT/libgc-hostmem
stamp=$(printf '%s\n' "$tree" "$CC" | cat - "$HERE/bdwgc-hostmem.patch" "$HERE/gc_hostmem.h" \
    "$HERE/gc_hostmem.c" "$ROOT/include/hostmem.h" | cksum)
if [ "$(cat "$OUT/stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$patched" "$OUT/threads" "$OUT/nothreads" "$OUT/stamp"
    cp -R "$tree" "$patched"
    if ! (cd "$patched" && patch -p1 --batch --forward < "$HERE/bdwgc-hostmem.patch") > "$OUT/patch.log" 2>&1; then
        fail "bdwgc-hostmem.patch does not apply to $(basename "$tree"): $(tail -2 "$OUT/patch.log" | tr '\n' ' ')"
        end_group
        finish
    fi
fi
pass

# build NAME CONFIGURE-ARGS...: the patched tree configured as Debian does
# (static here, so that every test program links the glue), with GC_HOSTMEM,
# its library and its check programs made.
build() {
    name=$1
    shift
    dir=$OUT/$name
    [ -f "$dir/gctest" ] && [ -f "$OUT/stamp" ] && return 0
    rm -rf "$dir"
    mkdir -p "$dir"
    (
        unset MAKEFLAGS MFLAGS MAKELEVEL CFLAGS LDFLAGS LIBS
        cd "$dir" &&
            "$patched/configure" --enable-static --disable-shared --enable-cplusplus \
                --with-libatomic-ops=none --disable-dependency-tracking "$@" \
                CFLAGS="-O2 -g -DGC_HOSTMEM -I$HERE -I$ROOT/include" \
                LIBS="$OUT/gc_hostmem.o $BUILD/libhostmem_win32.a $BUILD/libhostmem.a -lpthread" &&
            make -j2 &&
            make -j2 check TESTS=
    ) > "$OUT/$name-build.log" 2>&1
}
build_ok=1
for variant in threads nothreads; do
    case $variant in
    threads) build threads ;;
    nothreads) build nothreads --disable-threads ;;
    esac
    if [ -f "$OUT/$variant/gctest" ]; then
        pass
    else
        build_ok=0
        fail "the $variant build failed: $(grep -E 'error' "$OUT/$variant-build.log" | head -3 | tr '\n' ' ')"
    fi
done
[ "$build_ok" = 1 ] && echo "$stamp" > "$OUT/stamp"

# By construction: no object of the collector maps memory itself, and its
# heap comes from the glue.
libgc=$OUT/threads/.libs/libgc.a
if [ -f "$libgc" ]; then
    direct=$(nm -A -u "$libgc" 2>/dev/null |
        grep -E ' (mmap|mmap64|munmap|mremap|mprotect|madvise|sbrk|brk)$' | tr '\n' ' ')
    if [ -z "$direct" ]; then pass; else fail "bdwgc still calls the kernel itself: $direct"; fi
    for name in gc_hostmem_VirtualAlloc gc_hostmem_VirtualFree gc_hostmem_VirtualQuery gc_hostmem_GetProcAddress; do
        if nm -u "$libgc" 2>/dev/null | grep -q " $name\$"; then pass; else fail "libgc.a does not call $name"; fi
    done
fi
end_group
[ "$build_ok" = 1 ] || finish

# ---- bdwgc's own tests, in each mode ----------------------------------------
# check VARIANT MODE: `make check` of that build with the mode's environment;
# every test passes, and every process's manager validated against the kernel;
# gctest said it reads GetWriteWatch, and the manager counted GetWriteWatch
# calls that reported pages; middletest read write watch only when incremental.
check() {
    variant=$1
    mode=$2
    group=${variant}_$mode
    dir=$OUT/$variant
    report=$OUT/run/$group.report
    rm -f "$report"
    case $mode in
    full) set -- ;;
    incremental) set -- GC_ENABLE_INCREMENTAL=1 ;;
    emulated) set -- GC_ENABLE_INCREMENTAL=1 HOSTMEM_EMULATE_WRITE_WATCH=1 ;;
    esac
    (
        unset MAKEFLAGS MFLAGS MAKELEVEL
        cd "$dir" && env "$@" GC_HOSTMEM_REPORT="$report" make -j2 check
    ) > "$OUT/run/$group.log" 2>&1
    ran=0
    for trs in "$dir"/*.trs "$dir"/*/*.trs; do
        [ -f "$trs" ] || continue
        test=$(basename "$trs" .trs)
        ran=$((ran + 1))
        result=$(sed -n 's/^:test-result: //p' "$trs" | head -1)
        if [ "$result" = PASS ]; then
            pass
        elif grep -q "^gc_hostmem_refused: program=$test " "$report" 2>/dev/null; then
            fail "$test: $result after hostmem refused a write-watched reservation ($(grep -h "^gc_hostmem_refused: program=$test " "$report" | head -1 | sed 's/.* watched=/made before: /')); $(grep -h 'GC Warning: Out of' "${trs%.trs}.log" | head -1)"
        else
            fail "$test: $result: $(grep -v '^#' "${trs%.trs}.log" | tail -2 | tr '\n' ' ')"
        fi
    done
    [ "$ran" -gt 0 ] || fail "make check ran no test: $(tail -3 "$OUT/run/$group.log" | tr '\n' ' ')"
    # every manager validated (a process that aborted left no line; its test failed above)
    lines=$(grep -c '^gc_hostmem: ' "$report" 2>/dev/null)
    invalid=$(grep '^gc_hostmem: ' "$report" 2>/dev/null | grep -v ' validate=ok$')
    if [ "${lines:-0}" -gt 0 ] && [ -z "$invalid" ]; then
        pass
    else
        fail "hostmem_validate after the tests (${lines:-0} reports): $(printf '%s' "$invalid" | sed 's/.* program=\([^ ]*\) .* validate=/\1: /' | head -3 | tr '\n' ' ')"
    fi
    gctest=$(grep '^gc_hostmem: program=gctest ' "$report" 2>/dev/null | head -1)
    gets=$(printf '%s' "$gctest" | sed -n 's/.* ww_gets=\([0-9]*\).*/\1/p')
    pages=$(printf '%s' "$gctest" | sed -n 's/.* ww_pages=\([0-9]*\).*/\1/p')
    # gctest turns incremental mode on itself (GC_enable_incremental), in
    # every mode; middletest does not, so only the environment's mode decides.
    middle=$(grep '^gc_hostmem: program=middletest ' "$report" 2>/dev/null | head -1)
    middle_gets=$(printf '%s' "$middle" | sed -n 's/.* ww_gets=\([0-9]*\).*/\1/p')
    if [ "$mode" = full ]; then
        if [ "${middle_gets:-x}" = 0 ]; then pass; else fail "middletest, not incremental, read write watch (ww_gets=${middle_gets:-none})"; fi
    elif [ "${middle_gets:-0}" -gt 0 ]; then
        pass
    else
        fail "middletest, incremental, read no write watch (ww_gets=${middle_gets:-none})"
    fi
    if grep -q 'Using GetWriteWatch-based implementation' "$dir/gctest.log"; then
        pass
    else
        fail "gctest does not say 'Using GetWriteWatch-based implementation'"
    fi
    if [ -n "$gets" ] && [ "$gets" -gt 0 ] && [ "${pages:-0}" -gt 0 ]; then
        pass
    else
        fail "gctest read no dirty page from write watch (ww_gets=${gets:-none} ww_pages=${pages:-none})"
    fi
    [ -n "$gctest" ] && echo "bdwgc $group gctest: $(printf '%s' "$gctest" | sed 's/^gc_hostmem: program=gctest pid=[0-9]* //')"
    end_group
}

rm -rf "$OUT/run"
mkdir -p "$OUT/run"
for variant in threads nothreads; do
    for mode in full incremental emulated; do
        check "$variant" "$mode"
    done
done

# ---- under a commit budget ----------------------------------------------------
# budget.c keeps 16 MiB live and allocates 1 GiB. Under 32 MiB the heap cannot
# grow to what it grows to unbudgeted (46 MiB committed, 55 MiB incremental), so the collector
# must collect instead: the program ends with its lists intact, the budget
# refused growth, committed bytes never passed the budget, and the manager
# validated.
group=budget
prog=$OUT/budget
if $CC $OUR_CFLAGS -I"$patched/include" "$HERE/budget.c" "$OUT/threads/.libs/libgc.a" "$OUT/gc_hostmem.o" \
    "$BUILD/libhostmem_win32.a" "$BUILD/libhostmem.a" -pthread -o "$prog" > "$OUT/run/budget-build.log" 2>&1; then
    pass
    # Incremental too: bdwgc then grows before it collects (GC_collect_or_expand
    # collects first only when not incremental), so the budget's refusal is
    # what makes it collect.
    for mode in full incremental emulated; do
        for budget in 32M; do
            name=$mode-$budget
            report=$OUT/run/budget-$name.report
            rm -f "$report"
            case $mode in
            full) set -- ;;
            incremental) set -- GC_ENABLE_INCREMENTAL=1 ;;
            emulated) set -- GC_ENABLE_INCREMENTAL=1 HOSTMEM_EMULATE_WRITE_WATCH=1 ;;
            esac
            env "$@" GC_HOSTMEM_BUDGET=$budget GC_HOSTMEM_REPORT="$report" "$prog" \
                > "$OUT/run/budget-$name.out" 2> "$OUT/run/budget-$name.err"
            rc=$?
            line=$(grep '^gc_hostmem: ' "$report" 2>/dev/null | head -1)
            limit=$(printf '%s' "$line" | sed -n 's/.* budget=\([0-9]*\).*/\1/p')
            peak=$(printf '%s' "$line" | sed -n 's/.* peak_committed=\([0-9]*\).*/\1/p')
            refusals=$(printf '%s' "$line" | sed -n 's/.* refusals=\([0-9]*\).*/\1/p')
            if [ "$rc" -eq 0 ] && grep -q '^budget: ok' "$OUT/run/budget-$name.out"; then
                pass
            else
                fail "$name: exit $rc: $(cat "$OUT/run/budget-$name.out" | tr '\n' ' ')"
            fi
            if [ -n "$peak" ] && [ -n "$limit" ] && [ "$limit" -gt 0 ] && [ "$peak" -le "$limit" ] &&
                [ "${refusals:-0}" -gt 0 ]; then
                pass
            else
                fail "$name: the budget did not bound the heap (budget ${limit:-none}, peak ${peak:-none}, refusals ${refusals:-none})"
            fi
            case $line in
            *" validate=ok") pass ;;
            *) fail "$name: hostmem_validate: ${line##* validate=}" ;;
            esac
            echo "bdwgc budget $name: $(cat "$OUT/run/budget-$name.out") (peak committed $peak of $limit, $refusals refusals)"
        done
    done
else
    fail "budget.c did not build: $(head -5 "$OUT/run/budget-build.log" | tr '\n' ' ')"
fi
end_group

finish
