#!/bin/sh
# test_cli.sh - the command-line tool (issue 5): every example script against
# its golden output, the demo and info, help and version, and bad input of
# every kind: each gets a one-line error and the documented exit code, never a
# crash. Issue 16: the help lists everything, `help COMMAND` is `COMMAND --help`,
# bad manager options are usage errors (2) and a manager that cannot be made is
# 3; the demo tells its story in order and, under a small ulimit -v, stops at
# the step refused and says what to do. Each FAIL names its rule. Prints
# "test_cli: N passed, N failed, N skipped".
tool=${1:-build/hostmem}
passed=0
failed=0
skipped=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "  FAIL test_cli: $*"; }
skip() { skipped=$((skipped + $1)); echo "test_cli: skipped $1 checks: $2"; }

# expect_exit CODE DESCRIPTION -- COMMAND...: the exit code, and no crash (>= 128)
expect_exit() {
    code=$1; what=$2; shift 3
    "$@" > "$tmp/out" 2> "$tmp/err"
    got=$?
    if [ "$got" -eq "$code" ]; then ok; else bad "$what: exit $got, expected $code"; sed 's/^/    /' "$tmp/err" | head -5; fi
}

# one_line_error PATTERN DESCRIPTION: stderr is one line matching PATTERN
one_line_error() {
    lines=$(wc -l < "$tmp/err")
    if [ "$lines" -eq 1 ] && grep -q -- "$1" "$tmp/err"; then ok; else bad "$2: stderr was:"; sed 's/^/    /' "$tmp/err" | head -5; fi
}

