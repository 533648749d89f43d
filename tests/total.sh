#!/bin/sh
# Adds up build/results (written by tests/run.sh, one line a program: label,
# program, passed, failed, skipped) into the closing line.
awk '{p += $3; f += $4; s += $5}
     END {printf "total: %d passed, %d failed, %d skipped\n", p, f, s; exit (f > 0)}' build/results
