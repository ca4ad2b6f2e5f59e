#!/usr/bin/env bash
# The Python package (python/, README "From Python"): `pip install .` into a fresh venv holding only
# numpy and pytest (build isolation fetches scikit-build-core and nanobind from PyPI; CUDA off, as
# pyproject.toml sets it), then python/tests/ there (the torch tests skip); then the same tests and
# examples/python/train_live.py with the interop venv's Python (torch, transformer_lens, sae_lens;
# made by 50-interop.sh), the package put on its PYTHONPATH from the fresh venv: nothing is
# installed into the interop venv and no second torch venv is made.
#   TOPKSAE_PYTHON_TESTS=0  skip this step        =1  a failed PyPI install fails the step
#   unset                   run; a PyPI that cannot be reached reports the step skipped
# Measured here (2 cores shared with other builds, no ccache): pip install . 417 s cold (user 170 s),
# 128 s with build-py/ kept from an earlier run; the tests and the example 90 s.
set -euo pipefail
summary=${TOPKSAE_TEST_SUMMARY:-/dev/stdout}
if [ "${TOPKSAE_PYTHON_TESTS:-}" = 0 ]; then
  echo "python: skipped (TOPKSAE_PYTHON_TESTS=0)" | tee -a "$summary"
  exit 0
fi
export TOPKSAE_BIN=${TOPKSAE_BIN:-$PWD/build/tools/topksae}
[ -x "$TOPKSAE_BIN" ] || { echo "python: $TOPKSAE_BIN is missing (the bit-for-bit tests need the topksae command)"; exit 1; }
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
venv=.venv-py
py=${PYTHON:-python3}
start=$(date +%s)
rm -rf "$venv"
"$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
if ! "${pip[@]}" install -q numpy pytest || ! "${pip[@]}" install . ; then
  if [ "${TOPKSAE_PYTHON_TESTS:-}" = 1 ]; then echo "python: pip install failed (see above)"; exit 1; fi
  echo "python: SKIPPED: pip install . failed (PyPI unreachable?); retry with TOPKSAE_PYTHON_TESTS=1 bash $0"
  echo "python: skipped (pip install failed)" >>"$summary"
  exit 0
fi
installed=$(date +%s)
echo "python: pip install . took $((installed - start)) s"

passed=0 failed=0 rc=0
log=$(mktemp)
# Adds the counts of pytest's closing line ("3 failed, 17 passed, 4 skipped in 6.5s") to the totals.
count() {
  local line p f
  line=$(grep -E '(passed|failed|error).* in [0-9.]+s' "$log" | tail -1 || true)
  p=$(echo "$line" | grep -Eo '[0-9]+ passed' | cut -d' ' -f1 || true)
  f=$(echo "$line" | grep -Eo '[0-9]+ (failed|errors?)' | awk '{s += $1} END {print s + 0}' || true)
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
}
(cd python/tests && "../../$venv/bin/python" -m pytest -q -rs -p no:cacheprovider) 2>&1 | tee "$log" || rc=1
count
[ "$rc" = 0 ] || failed=$((failed > 0 ? failed : 1))

interop=${TOPKSAE_INTEROP_VENV:-.venv-interop}
if [ -x "$interop/bin/python" ] && "$interop/bin/python" -c 'import torch, transformer_lens, sae_lens' 2>/dev/null; then
  ipy="$(cd "$interop" && pwd)/bin/python"  # not realpath: that would leave the venv
  site=build-py/site
  rm -rf "$site" && mkdir -p "$site"
  cp -r "$("$venv/bin/python" -c 'import topksae, os; print(os.path.dirname(topksae.__file__))')" "$site/"
  "${pip[@]}" install -q --target build-py/pytest-site pytest
  export PYTHONPATH="$PWD/$site:$PWD/build-py/pytest-site"
  echo "python: the tests again with $interop's Python (torch)"
  (cd python/tests && "$ipy" -m pytest -q -rs -p no:cacheprovider) 2>&1 | tee "$log" || rc=1
  count
  [ "$rc" = 0 ] || failed=$((failed > 0 ? failed : 1))
  echo "python: examples/python/train_live.py"
  if "$ipy" examples/python/train_live.py --out build-py/live-example --training-tokens 100000; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)) rc=1
  fi
else
  echo "python: no torch/transformer_lens/sae_lens venv at $interop (50-interop.sh makes it): torch tests and the example not run"
fi
rm -f "$log"
end=$(date +%s)
echo "python: pip install $((installed - start)) s, tests $((end - installed)) s"
echo "python: ${passed} passed, ${failed} failed" | tee -a "$summary"
[ "$failed" = 0 ] && [ "$rc" = 0 ]
