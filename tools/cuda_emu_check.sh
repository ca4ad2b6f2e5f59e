#!/usr/bin/env bash
# The GPU tests (gtest Cuda*) on the CPU, against the CUDA emulation (tests/cuda_emu/README.md):
# configures build-emu (-DTOPKSAE_CUDA_EMU=ON), builds topksae_tests and the topksae command, runs
# Cuda* twice: one device with the blocks and the threads of each block run first-to-last, then two
# devices (CUDA_EMU_DEVICES=2, for the multi-device tests) run last-to-first (CUDA_EMU_ORDER=reverse:
# a missing barrier shows up in one order or the other); prints passed/failed/skipped counts and
# fails when nothing passed or a test outside the known skips skipped. Then the command's
# --device cuda paths (tests/cli/device_test.py cuda).
# A test tool: nothing here ran on a GPU.
#   tools/cuda_emu_check.sh            RelWithDebInfo build in build-emu
#   tools/cuda_emu_check.sh --asan     ASan/UBSan build (RelWithDebInfo) in build-emu-asan, shared with tools/test.d/20-sanitizers.sh
#   tools/cuda_emu_check.sh --bench    instead of the tests: the three benches' GPU variants, --tiny,
#                                      in build-emu-bench (validation only; ~5 min; not in CI)
#   extra arguments go to the test binary, e.g. --gtest_filter='CudaTopK*'
#   CUDA_EMU_ORDERS="forward"          run one thread order only (default: "forward reverse")
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build-emu
cfg=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
if [ "${1:-}" = "--asan" ]; then
  shift
  dir=build-emu-asan
  cfg=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTOPKSAE_SANITIZE=ON)
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
if [ "${1:-}" = "--bench" ]; then
  # Each bench validates its GPU outputs against a reference before timing and exits non-zero on a
  # mismatch; the timings of an emulated run mean nothing.
  start=$(date +%s)
  cmake -S . -B build-emu-bench -DTOPKSAE_CUDA_EMU=ON -DTOPKSAE_CUDA=OFF -DTOPKSAE_BUILD_BENCH=ON \
        -DTOPKSAE_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build-emu-bench -j2 --target bench_decode bench_encode bench_train_step
  status=0
  for b in bench_decode bench_encode bench_train_step; do
    log="build-emu-bench/$b.log"
    if "./build-emu-bench/bench/$b" --tiny --json "build-emu-bench/$b.json" >"$log" 2>&1; then
      echo "cuda_emu bench: $b --tiny validated (log $log)"
    else
      echo "cuda_emu bench: $b FAILED (exit $?); the end of $log:"
      tail -15 "$log" | sed 's/^/    /'
      status=1
    fi
  done
  echo "cuda_emu bench check: $(($(date +%s) - start)) s (CPU emulation, not a GPU run)"
  exit $status
