#!/bin/sh
# test_install: `make install` into a temporary prefix, then a small program built
# against the installed copy through pkg-config, linked statically and dynamically,
# and run. Also checks the tool, the man page, the soname links, DESTDIR staging
# and `make uninstall`. Ends with "test_install: N passed, N failed".
#
# Run from anywhere: sh tests/test_install.sh. Needs a C compiler, make and
# pkg-config. `make check-plain` runs it through tests/run.sh.

root=$(cd "$(dirname "$0")/.." && pwd)
make=${MAKE:-make}
cc=${CC:-cc}
passed=0
failed=0

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hostmem-install.XXXXXX") || {
    echo "not ok - mktemp -d"
    echo "test_install: 0 passed, 1 failed"
    exit 1
}
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ok() {
    passed=$((passed + 1))
    echo "ok - $1"
}
not_ok() {
    failed=$((failed + 1))
    echo "not ok - $1"
    if [ -n "${2:-}" ] && [ -s "$2" ]; then
        sed -e 's/^/    /' "$2" | tail -20
    fi
}
# check DESCRIPTION COMMAND...: runs COMMAND, output to $tmp/log.
check() {
    what=$1
    shift
    if "$@" > "$tmp/log" 2>&1; then
        ok "$what"
    else
        not_ok "$what" "$tmp/log"
    fi
}

prefix=$tmp/prefix
mkdir -p "$prefix"

# --- install -----------------------------------------------------------------
if (cd "$root" && $make --no-print-directory install PREFIX="$prefix") > "$tmp/install.log" 2>&1; then
    ok "make install PREFIX=$prefix"
else
    not_ok "make install PREFIX=$prefix" "$tmp/install.log"
    echo "test_install: $passed passed, $failed failed"
    exit 1
fi

for f in include/hostmem.h lib/libhostmem.a lib/pkgconfig/hostmem.pc \
         bin/hostmem share/man/man1/hostmem.1; do
    check "installed $f" test -f "$prefix/$f"
done

# The shared library: the real file and its two links, and the soname in it.
version=$(sed -n 's/^#define HOSTMEM_VERSION_STRING "\(.*\)"/\1/p' "$root/include/hostmem.h")
major=${version%%.*}
check "lib/libhostmem.so.$version is a file" test -f "$prefix/lib/libhostmem.so.$version" -a ! -L "$prefix/lib/libhostmem.so.$version"
check "lib/libhostmem.so.$major -> libhostmem.so.$version" \
    test "$(readlink "$prefix/lib/libhostmem.so.$major")" = "libhostmem.so.$version"
check "lib/libhostmem.so -> libhostmem.so.$major" \
    test "$(readlink "$prefix/lib/libhostmem.so")" = "libhostmem.so.$major"
if command -v readelf > /dev/null 2>&1; then
    check "soname is libhostmem.so.$major" \
        sh -c "readelf -d '$prefix/lib/libhostmem.so.$version' | grep -q 'SONAME.*\[libhostmem.so.$major\]'"
fi

# --- pkg-config --------------------------------------------------------------
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
check "pkg-config --modversion hostmem is $version" \
    test "$(pkg-config --modversion hostmem 2>&1)" = "$version"
if cflags=$(pkg-config --cflags hostmem 2>"$tmp/log") &&
    libs=$(pkg-config --libs hostmem 2>>"$tmp/log") &&
    static_libs=$(pkg-config --static --libs hostmem 2>>"$tmp/log"); then
    ok "pkg-config --cflags --libs hostmem: $cflags $libs"
else
    not_ok "pkg-config --cflags --libs hostmem" "$tmp/log"
fi
check "pkg-config --cflags names the installed include directory" \
    sh -c "pkg-config --cflags hostmem | grep -q -- '-I$prefix/include'"
check "pkg-config --static --libs adds -lpthread" \
    sh -c "pkg-config --static --libs hostmem | grep -q -- '-lpthread'"

# --- a program built against the installed copy --------------------------------
cat > "$tmp/prog.c" << 'EOF'
#define COBJMACROS
#include <hostmem.h>
#include <stdio.h>
#include <string.h>

#define CHECK(what, cond) \
    do { if (!(cond)) { printf("FAILED: %s\n", what); return 1; } } while (0)

int main(void)
{
    IHostMemoryManager *m = NULL;
    CHECK("hostmem_create", hostmem_create(NULL, &m) == S_OK && m);
    void *base = NULL, *page = NULL;
    CHECK("reserve", IHostMemoryManager_VirtualAlloc(m, NULL, 1 << 20, MEM_RESERVE, PAGE_READWRITE,
                                                     eTaskCritical, &base) == S_OK && base);
    CHECK("commit", IHostMemoryManager_VirtualAlloc(m, base, 4096, MEM_COMMIT, PAGE_READWRITE,
                                                    eTaskCritical, &page) == S_OK && page == base);
    memset(page, 0x5A, 4096);
    MEMORY_BASIC_INFORMATION info;
    SIZE_T written = 0;
    CHECK("VirtualQuery", IHostMemoryManager_VirtualQuery(m, page, &info, sizeof info, &written) == S_OK);
    CHECK("VirtualQuery result", written == sizeof info && info.State == MEM_COMMIT &&
                                     info.Protect == PAGE_READWRITE && info.AllocationBase == base);
    CHECK("release", IHostMemoryManager_VirtualFree(m, base, 0, MEM_RELEASE) == S_OK);
    CHECK("release again", IHostMemoryManager_VirtualFree(m, base, 0, MEM_RELEASE) ==
                               HOST_E_INVALIDOPERATION);
    IHostMemoryManager_Release(m);
    printf("OK %s\n", HOSTMEM_VERSION_STRING);
    return 0;
}
EOF

