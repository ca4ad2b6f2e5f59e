#!/usr/bin/env bash
# `topksae info` on Python-written fixtures: each kind is described, a malformed file is an error
# (exit 1) naming the file and the problem. Usage: cli_info_test.sh TOPKSAE PYTHON FIXTURE_SCRIPT
set -euo pipefail
bin=$1 py=$2 script=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$py" "$script" "$dir"
expect() {  # expect OUTPUT PATTERN
  if ! grep -qF -- "$2" <<<"$1"; then echo "FAIL: output lacks '$2':"; echo "$1"; exit 1; fi
}
out=$("$bin" info "$dir/st/valid.safetensors"); expect "$out" "9 tensors"; expect "$out" "c  bf16 [2, 2]"; expect "$out" "format = pt"
out=$("$bin" info "$dir/npy/valid_v3_f8_3d.npy"); expect "$out" "f64 [2, 2, 3]"; expect "$out" "4 rows of width 3"
out=$("$bin" info "$dir/sae/f16"); expect "$out" "d_in=5, d_sae=7, k=3, dtype=float16"; expect "$out" "W_enc  f16 [5, 7]"
out=$("$bin" info --json "$dir/sae/checkpoint"); expect "$out" '"checkpoint": true'; expect "$out" '"scaling_factor": 2.5'
out=$("$bin" info "$dir/arrow/ds_state"); expect "$out" "2 arrow shards"; expect "$out" "column 'blocks.0.hook_resid_pre'"
expect "$out" "token_ids  fixed_size_list<int32>[3]"; expect "$out" "blocks.0.hook_resid_pre  list<list<float32>>  (read)"
out=$("$bin" info --json "$dir/arrow/f16.arrow"); expect "$out" '"dtype": "f16"'; expect "$out" '"context_size": 3'
set +e
out=$("$bin" info "$dir/arrow/bad/nulls.arrow" 2>&1); rc=$?
[ "$rc" = 1 ] || { echo "FAIL: exit status $rc for a malformed Arrow file"; exit 1; }
expect "$out" "nulls.arrow: column 'blocks.0.hook_resid_pre', record batch 0: 1 nulls"
out=$("$bin" info "$dir/st/overlap.safetensors" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] || { echo "FAIL: exit status $rc for a malformed file"; exit 1; }
expect "$out" "overlap.safetensors: overlapping data_offsets"
echo "cli_info: ok"
