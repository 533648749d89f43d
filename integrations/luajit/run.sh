#!/bin/sh
# LuaJIT on hostmem (issues 12 and 23): fetches Debian's luajit source, builds a
# stock LuaJIT and a hostmem LuaJIT from it, runs every program of tests/ on both
# and compares their outputs - with the manager's dynamic-code policy at its
# default, under W^X and under no dynamic code - and runs the budget programs of
# budget/ on hostmem.
#
#   sh integrations/luajit/run.sh BUILD
#
# BUILD is hostmem's build directory (it holds libhostmem.a); this script works
# only under BUILD/src (the fetched source, shared with other integrations) and
# BUILD/integrations/luajit (everything else). It prints one line per test group,
#   luajit_<group>: N passed, N failed
# with a FAIL line for each failure (tests/integration.sh adds the groups up),
# and exits non-zero on any failure. Without the source it says
# `luajit: skipped: <why>` and `luajit: 0 passed, 0 failed` and exits 0, unless
# HOSTMEM_REQUIRE_INTEGRATIONS=1 (CI), which makes that a failure.
#
# The hostmem LuaJIT is the stock one with luajit-hostmem.patch applied: its
# allocator, machine-code areas and FFI callbacks take LuaJIT's own Windows code
# path, whose VirtualAlloc/VirtualFree/VirtualQuery/VirtualProtect calls go to
# one IHostMemoryManager through lj_hostmem.c. host.c runs a program on it and
# checks the manager around it (its header says what and why).
set -u

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: sh integrations/luajit/run.sh BUILD   (BUILD: hostmem's build directory)" >&2
    exit 2
fi
BUILD=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$BUILD/integrations/luajit
SRC=$BUILD/src
CC=${CC:-cc}
JOBS=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
mkdir -p "$OUT"

total_failed=0
passed=0
failed=0

pass() { passed=$((passed + 1)); }
fail() {
    failed=$((failed + 1))
    echo "  FAIL $group $*"
}
# Closes a group: its line; its failures decide the exit status.
end_group() {
    echo "luajit_$group: $passed passed, $failed failed"
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
        echo "  FAIL luajit: $1 (HOSTMEM_REQUIRE_INTEGRATIONS=1: CI must not skip)"
        echo "luajit: 0 passed, 1 failed"
        exit 1
    fi
    echo "luajit: skipped: $1"
    echo "luajit: 0 passed, 0 failed"
    exit 0
}

# ---- the source -----------------------------------------------------------
# Debian's source package, unpacked with Debian's patches applied (dpkg-source
# does that); fetched once, kept in BUILD/src.
find_source() {
    for dir in "$SRC"/luajit-*; do
        [ -f "$dir/src/lj_mcode.c" ] && echo "$dir"
    done | sort | tail -1
}
if [ ! -f "$BUILD/libhostmem.a" ]; then
    echo "  FAIL luajit: $BUILD/libhostmem.a is missing (run make first)"
    echo "luajit: 0 passed, 1 failed"
    exit 1
fi
tree=$(find_source)
if [ -z "$tree" ]; then
    command -v apt-get >/dev/null 2>&1 || skip "apt-get is not available to fetch Debian's luajit source"
    mkdir -p "$SRC"
    if ! (cd "$SRC" && apt-get source luajit) > "$OUT/apt-get-source.log" 2>&1; then
        skip "apt-get source luajit failed: $(grep -E '^E:' "$OUT/apt-get-source.log" | head -1) (no deb-src entry? see $OUT/apt-get-source.log)"
    fi
    tree=$(find_source)
    [ -n "$tree" ] || skip "apt-get source luajit unpacked no source tree (is dpkg-dev installed? see $OUT/apt-get-source.log)"
fi

# ---- the builds -----------------------------------------------------------
group=build
pass # the source is here

# A sanitizer build of hostmem needs its runtime linked into the host too.
SANITIZE=
if nm "$BUILD/libhostmem.a" 2>/dev/null | grep -q '__asan_init'; then
    SANITIZE="-fsanitize=address,undefined"
elif nm "$BUILD/libhostmem.a" 2>/dev/null | grep -q '__tsan_init'; then
    SANITIZE="-fsanitize=thread"
fi

# LuaJIT's own Makefile, as shipped; only BUILDMODE=static (each object compiled
# once instead of twice) and, for hostmem, XCFLAGS. The environment's make and
# compiler flags are kept out: both builds must see the same Makefile defaults.
luajit_make() {
    (
        dir=$1
        shift
        unset MAKEFLAGS MFLAGS MAKELEVEL CFLAGS LDFLAGS
        make -C "$dir/src" -j"$JOBS" CC="$CC" BUILDMODE=static "$@"
    )
}
# A build is redone when what it was made from changes: the source tree, the
# compiler, and for hostmem the patch and the glue header the patched files use.
stamp_of() {
    printf '%s\n' "$tree" "$CC" "$@" | cat - "$@" 2>/dev/null | cksum
}

stock=$OUT/stock
stock_stamp=$(stamp_of)
if [ ! -x "$stock/src/luajit" ] || [ "$(cat "$stock.stamp" 2>/dev/null)" != "$stock_stamp" ]; then
    rm -rf "$stock" "$stock.stamp"
    cp -R "$tree" "$stock"
    if luajit_make "$stock" > "$OUT/stock-build.log" 2>&1; then
        echo "$stock_stamp" > "$stock.stamp"
    fi
fi
if [ -x "$stock/src/luajit" ]; then pass; else fail "stock LuaJIT did not build: $(tail -3 "$OUT/stock-build.log" | tr '\n' ' ')"; fi

hostmem=$OUT/hostmem
hostmem_stamp=$(stamp_of "$HERE/luajit-hostmem.patch" "$HERE/lj_hostmem.h" "$ROOT/include/hostmem.h")
if [ ! -f "$hostmem/src/libluajit.a" ] || [ "$(cat "$hostmem.stamp" 2>/dev/null)" != "$hostmem_stamp" ]; then
    rm -rf "$hostmem" "$hostmem.stamp"
    cp -R "$tree" "$hostmem"
    if ! command -v patch >/dev/null 2>&1; then
        fail "patch is not installed (dpkg-dev depends on it)"
    elif ! (cd "$hostmem" && patch -p1 --batch --forward < "$HERE/luajit-hostmem.patch") > "$OUT/patch.log" 2>&1; then
        fail "luajit-hostmem.patch does not apply to $(basename "$tree"): $(tail -2 "$OUT/patch.log" | tr '\n' ' ')"
    # Only the library: LuaJIT's own luajit executable would need a manager too;
    # host.c is the program that hands it one.
    elif luajit_make "$hostmem" XCFLAGS="-DLJ_HOSTMEM=1 -I$HERE -I$ROOT/include" libluajit.a \
        > "$OUT/hostmem-build.log" 2>&1; then
        echo "$hostmem_stamp" > "$hostmem.stamp"
    fi
fi
if [ -f "$hostmem/src/libluajit.a" ] && [ -f "$hostmem.stamp" ]; then
    pass
else
    fail "hostmem LuaJIT did not build: $(tail -3 "$OUT/hostmem-build.log" 2>/dev/null | tr '\n' ' ')"
fi

OUR_CFLAGS="-std=c11 -O2 -g -Wall -Wextra -Werror $SANITIZE -I$HERE -I$ROOT/include"
host=$OUT/host
if [ -f "$hostmem.stamp" ] &&
    $CC $OUR_CFLAGS -c "$HERE/lj_hostmem.c" -o "$OUT/lj_hostmem.o" > "$OUT/host-build.log" 2>&1 &&
    $CC $OUR_CFLAGS -I"$hostmem/src" -c "$HERE/host.c" -o "$OUT/host.o" >> "$OUT/host-build.log" 2>&1 &&
    $CC $SANITIZE -o "$host" "$OUT/host.o" "$OUT/lj_hostmem.o" "$hostmem/src/libluajit.a" \
        "$BUILD/libhostmem.a" -lm -ldl -pthread >> "$OUT/host-build.log" 2>&1; then
    pass
else
    rm -f "$host"
    fail "host did not build: $(head -5 "$OUT/host-build.log" | tr '\n' ' ')"
fi

# By construction: no object of the hostmem LuaJIT calls the kernel's memory
# calls itself, and the three patched files call the glue.
if [ -f "$hostmem/src/libluajit.a" ]; then
    if ! command -v nm >/dev/null 2>&1; then
        fail "nm is not installed: cannot check that LuaJIT makes no mmap of its own"
    else
        direct=$(nm -A -u "$hostmem/src/libluajit.a" 2>/dev/null |
            grep -E ' (mmap|mmap64|munmap|mremap|mprotect|madvise|sbrk|brk)$' | tr '\n' ' ')
        if [ -z "$direct" ]; then pass; else fail "the hostmem LuaJIT still calls the kernel itself: $direct"; fi
        for object in lj_alloc.o lj_mcode.o lj_ccallback.o; do
            if nm -u "$hostmem/src/$object" 2>/dev/null | grep -q ' lj_hostmem_VirtualAlloc$'; then
                pass
            else
                fail "$object does not call lj_hostmem_VirtualAlloc: the patch did not take"
            fi
        done
    fi
fi
end_group

[ -x "$host" ] && [ -x "$stock/src/luajit" ] || finish

# ---- one run of host ------------------------------------------------------
# Counts host's ok and FAIL lines into the current group and passes its FAIL
# lines and its summary on; a host that dies without its closing line fails.
run_host() {
    name=$1
    shift
    "$host" "$@" > "$OUT/run/$name.host.out" 2> "$OUT/run/$name.host.err"
    rc=$?
    oks=$(grep -c '^ok ' "$OUT/run/$name.host.err")
    passed=$((passed + oks))
    grep '^FAIL ' "$OUT/run/$name.host.err" | while IFS= read -r line; do
        echo "  FAIL $group $name: ${line#FAIL }"
    done
    fails=$(grep -c '^FAIL ' "$OUT/run/$name.host.err")
    failed=$((failed + fails))
    if ! grep -q '^host: [0-9]* passed' "$OUT/run/$name.host.err"; then
        fail "$name: host died (exit $rc): $(grep -v '^ok ' "$OUT/run/$name.host.err" | tail -3 | tr '\n' ' ')"
    elif [ "$rc" -ne 0 ] && [ "$fails" -eq 0 ]; then
        fail "$name: host exited $rc"
    fi
    summary=$(sed -n 's/^info summary: //p' "$OUT/run/$name.host.err")
    [ -n "$summary" ] && echo "luajit $name: $summary"
    return 0
}

# Stock LuaJIT runs a program: NAME.stock.out, .err and .rc in run/.
run_stock() {
    name=$1
    shift
    "$stock/src/luajit" "$@" > "$OUT/run/$name.stock.out" 2> "$OUT/run/$name.stock.err"
    echo $? > "$OUT/run/$name.stock.rc"
}

# The host's output for NAME is stock's for EXPECTED (default NAME), byte for byte.
same_output() {
    expected=${2:-$1}
    if cmp -s "$OUT/run/$expected.stock.out" "$OUT/run/$1.host.out"; then
        pass
    else
        fail "$1: output differs from stock LuaJIT's: $(diff "$OUT/run/$expected.stock.out" "$OUT/run/$1.host.out" | head -5 | tr '\n' ' ')"
    fi
}

# Same output, and both ran to the end.
compare() {
    expected=${2:-$1}
    stock_rc=$(cat "$OUT/run/$expected.stock.rc")
    if [ "$stock_rc" -ne 0 ]; then
        fail "$1: stock LuaJIT failed (exit $stock_rc): $(tail -2 "$OUT/run/$expected.stock.err" | tr '\n' ' ')"
    else
        same_output "$1" "$expected"
    fi
}

rm -rf "$OUT/run"
mkdir -p "$OUT/run"
# LUA_INIT is stock LuaJIT's start-up chunk; host.c runs none.
unset LUA_INIT

# ---- the programs: the same output as stock LuaJIT, and the manager's checks
for script in "$HERE"/tests/*.lua; do
    name=$(basename "$script" .lua)
    group=$name
    run_stock "$name" "$script"
    run_host "$name" "$script"
    compare "$name"
    end_group
done

# ---- under W^X ------------------------------------------------------------
# The same programs, the same output, on a manager that refuses any page
# writable and executable at once: LuaJIT's mcode (LUAJIT_SECURITY_MCODE, on by
# default and in Debian's build) writes code PAGE_READWRITE and runs it
# PAGE_EXECUTE_READ, so the JIT runs as before and nothing is refused (host.c).
group=wx
for script in "$HERE"/tests/*.lua; do
    program=$(basename "$script" .lua)
    run_host "wx-$program" --dynamic-code wx "$script"
    compare "wx-$program" "$program"
done
end_group

# ---- under no dynamic code ------------------------------------------------
# Nothing may be executable: LuaJIT's first code area is refused, LuaJIT turns
# its JIT off and the interpreter prints what stock LuaJIT prints. A callback
# (ffi.cast of a function) is a Lua error there instead: stock LuaJIT running
# no_dynamic_code.lua first (-e), which raises that error at the same place,
# gives the output and the error message the host must see.
group=nocode
code_refused="runtime code generation failed, restricted kernel?"
for script in "$HERE"/tests/*.lua; do
    program=$(basename "$script" .lua)
    run_stock "nocode-$program" -e "dofile('$HERE/no_dynamic_code.lua')" "$script"
    if [ "$(cat "$OUT/run/nocode-$program.stock.rc")" -eq 0 ]; then
        # no callback: stock LuaJIT's own output, nothing emulated
        run_host "nocode-$program" --dynamic-code none "$script"
        compare "nocode-$program" "$program"
        continue
    fi
    message=$(head -1 "$OUT/run/nocode-$program.stock.err")
    message=${message#"$stock/src/luajit: "}
    case $message in
    *": $code_refused")
        run_host "nocode-$program" --dynamic-code none --expect-error "$message" "$script"
        same_output "nocode-$program"
        ;;
    *) fail "nocode-$program: stock LuaJIT failed: $message" ;;
    esac
done
# Tightened while the state lives: traces compiled under W^X, flushed, then no
# dynamic code (host.c --tighten); the script's output is stock's. mcode.lua
# leaves three trace areas; ffi.lua a callback page made executable before.
for program in mcode ffi; do
    run_host "nocode-tightened-$program" --dynamic-code wx --tighten none "$HERE/tests/$program.lua"
    compare "nocode-tightened-$program" "$program"
done
end_group

# ---- under a commit budget ------------------------------------------------
# caught.lua catches LuaJIT's memory error itself and goes on; stock LuaJIT,
# run where its own mmap is refused (ulimit -v), must print the same.
group=budget
(ulimit -v 131072 && run_stock caught "$HERE/budget/caught.lua") || echo 1 > "$OUT/run/caught.stock.rc"
for budget in 2M 8M 32M; do
    run_host "caught-$budget" --budget "$budget" --oom caught "$HERE/budget/caught.lua"
    compare "caught-$budget" caught
    # uncaught.lua leaves the error to the host's lua_pcall (LUA_ERRMEM).
    run_host "uncaught-$budget" --budget "$budget" --oom uncaught "$HERE/budget/uncaught.lua"
done
# A budget too small for the first 128 KiB segment: luaL_newstate returns NULL.
run_host "newstate-64K" --budget 64K --oom newstate
end_group

finish
