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
Inputs whose bytes 1-2 are the marker 0xfb 0x57 have a second configuration byte
(byte 3: bit 0/1 guard pages on manager 0/1, bit 2/3 emulated write watch on manager
0/1), and there a byte with its top bit set names an extended operation itself
(tests/fuzz_model.c step_extended), so the EXT_THEMES below favour one each:
  reserve   0x80-0x8d  VirtualAlloc with MEM_WRITE_WATCH
  get       0x8e-0xa3  hostmem_get_write_watch
  reset     0xa4-0xad  hostmem_reset_write_watch
  touch     0xae-0xbb  read or write a guard page
  guardprot 0xbc-0xc5  VirtualProtect with PAGE_GUARD
  guardcom  0xc6-0xcd  commit with PAGE_GUARD
  write     0xce-0xdf  write a page of a watched reservation
  protect   0xe0-0xe9  VirtualProtect (captures the written pages)
  decommit  0xea-0xf3  decommit (forgets the written, not the captured)
  commit    0xf4-0xff  commit
  ext       0x80-0xff
The seeds made before the marker existed never start with it (checked below), so
they replay as they always did.
Usage: python3 tests/make_fuzz_corpus.py [directory]
"""
import os
import random
import sys

THEMES = {"vm": (0, 165), "bad": (166, 209), "heap": (210, 255), "mixed": (0, 255)}
MARKER = bytes([0xFB, 0x57])
GUARD0, GUARD1, EMULATE0, EMULATE1 = 0x01, 0x02, 0x04, 0x08
EXT_THEMES = {"reserve": (0x80, 0x8D), "get": (0x8E, 0xA3), "reset": (0xA4, 0xAD),
              "touch": (0xAE, 0xBB), "guardprot": (0xBC, 0xC5), "guardcom": (0xC6, 0xCD),
              "write": (0xCE, 0xDF), "protect": (0xE0, 0xE9), "decommit": (0xEA, 0xF3),
              "commit": (0xF4, 0xFF), "ext": (0x80, 0xFF)}
EXT_THEMES.update(THEMES)

# Extended seeds: (name, random seed, second configuration byte, phases as (theme,
# bytes)). The latch seeds' random seeds were chosen so that their inputs fail
# when the model forgets the latch (a VirtualProtect's capture): the corpus
# replay pins that rule too.
EXTENDED = [
    ("watch-kernel", 20261207, 0, [("reserve", 40), ("commit", 40), ("write", 80), ("get", 60),
                         ("write", 60), ("protect", 40), ("get", 60), ("reset", 30), ("ext", 200)]),
    ("watch-emulated", 20261208, EMULATE0 | EMULATE1,
     [("reserve", 40), ("commit", 40), ("write", 80), ("get", 60), ("write", 60),
      ("protect", 40), ("get", 60), ("reset", 30), ("ext", 200)]),
    ("latch-kernel", 5, 0, [("reserve", 30), ("write", 80), ("protect", 40), ("decommit", 40),
                         ("commit", 40), ("get", 60), ("write", 60), ("get", 60), ("ext", 150)]),
    ("latch-emulated", 11, EMULATE0 | EMULATE1,
     [("reserve", 30), ("write", 80), ("protect", 40), ("decommit", 40), ("commit", 40),
      ("get", 60), ("write", 60), ("get", 60), ("ext", 150)]),
    ("guard", 20261211, GUARD0 | GUARD1, [("vm", 60), ("guardcom", 40), ("guardprot", 40), ("touch", 80),
                                ("vm", 60), ("touch", 60), ("ext", 200)]),
    ("guard-watch-kernel", 20261212, GUARD0 | GUARD1,
     [("reserve", 40), ("guardcom", 40), ("guardprot", 40), ("touch", 80), ("get", 60),
      ("protect", 30), ("decommit", 30), ("get", 40), ("ext", 200)]),
    ("guard-watch-emulated", 20261213, GUARD0 | GUARD1 | EMULATE0 | EMULATE1,
     [("reserve", 40), ("guardcom", 40), ("guardprot", 40), ("touch", 80), ("get", 60),
      ("protect", 30), ("decommit", 30), ("get", 40), ("ext", 200)]),
    ("mixed-guard1-emulated0", 20261214, GUARD1 | EMULATE0, [("mixed", 200), ("ext", 300), ("mixed", 200)]),
    ("mixed-guard0-emulated1", 20261215, GUARD0 | EMULATE1, [("mixed", 200), ("ext", 300), ("mixed", 200)]),
    ("bad-watch", 20261216, EMULATE1, [("reserve", 40), ("bad", 100), ("get", 100), ("reset", 60), ("ext", 100)]),
]


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
    for name in sorted(os.listdir(out)):  # the seeds above: none may look extended
        if name.startswith("seed-") and int(name[5:7]) < n:
            with open(os.path.join(out, name), "rb") as f:
                if f.read(3)[1:3] == MARKER:
                    sys.exit("%s starts with the marker of the second configuration byte" % name)
    # Issue 25: write watch (kernel-tracked and emulated) and guard pages, behind
    # the marker; a generator of their own, so that the seeds above stay as they were.
    for name, seed, config2, phases in EXTENDED:
        ext_rng = random.Random(seed)
        parts = [bytes([ext_rng.randrange(16)]), MARKER, bytes([config2])]
        for theme, length in phases:
            lo, hi = EXT_THEMES[theme]
            parts.append(bytes(ext_rng.randrange(lo, hi + 1) for _ in range(length)))
        with open(os.path.join(out, "seed-%02d-%s" % (n, name)), "wb") as f:
            f.write(b"".join(parts))
        n += 1
    print("%d seeds in %s" % (n, out))


if __name__ == "__main__":
    main()
