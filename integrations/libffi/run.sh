#!/bin/sh
# libffi's closures on hostmem: fetches Debian's libffi source, builds it with
# its closure allocator (dlmalloc) on dlmalloc's own Windows memory path, whose
# VirtualAlloc, VirtualQuery and VirtualFree are hostmem's Win32 face, runs
# libffi's own test suite (DejaGnu) on it, and closure_check, a program of
# ours that makes, calls and frees many closures across threads.
#
#   sh integrations/libffi/run.sh BUILD
#
# BUILD is hostmem's build directory (it holds libhostmem.so and
# libhostmem_win32.so: libffi is a shared library, and it and the programs
# must reach the one process-wide manager of the same libhostmem_win32); this
# script works only under BUILD/src (the fetched source, shared with other
# integrations) and BUILD/integrations/libffi (everything else). It prints one
# line per group,
#   libffi_<group>: N passed, N failed
# with a FAIL line for each failure and "# ..." lines with figures
# (tests/integration.sh adds the groups up), and exits non-zero on any
# failure. Without the source, or without DejaGnu's runtest, it says
# `libffi: skipped: <why>` and `libffi: 0 passed, 0 failed` and exits 0,
# unless HOSTMEM_REQUIRE_INTEGRATIONS=1 (CI), which makes that a failure.
#
# The groups (README.md in this directory says why each check is there):
#   build     the source, the patch, the build with Debian's configuration plus
#             -DFFI_HOSTMEM=1; by construction no object of libffi calls mmap,
#             munmap, mprotect or memfd_create, closures.o calls the face, and
#             no static trampolines (closures come from dlmalloc)
#   suite     libffi's own DejaGnu suite (make check's runtest, every .exp, in
#             two shards side by side): its expected passes, each unexpected
#             result a failure; and the exit reports of its programs: every
#             manager validated against the kernel, counted exactly the calls
#             dlmalloc made, and granted PAGE_EXECUTE_READWRITE segments
#   closures  closure_check any: code in the manager's PAGE_EXECUTE_READWRITE
#             reservations, right answers, threads, memory given back
#   policy    closure_check refused under HOSTMEM_DYNAMIC_CODE=wx and =none:
#             every ffi_closure_alloc is NULL, the refusals counted
# With HOSTMEM_LIBFFI_STOCK=1 it also builds stock libffi (Debian's
# configuration, unpatched) from the same tree and runs the same suite on it,
# group stock, for comparison (not in CI: it doubles the suite's time).
set -u

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: sh integrations/libffi/run.sh BUILD   (BUILD: hostmem's build directory)" >&2
    exit 2
fi
BUILD=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$BUILD/integrations/libffi
SRC=$BUILD/src
CC=${CC:-cc}
JOBS=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
mkdir -p "$OUT"

total_failed=0
passed=0
failed=0

pass() { passed=$((passed + ${1:-1})); }
fail() {
    failed=$((failed + 1))
    echo "  FAIL libffi_$group: $*"
}
# expect DESCRIPTION COMMAND...: one check, passed when the command succeeds
expect() {
    description=$1
    shift
    if "$@"; then pass; else fail "$description"; fi
}
begin_group() {
    group=$1
    group_started=$(date +%s)
}
# Closes a group: its line and its time; its failures decide the exit status.
end_group() {
    echo "# libffi_$group: $(($(date +%s) - group_started)) s"
    echo "libffi_$group: $passed passed, $failed failed"
    total_failed=$((total_failed + failed))
    passed=0
    failed=0
}
finish() {
    echo "# libffi: $(($(date +%s) - started)) s in all"
    [ "$total_failed" -eq 0 ]
    exit $?
}
skip() {
    if [ "${HOSTMEM_REQUIRE_INTEGRATIONS:-0}" = 1 ]; then
        echo "  FAIL libffi: $1 (HOSTMEM_REQUIRE_INTEGRATIONS=1: CI must not skip)"
        echo "libffi: 0 passed, 1 failed"
        exit 1
    fi
    echo "libffi: skipped: $1"
    echo "libffi: 0 passed, 0 failed"
    exit 0
}
started=$(date +%s)

for library in libhostmem.so libhostmem_win32.so; do
    if [ ! -f "$BUILD/$library" ]; then
        echo "  FAIL libffi: $BUILD/$library is missing (run make first)"
        echo "libffi: 0 passed, 1 failed"
        exit 1
    fi
done
# A sanitizer build of hostmem would need its runtime in every DejaGnu program.
if nm -D "$BUILD/libhostmem.so" 2>/dev/null | grep -q '__asan_init\|__tsan_init'; then
    skip "libffi's suite runs on the plain build only (this hostmem is built with a sanitizer)"
fi
command -v runtest >/dev/null 2>&1 ||
    skip "libffi's test suite needs DejaGnu's runtest (package dejagnu)"

# ---- the source -----------------------------------------------------------
# Debian's source package, unpacked with Debian's patches applied (dpkg-source
# does that); fetched once, kept in BUILD/src and never changed: the builds
# are made outside it (configure's build directories) from a patched copy.
find_source() {
    for dir in "$SRC"/libffi-*; do
        [ -f "$dir/src/dlmalloc.c" ] && [ -f "$dir/testsuite/lib/libffi.exp" ] && echo "$dir"
    done | sort | tail -1
}
fetch_source() {
    command -v apt-get >/dev/null 2>&1 || skip "apt-get is not available to fetch Debian's libffi source"
    command -v dpkg-source >/dev/null 2>&1 ||
        skip "apt-get source needs dpkg-source (package dpkg-dev) to unpack libffi"
    mkdir -p "$SRC"
    if (cd "$SRC" && timeout 600 apt-get source -q libffi) > "$OUT/apt-get-source.log" 2>&1; then
        return
    fi
    skip "apt-get source libffi failed: $(grep -E '^E:' "$OUT/apt-get-source.log" | head -1) (no deb-src entry? see $OUT/apt-get-source.log)"
}
upstream=$(find_source)
if [ -z "$upstream" ]; then
    fetch_source
    upstream=$(find_source)
    [ -n "$upstream" ] || skip "apt-get source libffi unpacked no source tree (see $OUT/apt-get-source.log)"
fi

# ---- the builds -----------------------------------------------------------
begin_group build
pass # the source is here
echo "# libffi: $(basename "$upstream") from Debian's source package"

stamp_of() {
    printf '%s\n' "$upstream" "$CC" "$@" | cat - "$@" 2>/dev/null | cksum
}
OUR_CFLAGS="-std=c11 -O2 -g -Wall -Wextra -Werror -Wshadow -I$ROOT/include"
if $CC $OUR_CFLAGS -fPIC -c "$HERE/ffi_hostmem.c" -o "$OUT/ffi_hostmem.o" > "$OUT/ffi_hostmem.log" 2>&1; then
    pass
else
    fail "ffi_hostmem.c does not compile: $(head -3 "$OUT/ffi_hostmem.log" | tr '\n' ' ')"
fi

# Debian's configuration (debian/rules: static trampolines off, PaX emutramp
# on - which only closures.c's Linux mapping code reads -, its build flags),
# shared and static libffi; the hostmem build adds -DFFI_HOSTMEM=1 and links
# libffi.so with the counting layer and the face (shared, found through an
# rpath). The environment's make and compiler flags are kept out.
DEBIAN_CPPFLAGS="-Wdate-time -D_FORTIFY_SOURCE=2"
DEBIAN_CFLAGS="-g -O2 -fstack-protector-strong -Wformat -Werror=format-security"
DEBIAN_LDFLAGS="-Wl,-z,defs -Wl,-z,relro"
WRAP="-Wl,--wrap=VirtualAlloc,--wrap=VirtualFree,--wrap=VirtualQuery"
build_variant() {
    (
        variant=$1 tree=$2
        unset MAKEFLAGS MFLAGS MAKELEVEL CFLAGS CPPFLAGS LDFLAGS LIBS
        cppflags=$DEBIAN_CPPFLAGS ldflags=$DEBIAN_LDFLAGS libs=
        if [ "$variant" = hostmem ]; then
            cppflags="$cppflags -DFFI_HOSTMEM=1 -I$ROOT/include"
            ldflags="$ldflags $WRAP -L$BUILD -Wl,-rpath,$BUILD"
            libs="$OUT/ffi_hostmem.o -lhostmem_win32 -lhostmem -pthread"
        fi
        mkdir -p "$OUT/$variant"
        cd "$OUT/$variant" &&
            "$tree/configure" --disable-exec-static-tramp --enable-pax_emutramp --without-gcc-arch \
                --disable-docs CC="$CC" CPPFLAGS="$cppflags" CFLAGS="$DEBIAN_CFLAGS" \
                LDFLAGS="$ldflags" LIBS="$libs" &&
            make -j"$JOBS"
    ) > "$OUT/$1-build.log" 2>&1
}

# The patched copy of the tree, redone when the source or the patch changes.
tree=$OUT/libffi
tree_stamp=$(stamp_of "$HERE/libffi-hostmem.patch")
if [ ! -d "$tree" ] || [ "$(cat "$tree.stamp" 2>/dev/null)" != "$tree_stamp" ]; then
    rm -rf "$tree" "$tree.stamp" "$OUT/hostmem" "$OUT/hostmem.stamp"
    cp -pR "$upstream" "$tree"
    if (cd "$tree" && patch -p1 --batch --forward < "$HERE/libffi-hostmem.patch") > "$OUT/patch.log" 2>&1; then
        echo "$tree_stamp" > "$tree.stamp"
        pass
    else
        fail "libffi-hostmem.patch does not apply to $(basename "$upstream"): $(tail -2 "$OUT/patch.log" | tr '\n' ' ')"
    fi
else
    pass # applied before, to this very source
fi

# A build is redone when what it was made from changes: the tree, the compiler,
# the layer and the face's headers. libffi.so is linked again every run (the
# layer and hostmem may have changed, and make does not know they are inputs).
variants=hostmem
[ "${HOSTMEM_LIBFFI_STOCK:-0}" = 1 ] && variants="stock hostmem"
for variant in $variants; do
    if [ "$variant" = hostmem ]; then
        [ -f "$tree.stamp" ] && [ -f "$OUT/ffi_hostmem.o" ] || continue
        source_tree=$tree
        stamp=$(stamp_of "$HERE/libffi-hostmem.patch" "$HERE/ffi_hostmem.c" "$ROOT/include/hostmem_win32.h" "$ROOT/include/hostmem.h")
    else
        source_tree=$upstream
        stamp=$(stamp_of)
    fi
    if [ -f "$OUT/$variant/.libs/libffi.so" ] && [ "$(cat "$OUT/$variant.stamp" 2>/dev/null)" = "$stamp" ]; then
        if [ "$variant" = hostmem ]; then
            (
                unset MAKEFLAGS MFLAGS MAKELEVEL CFLAGS CPPFLAGS LDFLAGS LIBS
                cd "$OUT/$variant" && rm -f libffi.la .libs/libffi.so* && make -j"$JOBS"
            ) > "$OUT/$variant-link.log" 2>&1 || rm -f "$OUT/$variant.stamp"
        fi
    else
        rm -rf "$OUT/$variant" "$OUT/$variant.stamp"
        build_started=$(date +%s)
        build_variant "$variant" "$source_tree" && echo "$stamp" > "$OUT/$variant.stamp"
        echo "# libffi: built $variant in $(($(date +%s) - build_started)) s"
    fi
    if [ -f "$OUT/$variant/.libs/libffi.so" ] && [ -f "$OUT/$variant.stamp" ]; then
        pass
    else
        fail "the $variant build failed: $(grep -E 'error|Error' "$OUT/$variant-build.log" "$OUT/$variant-link.log" 2>/dev/null | head -3 | tr '\n' ' ') (see $OUT/$variant-build.log)"
    fi
done

# By construction: closures come from dlmalloc (no static trampolines), whose
# pages come from the face; no object of libffi maps memory itself.
lib=$OUT/hostmem
if [ -f "$lib.stamp" ]; then
    if ! command -v nm >/dev/null 2>&1; then
        fail "nm is not installed: cannot check what libffi's objects call"
    else
        expect "static trampolines are on (FFI_EXEC_STATIC_TRAMP in fficonfig.h): closures' code would not come from dlmalloc" \
            sh -c "! grep -q '^#define FFI_EXEC_STATIC_TRAMP' '$lib/fficonfig.h'"
        own_maps=$(for object in "$lib"/src/*.o "$lib"/src/*/*.o; do
            nm "$object" 2>/dev/null | grep -qE ' U (mmap|mmap64|munmap|mprotect|mremap|madvise|memfd_create)$' &&
                basename "$object"
        done | tr '\n' ' ')
        expect "objects of libffi that map memory themselves: $own_maps" [ -z "$own_maps" ]
        face_calls=$(nm "$lib/src/closures.o" 2>/dev/null | sed -n 's/^ *U \(Virtual[A-Za-z]*\)$/\1/p' | tr '\n' ' ')
        expect "closures.o calls '$face_calls', expected VirtualAlloc VirtualFree VirtualQuery" \
            [ "$face_calls" = "VirtualAlloc VirtualFree VirtualQuery " ]
        needed=$(readelf -d "$lib/.libs/libffi.so" 2>/dev/null | grep -c 'NEEDED.*libhostmem_win32.so')
        expect "libffi.so does not need libhostmem_win32.so" [ "$needed" -eq 1 ]
    fi
    if $CC $OUR_CFLAGS -I"$lib/include" "$HERE/closure_check.c" -L"$lib/.libs" -lffi \
        -L"$BUILD" -lhostmem_win32 -lhostmem -pthread -Wl,-rpath,"$lib/.libs" -Wl,-rpath,"$BUILD" \
        -o "$OUT/closure_check" > "$OUT/closure_check-build.log" 2>&1; then
        pass
    else
        fail "closure_check.c does not compile: $(head -3 "$OUT/closure_check-build.log" | tr '\n' ' ')"
    fi
fi
end_group

# ---- libffi's own test suite ----------------------------------------------
# make check runs DejaGnu's runtest once over every .exp of testsuite/, one
# program at a time. Here the same runtest, with the site.exp make writes, in
# two shards side by side (bhaible.exp alone: about half the programs; the
# rest), each in its own directory under the build (libffi.exp finds the
# library in the directory above).
run_suite() {
    variant=$1 report=$2
    dir=$OUT/$variant
    (
        unset MAKEFLAGS MFLAGS MAKELEVEL
        cd "$dir/testsuite" && rm -f site.exp && make site.exp
    ) > "$OUT/$variant-site.log" 2>&1 || {
        fail "make site.exp failed in $dir/testsuite"
        return
    }
    rm -f "$report"
    suite_started=$(date +%s)
    for shard in 1 2; do
        case $shard in
        1) selection="bhaible.exp" ;;
        2) selection="call.exp closure.exp complex.exp go.exp" ;;
        esac
        rm -rf "$dir/testsuite-$shard"
        mkdir -p "$dir/testsuite-$shard"
        sed "s|^set objdir .*|set objdir \"$dir/testsuite-$shard\"|; s|^set srcdir .*|set srcdir \"$source_tree/testsuite\"|" \
            "$dir/testsuite/site.exp" > "$dir/testsuite-$shard/site.exp"
        # shellcheck disable=SC2086
        (cd "$dir/testsuite-$shard" && env HOSTMEM_LIBFFI_REPORT="$report" \
            runtest --tool libffi --srcdir "$source_tree/testsuite" $selection) \
            > "$dir/testsuite-$shard/runtest.out" 2>&1 &
    done
    wait
    echo "# libffi_$group: $variant: runtest in $(($(date +%s) - suite_started)) s"
}
# count_suite VARIANT: adds the .sum files' results: expected passes (and
# expected failures, unsupported tests) pass, every FAIL, XPASS, UNRESOLVED,
# UNTESTED and ERROR line fails; each .exp must have run.
count_suite() {
    variant=$1
    dir=$OUT/$variant
    sums="$dir/testsuite-1/libffi.sum $dir/testsuite-2/libffi.sum"
    for sum in $sums; do
        if [ ! -f "$sum" ] || ! grep -q '=== libffi Summary ===' "$sum"; then
            fail "$variant: runtest left no summary in $sum ($(tail -2 "$(dirname "$sum")/runtest.out" 2>/dev/null | tr '\n' ' '))"
        fi
    done
    for exp in bhaible call closure complex go; do
        n=$(cat $sums 2>/dev/null | awk -v suffix="/$exp.exp" '/^Running / { on = index($0, suffix) > 0 } on && /^PASS: / { n++ } END { print n + 0 }')
        expect "$variant: $exp.exp passed no test" [ "$n" -gt 0 ]
        counts="$counts $exp $n,"
    done
    expected=$(cat $sums 2>/dev/null | grep -cE '^(PASS|XFAIL|UNSUPPORTED): ')
    unexpected=$(cat $sums 2>/dev/null | grep -cE '^(FAIL|XPASS|UNRESOLVED|UNTESTED|ERROR): ')
    pass "$expected"
    cat $sums 2>/dev/null | grep -E '^(FAIL|XPASS|UNRESOLVED|UNTESTED|ERROR): ' | while read -r line; do
        echo "  FAIL libffi_$group: $variant: $line"
    done
    failed=$((failed + unexpected))
    echo "# libffi_$group: $variant: $expected expected results ($(cat $sums 2>/dev/null | grep -c '^PASS: ') PASS,$counts unexpected $unexpected)"
}