# golden outputs: each example script, run as shipped
for script in examples/*.hm; do
    golden=${script%.hm}.out
    "$tool" replay "$script" > "$tmp/got" 2>&1
    code=$?
    if [ "$code" -ne 0 ]; then bad "$script: exit $code"; continue; fi
    if diff -u "$golden" "$tmp/got" > "$tmp/diff"; then ok; else bad "$script differs from $golden"; head -20 "$tmp/diff"; fi
done
# the same script from standard input
"$tool" replay - < examples/basics.hm > "$tmp/got" 2>&1 && diff -q examples/basics.out "$tmp/got" > /dev/null && ok || bad "replay - (stdin)"

# a failed expectation prints both results and exits 1
printf 'a = reserve 64K rw\nrelease a\nexpect E_INVALIDARG\n' > "$tmp/expect.hm"
expect_exit 1 "failed expect" -- "$tool" replay "$tmp/expect.hm"
grep -q "FAILED: got S_OK, expected E_INVALIDARG" "$tmp/out" && ok || bad "failed expect names both results"
# a failure with no expect stops the script with exit 1
printf 'release null\nmap\n' > "$tmp/stop.hm"
expect_exit 1 "unexpected failure" -- "$tool" replay "$tmp/stop.hm"
grep -q "stopped: release null failed with HOST_E_INVALIDOPERATION" "$tmp/out" && ok || bad "stop message"
grep -q "map" "$tmp/out" && bad "ran past the failure" || ok
# a failed check exits 1
printf 'a = reserve-commit 4K rw\nwrite a 4K 1\ncheck a 4K 2\n' > "$tmp/check.hm"
expect_exit 1 "failed check" -- "$tool" replay "$tmp/check.hm"

# syntax errors: FILE:LINE:COLUMN, exit 2, and nothing runs
printf 'a = reserve 64K rw\n  commit a 12Q rw\n' > "$tmp/size.hm"
expect_exit 2 "bad size" -- "$tool" replay "$tmp/size.hm"
one_line_error "size.hm:2:12: '12Q' is not a size" "bad size message"
[ ! -s "$tmp/out" ] && ok || bad "a script with a syntax error ran"
printf 'a = reserve 99999999999999999999G\n' > "$tmp/huge.hm"
expect_exit 2 "huge number" -- "$tool" replay "$tmp/huge.hm"
one_line_error "huge.hm:1:13: size '99999999999999999999G' is too large" "huge number message"
printf 'frobnicate a\n' > "$tmp/verb.hm"
expect_exit 2 "unknown operation" -- "$tool" replay "$tmp/verb.hm"
one_line_error "verb.hm:1:1: unknown operation 'frobnicate'" "unknown operation message"
printf 'commit b 4K\n' > "$tmp/name.hm"
expect_exit 2 "unknown name" -- "$tool" replay "$tmp/name.hm"
one_line_error "name.hm:1:8: unknown name 'b'" "unknown name message"
printf 'a = reserve 64K purple\n' > "$tmp/prot.hm"
expect_exit 2 "bad protection" -- "$tool" replay "$tmp/prot.hm"
one_line_error "prot.hm:1:17:" "bad protection message"
printf 'a = reserve 64K\nexpect E_NOPE\n' > "$tmp/result.hm"
expect_exit 2 "bad result name" -- "$tool" replay "$tmp/result.hm"
one_line_error "result.hm:2:8:" "bad result message"
printf 'reserve 64K\n' > "$tmp/noname.hm"
expect_exit 2 "missing name" -- "$tool" replay "$tmp/noname.hm"
printf 'release\n' > "$tmp/args.hm"
expect_exit 2 "too few arguments" -- "$tool" replay "$tmp/args.hm"
printf 'a = reserve 64K\n\0\n' > "$tmp/binary.hm"
expect_exit 2 "binary input" -- "$tool" replay "$tmp/binary.hm"
head -c 20000 /dev/urandom > "$tmp/noise.hm"
"$tool" replay "$tmp/noise.hm" > /dev/null 2>&1
code=$?
[ "$code" -eq 2 ] && ok || bad "random bytes: exit $code, expected 2"
expect_exit 2 "missing file" -- "$tool" replay "$tmp/does-not-exist.hm"
one_line_error "cannot open" "missing file message"

# options
expect_exit 2 "unknown option" -- "$tool" replay --frobnicate examples/basics.hm
one_line_error "unknown option '--frobnicate'" "unknown option message"
expect_exit 2 "bad --commit-limit" -- "$tool" replay --commit-limit 12Q examples/basics.hm
one_line_error "'12Q' is not a size" "bad --commit-limit message"
expect_exit 2 "missing option value" -- "$tool" replay --commit-limit
one_line_error "needs a value" "missing value message"
expect_exit 2 "bad arena size" -- "$tool" replay --arena-size 100 examples/basics.hm
expect_exit 0 "--commit-limit=1M" -- "$tool" replay --commit-limit=1M examples/basics.hm
printf 'a = reserve 64K rw\ncommit a 64K rw\nexpect E_OUTOFMEMORY\n' > "$tmp/limit.hm"
expect_exit 0 "the option sets the budget" -- "$tool" replay --commit-limit 32K "$tmp/limit.hm"
expect_exit 0 "--compact" -- "$tool" replay --compact examples/basics.hm
diff -q examples/basics.out "$tmp/out" > /dev/null && ok || bad "compact mode changes no answer"
expect_exit 2 "unknown command" -- "$tool" frobnicate
one_line_error "unknown command 'frobnicate'" "unknown command message"
expect_exit 2 "info takes no script" -- "$tool" info extra

# help, version, demo, info, bench
expect_exit 0 "bench --only reserve" -- "$tool" bench --quick --only reserve
grep -q "reserve + release 64 KiB" "$tmp/out" && ok || bad "bench prints the reserve figure"
for c in "" demo replay info; do
    expect_exit 0 "help $c" -- "$tool" help $c
    grep -q "usage: hostmem" "$tmp/out" && ok || bad "help $c has no usage line"
done
expect_exit 0 "--help" -- "$tool" --help
expect_exit 0 "replay --help" -- "$tool" replay --help
expect_exit 0 "--version" -- "$tool" --version
grep -q "^hostmem [0-9]" "$tmp/out" && ok || bad "--version output"
expect_exit 0 "demo" -- "$tool" demo
grep -q "HOST_E_INVALIDOPERATION" "$tmp/out" && grep -q "OnMemoryNotification" "$tmp/out" && grep -q "leak: " "$tmp/out" && ok || bad "demo shows the refusal, a notification and the leak report"
grep -q "$(printf '\033')" "$tmp/out" && bad "colour when not on a terminal" || ok
expect_exit 0 "no command runs the demo" -- "$tool"
expect_exit 0 "demo --json" -- "$tool" demo --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["steps"] and d["stats"]["live_heap_blocks"] == 2' "$tmp/out" 2>/dev/null && ok || bad "demo --json is not the expected JSON"
expect_exit 0 "info" -- "$tool" info
grep -q "vm.max_map_count" "$tmp/out" && ok || bad "info lists vm.max_map_count"
grep -q "^write watch " "$tmp/out" && ok || bad "info says how writes are tracked (issue 14)"
expect_exit 0 "info --json" -- "$tool" info --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["page_size"] > 0 and d["write_watch"] in ("kernel", "unavailable")' "$tmp/out" 2>/dev/null && ok || bad "info --json"

# --- issue 16: help ------------------------------------------------------------
# Rule: hostmem --help lists every command, every manager option, --json,
# --no-colour and the exit codes (docs/cli.md: "a summary of the commands and options").
"$tool" --help > "$tmp/help" 2>&1
for word in demo replay info bench help --commit-limit --emergency-reserve --appdomain-wait \
            --lock-timeout --arena-size --compact --json --no-colour "Exit codes" "3 the manager could not be created"; do
    grep -q -- "$word" "$tmp/help" && ok || bad "hostmem --help lists '$word' (issue 16: the top-level help summarises everything)"
done
# Rule: every option the help names is documented in docs/cli.md and the man page.
for option in $(grep -o -- '--[a-z][a-z-]*' "$tmp/help" | sort -u); do
    grep -q -- "$option" docs/cli.md && ok || bad "docs/cli.md documents $option (it is in hostmem --help)"
    grep -q -- "$(printf '%s' "$option" | sed 's/-/\\\\-/g')" docs/hostmem.1 && ok ||
        bad "docs/hostmem.1 documents $option (it is in hostmem --help)"
done
# Rule: hostmem help COMMAND prints what COMMAND --help prints; help --help,
# help -h and help help print help's own usage; exit 0.
for c in demo replay info bench; do
    "$tool" help $c > "$tmp/a" 2>&1; code_a=$?
    "$tool" $c --help > "$tmp/b" 2>&1; code_b=$?
    [ "$code_a" -eq 0 ] && [ "$code_b" -eq 0 ] && cmp -s "$tmp/a" "$tmp/b" && ok ||
        bad "hostmem help $c is hostmem $c --help (exits $code_a, $code_b)"
done
for h in --help -h help; do
    expect_exit 0 "hostmem help $h" -- "$tool" help $h
    grep -q "^usage: hostmem help \[COMMAND\]" "$tmp/out" && ok || bad "hostmem help $h prints help's usage"
done
# Rule: help of an unknown command, or of two, is a usage error (2), one line.
expect_exit 2 "hostmem help nosuch" -- "$tool" help nosuch
one_line_error "no command 'nosuch'" "hostmem help nosuch message"
expect_exit 2 "hostmem help demo replay" -- "$tool" help demo replay
# Rule: --arena-size states its real minimum (4 granules: 256K with 64K
# granules); 64K and 128K are bad option values (2, with the rule), 256K works.
grep -q -- "at least 256K" "$tmp/help" && ok || bad "--help states --arena-size's minimum (at least 256K)"
for size in 64K 128K 100 300K; do
    expect_exit 2 "--arena-size $size is a bad option value" -- "$tool" replay --arena-size $size examples/basics.hm
    one_line_error "--arena-size $size: must be a multiple of the allocation granularity (64 KiB with 4 KiB pages), at least 4 of them (256 KiB)" \
        "--arena-size $size names the rule"
    expect_exit 2 "demo --arena-size $size is a bad option value" -- "$tool" demo --arena-size $size
done
expect_exit 0 "--arena-size 256K works" -- "$tool" replay --arena-size 256K examples/basics.hm
diff -q examples/basics.out "$tmp/out" > /dev/null && ok || bad "--arena-size 256K changes no answer"
expect_exit 0 "demo --arena-size 256K works" -- "$tool" demo --arena-size 256K
# Rule: a budget the library refuses is a bad option value too (2), said with the option.
expect_exit 2 "--commit-limit 100" -- "$tool" demo --commit-limit 100
one_line_error "^hostmem demo: --commit-limit 100: " "--commit-limit 100 names the option"

# --- issue 16: the demo tells its story in order ----------------------------------
"$tool" demo > "$tmp/demo" 2>&1
# Rule: a runtime callback prints under the call that caused it: the line before
# it is a call (or another callback), never a heading or an explanation.
awk '/-> the runtime.s callback/ { if (prev !~ /^  [A-Za-z]/ && prev !~ /-> the runtime.s callback/) bad = bad NR ": " $0 "\n" }
     { prev = $0 } END { printf "%s", bad }' "$tmp/demo" > "$tmp/bad"
[ ! -s "$tmp/bad" ] && ok || { bad "a callback line is not under a call:"; cat "$tmp/bad"; }
grep -c -- "-> the runtime's callback" "$tmp/demo" | grep -qx 3 && ok || bad "the demo shows 3 callbacks (Low, High, Neutral)"
grep -A1 "^  B = VirtualAlloc" "$tmp/demo" | grep -q "callback: OnMemoryNotification(eMemoryAvailableLow)" && ok ||
    bad "Low prints under the commit that filled the budget (B)"
grep -A1 "^  VirtualFree(B, 0, MEM_RELEASE)" "$tmp/demo" | grep -q "callback: OnMemoryNotification(eMemoryAvailableHigh)" && ok ||
    bad "High prints under the release of B"
# Rule: every address in the demo names its reservation (A+..., B), never a bare "base".
grep -q "base+" "$tmp/demo" && bad "an address is 'base+...': which reservation?" || ok
grep -q "^  A = VirtualAlloc(NULL, 44 pages" "$tmp/demo" && ok || bad "the demo names its first reservation A"
# Rule: the "unused tail" is a tail: A's size is not a multiple of 64 KiB where the demo says so.
page=$(sed -n 's/.*Page \([0-9]*\) bytes.*/\1/p' "$tmp/demo")
if [ $((44 * page % 65536)) -ne 0 ]; then
    grep -q "VirtualFree(A+44 pages, 0, MEM_RELEASE) *HOST_E_INVALIDOPERATION  the unused tail of A's last 64 KiB" "$tmp/demo" && ok ||
        bad "A+44 pages is the unused tail of A's last 64 KiB (44 pages of $page bytes), refused"
