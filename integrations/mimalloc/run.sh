#!/bin/sh
# run.sh BUILD - mimalloc 2.0.9, built from Debian's source package, on hostmem:
# every OS call of mimalloc goes through one IHostMemoryManager (os_hostmem.c),
# and mimalloc's own tests prove it (README.md in this directory says what runs).
#
#   sh integrations/mimalloc/run.sh BUILD     BUILD holds libhostmem.a (e.g. build/)
#
# Gets the sources with `apt-get source mimalloc` into BUILD/src (once), copies
# them to BUILD/integrations/mimalloc/mimalloc, applies this directory's patches,
# builds release, debug (MI_DEBUG=3) and secure (MI_SECURE=4) variants with $CC
# (cc) -O2, and runs them. Prints one line per test group,
# "mimalloc_<group>: N passed, N failed", after the "  FAIL ..." lines that explain
# its failures, and "# ..." lines with figures; exits non-zero if anything failed.
# Without the sources: "mimalloc: skipped: <why>" and "mimalloc: 0 passed,
# 0 failed", exit 0 - a failure instead when HOSTMEM_REQUIRE_INTEGRATIONS=1.
# Program output goes to BUILD/integrations/mimalloc/logs/.
set -u

if [ $# -ne 1 ]; then
    echo "usage: sh integrations/mimalloc/run.sh BUILD" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "$1" 2>/dev/null && pwd) || {
    echo "  FAIL mimalloc: no build directory $1"
    echo "mimalloc: 0 passed, 1 failed"
    exit 1
}
work=$build/integrations/mimalloc
logs=$work/logs
CC=${CC:-cc}
library=$build/libhostmem.a
if [ ! -f "$library" ]; then
    echo "  FAIL mimalloc: $library is missing (build hostmem first: make)"
    echo "mimalloc: 0 passed, 1 failed"
    exit 1
fi
mkdir -p "$logs"

say() { printf '%s\n' "$*"; }

skip() {
    say "mimalloc: skipped: $1"
    if [ "${HOSTMEM_REQUIRE_INTEGRATIONS:-0}" = 1 ]; then
        say "  FAIL mimalloc: the sources are required here (HOSTMEM_REQUIRE_INTEGRATIONS=1)"
        say "mimalloc: 0 passed, 1 failed"
        exit 1
    fi
    say "mimalloc: 0 passed, 0 failed"
    exit 0
}

# ---- the sources: Debian's, fetched once into BUILD/src ------------------------------

. "$here/fetch.sh"
upstream=$(mimalloc_fetch "$build" "$logs") || skip "$upstream"
version=$(mimalloc_version "$upstream")
[ "$version" = 209 ] ||
    skip "$(basename "$upstream") is mimalloc version $version; the OS layer is written for 2.0.9"

# ---- accounting ---------------------------------------------------------------------------

group=
group_passed=0
group_failed=0
any_failed=0

begin() {
    group=$1
    group_passed=0
    group_failed=0
}
pass() { group_passed=$((group_passed + ${1:-1})); }
fail() {
    group_failed=$((group_failed + 1))
    say "  FAIL mimalloc_$group: $*"
}
end() {
    say "mimalloc_$group: $group_passed passed, $group_failed failed"
    [ "$group_failed" -eq 0 ] || any_failed=1
}
# expect DESCRIPTION COMMAND...: one test, passed when the command succeeds
expect() {
    description=$1
    shift
    if "$@"; then pass; else fail "$description"; fi
}

# ---- patch and build ---------------------------------------------------------------------

