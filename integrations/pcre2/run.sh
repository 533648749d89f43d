#!/bin/sh
# PCRE2 on hostmem: fetches Debian's pcre2 source, builds it twice with sljit's
# Windows memory branches on hostmem's Win32 face - once with sljit's default
# executable allocator, once with its W^X allocator - and runs PCRE2's own
# make check on each, then everything again with no dynamic code allowed.
#
#   sh integrations/pcre2/run.sh BUILD
#
# BUILD is hostmem's build directory (it holds libhostmem.a and
# libhostmem_win32.a); this script works only under BUILD/src (the fetched
# source, shared with other integrations) and BUILD/integrations/pcre2
# (everything else). It prints one line per group,
#   pcre2_<group>: N passed, N failed
# with a FAIL line for each failure and "# ..." lines with figures
# (tests/integration.sh adds the groups up), and exits non-zero on any failure.
# Without the source it says `pcre2: skipped: <why>` and `pcre2: 0 passed,
# 0 failed` and exits 0, unless HOSTMEM_REQUIRE_INTEGRATIONS=1 (CI), which
# makes that a failure.
#
# The groups (README.md in this directory says why each check is there):
#   build    the source, the patches, the two builds, and by construction no
#            mmap/mprotect/munmap of PCRE2's own: its JIT's pages come from the face
#   default  the default allocator (PAGE_EXECUTE_READWRITE chunks), no policy:
#            PCRE2's make check, the exit reports, jit_check compiled
#   wx       the W^X allocator under HOSTMEM_DYNAMIC_CODE=wx: PCRE2's make check,
#            the exit reports (code flipped to PAGE_EXECUTE, never writable and
#            executable), jit_check compiled; the default allocator under wx:
#            every JIT compile refused
#   none     both builds under HOSTMEM_DYNAMIC_CODE=none: every JIT compile
#            refused, PCRE2's RunTest (JIT runs included, now the interpreter's),
#            RunGrepTest and pcre2posix_test still pass, pcre2_jit_test stops
#            cleanly; jit_check refused; and jit_check restrict (the policy
#            tightened while code lives)
set -u

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: sh integrations/pcre2/run.sh BUILD   (BUILD: hostmem's build directory)" >&2
    exit 2
fi
BUILD=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$BUILD/integrations/pcre2
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
    echo "  FAIL pcre2_$group: $*"
}
# expect DESCRIPTION COMMAND...: one check, passed when the command succeeds
expect() {
    description=$1
    shift
    if "$@"; then pass; else fail "$description"; fi
}
# Closes a group: its line and its time; its failures decide the exit status.
end_group() {
    echo "# pcre2_$group: $(($(date +%s) - group_started)) s"
    echo "pcre2_$group: $passed passed, $failed failed"
    total_failed=$((total_failed + failed))
    passed=0
    failed=0
}
begin_group() {
    group=$1
    group_started=$(date +%s)
}
finish() {
    echo "# pcre2: $(($(date +%s) - started)) s in all"
    [ "$total_failed" -eq 0 ]
    exit $?
}
skip() {
    if [ "${HOSTMEM_REQUIRE_INTEGRATIONS:-0}" = 1 ]; then
        echo "  FAIL pcre2: $1 (HOSTMEM_REQUIRE_INTEGRATIONS=1: CI must not skip)"
        echo "pcre2: 0 passed, 1 failed"
        exit 1
    fi
    echo "pcre2: skipped: $1"
    echo "pcre2: 0 passed, 0 failed"
    exit 0
}
started=$(date +%s)

for library in libhostmem.a libhostmem_win32.a; do
    if [ ! -f "$BUILD/$library" ]; then
        echo "  FAIL pcre2: $BUILD/$library is missing (run make first)"
        echo "pcre2: 0 passed, 1 failed"
        exit 1
    fi
done