fi
filter=(--gtest_filter='Cuda*')
for a in "$@"; do case "$a" in --gtest_filter=*) filter=();; esac; done
# The only tests allowed to skip here, per order: a skip of any other test fails the check (a
# test that skips compares nothing), and so does a run where nothing passed (a filter that
# matches nothing, or a build where every Cuda* test skips).
#   CudaTrainer.RefusedWithTheReasonWithoutAGpu   checks the no-GPU error path; the emulation is a GPU
#   CudaOps.ContextRefusesAnotherDevicesStream    needs two devices: the forward order runs with one
known_skips_forward='CudaTrainer.RefusedWithTheReasonWithoutAGpu CudaOps.ContextRefusesAnotherDevicesStream'
known_skips_reverse='CudaTrainer.RefusedWithTheReasonWithoutAGpu'
start=$(date +%s)
cmake -S . -B "$dir" -DTOPKSAE_CUDA_EMU=ON -DTOPKSAE_CUDA=OFF -DTOPKSAE_BUILD_BENCH=OFF "${cfg[@]}" >/dev/null
cmake --build "$dir" -j2 --target topksae_tests topksae_cli
status=0
for order in ${CUDA_EMU_ORDERS:-forward reverse}; do
  log="$dir/cuda-emu-$order.log"
  t0=$(date +%s)
  devices=1
  [ "$order" = reverse ] && devices=2
  CUDA_EMU_ORDER=$order CUDA_EMU_DEVICES=$devices "$dir/tests/topksae_tests" "${filter[@]}" "$@" >"$log" 2>&1 || status=1
  count() { grep -oE "^\[  $1 *\] [0-9]+ test" "$log" | grep -oE '[0-9]+' | head -1 || true; }
  p=$(count PASSED); f=$(count FAILED); s=$(count SKIPPED)
  echo "cuda_emu ($order order, $devices device(s)): passed ${p:-0}, failed ${f:-0}, skipped ${s:-0} ($(($(date +%s) - t0)) s; log $log)"
  grep -E '^\[  (FAILED|SKIPPED) *\] [A-Za-z]' "$log" | grep -v ' ms)$' | sort -u | sed 's/^/  /' || true
  if [ "${p:-0}" = 0 ]; then
    echo "  nothing passed (a filter that matches no test, or every test skipped): this checked nothing"
    status=1
  fi
  known=$known_skips_forward
  [ "$order" = reverse ] && known=$known_skips_reverse
  for t in $(grep -E '^\[  SKIPPED *\] [A-Za-z]' "$log" | grep -v ' ms)$' | awk '{print $4}' | sort -u); do
    case " $known " in
      *" $t "*) ;;
      *) echo "  $t skipped: only the tests named in known_skips_$order (tools/cuda_emu_check.sh) may skip here"
         status=1 ;;
    esac
  done
  # Stream-order hazards (tests/cuda_emu/README.md), but the emulator's own test provoking them.
  hz=$(grep 'cuda_emu: HAZARD' "$log" | grep -v selftest | sort -u || true)
  if [ -n "$hz" ]; then
    echo "  stream-order hazards ($(echo "$hz" | wc -l)): missing synchronisation between streams"
    echo "$hz" | head -20 | sed 's/^/    /'
    status=1
  fi
  if ! grep -qE '^\[==========\] .* ran\.' "$log"; then
    echo "  the test binary did not finish (a crash or an emulator abort); the end of $log:"
    tail -20 "$log" | sed 's/^/    /'
    status=1
  fi
done
# The command's --device cuda paths (encode / decode / eval against --device cpu), which ctest's
# cli_device_cuda skips without a GPU. Exit 77 (skipped) would mean the emulated build has no
# usable device: a failure here.
t0=$(date +%s)
log="$dir/cli-device-cuda.log"
if python3 tests/cli/device_test.py "$dir/tools/topksae" cuda >"$log" 2>&1; then
  echo "cuda_emu cli --device cuda: passed ($(($(date +%s) - t0)) s; log $log)"
else
  echo "cuda_emu cli --device cuda: FAILED (exit $?); the end of $log:"
  tail -15 "$log" | sed 's/^/    /'
  status=1
fi
# The NCCL engine and the latent-sharded CUDA step (its equivalence and `mpirun topksae train
# --device cuda`) over the emulation's NCCL under mpirun -np 2 and 3 (ctest nccl_emu_*; only where
# MPI was found, else the target does not exist and this says so). About 35 s.
t0=$(date +%s)
if cmake --build "$dir" --target help | grep "nccl_collectives_test" >/dev/null; then  # not -q: pipefail
  cmake --build "$dir" -j2 --target nccl_collectives_test cuda_sharded_equivalence >/dev/null
  log="$dir/nccl-emu.log"
  if ctest --test-dir "$dir" -R '^nccl_emu_' --output-on-failure >"$log" 2>&1 && grep -q "100% tests passed" "$log"; then
    echo "cuda_emu nccl (mpirun -np 2, 3): $(grep -oE '[0-9]+ tests passed|tests passed, 0 tests failed out of [0-9]+' "$log" | tail -1) ($(($(date +%s) - t0)) s; log $log)"
  else
    echo "cuda_emu nccl (mpirun -np 2, 3): FAILED; the end of $log:"
    tail -25 "$log" | sed 's/^/    /'
    status=1
  fi
else
  echo "cuda_emu nccl: not built (no MPI found: the NCCL emulation runs over MPI)"
fi
echo "cuda_emu check: $(($(date +%s) - start)) s in all (CPU emulation, not a GPU run)"
exit $status
