#!/usr/bin/env bash
# The main job: build topksae, then run it. Until the trainer lands this is the encode/decode demo;
# arguments are passed to the topksae command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh
if (($#)); then exec build/tools/topksae "$@"; fi
exec build/tools/topksae demo
