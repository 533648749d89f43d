#!/bin/sh
# fuzz_probe.sh CC DIR - can CC build a libFuzzer target? `make fuzz` asks first,
# so that a missing compiler runtime is said in one message, with the package to
# install, instead of as a link error after every object is built. Exit 0 if it
# can (DIR/probe is the proof), 1 if not.
cc=$1
dir=$2
mkdir -p "$dir"
rm -f "$dir/probe" # a probe that fails leaves no proof from an earlier compiler
if ! command -v "$cc" > /dev/null 2>&1; then
    echo "make fuzz: there is no $cc: install clang (Debian: apt-get install clang), or set FUZZ_CC" >&2
    exit 1
fi
printf 'int LLVMFuzzerTestOneInput(const unsigned char *data, unsigned long size)\n{\n    (void)data;\n    (void)size;\n    return 0;\n}\n' > "$dir/probe.c"
if "$cc" -fsanitize=fuzzer,address,undefined "$dir/probe.c" -o "$dir/probe" > "$dir/probe.log" 2>&1; then
    exit 0
fi
major=$("$cc" --version 2>/dev/null | sed -n 's/.*clang version \([0-9][0-9]*\).*/\1/p' | head -1)
{
    echo "make fuzz: $cc cannot link a libFuzzer target with ASan and UBSan ($dir/probe.log):"
    sed 's/^/    /' "$dir/probe.log" | head -5
    if [ -n "$major" ]; then
        echo "make fuzz: install the runtime of clang $major (Debian 12 and later: libclang-rt-$major-dev;"
        echo "           earlier: libclang-common-$major-dev), or set FUZZ_CC to a clang that has it"
    else
        echo "make fuzz: $cc is not clang; set FUZZ_CC to a clang with its compiler runtime"
    fi
} >&2
exit 1