# ---- the source -----------------------------------------------------------
# Debian's source package, unpacked with Debian's patches applied (dpkg-source
# does that); fetched once, kept in BUILD/src and never changed: the builds
# patch a copy.
find_source() {
    for dir in "$SRC"/pcre2-*; do
        [ -f "$dir/src/sljit/sljitWXExecAllocator.c" ] && [ -f "$dir/RunTest" ] && echo "$dir"
    done | sort | tail -1
}
fetch_source() {
    command -v apt-get >/dev/null 2>&1 || skip "apt-get is not available to fetch Debian's pcre2 source"
    command -v dpkg-source >/dev/null 2>&1 ||
        skip "apt-get source needs dpkg-source (package dpkg-dev) to unpack pcre2"
    mkdir -p "$SRC"
    if (cd "$SRC" && timeout 600 apt-get source -q pcre2) > "$OUT/apt-get-source.log" 2>&1; then
        return
    fi
    # The newest version may be a security update whose files a mirror does not
    # carry; then each version the archive lists, newest first.
    for version in $(apt-cache showsrc pcre2 2>/dev/null | sed -n 's/^Version: //p' | sort -r -V); do
        if (cd "$SRC" && timeout 600 apt-get source -q "pcre2=$version") \
            >> "$OUT/apt-get-source.log" 2>&1; then
            return
        fi
    done
    skip "apt-get source pcre2 failed: $(grep -E '^E:' "$OUT/apt-get-source.log" | head -1) (no deb-src entry? see $OUT/apt-get-source.log)"
}
upstream=$(find_source)
if [ -z "$upstream" ]; then
    fetch_source
    upstream=$(find_source)
    [ -n "$upstream" ] || skip "apt-get source pcre2 unpacked no source tree (see $OUT/apt-get-source.log)"
fi

# ---- the builds -----------------------------------------------------------
begin_group build
pass # the source is here
echo "# pcre2: $(basename "$upstream") from Debian's source package"

# A sanitizer build of hostmem needs its runtime linked into the programs too.
SANITIZE=
if nm "$BUILD/libhostmem.a" 2>/dev/null | grep -q '__asan_init'; then
    SANITIZE="-fsanitize=address,undefined"
elif nm "$BUILD/libhostmem.a" 2>/dev/null | grep -q '__tsan_init'; then
    SANITIZE="-fsanitize=thread"
fi

