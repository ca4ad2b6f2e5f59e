#!/usr/bin/env bash
# The CPU test suite under AddressSanitizer + UndefinedBehaviorSanitizer (any report aborts the
# test: -fno-sanitize-recover=all). Tests named *Slow* or labelled slow are left to the main step.
set -euo pipefail
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTOPKSAE_CUDA=OFF -DTOPKSAE_SANITIZE=ON \
  -DTOPKSAE_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j"$(nproc)"
cd build-asan
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --output-on-failure -j"$(nproc)" -E 'Slow' -LE slow 2>&1 | tee ctest-asan.log
passed=$(grep -cE 'Test +#[0-9]+: .* Passed' ctest-asan.log || true)
echo "sanitizers (ASan+UBSan): ${passed} tests passed" >>"${TOPKSAE_TEST_SUMMARY:-/dev/stdout}"
