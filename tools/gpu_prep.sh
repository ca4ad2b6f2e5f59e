#!/usr/bin/env bash
# Prepares this checkout for the GPU check, on the session's own machine (not the GPU one):
#   * copies ../shared/peers/torch_peers.py to shared/peers/ (the device machine receives only the
#     repository, so the peers must travel inside it);
#   * unpacks the Debian packages googletest (sources), nlohmann-json3-dev, libcli11-dev (the
#     topksae command's parser) and oneDNN (libdnnl-dev + libdnnl2, the CPU GEMM, with
#     ocl-icd-libopencl1, which libdnnl.so.2 links) into .deps/, which CMake falls back on when the
#     GPU image lacks them (nothing can be installed there; gpu_check.sh passes .deps/usr as
#     CMAKE_PREFIX_PATH; the binaries find libdnnl there through their build RPATH). About 45 MB.
# Both folders are git-ignored. Then call the device tool's run with
#   command "bash tools/gpu_check.sh", carry [".deps", "shared"], timeout_s 600.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -f ../shared/peers/torch_peers.py ]; then
  mkdir -p shared/peers && cp ../shared/peers/torch_peers.py shared/peers/
  echo "peers: shared/peers/torch_peers.py"
else
  echo "peers: ../shared/peers/torch_peers.py not found; the GPU check will run without them" >&2
fi
rm -rf .deps && mkdir -p .deps
if (cd .deps && apt-get download googletest nlohmann-json3-dev libcli11-dev libdnnl-dev libdnnl2 ocl-icd-libopencl1 >/dev/null 2>&1); then
  for f in .deps/*.deb; do dpkg -x "$f" .deps; done
  rm -f .deps/*.deb
  echo "deps: $(du -sh .deps | cut -f1) in .deps (googletest sources, nlohmann-json and CLI11 headers, oneDNN)"
else
  echo "deps: apt-get download failed; the GPU check will rely on the GPU image's packages" >&2
fi
# The Python package's GPU tests (gpu_check.sh's python stage): nanobind (the module's build) and
# pytest with its dependencies, unpacked into .deps/py (wheels are zip files; nothing to install).
mkdir -p .deps/py-wheels
if python3 -m pip download -q --disable-pip-version-check --only-binary :all: -d .deps/py-wheels nanobind pytest \
    >/dev/null 2>&1; then
  for w in .deps/py-wheels/*.whl; do python3 -m zipfile -e "$w" .deps/py; done
  echo "python: nanobind + pytest unpacked in .deps/py"
else
  echo "python: pip download failed; the GPU check's python stage will not run" >&2
fi
rm -rf .deps/py-wheels
echo 'next: device run  command="bash tools/gpu_check.sh"  carry=[".deps", "shared"]  timeout_s=600'