# One patched copy of the tree serves both builds (they build out of it).
# Copied with its times, so that make does not think configure is stale.
tree=$OUT/pcre2
stamp_of() {
    printf '%s\n' "$upstream" "$CC" "$SANITIZE" "$@" | cat - "$@" 2>/dev/null | cksum
}
tree_stamp=$(stamp_of "$HERE"/*.patch)
if [ ! -d "$tree" ] || [ "$(cat "$tree.stamp" 2>/dev/null)" != "$tree_stamp" ]; then
    rm -rf "$tree" "$tree.stamp" "$OUT/default" "$OUT/wx"
    cp -pR "$upstream" "$tree"
    patched=yes
    for patch in "$HERE"/*.patch; do
        name=$(basename "$patch")
        if (cd "$tree" && patch -p1 --batch --forward < "$patch") > "$OUT/patch-$name.log" 2>&1; then
            pass
        else
            fail "$name does not apply to $(basename "$upstream"): $(tail -2 "$OUT/patch-$name.log" | tr '\n' ' ')"
            patched=no
        fi
    done
    [ $patched = yes ] && echo "$tree_stamp" > "$tree.stamp"
else
    for patch in "$HERE"/*.patch; do
        pass # applied before, to this very source
    done
fi

OUR_CFLAGS="-std=c11 -O2 -g -Wall -Wextra -Werror $SANITIZE -I$HERE -I$ROOT/include"
if $CC $OUR_CFLAGS -c "$HERE/pcre2_hostmem.c" -o "$OUT/pcre2_hostmem.o" > "$OUT/pcre2_hostmem.log" 2>&1; then
    pass
else
    fail "pcre2_hostmem.c does not compile: $(head -3 "$OUT/pcre2_hostmem.log" | tr '\n' ' ')"
fi

# Debian's configuration (debian/rules: the 8-, 16- and 32-bit libraries, JIT),
# static, and linked with the counting layer and hostmem's Win32 face. The
# environment's make and compiler flags are kept out.
WRAP="-Wl,--wrap=VirtualAlloc,--wrap=VirtualFree,--wrap=VirtualProtect"
HOSTMEM_LIBS="$OUT/pcre2_hostmem.o $BUILD/libhostmem_win32.a $BUILD/libhostmem.a -pthread"
flags_of() {
    case $1 in
    default) echo "-O2 -g $SANITIZE -DSLJIT_HOSTMEM=1 -I$ROOT/include" ;;
    wx) echo "-O2 -g $SANITIZE -DSLJIT_HOSTMEM=1 -DSLJIT_WX_EXECUTABLE_ALLOCATOR=1 -I$ROOT/include" ;;
    esac
}
build_variant() {
    (
        variant=$1
        jobs=$2
        unset MAKEFLAGS MFLAGS MAKELEVEL CFLAGS CPPFLAGS LDFLAGS LIBS
        mkdir -p "$OUT/$variant"
        cd "$OUT/$variant" &&
            "$tree/configure" --enable-jit --enable-pcre2-16 --enable-pcre2-32 \
                --disable-pcre2grep-callout --disable-shared --enable-static \
                CC="$CC" CFLAGS="$(flags_of "$variant")" LDFLAGS="$SANITIZE $WRAP" \
                LIBS="$HOSTMEM_LIBS" &&
            make -j"$jobs"
    ) > "$OUT/$1-build.log" 2>&1
}
# A build is redone when what it was compiled from changes: the source, the
# patches, the compiler, the flags and the face's header. The programs are
# linked again every run (they are small to link): the layer, the Win32 face
# and hostmem may have changed, and make does not know that they are inputs.
PROGRAMS="pcre2test pcre2grep pcre2_jit_test pcre2posix_test"
variants="default wx"
to_build=
for variant in $variants; do
    stamp=$(stamp_of "$HERE"/*.patch "$ROOT/include/hostmem_win32.h" "$ROOT/include/hostmem.h")
    stamp="$stamp $(flags_of "$variant")"
    if [ ! -x "$OUT/$variant/pcre2test" ] || [ "$(cat "$OUT/$variant.stamp" 2>/dev/null)" != "$stamp" ]; then
        rm -rf "$OUT/$variant" "$OUT/$variant.stamp"
        to_build="$to_build $variant"
        eval "stamp_$variant=\$stamp"
    elif [ -f "$OUT/pcre2_hostmem.o" ]; then
        (
            unset MAKEFLAGS MFLAGS MAKELEVEL CFLAGS CPPFLAGS LDFLAGS LIBS
            # shellcheck disable=SC2086
            cd "$OUT/$variant" && rm -f $PROGRAMS && make -j"$JOBS" $PROGRAMS
        ) > "$OUT/$variant-link.log" 2>&1 || rm -f "$OUT/$variant.stamp"
    fi
done
# The two builds side by side, the machine's processors shared between them
# (configure is serial, so this is faster than one after the other).
if [ -f "$tree.stamp" ] && [ -f "$OUT/pcre2_hostmem.o" ] && [ -n "$to_build" ]; then
    jobs=$((JOBS / 2))
    [ "$jobs" -ge 1 ] || jobs=1
    build_started=$(date +%s)
    for variant in $to_build; do
        build_variant "$variant" "$jobs" &
    done
    wait
    echo "# pcre2: built$to_build in $(($(date +%s) - build_started)) s"
    for variant in $to_build; do
        [ -x "$OUT/$variant/pcre2test" ] && eval "echo \"\$stamp_$variant\"" > "$OUT/$variant.stamp"
    done
fi
for variant in $variants; do
    if [ -x "$OUT/$variant/pcre2test" ] && [ -f "$OUT/$variant.stamp" ]; then
        pass
    else
        fail "the $variant build failed: $(grep -E 'error|Error' "$OUT/$variant-build.log" 2>/dev/null | head -3 | tr '\n' ' ') (see $OUT/$variant-build.log)"
    fi
done

# By construction: no object of PCRE2's calls the kernel's memory calls itself,
# and its JIT calls the Win32 face (the W^X allocator's VirtualProtect too).
for variant in $variants; do
    [ -f "$OUT/$variant.stamp" ] || continue
    archives=$(ls "$OUT/$variant"/.libs/libpcre2-*.a 2>/dev/null)
    if ! command -v nm >/dev/null 2>&1; then
        fail "nm is not installed: cannot check that PCRE2 makes no mmap of its own"
        break
    fi
    # shellcheck disable=SC2086
    direct=$(nm -A -u $archives 2>/dev/null |
        grep -E ' (mmap|mmap64|munmap|mremap|mprotect|madvise|posix_madvise)$' | tr '\n' ' ')
    expect "the $variant PCRE2 still calls the kernel itself: $direct" [ -z "$direct" ]
    wanted="VirtualAlloc VirtualFree"
    [ "$variant" = wx ] && wanted="$wanted VirtualProtect"
    for width in 8 16 32; do
        object=$OUT/$variant/.libs/libpcre2-$width.a
        for call in $wanted; do
            if nm -u "$object" 2>/dev/null | grep -q " $call\$"; then
                pass
            else
                fail "libpcre2-$width.a ($variant) does not call $call: the patch did not take"
            fi
        done
    done
done

# jit_check, once per build, on its 8-bit library.
for variant in $variants; do
    [ -f "$OUT/$variant.stamp" ] || continue
    if $CC $OUR_CFLAGS -I"$OUT/$variant/src" "$HERE/jit_check.c" "$OUT/$variant/.libs/libpcre2-8.a" \
        $WRAP $HOSTMEM_LIBS -o "$OUT/jit_check-$variant" > "$OUT/jit_check-$variant.log" 2>&1; then
        pass
    else
        rm -f "$OUT/jit_check-$variant"
        fail "jit_check ($variant) did not build: $(head -5 "$OUT/jit_check-$variant.log" | tr '\n' ' ')"
    fi
done
end_group

# ---- reading what the programs said ----------------------------------------
# report_sum FILE KEY: the sum of KEY=N over the exit reports' lines
report_sum() {
    awk -v key="$2" '{ for (i = 1; i <= NF; i++) if (index($i, key "=") == 1) s += substr($i, length(key) + 2) }
        END { print s + 0 }' "$1" 2>/dev/null || echo 0
}
# report_odd FILE: the lines where the manager did not validate, or where
# hostmem counted other calls than the layer saw (not all through one manager)
report_odd() {
    awk '{
        delete v
        for (i = 1; i <= NF; i++) if ((k = index($i, "=")) > 0) v[substr($i, 1, k - 1)] = substr($i, k + 1)
        if (v["validate"] != "S_OK" || v["alloc"] != v["hostmem_VirtualAlloc"] ||
            v["protect"] != v["hostmem_VirtualProtect"] || v["free"] != v["hostmem_VirtualFree"]) print
    }' "$1" 2>/dev/null
}
# check_reports FILE POLICY WHAT: the checks every set of exit reports gets,
# then those of the policy. WHAT names the run in messages.
check_reports() {
    file=$1 policy=$2 what=$3
    lines=$(grep -c '^pcre2_hostmem: ' "$file" 2>/dev/null)
    if [ "${lines:-0}" -eq 0 ]; then
        fail "$what: no program reported (no JIT code, no JIT stack on hostmem?)"
        return
    fi
    odd=$(report_odd "$file")
    expect "$what: hostmem_validate(KERNEL) failed or hostmem's counts differ from sljit's calls: $(printf '%s\n' "$odd" | head -2)" \
        [ -z "$odd" ]
    policies=$(sed -n 's/.* policy=\([0-9]*\).*/\1/p' "$file" | sort -u | tr '\n' ' ')
    expect "$what: policy in force $policies, expected $policy" [ "$policies" = "$policy " ]
    refusals=$(report_sum "$file" dynamic_code_refusals)
    blocked=$(report_sum "$file" code_blocked)
    exec_granted=$(($(report_sum "$file" alloc_executable_granted) + $(report_sum "$file" protect_executable_granted)))
    rwx_asked=$(report_sum "$file" writable_executable)
    rwx_granted=$(report_sum "$file" writable_executable_granted)
    flips=$(report_sum "$file" protect_executable_granted)
    failures=$(($(report_sum "$file" alloc_failed) + $(report_sum "$file" protect_failed) + $(report_sum "$file" free_failed)))
    echo "# pcre2_$group: $what: $lines programs on hostmem; VirtualAlloc $(report_sum "$file" alloc) (reserve $(report_sum "$file" reserve), commit $(report_sum "$file" commit)), VirtualProtect $(report_sum "$file" protect) (to executable $(report_sum "$file" protect_executable), granted $flips), VirtualFree $(report_sum "$file" free) (decommit $(report_sum "$file" decommit), release $(report_sum "$file" release)); RWX granted $rwx_granted; refused $failures, by the policy $refusals"
    case $policy in
    0)
        expect "$what: sljit's PAGE_EXECUTE_READWRITE chunks were not granted ($rwx_granted)" [ "$rwx_granted" -gt 0 ]
        expect "$what: $failures calls refused without a policy or budget" [ "$failures" -eq 0 ]
        ;;
    1)
        expect "$what: no code was flipped to PAGE_EXECUTE" [ "$flips" -gt 0 ]
        expect "$what: writable and executable asked $rwx_asked times, granted $rwx_granted" [ "$rwx_asked $rwx_granted" = "0 0" ]
        expect "$what: $failures calls refused ($refusals by the policy) where none should be" [ "$failures $refusals" = "0 0" ]
        ;;
    2)
        expect "$what: no refusal counted by hostmem" [ "$refusals" -gt 0 ]
        expect "$what: hostmem counted $refusals refusals, sljit saw ERROR_DYNAMIC_CODE_BLOCKED $blocked times" [ "$refusals" = "$blocked" ]
        expect "$what: $exec_granted executable allocations or protections granted" [ "$exec_granted" -eq 0 ]
        ;;
    esac
}