tree=$work/mimalloc
bin=$work/bin
begin build
rm -rf "$tree" "$bin"
mkdir -p "$bin"
cp -R "$upstream" "$tree"
for patch in "$here"/*.patch; do
    if patch -p1 -s -d "$tree" <"$patch" >"$logs/patch-$(basename "$patch").log" 2>&1; then
        pass
    else
        fail "$(basename "$patch") does not apply: $(head -3 "$logs/patch-$(basename "$patch").log")"
    fi
done

variants="release debug secure"
flags_of() {
    case $1 in
    release) say "-DNDEBUG" ;;
    debug) say "-DMI_DEBUG=3" ;;
    secure) say "-DNDEBUG -DMI_SECURE=4" ;;
    esac
}
mi_includes="-I$tree/include"
our_includes="-I$root/include -I$here"
ours="-std=c11 -O2 -Wall -Wextra -Werror"

# compile NAME COMMAND...: one build step, logged
compile() {
    name=$1
    shift
    if "$@" >"$logs/build-$name.log" 2>&1; then
        pass
    else
        fail "building $name: $(grep -m3 -E 'error|undefined' "$logs/build-$name.log" | tr '\n' ' ')"
    fi
}

for v in $variants; do
    f=$(flags_of $v)
    # The layer on its own, as strict as the project's code (mimalloc's unity build
    # below compiles it with mimalloc's own flags).
    compile "os_hostmem-$v" $CC $ours $f -DMI_HOSTMEM $mi_includes $our_includes -fsyntax-only \
        "$here/os_hostmem.c"
    compile "static-$v" $CC -O2 $f -DMI_HOSTMEM $mi_includes $our_includes \
        -c "$tree/src/static.c" -o "$bin/static-$v.o"
    compile "static-override-$v" $CC -O2 $f -DMI_HOSTMEM -DMI_MALLOC_OVERRIDE $mi_includes \
        $our_includes -c "$tree/src/static.c" -o "$bin/static-override-$v.o"
    for t in api stress; do
        compile "test-$t-$v" $CC -O2 $f $mi_includes "$tree/test/test-$t.c" "$bin/static-$v.o" \
            "$library" -pthread -o "$bin/test-$t-$v"
    done
    for t in main-override main-override-static; do
        compile "$t-$v" $CC -O2 $f $mi_includes "$tree/test/$t.c" "$bin/static-override-$v.o" \
            "$library" -pthread -o "$bin/$t-$v"
    done
    compile "override_check-$v" $CC $ours $f $mi_includes $our_includes "$here/override_check.c" \
        "$bin/static-override-$v.o" "$library" -pthread -o "$bin/override_check-$v"
    compile "budget_driver-$v" $CC $ours $f $mi_includes $our_includes "$here/budget_driver.c" \
        "$bin/static-$v.o" "$library" -pthread -o "$bin/budget_driver-$v"
done
end

# ---- running a program and reading the layer's exit report -------------------------------

# launch NAME [VAR=value...] PROGRAM [ARGS...]: runs with the layer's exit report on;
# sets log, rc and seconds
launch() {
    name=$1
    shift
    log=$logs/$name.log
    started=$(date +%s.%N)
    timeout 900 env HOSTMEM_MI_REPORT=1 "$@" >"$log" 2>&1
    rc=$?
    seconds=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
}

# report LINE KEY: a number from the layer's exit report in $log ("" if absent)
report() {
    grep "^hostmem_mi: $1 " "$log" | tail -1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# summary PROGRAM: adds the "PROGRAM: N passed, N failed" of one of our drivers and
# repeats its FAIL lines
summary() {
    line=$(grep -E "^$1: [0-9]+ passed, [0-9]+ failed" "$log" | tail -1)
    if [ -z "$line" ]; then
        fail "$name: no summary line (exit $rc, $log)"
        return
    fi
    p=$(say "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')
    f=$(say "$line" | sed -E 's/.*, ([0-9]+) failed.*/\1/')
    pass "$p"
    group_failed=$((group_failed + f))
    grep '^  FAIL ' "$log" | sed "s/^  FAIL /  FAIL mimalloc_$group: $name: /"
}

