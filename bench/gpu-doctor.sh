#!/usr/bin/env bash
# The first thing to run on a lent GPU machine (BENCHMARKS.md, "ltbench doctor"): the
# environment screen, then the self-test of every path the machine supports. Both go to
# OUT/doctor.txt and OUT/self-test.txt (the table for BENCHMARKS.md); exit status: the
# self-test's (0 only when every path passed).
#
#   bash bench/gpu-doctor.sh [OUT]        # OUT defaults to runs/doctor
set -uo pipefail
out=${1:-runs/doctor}
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi: not found" > "$out/nvidia-smi.txt"
ltbench doctor --out "$out" | tee "$out/doctor.txt"
start=$(date +%s)
ltbench doctor --self-test --out "$out" 2> "$out/self-test.err" | tee "$out/self-test.txt"
status=${PIPESTATUS[0]}
echo "self-test wall time: $(( $(date +%s) - start )) s, exit status $status" | tee -a "$out/self-test.txt"
exit "$status"