# count_make_check DIR: adds what PCRE2's own make check reported in DIR, test
# by test: RunTest's "OK" lines (each test input, with and without -jit),
# RunGrepTest's sections, pcre2_jit_test's tests (a dot each), pcre2posix_test.
# A script stops at its first failure: what it passed before counts.
count_make_check() {
    dir=$1
    for script in RunTest RunGrepTest pcre2_jit_test pcre2posix_test; do
        log=$dir/$script.log
        result=$(sed -n 's/^:test-result: //p' "$dir/$script.trs" 2>/dev/null)
        if [ -z "$result" ]; then
            fail "$script did not run ($dir/test-suite.log)"
            continue
        fi
        case $script in
        RunTest) n=$(grep -c '^  OK' "$log") ;;
        RunGrepTest) n=$(($(grep -c '^Testing pcre2grep ' "$log") - 1)) ;; # not the version line
        pcre2_jit_test) n=$(grep -E '^[.]+$' "$log" | tr -d '\n' | wc -c) ;;
        pcre2posix_test) n=1 ;;
        esac
        if [ "$result" = PASS ]; then
            pass "$n"
        else
            case $script in
            RunGrepTest | pcre2posix_test) n=$((n - 1)) ;; # the section that failed
            esac
            pass "$n"
            fail "$script: $result: $(grep -E 'failed|differs|\*\*' "$log" | head -3 | tr '\n' ' ') ($log)"
        fi
        counts="$counts $script $n,"
    done
}