# verify [destroy] [budget] [warnings]: the checks every run gets, from $log and $rc.
#   destroy   mimalloc was told to destroy on exit: nothing may be left
#   budget    refusals for want of memory are the point (and mimalloc says so)
#   warnings  mimalloc may warn (an option it cannot honour)
verify() {
    destroy=0 budget=0 warnings=0
    for option in "$@"; do
        case $option in
        destroy) destroy=1 ;;
        budget) budget=1 ;;
        warnings) warnings=1 ;;
        esac
    done
    expect "$name: exit status 0 (got $rc; $log)" [ "$rc" -eq 0 ]
    if ! grep -q '^hostmem_mi: stats=' "$log"; then
        fail "$name: no exit report from the layer ($log)"
        return
    fi
    valid=$(grep '^hostmem_mi: stats=' "$log" | tail -1 | sed 's/.*validate=\([A-Za-z_0-9]*\).*/\1/')
    expect "$name: hostmem_validate(HOSTMEM_VALIDATE_KERNEL) at exit is S_OK: $(grep '^hostmem_mi: stats=' "$log" | tail -1)" \
        [ "$valid" = S_OK ]
    if [ $budget = 1 ]; then
        pattern='assertion failed'
    elif [ $warnings = 1 ]; then
        pattern='mimalloc: error|assertion failed'
    else
        pattern='mimalloc: (warning|error)|assertion failed'
    fi
    # test-api asks for impossible sizes on purpose; debug builds say so
    deliberate='request is too large|memory \(9223372036854775808 bytes\)'
    complaints=$(grep -E "$pattern" "$log" | grep -c -v -E "$deliberate")
    expect "$name: mimalloc complained $complaints times: $(grep -E "$pattern" "$log" | grep -v -E "$deliberate" | head -1)" \
        [ "$complaints" -eq 0 ]

    reserve=$(report layer_calls reserve)
    expect "$name: mimalloc's memory came through the layer (reservations: ${reserve:-none})" \
        [ "${reserve:-0}" -gt 0 ]

    # Every call went to the one manager: hostmem counted exactly the calls the layer made.
    commit=$(report layer_calls commit) reset=$(report layer_calls reset)
    decommit=$(report layer_calls decommit) release=$(report layer_calls release)
    protect=$(report layer_calls protect) query=$(report layer_calls query)
    mismatch=
    for pair in "VirtualAlloc $((reserve + commit + reset))" "VirtualFree $((release + decommit))" \
        "VirtualProtect $protect" "VirtualQuery $query" "reserve $reserve" "commit $commit" \
        "reset $reset" "decommit $decommit" "release $release"; do
        key=${pair% *}
        counted=$(report hostmem_calls "$key")
        [ "$counted" = "${pair#* }" ] || mismatch="$mismatch $key: hostmem ${counted:-?}, layer ${pair#* };"
    done
    expect "$name: hostmem's per-method counts differ from the layer's:$mismatch" [ -z "$mismatch" ]

    reservations=$(report left reservations)
    live=$(report layer_calls live_reservations)
    expect "$name: hostmem holds $reservations reservations, the layer $live" [ "$reservations" = "$live" ]

    if [ $budget = 0 ]; then
        # The refusals a run without a budget may meet, each accounted for: an address
        # already in use (the layer tries the next), large pages the kernel has not got
        # (hostmem counts the kernel's refusal), and a guard page mimalloc decommitted
        # (VirtualProtect needs committed pages).
        refused=$(report layer_calls reserve_refused)
        misses=$(($(report layer_calls window_misses) + $(report layer_calls aligned_retries)))
        no_large=$(($(report layer_calls large_tries) - $(report layer_calls large_granted)))
        oom=$(report layer_calls out_of_memory)
        refusals=$(report left budget_refusals)
        os_refusals=$(report left os_refusals)
        fine=no
        [ "$oom $refusals" = "0 0" ] && [ "$os_refusals" -le "$no_large" ] && fine=yes
        expect "$name: nothing refused for want of memory without a budget (out_of_memory=$oom budget_refusals=$refusals os_refusals=$os_refusals, large pages refused $no_large)" \
            [ $fine = yes ]
        expect "$name: every refused reservation ($refused) was an address in use ($misses) or large pages not to be had ($no_large)" \
            [ "$refused" -eq $((misses + no_large)) ]
        others="$(report layer_calls commit_refused) $(report layer_calls decommit_refused) $(report layer_calls reset_refused) $(report layer_calls release_refused)"
        expect "$name: no commit, decommit, reset or release refused (refused: $others)" \
            [ "$others" = "0 0 0 0" ]
        expect "$name: every refused VirtualProtect was of a decommitted guard page" \
            [ "$(report layer_calls protect_refused)" -le "$(report layer_calls guard_on_reserved)" ]
    fi
    if [ $destroy = 1 ]; then
        committed=$(report left committed_bytes)
        expect "$name: with destroy_on_exit nothing is left ($reservations reservations, $committed committed bytes)" \
            [ "$reservations $committed" = "0 0" ]
    fi
}

# calls: what a run asked of hostmem (hostmem's own counts)
calls() {
    say "# $name: $seconds s; VirtualAlloc $(report hostmem_calls VirtualAlloc) (reserve $(report hostmem_calls reserve), commit $(report hostmem_calls commit), reset $(report hostmem_calls reset)), VirtualFree $(report hostmem_calls VirtualFree) (decommit $(report hostmem_calls decommit), release $(report hostmem_calls release)), VirtualProtect $(report hostmem_calls VirtualProtect), VirtualQuery $(report hostmem_calls VirtualQuery); peak committed $(report left peak_committed_bytes) bytes"
}

