#!/usr/bin/env bash
# libFuzzer targets for the file readers (safetensors, npy, cfg.json, Arrow IPC), each run for a
# bounded time from the Python-written fixtures as seeds, under ASan + UBSan. A crash, sanitizer
# report, leak or timeout fails the step; the reproducer is left in build-fuzz/artifacts/.
# FUZZ_SECONDS (default 25) sets the time per target (4 targets: 100 s in all).
set -euo pipefail
secs=${FUZZ_SECONDS:-25}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTOPKSAE_FUZZ=ON -DTOPKSAE_CUDA=OFF \
  -DTOPKSAE_BUILD_TESTS=OFF -DTOPKSAE_BUILD_TOOLS=OFF -DTOPKSAE_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_targets

work=build-fuzz/run
rm -rf "$work" && mkdir -p "$work/seeds" build-fuzz/artifacts
python3 tests/fixtures/make_fixtures.py "$work/seeds"
seed() {  # seed NAME FILES...: a fresh corpus for one target
  local name=$1; shift
  mkdir -p "$work/corpus_$name"
  local i=0
  for f in "$@"; do cp "$f" "$work/corpus_$name/seed_$((i++))"; done
}
seed safetensors "$work"/seeds/st/*.safetensors "$work"/seeds/sae/*/*.safetensors
seed npy "$work"/seeds/npy/*.npy
seed sae_cfg "$work"/seeds/sae/*/cfg.json
seed arrow "$work"/seeds/arrow/*.arrow "$work"/seeds/arrow/bad/*.arrow "$work"/seeds/arrow/ds_state/*.arrow

failed=0
for name in safetensors npy sae_cfg arrow; do
  echo "---- fuzz_${name} for ${secs} s"
  if ! build-fuzz/tests/fuzz/fuzz_${name} "$work/corpus_$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -max_len=8192 -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/${name}-" >"$work/fuzz_${name}.log" 2>&1; then
    echo "fuzz_${name} FAILED:"; tail -40 "$work/fuzz_${name}.log"; failed=1
  else
    grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "$work/fuzz_${name}.log" | tail -2
  fi
done
[ "$failed" = 0 ] || exit 1
echo "fuzz: 4 targets ran ${secs} s each without a crash" >>"${TOPKSAE_TEST_SUMMARY:-/dev/stdout}"
