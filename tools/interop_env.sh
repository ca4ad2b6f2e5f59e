#!/usr/bin/env bash
# Creates .venv-interop/ (git-ignored) holding sae-lens 6.13.1 and its dependencies from PyPI, for the
# interop checks in tests/interop/. Idempotent: a venv that already imports sae_lens 6.13.1 is kept.
# PyPI is the only index reachable here, and its Linux torch wheel pulls the CUDA runtime wheels
# (nvidia-*) with it; torch refuses to import without them, so they are installed although only the
# CPU is used (about 6 GiB on disk; 3.5 to 9 min to download and install here).
# tests/interop/constraints.txt pins every version to the set the checks were run with.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TOPKSAE_INTEROP_VENV:-.venv-interop}
py=${PYTHON:-python3}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sae_lens, sys; sys.exit(sae_lens.__version__ != "6.13.1")' 2>/dev/null; then
  echo "interop_env: $venv already has sae-lens 6.13.1"
  exit 0
fi
start=$(date +%s)
if ! "$py" -m venv "$venv" 2>/dev/null; then
  # Debian's python3 keeps venv in a separate package.
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
  rm -rf "$venv"; "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
# Pinned by default; TOPKSAE_INTEROP_UNPINNED=1 takes the newest allowed versions (pyarrow still held
# below 22: newer ones need numpy 2, which transformer-lens forbids, and `import sae_lens` then fails).
cons=(-c tests/interop/constraints.txt)
[ -n "${TOPKSAE_INTEROP_UNPINNED:-}" ] && cons=("pyarrow<22")
"$venv/bin/python" -m pip install -q --disable-pip-version-check "${cons[@]}" sae-lens==6.13.1
"$venv/bin/python" - <<'PY'
import importlib.metadata as m, platform
import sae_lens  # fails here, not in the checks, when the dependency set cannot be imported
print("interop_env: python", platform.python_version(),
      *(f"{p} {m.version(p)}" for p in ("sae-lens", "torch", "transformer-lens", "numpy", "safetensors")))
PY
echo "interop_env: installed in $(($(date +%s) - start)) s ($(du -sh "$venv" | cut -f1) on disk)"
