#!/usr/bin/env bash
# Configures and builds topksae into build/ (CUDA backend when nvcc is found). Extra arguments go
# to cmake's configure step, e.g. tools/build.sh -DTOPKSAE_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j"$(nproc)"
