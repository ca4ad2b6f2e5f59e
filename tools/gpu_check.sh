#!/usr/bin/env bash
# The ONE script a session with a lent GPU runs, in one device call (~6-8 min on an H100/H200):
#   configure (-DCMAKE_CUDA_ARCHITECTURES=90 -DTOPKSAE_CUDA=ON), build -j16, run the GPU tests
#   (the gtest cases named Cuda*), run the three benches at the PERF.md shapes and the PyTorch peers
#   (torch_peers.py) in the same call, write everything into $OUT, print a short table LAST.
#
# Usage (from the repository root, e.g. as the device tool's command):
#   bash tools/gpu_check.sh [PATH/TO/torch_peers.py]
# The peers script is looked up as: the argument; $TOPKSAE_PEERS; ../shared/peers/torch_peers.py;
# shared/peers/torch_peers.py. The device tool copies only the repository (shared/ is NOT beside it
# there), so copy the script into the repository's shared/peers/ (an untracked file the tool
# carries) or pass its path; without it the peers are skipped and the table says so.
# Environment: OUT (default out/gpu_check), GPU_CHECK_QUICK=1 (smaller iteration counts).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out/gpu_check}"
mkdir -p "$OUT"
export OUT
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
t0=$(date +%s)
stamp() { echo "== [$(($(date +%s) - t0)) s] $*"; }
status=()

peers=""
for cand in "${1:-}" "${TOPKSAE_PEERS:-}" ../shared/peers/torch_peers.py shared/peers/torch_peers.py; do
  if [ -n "$cand" ] && [ -f "$cand" ]; then peers="$cand"; break; fi
done

stamp "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/nvidia-smi.csv"
nvcc --version | tail -1

stamp "configure + build (build-gpu, sm_90)"
if ! cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DTOPKSAE_CUDA=ON \
     >"$OUT/configure.log" 2>&1; then
  tail -30 "$OUT/configure.log"; echo "CONFIGURE FAILED"; exit 1
fi
if ! cmake --build build-gpu -j16 >"$OUT/build.log" 2>&1; then
  grep -E "error|Error" "$OUT/build.log" | head -40; echo "BUILD FAILED"; exit 1
fi
grep -E "warning" "$OUT/build.log" | head -20

stamp "GPU tests (gtest Cuda*)"
timeout 180 ./build-gpu/tests/topksae_tests --gtest_filter='Cuda*' \
  --gtest_output="json:$OUT/gtest_cuda.json" >"$OUT/gtest_cuda.log" 2>&1
rc=$?
tail -25 "$OUT/gtest_cuda.log"
status+=("gpu tests: rc=$rc")

iters=20
[ "${GPU_CHECK_QUICK:-0}" = 1 ] && iters=8
for b in bench_decode bench_encode bench_train_step; do
  stamp "$b"
  lim=120
  [ "$b" = bench_train_step ] && lim=180
  timeout "$lim" "./build-gpu/bench/$b" --iters "$iters" --json "$OUT/$b.json" >"$OUT/$b.log" 2>&1
  rc=$?
  grep -E "ERROR|error|validation" "$OUT/$b.log" | head -10
  status+=("$b: rc=$rc")
done

if [ -n "$peers" ]; then
  stamp "peers: python3 $peers"
  timeout 200 python3 "$peers" >"$OUT/torch_peers.log" 2>&1
  rc=$?
  status+=("torch_peers: rc=$rc")
  tail -3 "$OUT/torch_peers.log"
else
  status+=("torch_peers: NOT RUN (script not found; pass its path)")
fi

stamp "table"
python3 tools/bench_table.py "$OUT" --markdown >"$OUT/table.md" 2>&1
for s in "${status[@]}"; do echo "status: $s"; done
echo "files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
echo "elapsed $(($(date +%s) - t0)) s"
python3 tools/bench_table.py "$OUT"
