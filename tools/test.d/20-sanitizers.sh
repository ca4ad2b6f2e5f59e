#!/usr/bin/env bash
# ASan + UBSan (any report aborts: -fno-sanitize-recover=all), from ONE instrumented build so CI
# compiles the project under the sanitizers once: build-emu-asan, the CUDA emulation build
# (tests/cuda_emu/README.md) in RelWithDebInfo, which holds the whole CPU library and tests too.
#  1. The CPU suite (ctest), with the emulation showing no device (CUDA_EMU_DEVICES=0: a CUDA build
#     on a machine without a GPU, as in step 10, so every test takes its CPU branch). Left out: the Cuda* gtests (part 2 runs the ones that matter here),
#     tests named *Slow* (left to the main step), and the consumer-project test, which links the
#     instrumented library into a plain build on purpose.
#  2. The GPU tests whose host code is the point, against the emulation: the model and its
#     workspaces, the C API on CUDA models, the trainer's queue, the CLI helpers, contexts and
#     buffers, the train step's planning and first step, in one thread order. The kernel-heavy
#     suites (top-k, decode, 20-step training) run unsanitized in step 15.
#   TOPKSAE_CUDA_EMU_CHECK=0 (or a machine other than x86-64: the emulation's fiber switch is
#   x86-64 only) leaves part 2 out; part 1 then runs in a plain ASan build (build-asan).
set -euo pipefail
summary=${TOPKSAE_TEST_SUMMARY:-/dev/stdout}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
emulate=1
if [ "${TOPKSAE_CUDA_EMU_CHECK:-}" = 0 ] || [ "$(uname -m)" != x86_64 ]; then emulate=0; fi
if [ $emulate = 1 ]; then
  dir=build-emu-asan
  cfg=(-DTOPKSAE_CUDA_EMU=ON -DTOPKSAE_CUDA=OFF)
else
  dir=build-asan
  cfg=(-DTOPKSAE_CUDA=OFF)
fi
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTOPKSAE_SANITIZE=ON -DTOPKSAE_BUILD_BENCH=OFF "${cfg[@]}" \
  >/dev/null
cmake --build "$dir" -j"$(nproc)"

# 1. The CPU suite.
(
  cd "$dir"
  # nccl_emu_*: run once, by tools/cuda_emu_check.sh --asan in 2. below (the sharded CUDA step's
  # equivalence takes about a minute under ASan).
  CUDA_EMU_DEVICES=0 ctest --output-on-failure -j"$(nproc)" -E '^Cuda|Slow|ConsumerProject|^nccl_emu_' 2>&1 | tee ctest-asan.log
)
passed=$(grep -cE 'Test +#[0-9]+: .* Passed' "$dir/ctest-asan.log" || true)
echo "sanitizers (ASan+UBSan): ${passed} tests passed" >>"$summary"

# 2. The GPU tests' host code, emulated (tools/cuda_emu_check.sh --asan reuses $dir).
if [ $emulate = 0 ]; then
  echo "cuda emulation under ASan: skipped (TOPKSAE_CUDA_EMU_CHECK=0 or not x86-64)" >>"$summary"
  exit 0
fi
filter='CudaApi.*:CudaTrainer.*:CudaCli.*:CudaTensor.*:CudaOps.*:CudaTrain.SlabThreadsNeedAlignedShapes'
filter+=':CudaTrain.PlannedBytes*:Cuda/CudaTrainFirstStep.*:CudaEmu*'
log=$(mktemp)
rc=0
CUDA_EMU_ORDERS=forward bash tools/cuda_emu_check.sh --asan --gtest_filter="$filter" 2>&1 | tee "$log" || rc=$?
grep -E '^cuda_emu (\(|cli )' "$log" | sed 's/ (\([0-9]* s\); log .*)$/ (\1)/; s/^cuda_emu/cuda emulation under ASan+UBSan/' >>"$summary" || true
rm -f "$log"
exit $rc
