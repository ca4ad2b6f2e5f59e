#!/usr/bin/env bash
# The CPU peer benchmark in one command: builds the three bench binaries in BUILD_DIR (default
# build), then runs bench/cpu_peers.py with the interop venv's Python (sae_lens 6.13.1 + torch;
# tools/interop_env.sh creates it; TOPKSAE_INTEROP_VENV picks another) so that topksae's CPU
# backend and sae_lens on torch run in the same run, on the same cores, with THREADS threads each
# (default 2). Writes bench/results/cpu-<CPU model>-<cores>c-<date>.md (+ .json) and prints the table.
# Extra arguments go to cpu_peers.py (e.g. --shape 512,8192,32,1024 --iters 3).
# About 4 min on 2 cores for the two default shapes.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
threads=${THREADS:-2}
venv=${TOPKSAE_INTEROP_VENV:-.venv-interop}
[ -x "$venv/bin/python" ] || { echo "cpu_peer_bench: $venv/bin/python missing (bash tools/interop_env.sh)"; exit 1; }
[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target bench_encode bench_decode bench_train_step >/dev/null
# Named for the machine (CPU model, cores) and the date, e.g. cpu-IntelXeonProcessor-2c-2026-12-05.
model=$(grep -m1 '^model name' /proc/cpuinfo | sed -e 's/.*: //' -e 's/([RTM]*)//g' -e 's/[^A-Za-z0-9]//g')
name="bench/results/cpu-${model:-unknown}-$(nproc)c-$(date -u +%Y-%m-%d)"
"$venv/bin/python" bench/cpu_peers.py --build "$build" --threads "$threads" --out "$name.md" --json "$name.json" "$@"
echo "cpu_peer_bench: wrote $name.md"
