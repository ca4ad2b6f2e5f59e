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

# NCCL (the GPU ranks' collectives of latent-sharded training, cmake/nccl.cmake), only where nvcc is
# present: NVIDIA's CUDA installs often ship nccl.h and libnccl beside the toolkit; otherwise
# Debian's libnccl-dev (in the contrib component). Without it the GPU build simply has no NCCL
# engine (sharded runs then need --device cpu), so a failed install is a note, not an error.
if command -v nvcc >/dev/null 2>&1; then
  cuda_root="$(dirname "$(dirname "$(command -v nvcc)")")"
  if [ ! -e "$cuda_root/include/nccl.h" ] && [ ! -e /usr/include/nccl.h ] && \
     ! dpkg-query -W -f='${Status}' libnccl-dev 2>/dev/null | grep -q "install ok installed"; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libnccl-dev >/dev/null 2>&1 ||
      echo "setup: note: NCCL not installed (libnccl-dev is in Debian's contrib component, not enabled here);" \
           "the CUDA build will have no NCCL engine"
  fi
fi
