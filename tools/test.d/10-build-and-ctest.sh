#!/usr/bin/env bash
# The main build (CUDA backend compiled when nvcc is present, so kernels cannot rot) and the
# whole GoogleTest suite through ctest. GPU tests skip with a reason on machines without a GPU.
set -euo pipefail
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
cd build
ctest --output-on-failure -j"$(nproc)" 2>&1 | tee ctest.log
passed=$(grep -cE 'Test +#[0-9]+: .* Passed' ctest.log || true)
failed=$(grep -cE 'Test +#[0-9]+: .*\*\*\*(Failed|Exception|Timeout|Not Run)' ctest.log || true)
skipped=$(grep -cE 'Test +#[0-9]+: .*Skipped' ctest.log || true)
echo "ctest: ${passed} passed, ${failed} failed, ${skipped} skipped" >>"${TOPKSAE_TEST_SUMMARY:-/dev/stdout}"
