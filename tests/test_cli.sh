#!/bin/sh
# test_cli.sh - the command-line tool (issue 5): every example script against
# its golden output, the demo and info, help and version, and bad input of
# every kind: each gets a one-line error and the documented exit code, never a
# crash. Prints "test_cli: N passed, N failed".
tool=${1:-build/hostmem}
passed=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "  FAIL test_cli: $*"; }

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

echo "test_cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
