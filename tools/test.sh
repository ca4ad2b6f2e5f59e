#!/usr/bin/env bash
# Builds topksae and runs every test: the steps in tools/test.d/*.sh, in name order (build + ctest,
# sanitizers, fuzzers, interop, ...). Stops at the first failing step. Prints a closing summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
export TOPKSAE_TEST_SUMMARY="$PWD/build/test-summary.txt"
mkdir -p build && : >"$TOPKSAE_TEST_SUMMARY"
start=$(date +%s)
for step in tools/test.d/*.sh; do
  echo "==== ${step} ($(($(date +%s) - start)) s elapsed)"
  bash "$step"
done
echo "==== all test steps passed in $(($(date +%s) - start)) s"
cat "$TOPKSAE_TEST_SUMMARY"
