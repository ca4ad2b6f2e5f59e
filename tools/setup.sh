#!/usr/bin/env bash
# Installs the Debian packages topksae builds with, when any is missing (idempotent; needs root or
# sudo the first time). The CUDA toolkit is optional and not installed here: with nvcc on PATH
# the CUDA backend is built too.
set -euo pipefail
# libdnnl-dev: oneDNN, the CPU backend's GEMM (src/cpu/gemm.cpp). python3-dev, python3-venv: `pip install .`
# (tools/test.d/55-python.sh). OpenMPI: latent-sharded training (mpirun -np R topksae train).
pkgs=(cmake make g++ libgtest-dev libgmock-dev nlohmann-json3-dev libcli11-dev libdnnl-dev clang libclang-rt-14-dev python3
      python3-dev python3-venv libopenmpi-dev openmpi-bin)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
