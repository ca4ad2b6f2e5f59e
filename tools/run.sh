#!/usr/bin/env bash
# The main job: build topksae, then train a TopK SAE on synthetic data with a planted dictionary
# (the CPU trainer; well under a minute on 2 cores) and print how much of the dictionary it
# recovered. The SAE directory, metrics log and HTML report go to runs/synthetic/.
# Arguments, when given, are passed to the topksae command instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh
if (($#)); then exec build/tools/topksae "$@"; fi
exec build/tools/topksae train --synthetic --out runs/synthetic --overwrite
