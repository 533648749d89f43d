#!/bin/sh
# Adds up build/results (written by tests/run.sh) into the closing line.
awk '{p += $3; f += $4} END {printf "total: %d passed, %d failed\n", p, f; exit (f > 0)}' build/results
