#!/usr/bin/env bash
# Wall time of the same CPU training run in one process and latent-sharded over R = 2 and 3 ranks
# (mpirun), best of N repetitions each. On one machine the ranks share its cores, so this shows the
# cost of the sharded algorithm's collectives and bookkeeping, not a speed-up (CPU ranks exist to
# check the algorithm; the speed-up is the GPU path's). Usage: tools/bench_sharded.sh [BUILD_DIR] [N]
set -euo pipefail
build=${1:-build} reps=${2:-3}
bin="$build/tools/topksae"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
cores=$(nproc)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=(train --synthetic --device cpu --d-in 128 --d-sae 16384 --k 32 --batch-size 1024 --training-tokens $((1024 * 20))
      --lr-warm-up-steps 0 --n-batches-for-norm-estimate 2 --no-report --overwrite --out "$tmp/out")
best() {  # best wall seconds of $reps runs of "$@"
  local b=
  for _ in $(seq "$reps"); do
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    t1=$(date +%s.%N)
    b=$(python3 -c "print(min(float('${b:-1e9}'), $t1 - $t0))")
  done
  echo "$b"
}
echo "20 steps, d_in 128, d_sae 16384, k 32, batch 1024, $cores cores, best of $reps"
t1=$(OMP_NUM_THREADS=$cores best "$bin" "${args[@]}")
echo "1 process ($cores threads): ${t1} s"
for np in 2 3; do
  th=$(( cores / np > 0 ? cores / np : 1 ))
  t=$(OMP_NUM_THREADS=$th best mpirun -np "$np" "$bin" "${args[@]}")
  echo "mpirun -np $np ($th threads each): ${t} s ($(python3 -c "print(f'{$t / $t1:.2f}')")x the one process)"
done
