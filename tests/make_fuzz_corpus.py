#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz_model.c into tests/fuzz_corpus/ (deterministic).

Byte 0 of an input is the configuration (bit 0: manager 0 compact, bit 1: manager 1
compact, bits 2-3: the heap's MALLOC_* type, bits 4-5 and 6-7: the dynamic-code
policies of managers 1 and 0); every configuration gets seeds. The
bytes after it decode to operations; a theme draws them from a sub-range of byte
values so that the opcode bytes (and arguments) favour one family of operations:
  vm    0-165    reserve, commit, decommit, release, protect, reset, writes
  bad   166-209  bad arguments, foreign pointers, huge sizes, queries, the budget
  heap  210-255  heap Alloc / DebugAlloc / Free and bad heap calls
  mixed 0-255
Usage: python3 tests/make_fuzz_corpus.py [directory]
"""
import os
import random
import sys

THEMES = {"vm": (0, 165), "bad": (166, 209), "heap": (210, 255), "mixed": (0, 255)}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "fuzz_corpus")
    os.makedirs(out, exist_ok=True)
    rng = random.Random(20261126)
    n = 0
    for config in range(16):
        for theme in ("mixed", ("vm", "bad", "heap")[config % 3]):
            lo, hi = THEMES[theme]
            length = rng.randrange(64, 1024)
            body = bytes(rng.randrange(lo, hi + 1) for _ in range(length))
            with open(os.path.join(out, "seed-%02d-%s-config%x" % (n, theme, config)), "wb") as f:
                f.write(bytes([config]) + body)
            n += 1
    # Runs of one theme after another: build up state, then attack it.
    for i in range(8):
        parts = [bytes([rng.randrange(16)])]
        for theme in ("vm", "heap", "bad", "vm", "mixed"):
            lo, hi = THEMES[theme]
            parts.append(bytes(rng.randrange(lo, hi + 1) for _ in range(rng.randrange(32, 200))))
        with open(os.path.join(out, "seed-%02d-phases" % n), "wb") as f:
            f.write(b"".join(parts))
        n += 1
    # Issue 23: the dynamic-code policies (byte 0 bits 4-5: manager 1's, bits 6-7:
    # manager 0's; 3 = tightened at run time), every pair but ANY/ANY, each with a
    # random rest of the configuration and phases that reach the budget operation
    # (which tightens manager 1).
    for code in range(1, 16):
        parts = [bytes([(code << 4) | rng.randrange(16)])]
        for theme in ("vm", "bad", "vm", "mixed", "bad", "vm"):
            lo, hi = THEMES[theme]
            parts.append(bytes(rng.randrange(lo, hi + 1) for _ in range(rng.randrange(32, 200))))
        with open(os.path.join(out, "seed-%02d-code%x%x" % (n, code >> 2, code & 3)), "wb") as f:
            f.write(b"".join(parts))
        n += 1
    print("%d seeds in %s" % (n, out))


if __name__ == "__main__":
    main()