# make_check VARIANT ENVIRONMENT...: PCRE2's own make check in a build, with the
# exit reports collected in OUT/VARIANT-check.report
make_check() {
    variant=$1
    shift
    report=$OUT/$variant-check.report
    rm -f "$report"
    check_started=$(date +%s)
    (
        unset MAKEFLAGS MFLAGS MAKELEVEL
        env HOSTMEM_PCRE2_REPORT="$report" "$@" make -C "$OUT/$variant" -j"$JOBS" check
    ) > "$OUT/$variant-check.log" 2>&1
    rc=$?
    counts=
    count_make_check "$OUT/$variant"
    expect "make check ($variant) exited $rc ($OUT/$variant-check.log)" [ "$rc" -eq 0 ]
    echo "# pcre2_$group: make check:${counts%,} ($(($(date +%s) - check_started)) s)"
}

# jit_check VARIANT MODE ENVIRONMENT...: adds its checks and repeats its FAIL lines
jit_check() {
    variant=$1 mode=$2
    shift 2
    name=jit_check-$variant-$mode
    log=$OUT/run/$name.log
    env "$@" "$OUT/jit_check-$variant" "$variant" "$mode" > "$log" 2>&1
    rc=$?
    line=$(grep -E '^jit_check: [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
    if [ -z "$line" ]; then
        fail "$name: no summary (exit $rc): $(tail -3 "$log" | tr '\n' ' ')"
        return
    fi
    pass "$(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')"
    failed=$((failed + $(echo "$line" | sed -E 's/.*, ([0-9]+) failed.*/\1/')))
    grep '^FAIL ' "$log" | sed "s/^FAIL /  FAIL pcre2_$group: $name: /"
    grep '^  case ' "$log" | head -5
    grep '^info ' "$log" | sed "s/^info /# pcre2_$group: $name: /" | grep -v 'policy [0-9]'
}

rm -rf "$OUT/run"
mkdir -p "$OUT/run"
if [ ! -f "$OUT/default.stamp" ] || [ ! -f "$OUT/wx.stamp" ]; then
    finish
fi

# ---- the default allocator, no policy --------------------------------------
begin_group default
make_check default HOSTMEM_DYNAMIC_CODE=any
check_reports "$OUT/default-check.report" 0 "make check"
jit_check default compiled HOSTMEM_DYNAMIC_CODE=any
end_group

# ---- the W^X allocator under W^X -------------------------------------------
begin_group wx
make_check wx HOSTMEM_DYNAMIC_CODE=wx
check_reports "$OUT/wx-check.report" 1 "make check"
jit_check wx compiled HOSTMEM_DYNAMIC_CODE=wx
# sljit's default allocator asks PAGE_EXECUTE_READWRITE, which W^X refuses.
jit_check default refused HOSTMEM_DYNAMIC_CODE=wx
end_group

# ---- no dynamic code --------------------------------------------------------
# PCRE2's test scripts run as make check runs them, each JIT compile now
# refused: RunTest's runs "with JIT" get the interpreter after the refusal and
# must still print the expected output. Left out: RunTest's test 17, which
# checks the JIT's own behaviour (stack limits, JIT-only errors), and
# pcre2_jit_test, which compares the JIT with the interpreter and cannot run
# without a JIT: it must say so for each pattern and stop, not crash.
begin_group none
for variant in $variants; do
    dir=$OUT/$variant
    report=$OUT/$variant-none.report
    rm -f "$report"
    for script in RunTest RunGrepTest; do
        selection=
        [ $script = RunTest ] && selection="~17"
        # shellcheck disable=SC2086
        (cd "$dir" && env srcdir="$tree" HOSTMEM_DYNAMIC_CODE=none HOSTMEM_PCRE2_REPORT="$report" \
            sh "$tree/$script" $selection) > "$OUT/run/$variant-none-$script.log" 2>&1
        rc=$?
        log=$OUT/run/$variant-none-$script.log
        case $script in
        RunTest)
            oks=$(grep -c '^  OK' "$log")
            with_jit=$(grep -c '^  OK with JIT' "$log")
            expect "RunTest ($variant, none) exited $rc: $(grep -E '\*\*' "$log" | head -2 | tr '\n' ' ') ($log)" [ "$rc" -eq 0 ]
            expect "RunTest ($variant, none) ran no test with -jit" [ "$with_jit" -gt 0 ]
            pass "$oks"
            echo "# pcre2_$group: $variant: RunTest ~17: $oks OK, $with_jit of them with -jit, each JIT compile refused"
            ;;
        RunGrepTest)
            expect "RunGrepTest ($variant, none) exited $rc ($log)" [ "$rc" -eq 0 ] ;;
        esac
    done
    (cd "$dir" && env HOSTMEM_DYNAMIC_CODE=none HOSTMEM_PCRE2_REPORT="$report" ./pcre2posix_test) \
        > "$OUT/run/$variant-none-pcre2posix_test.log" 2>&1
    rc=$?
    expect "pcre2posix_test ($variant, none) exited $rc" [ "$rc" -eq 0 ]
    (cd "$dir" && env HOSTMEM_DYNAMIC_CODE=none HOSTMEM_PCRE2_REPORT="$report" ./pcre2_jit_test) \
        > "$OUT/run/$variant-none-pcre2_jit_test.log" 2>&1
    rc=$?
    log=$OUT/run/$variant-none-pcre2_jit_test.log
    unsupported=$(grep -c 'JIT compiler does not support' "$log")
    expect "pcre2_jit_test ($variant, none) exited $rc, expected 1 (JIT refused, no crash): $(tail -2 "$log" | tr '\n' ' ')" [ "$rc" -eq 1 ]
    expect "pcre2_jit_test ($variant, none) reported no pattern the JIT could not compile" [ "$unsupported" -gt 0 ]
    echo "# pcre2_$group: $variant: pcre2_jit_test: $unsupported patterns the JIT could not compile, exit $rc"
    check_reports "$report" 2 "$variant build"
    jit_check "$variant" refused HOSTMEM_DYNAMIC_CODE=none
done
# The policy tightened while JIT code lives: from any (default allocator) or
# wx (W^X allocator) to none.
jit_check default restrict HOSTMEM_DYNAMIC_CODE=any
jit_check wx restrict HOSTMEM_DYNAMIC_CODE=wx
end_group

finish
