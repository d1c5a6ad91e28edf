#!/usr/bin/env bash
# The test command: set-up (idempotent) + unit and recipe tests on tiny models (CPU, < 10 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
# CI needs the real browser for the report test: set-up installs Debian's chromium only when asked (root, apt).
SAFERLHF_SETUP_BROWSER=${SAFERLHF_SETUP_BROWSER:-1} bash scripts/setup.sh
. .venv/bin/activate
export SAFERLHF_NO_PROGRESS=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
python -m pytest -q tests "$@"