# report_sum FILE FIELD: the sum of FIELD=N over the exit reports in FILE
report_sum() {
    awk -v field="$2" '{
        for (i = 1; i <= NF; i++) if (index($i, field "=") == 1) s += substr($i, length(field) + 2)
    } END { print s + 0 }' "$1" 2>/dev/null || echo 0
}
# report_odd FILE: the lines where the manager did not validate, or where
# hostmem counted other calls than dlmalloc made (not all through one manager)
report_odd() {
    awk '{
        delete v
        for (i = 1; i <= NF; i++) if ((k = index($i, "=")) > 0) v[substr($i, 1, k - 1)] = substr($i, k + 1)
        if (v["validate"] != "S_OK" || v["alloc"] != v["hostmem_VirtualAlloc"] ||
            v["free"] != v["hostmem_VirtualFree"] || v["query"] != v["hostmem_VirtualQuery"] ||
            v["hostmem_VirtualProtect"] != 0) print
    }' "$1" 2>/dev/null
}

if [ -f "$OUT/hostmem.stamp" ]; then
    begin_group suite
    source_tree=$tree
    report=$OUT/suite.report
    run_suite hostmem "$report"
    counts=
    count_suite hostmem
    lines=$(grep -c '^ffi_hostmem: ' "$report" 2>/dev/null)
    expect "no program of the suite reported a call to the face (closures not on hostmem?)" [ "${lines:-0}" -gt 0 ]
    odd=$(report_odd "$report")
    expect "hostmem_validate(KERNEL) failed or hostmem's counts differ from dlmalloc's calls: $(printf '%s\n' "$odd" | head -2)" \
        [ -z "$odd" ]
    rwx=$(report_sum "$report" writable_executable_granted)
    refused=$(report_sum "$report" alloc_failed)
    expect "no PAGE_EXECUTE_READWRITE segment was granted" [ "$rwx" -gt 0 ]
    expect "$refused VirtualAlloc calls refused without a policy or budget" [ "$refused" -eq 0 ]
    closure_programs=$(grep -c '^ffi_hostmem: program=closure' "$report" 2>/dev/null)
    echo "# libffi_$group: $lines programs made closures on hostmem ($closure_programs of them closure*): VirtualAlloc $(report_sum "$report" alloc) (PAGE_EXECUTE_READWRITE granted $rwx), VirtualQuery $(report_sum "$report" query), VirtualFree $(report_sum "$report" free); every manager validated"
    end_group

    begin_group closures
    log=$OUT/closure_check-any.log
    if [ -x "$OUT/closure_check" ]; then
        "$OUT/closure_check" any > "$log" 2>&1
        rc=$?
        line=$(grep -E '^closure_check: [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
        if [ -z "$line" ]; then
            fail "closure_check any: no summary (exit $rc): $(tail -3 "$log" | tr '\n' ' ')"
        else
            pass "$(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')"
            failed=$((failed + $(echo "$line" | sed -E 's/.*, ([0-9]+) failed.*/\1/')))
            grep '^FAIL ' "$log" | sed "s/^FAIL /  FAIL libffi_$group: /"
            grep '^info ' "$log" | sed "s/^info /# libffi_$group: /"
        fi
    else
        fail "closure_check was not built"
    fi
    end_group

    begin_group policy
    for policy in wx none; do
        log=$OUT/closure_check-$policy.log
        [ -x "$OUT/closure_check" ] || { fail "closure_check was not built"; break; }
        HOSTMEM_DYNAMIC_CODE=$policy "$OUT/closure_check" refused > "$log" 2>&1
        rc=$?
        line=$(grep -E '^closure_check: [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
        if [ -z "$line" ]; then
            fail "closure_check refused ($policy): no summary (exit $rc): $(tail -3 "$log" | tr '\n' ' ')"
            continue
        fi
        pass "$(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')"
        failed=$((failed + $(echo "$line" | sed -E 's/.*, ([0-9]+) failed.*/\1/')))
        grep '^FAIL ' "$log" | sed "s/^FAIL /  FAIL libffi_$group: $policy: /"
        grep '^info ' "$log" | sed "s/^info /# libffi_$group: $policy: /"
    done
    end_group
fi

if [ "${HOSTMEM_LIBFFI_STOCK:-0}" = 1 ] && [ -f "$OUT/stock.stamp" ]; then
    begin_group stock
    source_tree=$upstream
    run_suite stock "$OUT/stock.report"
    counts=
    count_suite stock
    end_group
fi

finish
