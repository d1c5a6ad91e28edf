#!/usr/bin/env bash
# The main job: set-up (idempotent) + the whole Safe RLHF demo on CPU. Extra arguments go to `saferlhf demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
saferlhf demo --out runs/demo --overwrite true "$@"  # a rerun replaces runs/demo; add --resume true to continue a killed one
