#!/bin/sh
# test_layers.sh - docs/design.md's layers: every call between the library's
# files points down. Reads the undefined and defined symbols of each object
# file (nm) and fails on any call to a file of the same or a higher layer,
# which is what a dependency circle needs. A file missing from the table below
# fails too: a new file is placed in a layer (and in design.md) when it is made.
#   sh tests/test_layers.sh build/obj
# Only the objects of today's src/*.c count (a build tree may hold stale ones).
obj=${1:-build/obj}
src=$(cd "$(dirname "$0")/../src" && pwd)
objects=""
for c in "$src"/*.c; do
    objects="$objects $obj/$(basename "$c" .c).o"
done
layers="
os_linux 0
geometry 1
unknown 1
hresult 1
registry 2
pool 2
lock 3
slab 2
radix 2
reservation 3
arena 4
policy 5
range 6
query 6
watch 7
guard 7
deferred 8
vm 9
heap 10
inspect 10
fork 11
com 12
"
layer_of() {
    printf '%s\n' "$layers" | awk -v f="$1" '$1 == f { print $2 }'
}
passed=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for o in $objects; do
    nm --defined-only "$o" | awk 'NF == 3 && $2 ~ /[TDBRC]/ { print $3 }' > "$tmp/$(basename "$o" .o).def"
done
for o in $objects; do
    f=$(basename "$o" .o)
    lf=$(layer_of "$f")
    if [ -z "$lf" ]; then
        echo "  FAIL src/$f.c has no layer in tests/test_layers.sh (and docs/design.md)"
        failed=$((failed + 1))
        continue
    fi
    bad=0
    for s in $(nm -u "$o" | awk '{ print $2 }'); do
        for d in "$tmp"/*.def; do
            g=$(basename "$d" .def)
            [ "$g" = "$f" ] && continue
            if grep -qx "$s" "$d"; then
                lg=$(layer_of "$g")
                if [ -n "$lg" ] && [ "$lg" -ge "$lf" ]; then
                    echo "  FAIL src/$f.c (layer $lf) calls $s in src/$g.c (layer $lg): calls point down"
                    bad=1
                fi
            fi
        done
    done
    if [ $bad = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "test_layers: $passed passed, $failed failed"
[ $failed = 0 ]
