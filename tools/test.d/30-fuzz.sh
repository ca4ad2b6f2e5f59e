#!/usr/bin/env bash
# libFuzzer targets for the file readers (safetensors, npy, cfg.json, Arrow IPC) and the loaders
# of whole directories and run files (an SAE directory, a `datasets` Arrow directory with its
# state.json, a training checkpoint, the --config JSON and run.json of `topksae train`), each run
# for a bounded time under ASan + UBSan, seeded from the Python-written fixtures (the checkpoint
# and run.json targets write their own seed: TOPKSAE_FUZZ_SEED_OUT). A crash, sanitizer report,
# leak or timeout fails the step; the reproducer is left in build-fuzz/artifacts/.
# FUZZ_SECONDS (default 100) is the time of the whole step, split evenly across the targets
# (8 targets: 12 s each).
set -euo pipefail
targets=(safetensors npy sae_cfg arrow sae_dir dataset_dir checkpoint run_files)
secs=$(( ${FUZZ_SECONDS:-100} / ${#targets[@]} ))
[ "$secs" -ge 1 ] || secs=1
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
# The directory targets take their files packed into one input (tests/fuzz/fuzz_files.h).
pack() { python3 tests/fuzz/pack_seed.py "$@"; }
mkdir -p "$work/corpus_sae_dir" "$work/corpus_dataset_dir" "$work/corpus_checkpoint"
i=0
for d in "$work"/seeds/sae/*/; do
  parts=()
  for f in cfg.json sae_weights.safetensors sparsity.safetensors activation_scaler.json; do
    if [ -f "$d$f" ]; then parts+=("$d$f"); else parts+=(-); fi
  done
  pack "$work/corpus_sae_dir/seed_$((i++))" "${parts[@]}"
done
ds="$work/seeds/arrow/ds_state"
pack "$work/corpus_dataset_dir/seed_0" "$ds/state.json" "$ds/data-a.arrow" "$ds/data-b.arrow"
pack "$work/corpus_dataset_dir/seed_1" "$ds/state.json" "$ds/data-a.arrow" -
TOPKSAE_FUZZ_SEED_OUT="$work/corpus_checkpoint/seed_0" build-fuzz/tests/fuzz/fuzz_checkpoint
# run_files: first byte even = a --config JSON, odd = a run.json (the target writes one)
mkdir -p "$work/corpus_run_files"
printf '\000{"d_in": 8, "d_sae": 64, "lr": 0.001, "model_name": "gpt2", "lr_scheduler_name": "cosineannealing"}' \
  >"$work/corpus_run_files/seed_0"
TOPKSAE_FUZZ_SEED_OUT="$work/corpus_run_files/seed_1" build-fuzz/tests/fuzz/fuzz_run_files

failed=0
for name in "${targets[@]}"; do
  echo "---- fuzz_${name} for ${secs} s"
  if ! build-fuzz/tests/fuzz/fuzz_${name} "$work/corpus_$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -max_len=16384 -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/${name}-" >"$work/fuzz_${name}.log" 2>&1; then
    echo "fuzz_${name} FAILED:"; tail -40 "$work/fuzz_${name}.log"; failed=1
  else
    grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "$work/fuzz_${name}.log" | tail -2
  fi
done
[ "$failed" = 0 ] || exit 1
echo "fuzz: ${#targets[@]} targets ran ${secs} s each without a crash" >>"${TOPKSAE_TEST_SUMMARY:-/dev/stdout}"