else
    grep -q "VirtualFree(A+44 pages, 0, MEM_RELEASE) *HOST_E_INVALIDOPERATION  the address just past A" "$tmp/demo" && ok ||
        bad "A+44 pages is the address just past A (44 pages of $page bytes fill whole granules), refused"
fi
# Rule: the budget section starts from a known committed figure, and it adds up:
# committed + B's pages = the budget, and then the load is 100%.
before=$(sed -n "s/.*load [0-9]*%: \([0-9]*\) of the budget's \([0-9]*\) pages committed.*/\1 \2/p" "$tmp/demo")
fill=$(sed -n 's/^  B = VirtualAlloc(NULL, \([0-9]*\) pages.*/\1/p' "$tmp/demo")
set -- $before
if [ -n "$fill" ] && [ $# -eq 2 ] && [ $(($1 + fill)) -eq "$2" ] &&
   grep -q "the rest of the budget: $2 of $2 pages committed, load 100%" "$tmp/demo"; then ok
else bad "the budget adds up: '$before' committed/budget before, B $fill pages, then 100%"; fi
# Rule: counts agree with their nouns ("1 arena", not "1 arenas").
grep -Eq "(^|[^0-9])1 (arenas|reservations)" "$tmp/demo" && bad "'1 arenas' or '1 reservations' in the demo" || ok
grep -Eq "[0-9]+ reservations? in [0-9]+ arenas?;" "$tmp/demo" && ok || bad "the statistics count reservations and arenas"
# Rule: --json carries the callbacks on the call that caused them, and "stopped": null.
"$tool" demo --json > "$tmp/json" 2>&1
python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
b = [s for s in d["steps"] if s["call"].startswith("B = VirtualAlloc")]
assert d["stopped"] is None and b and b[0]["callbacks"] == ["eMemoryAvailableLow"]
assert sum(len(s["callbacks"]) for s in d["steps"]) == 3' "$tmp/json" 2>/dev/null && ok ||
    bad "demo --json: callbacks on B's step, stopped null"
# Rule: a --commit-limit too small for the walk stops it at the step refused,
# says so (the budget, the size the walk needs) and exits 3. The walk needs A's
# 4 pages, the heap's segment header (8 KiB in whole pages) with its two guard
# pages and three 64 KiB spans (tools/demo.c): that budget runs, one page less
# stops (docs/cli.md).
page=$(getconf PAGESIZE)
header=$(( (8192 + page - 1) / page * page ))
needs=$(( (6 * page + header + 3 * 65536) / 1024 ))K
expect_exit 3 "demo --commit-limit 32K" -- "$tool" demo --commit-limit 32K
grep -q "refused by the budget (32K): the walk needs a budget of at least $needs" "$tmp/err" && ok ||
    bad "demo --commit-limit 32K says the budget refused a step and what the walk needs ($needs)"
# (the last step printed; a callback the step caused is printed under it)
grep -v '^ *->' "$tmp/out" | tail -1 | grep -q "E_OUTOFMEMORY" && ok || bad "demo --commit-limit 32K stops at the step refused (last line)"
expect_exit 0 "demo --commit-limit $needs (what the walk needs)" -- "$tool" demo --commit-limit "$needs"
expect_exit 3 "demo --commit-limit $needs less a page" -- "$tool" demo --commit-limit $(( (6 * page + header + 3 * 65536 - page) / 1024 ))K
grep -q "the walk needs a budget of at least $needs" "$tmp/err" && ok || bad "a page under the need names the need"
# --appdomain-wait 0 is accepted and the request refused (tools/cli.c passes it as
# HOSTMEM_NO_WAIT, not as the library's 0, 100 ms; the wait itself is not timed here).
printf 'a = reserve 1M\ncommit a 128K rw appdomain\nexpect E_OUTOFMEMORY\n' > "$tmp/appdomain.hm"
expect_exit 0 "replay --appdomain-wait 0" -- "$tool" replay --commit-limit 64K --appdomain-wait 0 "$tmp/appdomain.hm"

# --- issue 16: under the address-space limit (ulimit -v) --------------------------
# Rules: the lowest limit the tool runs under (--version) leaves no room for the manager:
# "cannot create the manager", exit 3 (docs/cli.md); every limit above it until
# the demo runs makes it stop at the step refused, say why and what to do (the
# ulimit -v to give), exit 3; the limit it advises lets it run (exit 0).
# A sanitizer's shadow memory cannot live under a small limit: then skipped.
under() { # under KIB COMMAND...: the tool under ulimit -v KIB
    kib=$1; shift
    sh -c 'ulimit -v "$0" && exec "$@"' "$kib" "$tool" "$@" > "$tmp/out" 2> "$tmp/err"
}
advice=$("$tool" demo --help | sed -n 's/.*(ulimit -v \([0-9]*\)).*/\1/p')
if ! under 65536 --version; then
    skip 7 "the tool cannot start under ulimit -v 65536 (a sanitizer's shadow memory needs terabytes)"
elif [ -z "$advice" ]; then
    bad "demo --help states the ulimit -v the demo needs"
else
    # the lowest limit (4 KiB steps) under which the tool runs at all (--version)
    low=1024
    while [ "$low" -lt 65536 ] && ! under "$low" --version; do low=$((low + 256)); done
    low=$((low - 256))
    while ! under "$low" --version; do low=$((low + 4)); done
    under "$low" demo; code=$?
    [ "$code" -eq 3 ] && grep -q "^hostmem demo: cannot create the manager: E_OUTOFMEMORY" "$tmp/err" && ok ||
        bad "ulimit -v $low (the lowest the tool runs under): 'cannot create the manager', exit 3 (got $code: $(head -1 "$tmp/err"))"
    grep -q "ulimit -v $advice" "$tmp/err" && ok || bad "ulimit -v $low: the message advises ulimit -v $advice"
    kib=$low; stops=0; wrong=""
    while [ "$kib" -lt "$advice" ]; do
        under "$kib" demo; code=$?
        if [ "$code" -eq 3 ]; then
            stops=$((stops + 1))
            grep -q "ulimit -v $advice" "$tmp/err" || wrong="$wrong $kib(no advice)"
            [ ! -s "$tmp/out" ] || tail -1 "$tmp/out" | grep -q "E_OUTOFMEMORY" || wrong="$wrong $kib(not stopped at the refused step)"
        elif [ "$code" -ne 0 ]; then
            wrong="$wrong $kib(exit $code)"
        fi
        kib=$((kib + 512))
    done
    [ -z "$wrong" ] && ok || bad "under ulimit -v between $low and $advice the demo exits 3 with advice, stopped where refused:$wrong"
    [ "$stops" -gt 1 ] && ok || bad "the scan saw the demo stop under a limit only $stops times"
    under "$low" info; code=$?
    [ "$code" -eq 3 ] && grep -q "cannot create the manager" "$tmp/err" && ok || bad "info under ulimit -v $low: exit 3 (got $code)"
    under "$low" replay examples/basics.hm; code=$?
    [ "$code" -eq 3 ] && grep -q "address-space limit (RLIMIT_AS, set by ulimit -v)" "$tmp/err" && ok ||
        bad "replay under ulimit -v $low: exit 3, the limit named (got $code: $(head -1 "$tmp/err"))"
    under "$advice" demo; code=$?
    [ "$code" -eq 0 ] && ok || bad "the demo runs under the ulimit -v it advises ($advice): exit $code"
fi

echo "test_cli: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
