#!/usr/bin/env bash
# ThreadSanitizer over the code that runs threads of its own: the prefetch thread of the data
# pipeline (Prefetch.*) and the inference API used by several threads at once, in C++
# (ApiEncode.Threads*) and through the C API (ApiC.Threads*: per-thread last error, the NULL
# workspace), and the collective watchdog's thread (CollectiveWatchdog.*). Builds only the library and those tests (tests/tsan.cmake) in build-tsan, without
# CUDA. OpenMP's own threads are not instrumented (libgomp is not built with TSan, so its barriers
# would show as races): OMP_THREAD_LIMIT=1 keeps every parallel region to the calling thread,
# which leaves the threads under test, ours, as the only ones. Any report fails the step.
set -euo pipefail
start=$(date +%s)
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTOPKSAE_CUDA=OFF -DTOPKSAE_BUILD_BENCH=OFF \
  -DTOPKSAE_BUILD_TOOLS=OFF -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread >/dev/null
cmake --build build-tsan -j"$(nproc)" --target topksae_tsan_tests
filter='Prefetch.*:ApiEncode.Threads*:ApiC.Threads*:CollectiveWatchdog.*'
log=build-tsan/tsan.log
rc=0
OMP_THREAD_LIMIT=1 TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" \
  build-tsan/tests/topksae_tsan_tests --gtest_filter="$filter" >"$log" 2>&1 || rc=$?
tail -5 "$log"
passed=$(grep -oE '^\[  PASSED  \] [0-9]+' "$log" | grep -oE '[0-9]+$' || true)
if [ "$rc" != 0 ] || grep -q 'WARNING: ThreadSanitizer' "$log" || [ "${passed:-0}" -lt 4 ]; then
  echo "tsan: FAILED (exit $rc, ${passed:-0} passed; a report or a failure in $log):"
  grep -A30 -m1 'WARNING: ThreadSanitizer' "$log" || tail -30 "$log"
  exit 1
fi
echo "tsan: ${passed} threaded tests passed under ThreadSanitizer ($(($(date +%s) - start)) s)" \
  >>"${TOPKSAE_TEST_SUMMARY:-/dev/stdout}"
