#!/usr/bin/env bash
# Runs every sae_lens interop check (tests/interop/check_*.py) with the .venv-interop Python against
# the binaries of a build directory (interop_tool, topksae). Usage: tests/interop/run.sh [BUILD_DIR]
# (default build). Needs tools/interop_env.sh to have run. Exit status 1 if any check failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
build=$(realpath "${1:-build}")
venv=${TOPKSAE_INTEROP_VENV:-.venv-interop}
py="$(cd "$venv" && pwd)/bin/python"  # not realpath: that would leave the venv
for bin in "$build/tests/interop_tool" "$build/tools/topksae"; do
  [ -x "$bin" ] || { echo "interop: $bin missing (build $build first)"; exit 1; }
done
if "$build/tests/interop_tool" lr /dev/null 1 2>/dev/null; [ $? -eq 77 ]; then
  echo "interop: FAIL: $build/tests/interop_tool was built without the training library"; exit 1
fi
passed=0; failed=0
for check in check_sae_files check_train_step check_lr check_batching check_arrow_cache; do
  echo "---- interop: $check"
  out=$(cd tests/interop && TOPKSAE_BUILD="$build" "$py" "$check.py" 2>&1); rc=$?
  echo "$out"
  line=$(echo "$out" | grep -E '^check_.*: [0-9]+ passed, [0-9]+ failed$' | tail -1)
  p=$(echo "$line" | sed -E 's/.* ([0-9]+) passed.*/\1/'); f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  if [ -z "$line" ]; then p=0; f=1; echo "interop: $check crashed (exit $rc) before its summary"; fi
  if [ $rc -ne 0 ] && [ "$f" = 0 ]; then f=1; fi
  passed=$((passed + p)); failed=$((failed + f))
done
echo "interop: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