# Dynamic: -lhostmem picks libhostmem.so; run with LD_LIBRARY_PATH.
# shellcheck disable=SC2086
if $cc -std=c11 -Wall -Wextra -Werror -o "$tmp/prog_dynamic" "$tmp/prog.c" $cflags $libs > "$tmp/log" 2>&1; then
    ok "dynamic link: cc prog.c \$(pkg-config --cflags --libs hostmem)"
    out=$(LD_LIBRARY_PATH="$prefix/lib" "$tmp/prog_dynamic" 2>&1)
    if [ "$out" = "OK $version" ]; then
        ok "dynamic program runs with LD_LIBRARY_PATH: $out"
    else
        echo "$out" > "$tmp/log"
        not_ok "dynamic program runs with LD_LIBRARY_PATH" "$tmp/log"
    fi
    if command -v readelf > /dev/null 2>&1; then
        check "dynamic program needs libhostmem.so.$major" \
            sh -c "readelf -d '$tmp/prog_dynamic' | grep -q 'NEEDED.*\[libhostmem.so.$major\]'"
    fi
else
    not_ok "dynamic link: cc prog.c \$(pkg-config --cflags --libs hostmem)" "$tmp/log"
fi

# Static: pkg-config --static adds Libs.private; -static takes libhostmem.a.
# shellcheck disable=SC2086
if $cc -std=c11 -Wall -Wextra -Werror -static -o "$tmp/prog_static" "$tmp/prog.c" $cflags $static_libs > "$tmp/log" 2>&1; then
    ok "static link: cc -static prog.c \$(pkg-config --static --cflags --libs hostmem)"
    out=$("$tmp/prog_static" 2>&1)
    if [ "$out" = "OK $version" ]; then
        ok "static program runs: $out"
    else
        echo "$out" > "$tmp/log"
        not_ok "static program runs" "$tmp/log"
    fi
    if command -v readelf > /dev/null 2>&1; then
        check "static program does not need libhostmem.so" \
            sh -c "! readelf -d '$tmp/prog_static' 2>/dev/null | grep -q 'NEEDED.*libhostmem'"
    fi
else
    not_ok "static link: cc -static prog.c \$(pkg-config --static --cflags --libs hostmem)" "$tmp/log"
fi

# --- the tool and the man page ------------------------------------------------
check "bin/hostmem is executable" test -x "$prefix/bin/hostmem"
out=$("$prefix/bin/hostmem" --version 2>&1)
if printf '%s\n' "$out" | grep -q "^hostmem $version"; then
    ok "hostmem --version: $out"
else
    echo "$out" > "$tmp/log"
    not_ok "hostmem --version prints \"hostmem $version\"" "$tmp/log"
fi
check "man page is a man(7) page for section 1" grep -q '^\.TH HOSTMEM 1' "$prefix/share/man/man1/hostmem.1"
if command -v man > /dev/null 2>&1 && man -l "$prefix/share/man/man1/hostmem.1" > /dev/null 2>&1; then
    check "man -l renders the installed page" \
        sh -c "MANWIDTH=80 man -l '$prefix/share/man/man1/hostmem.1' 2>/dev/null | grep -q 'EXIT STATUS'"
fi

# --- DESTDIR staging -----------------------------------------------------------
stage=$tmp/stage
if (cd "$root" && $make --no-print-directory install PREFIX=/opt/hostmem DESTDIR="$stage") > "$tmp/log" 2>&1; then
    ok "make install PREFIX=/opt/hostmem DESTDIR=..."
    check "DESTDIR: files are staged under DESTDIR/PREFIX" \
        test -f "$stage/opt/hostmem/lib/libhostmem.a" -a -f "$stage/opt/hostmem/bin/hostmem" \
             -a -f "$stage/opt/hostmem/include/hostmem.h" -a -L "$stage/opt/hostmem/lib/libhostmem.so"
    check "DESTDIR: hostmem.pc names PREFIX, not DESTDIR" \
        sh -c "grep -q '^prefix=/opt/hostmem\$' '$stage/opt/hostmem/lib/pkgconfig/hostmem.pc' &&
               ! grep -q '$stage' '$stage/opt/hostmem/lib/pkgconfig/hostmem.pc'"
else
    not_ok "make install PREFIX=/opt/hostmem DESTDIR=..." "$tmp/log"
fi

# --- uninstall -----------------------------------------------------------------
if (cd "$root" && $make --no-print-directory uninstall PREFIX="$prefix") > "$tmp/log" 2>&1; then
    ok "make uninstall PREFIX=$prefix"
    left=$(find "$prefix" ! -type d)
    if [ -z "$left" ]; then
        ok "make uninstall removed every installed file"
    else
        echo "$left" > "$tmp/log"
        not_ok "make uninstall removed every installed file" "$tmp/log"
    fi
else
    not_ok "make uninstall PREFIX=$prefix" "$tmp/log"
fi

echo "test_install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
