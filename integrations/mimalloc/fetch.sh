# fetch.sh - sourced by run.sh and bench.sh: Debian's mimalloc sources, fetched once.
#
# mimalloc_fetch BUILD LOGS: prints the directory of the unpacked source package
# (BUILD/src/mimalloc-*, from `apt-get source mimalloc` unless already there) and
# returns 0; or prints why there is none and returns 1. The tree it names stays
# as Debian shipped it: the scripts patch a copy.
mimalloc_fetch() {
    fetch_build=$1
    fetch_logs=$2
    for fetch_dir in "$fetch_build"/src/mimalloc-*; do
        if [ -f "$fetch_dir/src/static.c" ] && [ -f "$fetch_dir/src/os.c" ] &&
            [ -f "$fetch_dir/test/test-stress.c" ]; then
            printf '%s\n' "$fetch_dir"
            return 0
        fi
    done
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "no apt-get to fetch Debian's source package"
        return 1
    fi
    if ! command -v dpkg-source >/dev/null 2>&1; then
        echo "apt-get source needs dpkg-source (package dpkg-dev) to unpack the package"
        return 1
    fi
    mkdir -p "$fetch_build/src" "$fetch_logs"
    if ! (cd "$fetch_build/src" && timeout 600 apt-get source -q mimalloc) \
        >"$fetch_logs/fetch.log" 2>&1; then
        fetch_why=$(grep -E '^(E|W): ' "$fetch_logs/fetch.log" | grep -v unsandboxed | head -1)
        echo "apt-get source mimalloc failed (${fetch_why:-see $fetch_logs/fetch.log})"
        return 1
    fi
    for fetch_dir in "$fetch_build"/src/mimalloc-*; do
        if [ -f "$fetch_dir/src/static.c" ] && [ -f "$fetch_dir/src/os.c" ]; then
            printf '%s\n' "$fetch_dir"
            return 0
        fi
    done
    echo "apt-get source mimalloc gave no mimalloc source tree"
    return 1
}

# mimalloc_version SOURCE: MI_MALLOC_VERSION of the tree (209 for 2.0.9)
mimalloc_version() {
    sed -n 's/^#define MI_MALLOC_VERSION *\([0-9]*\).*/\1/p' "$1/include/mimalloc.h"
}
