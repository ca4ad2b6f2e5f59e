#!/usr/bin/env bash
# What the collective watchdog costs per step: the same tiny latent-sharded CPU run (mpirun -np 2,
# d_in 16, d_sae 150, batch 32: ~0.1 ms steps, so the ~9 collectives of a step dominate it) with
# the watchdog off (TOPKSAE_COLLECTIVE_TIMEOUT=0) and on (the default 600 s), alternating, best of
# N each. Usage: tools/bench_watchdog.sh [BUILD_DIR] [N] [STEPS]
set -euo pipefail
build=${1:-build} reps=${2:-5} steps=${3:-20000}
bin="$build/tools/topksae"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=(train --synthetic --device cpu --d-in 16 --d-sae 150 --k 3 --batch-size 32 --training-tokens $((32 * steps))
      --no-report --overwrite --out "$tmp/out")
declare -A best=([0]=1e9 [600]=1e9)
for _ in $(seq "$reps"); do
  for t in 0 600; do
    t0=$(date +%s.%N)
    TOPKSAE_COLLECTIVE_TIMEOUT=$t mpirun -np 2 "$bin" "${args[@]}" >/dev/null 2>&1
    t1=$(date +%s.%N)
    best[$t]=$(python3 -c "print(min(${best[$t]}, $t1 - $t0))")
  done
done
python3 -c "
off, on = ${best[0]}, ${best[600]}
print(f'$steps steps, mpirun -np 2, best of $reps: watchdog off {off:.3f} s, on {on:.3f} s '
      f'({(on - off) / $steps * 1e6:+.2f} us/step, {100 * (on / off - 1):+.1f}%)')"
