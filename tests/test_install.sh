#!/bin/sh
# test_install: `make install` into a temporary prefix, then a small program built
# against the installed copy through pkg-config, linked statically and dynamically,
# and run; the same through CMake's find_package(hostmem) (the imported targets
# hostmem::hostmem, hostmem::hostmem_static, hostmem::hostmem_win32), and both
# against a DESTDIR stage (pkg-config with PKG_CONFIG_SYSROOT_DIR; the CMake
# package finds its files from its own place). Also checks what README says a
# prefix the system does not search needs (PKG_CONFIG_PATH, then LD_LIBRARY_PATH
# or an rpath), the tool, the man page, the soname links and `make uninstall`.
# Ends with "test_install: N passed, N failed, N skipped".
#
# Run from anywhere: sh tests/test_install.sh. Needs a C compiler, make and
# pkg-config; without cmake the CMake checks are skipped (counted, and said).
# `make check-plain` runs it through tests/run.sh.

root=$(cd "$(dirname "$0")/.." && pwd)
make=${MAKE:-make}
cc=${CC:-cc}
passed=0
failed=0
skipped=0

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hostmem-install.XXXXXX") || {
    echo "not ok - mktemp -d"
    echo "test_install: 0 passed, 1 failed, 0 skipped"
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
# skip N WHY: N checks that cannot run here, counted and said on one line.
skip() {
    skipped=$((skipped + $1))
    echo "test_install: skipped $1 checks: $2"
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
    echo "test_install: $passed passed, $failed failed, $skipped skipped"
    exit 1
fi

for f in include/hostmem.h lib/libhostmem.a lib/pkgconfig/hostmem.pc \
         lib/cmake/hostmem/hostmem-config.cmake lib/cmake/hostmem/hostmem-config-version.cmake \
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

# README: a prefix the dynamic loader does not search needs LD_LIBRARY_PATH or an
# rpath. Without either the program cannot start; with the rpath it runs alone.
if [ -x "$tmp/prog_dynamic" ]; then
    if env -u LD_LIBRARY_PATH "$tmp/prog_dynamic" > "$tmp/log" 2>&1; then
        not_ok "without LD_LIBRARY_PATH or an rpath the program cannot find libhostmem.so.$major (README)" "$tmp/log"
    else
        ok "without LD_LIBRARY_PATH or an rpath the program cannot find libhostmem.so.$major (README)"
    fi
fi
libdir=$(pkg-config --variable=libdir hostmem)
# shellcheck disable=SC2086
if $cc -std=c11 -Wall -Wextra -Werror -o "$tmp/prog_rpath" "$tmp/prog.c" $cflags $libs -Wl,-rpath,"$libdir" > "$tmp/log" 2>&1 &&
    out=$(env -u LD_LIBRARY_PATH "$tmp/prog_rpath" 2>&1) && [ "$out" = "OK $version" ]; then
    ok "with -Wl,-rpath,\$(pkg-config --variable=libdir hostmem) it runs alone: $out"
else
    echo "${out:-}" >> "$tmp/log"
    not_ok "with -Wl,-rpath,\$(pkg-config --variable=libdir hostmem) it runs alone" "$tmp/log"
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

# --- CMake: find_package(hostmem) ----------------------------------------------
mkdir -p "$tmp/cmake-app"
cp "$tmp/prog.c" "$tmp/cmake-app/"
cat > "$tmp/cmake-app/win32.c" << 'EOF'
#include <hostmem_win32.h>
#include <stdio.h>

int main(void)
{
    char *p = VirtualAlloc(NULL, 65536, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    if (!p || !VirtualFree(p, 0, MEM_RELEASE)) {
        printf("FAILED: VirtualAlloc/VirtualFree, last error %u\n", (unsigned)GetLastError());
        return 1;
    }
    printf("OK win32\n");
    return 0;
}
EOF
cat > "$tmp/cmake-app/CMakeLists.txt" << 'EOF'
cmake_minimum_required(VERSION 3.10)
project(hostmem_consumer C)
set(HOSTMEM_WANT "" CACHE STRING "the version find_package asks for")
find_package(hostmem ${HOSTMEM_WANT} REQUIRED)
add_executable(app_shared prog.c)
target_link_libraries(app_shared PRIVATE hostmem::hostmem)
add_executable(app_static prog.c)
target_link_libraries(app_static PRIVATE hostmem::hostmem_static)
add_executable(app_win32 win32.c)
target_link_libraries(app_win32 PRIVATE hostmem::hostmem_win32)
EOF
# cmake_app NAME PREFIX_PATH [ARGS...]: configures and builds the consumer in
# $tmp/cmake-NAME with CMAKE_PREFIX_PATH=PREFIX_PATH; output in $tmp/cmake-NAME.log.
cmake_app() {
    name=$1
    path=$2
    shift 2
    rm -rf "$tmp/cmake-$name"
    CC=$cc cmake -S "$tmp/cmake-app" -B "$tmp/cmake-$name" -DCMAKE_PREFIX_PATH="$path" "$@" > "$tmp/cmake-$name.log" 2>&1 &&
        cmake --build "$tmp/cmake-$name" >> "$tmp/cmake-$name.log" 2>&1
}
# runs_alone PROGRAM WANT: PROGRAM prints WANT with no LD_LIBRARY_PATH.
runs_alone() {
    out=$(env -u LD_LIBRARY_PATH "$1" 2>&1)
    echo "$out" > "$tmp/log"
    [ "$out" = "$2" ]
}
have_cmake=false
command -v cmake > /dev/null 2>&1 && have_cmake=true
if ! $have_cmake; then
    skip 9 "cmake is not installed (.ci/run installs it)"
else
    if cmake_app installed "$prefix" -DHOSTMEM_WANT="$major.1"; then
        ok "cmake: find_package(hostmem $major.1), a build against hostmem::hostmem, hostmem::hostmem_static, hostmem::hostmem_win32"
    else
        not_ok "cmake: find_package(hostmem $major.1), a build against the imported targets" "$tmp/cmake-installed.log"
    fi
    b=$tmp/cmake-installed
    if runs_alone "$b/app_shared" "OK $version"; then ok "cmake: hostmem::hostmem runs (CMake's rpath)"; else not_ok "cmake: hostmem::hostmem runs" "$tmp/log"; fi
    check "cmake: hostmem::hostmem needs libhostmem.so.$major" \
        sh -c "readelf -d '$b/app_shared' | grep -q 'NEEDED.*\[libhostmem.so.$major\]'"
    if runs_alone "$b/app_static" "OK $version"; then ok "cmake: hostmem::hostmem_static runs"; else not_ok "cmake: hostmem::hostmem_static runs" "$tmp/log"; fi
    check "cmake: hostmem::hostmem_static needs no libhostmem.so" \
        sh -c "! readelf -d '$b/app_static' | grep -q 'NEEDED.*libhostmem'"
    if runs_alone "$b/app_win32" "OK win32"; then ok "cmake: hostmem::hostmem_win32 runs"; else not_ok "cmake: hostmem::hostmem_win32 runs" "$tmp/log"; fi
    # the version file: the same major, not newer than installed; EXACT for this one
    if cmake_app exact "$prefix" -DHOSTMEM_WANT="$version;EXACT"; then
        ok "cmake: find_package(hostmem $version EXACT)"
    else
        not_ok "cmake: find_package(hostmem $version EXACT)" "$tmp/cmake-exact.log"
    fi
    if cmake_app newer "$prefix" -DHOSTMEM_WANT="$major.99"; then
        not_ok "cmake: find_package(hostmem $major.99) is refused (installed: $version)" "$tmp/cmake-newer.log"
    elif grep -q "version: $version" "$tmp/cmake-newer.log"; then
        ok "cmake: find_package(hostmem $major.99) is refused, naming version $version"
    else
        not_ok "cmake: find_package(hostmem $major.99) is refused, naming version $version" "$tmp/cmake-newer.log"
    fi
    if cmake_app major "$prefix" -DHOSTMEM_WANT="$((major + 1))"; then
        not_ok "cmake: find_package(hostmem $((major + 1))) is refused (another major)" "$tmp/cmake-major.log"
    else
        ok "cmake: find_package(hostmem $((major + 1))) is refused (another major)"
    fi
fi

# --- DESTDIR staging -----------------------------------------------------------
stage=$tmp/stage
staged=$stage/opt/hostmem
if (cd "$root" && $make --no-print-directory install PREFIX=/opt/hostmem DESTDIR="$stage") > "$tmp/log" 2>&1; then
    ok "make install PREFIX=/opt/hostmem DESTDIR=..."
    check "DESTDIR: files are staged under DESTDIR/PREFIX" \
        test -f "$staged/lib/libhostmem.a" -a -f "$staged/bin/hostmem" \
             -a -f "$staged/include/hostmem.h" -a -L "$staged/lib/libhostmem.so" \
             -a -f "$staged/lib/cmake/hostmem/hostmem-config.cmake"
    check "DESTDIR: hostmem.pc names PREFIX, not DESTDIR" \
        sh -c "grep -q '^prefix=/opt/hostmem\$' '$staged/lib/pkgconfig/hostmem.pc' &&
               ! grep -q '$stage' '$staged/lib/pkgconfig/hostmem.pc'"
    check "DESTDIR: the CMake package names neither PREFIX nor DESTDIR (it finds its files from its own place)" \
        sh -c "! grep -q -e '/opt/hostmem' -e '$stage' '$staged/lib/cmake/hostmem/hostmem-config.cmake'"
    # pkg-config against the stage: PKG_CONFIG_SYSROOT_DIR puts DESTDIR before every path
    if scflags=$(PKG_CONFIG_PATH="$staged/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$stage" pkg-config --cflags hostmem) &&
        slibs=$(PKG_CONFIG_PATH="$staged/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$stage" pkg-config --libs hostmem) &&
        # shellcheck disable=SC2086
        $cc -std=c11 -Wall -Wextra -Werror -o "$tmp/prog_staged" "$tmp/prog.c" $scflags $slibs > "$tmp/log" 2>&1 &&
        out=$(LD_LIBRARY_PATH="$staged/lib" "$tmp/prog_staged" 2>&1) && [ "$out" = "OK $version" ]; then
        ok "DESTDIR: pkg-config with PKG_CONFIG_SYSROOT_DIR builds against the stage: $scflags $slibs"
    else
        echo "${scflags:-} ${slibs:-} ${out:-}" >> "$tmp/log"
        not_ok "DESTDIR: pkg-config with PKG_CONFIG_SYSROOT_DIR builds against the stage" "$tmp/log"
    fi
    if ! $have_cmake; then
        skip 3 "cmake is not installed (.ci/run installs it)"
    else
        if cmake_app staged "$staged" && runs_alone "$tmp/cmake-staged/app_shared" "OK $version" &&
            runs_alone "$tmp/cmake-staged/app_static" "OK $version"; then
            ok "DESTDIR: find_package(hostmem) from the stage builds programs that run (the package is relocatable)"
        else
            cat "$tmp/cmake-staged.log" >> "$tmp/log"
            not_ok "DESTDIR: find_package(hostmem) from the stage builds programs that run" "$tmp/log"
        fi
        check "DESTDIR: the staged program runs from the stage's library" \
            sh -c "readelf -d '$tmp/cmake-staged/app_shared' | grep -q 'R.*PATH.*$staged/lib'"
        # a package whose files are gone says which, instead of failing at link time
        mv "$staged/lib/libhostmem.a" "$staged/lib/libhostmem.a.away"
        if cmake_app broken "$staged"; then
            not_ok "cmake: a package with a missing library is not found" "$tmp/cmake-broken.log"
        elif grep -q "libhostmem.a is missing" "$tmp/cmake-broken.log"; then
            ok "cmake: a package with a missing library is not found, and says which file"
        else
            not_ok "cmake: a package with a missing library is not found, and says which file" "$tmp/cmake-broken.log"
        fi
        mv "$staged/lib/libhostmem.a.away" "$staged/lib/libhostmem.a"
    fi
    if (cd "$root" && $make --no-print-directory uninstall PREFIX=/opt/hostmem DESTDIR="$stage") > "$tmp/log" 2>&1 &&
        [ -z "$(find "$stage" ! -type d)" ]; then
        ok "DESTDIR: make uninstall removes every staged file"
    else
        find "$stage" ! -type d >> "$tmp/log"
        not_ok "DESTDIR: make uninstall removes every staged file" "$tmp/log"
    fi
else
    not_ok "make install PREFIX=/opt/hostmem DESTDIR=..." "$tmp/log"
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
    check "make uninstall removed the CMake package's directory" test ! -d "$prefix/lib/cmake/hostmem"
else
    not_ok "make uninstall PREFIX=$prefix" "$tmp/log"
fi

echo "test_install: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
