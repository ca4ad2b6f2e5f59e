#!/usr/bin/env bash
# Runs each bench once on a tiny shape (--tiny) to prove the binaries work end to end: CPU variants
# everywhere, GPU variants where a GPU is present (skipped with a reason otherwise). Each bench
# validates its outputs before timing and exits non-zero when a validation fails. No timing
# assertions: the numbers of a smoke run mean nothing.
set -euo pipefail
ran=0
for b in bench_decode bench_encode bench_train_step bench_data; do
  exe="build/bench/$b"
  [ -x "$exe" ] || { echo "missing $exe (TOPKSAE_BUILD_BENCH off?)"; exit 1; }
  "$exe" --tiny --json "build/$b-smoke.json" | tail -n 12
  ran=$((ran + 1))
done
echo "bench smoke: ${ran} benches ran on the tiny shape" >>"${TOPKSAE_TEST_SUMMARY:-/dev/stdout}"
