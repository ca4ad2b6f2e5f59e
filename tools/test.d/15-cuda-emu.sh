#!/usr/bin/env bash
# The GPU tests (gtest Cuda*) on this CPU, against the CUDA emulation (tests/cuda_emu/README.md):
# the kernels and their host code run unchanged on the host, in both thread orders, with the
# stream-order hazard check. Finds logic bugs before a GPU session; it is not a GPU run, and the
# main step's GPU tests still count as skipped. The emulation's fiber switch is x86-64 only.
#   TOPKSAE_CUDA_EMU_CHECK=0  skip this step (printed as skipped)
set -euo pipefail
summary=${TOPKSAE_TEST_SUMMARY:-/dev/stdout}
if [ "${TOPKSAE_CUDA_EMU_CHECK:-}" = 0 ] || [ "$(uname -m)" != x86_64 ]; then
  echo "cuda_emu: SKIPPED (TOPKSAE_CUDA_EMU_CHECK=0 or not x86-64)"
  echo "cuda emulation: skipped" >>"$summary"
  exit 0
fi
log=$(mktemp)
rc=0
bash tools/cuda_emu_check.sh 2>&1 | tee "$log" || rc=$?
grep -E '^cuda_emu (\(|cli )' "$log" | sed 's/ (\([0-9]* s\); log .*)$/ (\1)/; s/^cuda_emu/cuda emulation (GPU tests on the CPU, not a GPU run)/' >>"$summary" || true
rm -f "$log"
exit $rc
