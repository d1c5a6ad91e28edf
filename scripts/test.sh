#!/usr/bin/env bash
# The test command: set-up (idempotent) + unit and recipe tests on tiny models (CPU, < 10 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
# CI needs the real browser and database: set-up installs Debian's chromium, tmux and postgresql only when asked
# (root, apt).
SAFERLHF_SETUP_BROWSER=${SAFERLHF_SETUP_BROWSER:-1} bash scripts/setup.sh
. .venv/bin/activate
# Where set-up left PostgreSQL's binaries, its half of the annotation app's tests must run: a cluster that cannot
# start is then a failure, not a skip (tests/annotate/conftest.py).
if command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  export SAFERLHF_REQUIRE_POSTGRES=${SAFERLHF_REQUIRE_POSTGRES:-1}
fi
export SAFERLHF_NO_PROGRESS=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
python -m pytest -q tests "$@"
