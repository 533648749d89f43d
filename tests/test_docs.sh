#!/bin/sh
# test_docs.sh - the documents say what is true: README.md, docs/*.md and
# docs/hostmem.1, checked against the tree and the built library and tool.
#   sh tests/test_docs.sh [BUILD]     (BUILD: the build directory, default build)
# Prints "test_docs: N passed, N failed"; each FAIL names the document, the
# line and the claim. No timing is measured; it takes a few seconds.
#
# The conventions a document follows (README's "How hostmem is tested" says
# them in short):
#
# 1. C snippets. Every ```c block of README.md and docs/*.md is compiled
#    against include/ (cc -std=c11 -Wall -Werror) and linked with
#    BUILD/libhostmem.a (and BUILD/libhostmem_win32.a before it when the block
#    includes hostmem_win32.h). An HTML comment on the line before the fence
#    says how; without one the block is a whole program:
#      (none)                          a program: compiled, linked, run; exit 0
#      <!-- doc-test: body -->         statements: its # lines go first, the
#                                      rest into int main(void) { ... return 0; },
#                                      then as a program
#      <!-- doc-test: declarations --> declarations that must agree with the
#                                      headers: compiled after #include of
#                                      hostmem.h and hostmem_win32.h, not run
# 2. Tool commands. In any fenced block, a line "$ COMMAND" is run with sh at
#    the top of the source tree, BUILD/hostmem first on PATH as hostmem; the
#    lines after it, up to the next "$ " line or the fence, are what it prints
#    (standard output and standard error), compared line by line. A line that
#    is just "..." stands for any lines, none included; "..." inside a line
#    for any text (addresses, timings, what this machine has). A command
#    shown with no output must exit 0. A command ending in <<'EOF' reads the
#    lines up to EOF. Only hostmem commands are run this way.
#      <!-- doc-test: file PATH -->    before a fence: the block is PATH's
#                                      text, whole (a script the docs show)
# 3. Names. Every path under src/ tests/ tools/ examples/ include/ docs/
#    integrations/ bench/ win32/ cmake/ .ci/ exists (a NAME or MAJOR part matches
#    anything; * globs); every function written `name(...)` in backticks, and
#    every hostmem_* or Virtual* name in backticks, is found in include/ src/
#    tools/ win32/ tests/ bench/ (a HOSTMEM_* constant or environment variable
#    in backticks there or in integrations/ and the Makefile); every option --name is one the tool or the
#    benchmark parses (tools/, bench/). No document names an issue number or
#    shared/SPEC.md (not part of the project). Names that are not hostmem's
#    are listed in ALLOWED below, each with its reason.
build=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
case $build in /*) ;; *) build=$top/$build ;; esac
cd "$top" || exit 1
passed=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "  FAIL test_docs: $*"; }

# DOCUMENT NAME  reason: names the documents may use that are not hostmem's.
ALLOWED='
README.md src/coreclr/pal/src/map/virtual.cpp   the CoreCLR PAL file the reference paragraph compares with
docs/integrations.md src/os.c                   mimalloc'"'"'s own file, which integrations/mimalloc replaces
docs/design.md integrations/bdwgc               where the next work puts the collector: placed before it is made
* --cflags                                      an option of pkg-config, not of hostmem
* --libs                                        an option of pkg-config
* --static                                      an option of pkg-config
* --variable                                    an option of pkg-config
'
allowed() { # DOCUMENT NAME
    printf '%s\n' "$ALLOWED" | awk -v d="$1" -v n="$2" '($1 == d || $1 == "*") && $2 == n {f = 1} END {exit !f}'
}

docs="README.md $(ls docs/*.md)"
for f in "$build/hostmem" "$build/libhostmem.a" "$build/libhostmem_win32.a"; do
    [ -e "$f" ] || { echo "test_docs: $f is missing (run make first)"; echo "test_docs: 0 passed, 1 failed"; exit 1; }
done
mkdir -p "$tmp/bin" "$tmp/blocks"
ln -s "$build/hostmem" "$tmp/bin/hostmem"

# Every fenced block of every document, one file each: BLOCK.txt (its lines)
# and BLOCK.meta ("document line info marker", line = the first line inside).
n=0
for doc in $docs; do
    awk -v doc="$doc" -v dir="$tmp/blocks" -v start="$n" '
        BEGIN { k = start }
        /^```/ && !inside { inside = 1; k++; info = substr($0, 4); file = dir "/" k ".txt"
                            printf "" > file
                            print doc, NR + 1, (info == "" ? "-" : info), (marker == "" ? "-" : marker) > (dir "/" k ".meta")
                            close(dir "/" k ".meta"); marker = ""; next }
        /^```/ && inside { inside = 0; close(file); next }
        inside { print > file; next }
        /^<!-- doc-test: .* -->$/ { marker = $0; sub(/^<!-- doc-test: /, "", marker); sub(/ -->$/, "", marker); gsub(/ /, "_", marker); next }
        { marker = "" }
        END { print k > (dir "/count") }
    ' "$doc"
    n=$(cat "$tmp/blocks/count")
done

# ---- 1. C snippets -----------------------------------------------------------------------
CC=${CC:-cc}
i=0
while [ $i -lt "$n" ]; do
    i=$((i + 1))
    read -r doc line info marker < "$tmp/blocks/$i.meta"
    [ "$info" = c ] || continue
    src=$tmp/snippet$i.c
    where="$doc:$line: the C snippet"
    libs="$build/libhostmem.a"
    grep -q 'hostmem_win32\.h' "$tmp/blocks/$i.txt" && libs="$build/libhostmem_win32.a $libs"
    case $marker in
    -)
        cp "$tmp/blocks/$i.txt" "$src" ;;
    body)
        { grep '^#' "$tmp/blocks/$i.txt"; echo 'int main(void) {'; grep -v '^#' "$tmp/blocks/$i.txt"
          echo 'return 0; }'; } > "$src" ;;
    declarations)
        { echo '#include "hostmem.h"'; echo '#include "hostmem_win32.h"'; cat "$tmp/blocks/$i.txt"; } > "$src"
        if $CC -std=c11 -Wall -Werror -Iinclude -c "$src" -o "$tmp/snippet$i.o" 2> "$tmp/err"; then ok
        else bad "$where does not agree with the headers:"; sed 's/^/    /' "$tmp/err" | head -8; fi
        continue ;;
    *)
        bad "$doc:$((line - 1)): unknown doc-test marker '$marker'"; continue ;;
    esac
    if ! $CC -std=c11 -Wall -Werror -Iinclude "$src" $libs -pthread -o "$tmp/snippet$i" 2> "$tmp/err"; then
        bad "$where does not compile:"; sed 's/^/    /' "$tmp/err" | head -8; continue
    fi
    if "$tmp/snippet$i" > "$tmp/out" 2>&1; then ok
    else bad "$where exits $? when run:"; sed 's/^/    /' "$tmp/out" | head -5; fi
done

# ---- 2. commands and the files the docs show -----------------------------------------------
# match EXPECTED ACTUAL: the lines of EXPECTED ("..." lines and "..." in a line
# are wildcards) against ACTUAL; exit 0 when they match.
match() {
    awk -v expfile="$1" '
        function piece(e, a,    parts, k, np, pos, at) {
            if (index(e, "...") == 0) return e == a
            np = split(e, parts, /\.\.\./)
            if (substr(a, 1, length(parts[1])) != parts[1]) return 0
            pos = length(parts[1]) + 1
            for (k = 2; k < np; k++) {
                at = index(substr(a, pos), parts[k]); if (!at) return 0
                pos += at - 1 + length(parts[k])
            }
            return length(a) - pos + 1 >= length(parts[np]) && substr(a, length(a) - length(parts[np]) + 1) == parts[np]
        }
        function m(i, j,    k) {
            if (i > ne) return j > na
            if (want[i] == "...") { for (k = j; k <= na + 1; k++) if (m(i + 1, k)) return 1; return 0 }
            if (j > na || !piece(want[i], got[j])) return 0
            return m(i + 1, j + 1)
        }
        BEGIN { while ((getline l < expfile) > 0) want[++ne] = l }
        { got[++na] = $0 }
        END { exit !m(1, 1) }
    ' "$2"
}

i=0
while [ $i -lt "$n" ]; do
    i=$((i + 1))
    read -r doc line info marker < "$tmp/blocks/$i.meta"
    block=$tmp/blocks/$i.txt
    case $marker in
    file_*)
        path=${marker#file_}
        if [ ! -f "$path" ]; then bad "$doc:$((line - 1)): the block shows $path, which does not exist"
        elif diff -u "$path" "$block" > "$tmp/diff"; then ok
        else bad "$doc:$line: the block differs from $path:"; sed 's/^/    /' "$tmp/diff" | head -12; fi ;;
    esac
    grep -q '^\$ ' "$block" || continue
    # one command at a time: COMMAND, its input if any, its output
    awk -v dir="$tmp/cmd$i" -v first="$line" '
        BEGIN { k = 0; system("mkdir -p " dir) }
        heredoc { if ($0 == "EOF") { heredoc = 0; next } print >> (dir "/" k ".in"); next }
        /^\$ / { k++; c = substr($0, 3); print first + NR - 1 > (dir "/" k ".line")
                 if (c ~ /<<.?EOF.?$/) { heredoc = 1; sub(/ *<<.?EOF.?$/, "", c); printf "" > (dir "/" k ".in") }
                 print c > (dir "/" k ".cmd"); printf "" > (dir "/" k ".out"); next }
        k { print >> (dir "/" k ".out") }
        END { print k > (dir "/count") }
    ' "$block"
    c=0
    while [ $c -lt "$(cat "$tmp/cmd$i/count")" ]; do
        c=$((c + 1))
        base=$tmp/cmd$i/$c
        cmd=$(cat "$base.cmd")
        where="$doc:$(cat "$base.line"): \$ $cmd"
        case " $cmd" in
        *" hostmem "* | *" hostmem") ;;
        *) bad "$where: only hostmem commands are run"; continue ;;
        esac
        input=/dev/null
        [ -f "$base.in" ] && input=$base.in
        PATH="$tmp/bin:$PATH" sh -c "$cmd" < "$input" > "$base.got" 2>&1
        status=$?
        if [ ! -s "$base.out" ]; then
            if [ $status -eq 0 ]; then ok; else bad "$where: exit $status (the doc shows no output, so it must succeed)"; fi
        elif match "$base.out" "$base.got"; then ok
        else
            bad "$where: the output differs from the doc's (- the doc, + the tool; ... matches anything):"
            diff -u "$base.out" "$base.got" | tail -n +3 | sed 's/^/    /' | head -20
        fi
    done
done

# ---- 3. names ------------------------------------------------------------------------------
# NAMES: "document line kind name" for every path, function and option named.
for doc in $docs docs/hostmem.1; do
    sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\(em/-/g' "$doc" | awk -v doc="$doc" '
        function each(re, kind, text,    s, name) {
            s = text
            while (match(s, re)) {
                name = substr(s, RSTART, RLENGTH); s = substr(s, RSTART + RLENGTH)
                if (kind == "path" && match(name, /^[^A-Za-z]/)) name = substr(name, 2)
                if (kind == "option") name = substr(name, (substr(name, 1, 1) == "-" && substr(name, 2, 1) == "-") ? 1 : 2)
                print doc, NR, kind, name
            }
        }
        {
            line = $0
            each("(^|[^A-Za-z0-9_./-])(\\.ci|src|tests|tools|examples|include|docs|integrations|bench|win32|cmake)/[A-Za-z0-9_.*/-]*[A-Za-z0-9_*]", "path", line)
            each("(^|[^A-Za-z0-9-])--[a-z][a-z0-9-]*", "option", line)
            if (line ~ /[Ii]ssues? [0-9]/ || line ~ /SPEC\.md/) print doc, NR, "forbidden", "-"
            if (doc ~ /\.1$/) next
            s = line
            while (match(s, /`[^`]+`/)) {
                code = substr(s, RSTART + 1, RLENGTH - 2); s = substr(s, RSTART + RLENGTH)
                if (match(code, /^[A-Za-z_][A-Za-z0-9_]*\(/)) print doc, NR, "function", substr(code, 1, RLENGTH - 1)
                else if (match(code, /^(hostmem_|Virtual)[A-Za-z0-9_]*/)) print doc, NR, "function", substr(code, 1, RLENGTH)
                else if (match(code, /^HOSTMEM_[A-Z0-9_]+/)) print doc, NR, "constant", substr(code, 1, RLENGTH)
            }
        }
    '
done > "$tmp/names"

# Each name once a document (its first line), forbidden mentions each line.
awk '$3 == "forbidden" || !seen[$1 " " $3 " " $4]++' "$tmp/names" > "$tmp/unique"
while read -r doc line kind name; do
    where="$doc:$line"
    case $kind in
    forbidden)
        bad "$where: names an issue number or shared/SPEC.md, which mean nothing to a user: $(sed -n "${line}p" "$doc" | cut -c1-100)"
        continue ;;
    esac
    if allowed "$doc" "$name"; then ok; continue; fi
    case $kind in
    path)
        pattern=$(printf '%s' "$name" | sed -E 's#(^|/)[A-Z][A-Z_]*(/|$)#\1*\2#g')
        # shellcheck disable=SC2086
        if ls -d $pattern > /dev/null 2>&1; then ok; else bad "$where: the path $name does not exist"; fi ;;
    function)
        if grep -rqw -- "$name" include src tools win32 tests bench 2> /dev/null; then ok
        else bad "$where: the function $name is not in include/ src/ tools/ win32/ tests/ bench/"; fi ;;
    constant)
        if grep -rqw -- "$name" include src tools win32 tests bench integrations Makefile 2> /dev/null; then ok
        else bad "$where: the name $name is not in include/ src/ tools/ win32/ tests/ bench/ integrations/ Makefile"; fi ;;
    option)
        if grep -rqE -- "\"$name([= \"]|\\\\n)" tools bench 2> /dev/null; then ok
        else bad "$where: the option $name is not one the tool parses (tools/, bench/)"; fi ;;
    esac
done < "$tmp/unique"

echo "test_docs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
