#!/usr/bin/env bash
# The GPU tests against the CUDA emulation again, built with AddressSanitizer + UBSan
# (tools/cuda_emu_check.sh --asan, build-emu-asan): the host code of the CUDA backend (the model,
# the train step's planning and buffers, the trainer's queue, the C API on CUDA models) and the
# kernels' logic run sanitized, which a real GPU run cannot do for the host side either.
#   TOPKSAE_CUDA_EMU_CHECK=0  skip this step too (printed as skipped)
set -euo pipefail
summary=${TOPKSAE_TEST_SUMMARY:-/dev/stdout}
if [ "${TOPKSAE_CUDA_EMU_CHECK:-}" = 0 ] || [ "$(uname -m)" != x86_64 ]; then
  echo "cuda_emu --asan: SKIPPED (TOPKSAE_CUDA_EMU_CHECK=0 or not x86-64)"
  echo "cuda emulation under ASan: skipped" >>"$summary"
  exit 0
fi
log=$(mktemp)
rc=0
# The tests whose host code is the point (the model and its workspaces, the C API, the trainer's
# queue, the CLI helpers, contexts and buffers, the train step's planning and first step), in one
# thread order: the kernel-heavy suites (top-k, decode, 20-step training) ran unsanitized in the
# previous step, and under a Debug ASan build they would cost most of CI's time budget.
filter='CudaApi.*:CudaTrainer.*:CudaCli.*:CudaTensor.*:CudaOps.*:CudaTrain.SlabThreadsNeedAlignedShapes'
filter+=':CudaTrain.PlannedBytes*:Cuda/CudaTrainFirstStep.*:CudaEmu*'
CUDA_EMU_ORDERS=forward bash tools/cuda_emu_check.sh --asan --gtest_filter="$filter" 2>&1 | tee "$log" || rc=$?
grep -E '^cuda_emu (\(|cli )' "$log" | sed 's/ (\([0-9]* s\); log .*)$/ (\1)/; s/^cuda_emu/cuda emulation under ASan+UBSan/' >>"$summary" || true
rm -f "$log"
exit $rc
