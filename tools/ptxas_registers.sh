#!/usr/bin/env bash
# Registers per thread of every topksae kernel (ptxas -v, sm_90, Release), one "kernel<TAB>registers"
# line each, sorted; CUB's own kernels left out. Needs nvcc, no GPU. Builds only the kernel objects,
# in build-ptxas/ (or $1). Compare two trees by running it in each and joining the outputs
# (bench/results/ptxas-registers-2026-12-05.md was made so).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-ptxas}
cmake -S . -B "$dir" -DTOPKSAE_CUDA=ON -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
      "-DCMAKE_CUDA_FLAGS=-Xptxas -v" -DTOPKSAE_BUILD_TESTS=OFF -DTOPKSAE_BUILD_BENCH=OFF \
      -DTOPKSAE_BUILD_TOOLS=OFF >/dev/null
objs=$(ls kernels/*.cu kernels/train/*.cu 2>/dev/null | sed 's/$/.o/')
for o in $objs; do rm -f "$dir/CMakeFiles/topksae.dir/$o"; done  # ptxas prints only when it runs
(cd "$dir" && make -j2 $objs) > "$dir/ptxas.log" 2>&1 || { tail -20 "$dir/ptxas.log"; exit 1; }
python3 - "$dir/ptxas.log" <<'PY'
import re, subprocess, sys
name, rows = None, []
for line in open(sys.argv[1]):
    m = re.search(r"Compiling entry function '([^']+)'", line)
    if m:
        name = m.group(1)
        continue
    m = re.search(r"Used (\d+) registers", line)
    if m and name:
        dm = subprocess.run(["c++filt", name], capture_output=True, text=True).stdout.strip()
        name = None
        dm = dm.replace("(anonymous namespace)::", "")
        dm = re.sub(r"^void ", "", dm.split("(")[0])  # the name, without the parameter list
        if dm.startswith("cub::"):
            continue
        dm = re.sub(r"^topksae::cuda::", "", dm)
        rows.append((dm, int(m.group(1))))
for n, r in sorted(set(rows)):
    print(f"{n}\t{r}")
PY
