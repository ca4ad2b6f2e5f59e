#!/usr/bin/env bash
# The whole path on the GPU (issue 18), a stage of tools/gpu_check.sh: does `topksae train --data`
# train as fast as the engine's own step?
#   1. bench_data on this machine's cores (npy, float32 and float16): the host path alone;
#   2. per PERF.md shape (2304x65536 k=64 and 768x24576 k=32, tf32, batch 4096): write a 2 GiB
#      float32 npy (bench_data --write-only), run `topksae train --data FILE --loop-data` for S1 and
#      for S2 steps, and take the steady-state tokens/s as (S2 - S1) * 4096 / (t2 - t1): the start
#      (reading the file's header, initialising and uploading the weights, cuBLAS) cancels out;
#   3. print it beside bench_train_step's tokens/s (variant gpu_train_step_tf32_data_on, the
#      pinned-copy pipeline, from this same call's bench_train_step.json) and the ratio (target
#      >= 0.95), with the share of time the GPU waited for data as the run reported it.
# Usage: tools/train_data_check.sh BUILD_DIR OUT_DIR   (writes OUT_DIR/train_data.txt and
# OUT_DIR/bench_data.json; the data files go to a temporary directory, removed at the end)
# Environment: TRAIN_DATA_GIB (default 2), TRAIN_DATA_QUICK=1 (fewer steps: a try-out under the
# CUDA emulation, tools/cuda_emu_check.sh --train-data).
set -uo pipefail
build=${1:?build dir}
out=${2:?out dir}
cli="$build/tools/topksae"
bench="$build/bench/bench_data"
gib=${TRAIN_DATA_GIB:-2}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/train_data.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
summary="$out/train_data.txt"
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }

if [ "${TRAIN_DATA_QUICK:-0}" = 1 ]; then
  # d_in, d_sae, k, batch, rows, steps1, steps2
  shapes=("64 256 8 64 2000 3 6")
  "$bench" --tiny --json "$out/bench_data.json" | tail -n 14
else
  r2304=$((gib * 1024 * 1024 * 1024 / (2304 * 4)))
  r768=$((gib * 1024 * 1024 * 1024 / (768 * 4)))
  shapes=("2304 65536 64 4096 $r2304 150 600" "768 24576 32 4096 $r768 400 1600")
  "$bench" --formats npy --dtypes f32,f16 --reps 2 --json "$out/bench_data.json" | tail -n 14
fi

# seconds since the epoch, with nanoseconds
now() { date +%s.%N; }

for spec in "${shapes[@]}"; do
  set -- $spec
  d=$1 n=$2 k=$3 b=$4 rows=$5 s1=$6 s2=$7
  shape="${d}x${n} k=${k} B=${b}"
  file=$("$bench" --write-only --rows "$rows" --d-in "$d" --ctx 1 --batch "$b" --buffer-batches 1 \
    --formats npy --dtypes f32 --dir "$tmp" | tail -n 1)
  [ -f "$file" ] || { say "$shape: could not write the data ($file)"; continue; }
  say "$shape: $(du -h "$file" | cut -f1) of float32 activations ($rows rows) in $file"
  declare -A secs=()
  ok=1
  for steps in "$s1" "$s2"; do
    t0=$(now)
    "$cli" train --data "$file" --loop-data --device cuda --precision tf32 --d-sae "$n" --k "$k" \
      --batch-size "$b" --training-tokens $((steps * b)) --no-report --progress-every 1000 \
      --out "$tmp/run_$steps" --overwrite >"$out/train_data_${d}_${steps}.log" 2>&1 || ok=0
    t1=$(now)
    secs[$steps]=$(python3 -c "print($t1 - $t0)")
    tail -n 4 "$out/train_data_${d}_${steps}.log"
    rm -rf "$tmp/run_$steps"
  done
  rm -f "$file"
  [ "$ok" = 1 ] || { say "$shape: topksae train failed (see train_data_${d}_*.log)"; continue; }
  python3 - "$out" "$shape" "$b" "$s1" "${secs[$s1]}" "$s2" "${secs[$s2]}" "$d" <<'EOF' | tee -a "$summary"
import json, os, re, sys
out, shape, b, s1, t1, s2, t2, d = sys.argv[1:]
b, s1, s2, t1, t2 = int(b), int(s1), int(s2), float(t1), float(t2)
tps = (s2 - s1) * b / (t2 - t1) if t2 > t1 else float("nan")
log = open(os.path.join(out, f"train_data_{d}_{s2}.log")).read()
wait = re.findall(r"data wait (\d+)%", log)
progress = re.findall(r"\| ([\d.]+[kMG]?) tok/s", log)
bench_tps, note = None, "bench_train_step.json missing"
try:
    rows = json.load(open(os.path.join(out, "bench_train_step.json")))["results"]
    for r in rows:
        if r.get("shape") == shape and r.get("variant") == "gpu_train_step_tf32_data_on" and r.get("ms"):
            bench_tps, note = b / (r["ms"] / 1e3), ""
    if bench_tps is None:
        note = f"no gpu_train_step_tf32_data_on row for {shape}"
except (OSError, ValueError, KeyError) as e:
    note = f"bench_train_step.json unreadable: {e}"
line = (f"{shape}: topksae train --data {tps:,.0f} tokens/s (steady state, {s2 - s1} steps in "
        f"{t2 - t1:.2f} s; progress line {progress[-1] if progress else '?'} tok/s; GPU waited for data "
        f"{wait[-1] if wait else '?'}% of the run)")
if bench_tps:
    line += f"; bench_train_step {bench_tps:,.0f} tokens/s; ratio {tps / bench_tps:.3f} (target >= 0.95)"
else:
    line += f"; {note}"
print(line)
EOF
done