# test_api: adds mimalloc's own test-api counts ("succeeded: N", "failed   : N")
test_api() {
    ok=$(sed -n 's/^succeeded: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    bad=$(sed -n 's/^failed *: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    if [ -z "$ok" ] || [ -z "$bad" ]; then
        fail "$name: test-api printed no summary ($log)"
        return
    fi
    pass "$ok"
    if [ "$bad" -gt 0 ]; then
        group_failed=$((group_failed + bad))
        grep 'FAILED:' "$log" | sed "s/^ *FAILED: /  FAIL mimalloc_$group: $name: /"
    fi
}

# ---- the tests, per variant -------------------------------------------------------------------

for v in $variants; do
    [ -x "$bin/test-api-$v" ] || continue

    # mimalloc's test-api, then again told to destroy on exit
    begin "api_$v"
    launch "test-api-$v" "$bin/test-api-$v"
    test_api
    verify
    launch "test-api-$v-destroy" MIMALLOC_DESTROY_ON_EXIT=1 "$bin/test-api-$v"
    test_api
    verify destroy
    end

    # mimalloc's test-stress at its default arguments (32 threads, scale 25, 50 rounds)
    begin "stress_$v"
    launch "test-stress-$v" "$bin/test-stress-$v"
    verify
    calls
    end

    # threads come and go, then mimalloc destroys everything on exit
    begin "destroy_$v"
    launch "test-stress-$v-destroy" MIMALLOC_DESTROY_ON_EXIT=1 "$bin/test-stress-$v" 8 25 10
    verify destroy
    end

    # mimalloc as the process's malloc: hostmem's manager is created from inside malloc
    begin "override_$v"
    for t in main-override main-override-static; do
        launch "$t-$v" "$bin/$t-$v"
        verify
    done
    launch "override_check-$v" "$bin/override_check-$v"
    summary override_check
    verify
    launch "override_check-$v-destroy" MIMALLOC_DESTROY_ON_EXIT=1 "$bin/override_check-$v"
    summary override_check
    verify destroy
    end

    # a budget far below what four threads want; eager and lazy commit
    begin "budget_$v"
    launch "budget_driver-$v" "$bin/budget_driver-$v" 48 3
    summary budget_driver
    verify budget
    say "$(grep '^# ' "$log" | sed "s/^# /# $name: /" | head -3)"
    launch "budget_driver-$v-lazy" MIMALLOC_EAGER_COMMIT=0 "$bin/budget_driver-$v" 48 3
    summary budget_driver
    verify budget
    end
done

# ---- mimalloc's options that change what it asks of the OS (release build) ---------------

if [ -x "$bin/test-api-release" ]; then
    begin options
    # Large OS pages: tried for every segment, granted only from the kernel's huge page
    # pool. As root the pool grows by 64 pages (two segments) for the run and is restored.
    pool=/proc/sys/vm/nr_hugepages
    pool_before=
    if [ "$(id -u)" = 0 ] && [ -w $pool ]; then
        pool_before=$(cat $pool)
        trap 'echo "$pool_before" > /proc/sys/vm/nr_hugepages' EXIT INT TERM
        echo $((pool_before + 64)) >$pool 2>/dev/null
    fi
    free_pages=$(awk '/^HugePages_Free:/ { print $2 }' /proc/meminfo)
    launch "test-api-large-pages" MIMALLOC_LARGE_OS_PAGES=1 "$bin/test-api-release"
    test_api
    verify
    tries=$(report layer_calls large_tries)
    granted=$(report layer_calls large_granted)
    say "# $name: $free_pages free huge pages; large pages asked $tries times, granted $granted"
    expect "$name: mimalloc asked for large pages" [ "${tries:-0}" -gt 0 ]
    if [ "${free_pages:-0}" -ge 16 ]; then
        expect "$name: large pages granted from the huge page pool" [ "${granted:-0}" -gt 0 ]
    else
        expect "$name: no large page granted without a huge page pool ($granted)" [ "$granted" = 0 ]
    fi
    if [ -n "$pool_before" ]; then
        echo "$pool_before" >$pool 2>/dev/null
        trap - EXIT INT TERM
    fi

    # 1 GiB huge OS pages reserved at start: refused (or granted) cleanly, mimalloc warns
    launch "test-api-huge-os-pages" MIMALLOC_RESERVE_HUGE_OS_PAGES=1 "$bin/test-api-release"
    test_api
    verify warnings

    # an arena of OS memory reserved at start (mimalloc's arena path and its metadata)
    launch "test-api-reserve-os-memory" MIMALLOC_RESERVE_OS_MEMORY=256M "$bin/test-api-release"
    test_api
    verify

    # page reset (MEM_RESET), lazy commit, hostmem's compact mode
    launch "test-stress-page-reset" MIMALLOC_PAGE_RESET=1 "$bin/test-stress-release" 8 25 10
    verify
    expect "$name: pages were reset through VirtualAlloc(MEM_RESET)" [ "$(report layer_calls reset)" -gt 0 ]
    launch "test-stress-lazy-commit" MIMALLOC_EAGER_COMMIT=0 "$bin/test-stress-release" 8 25 10
    verify
    launch "test-stress-compact" HOSTMEM_MI_COMPACT=1 "$bin/test-stress-release" 8 25 10
    verify
    end
fi

exit $any_failed
