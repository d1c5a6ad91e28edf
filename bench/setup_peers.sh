#!/usr/bin/env bash
# Create the peer virtual environments used by the saferlhf benchmarks:
#   bench/.venv-trl116  TRL 1.16.x  (RewardTrainer peer of bench_reward_model.py)
#   bench/.venv-trl112  TRL 1.12.0  (trl.experimental.ppo.PPOTrainer peer of bench_ppo.py)
# torch is installed FIRST and pinned to the CPU build the main venv uses (2.13.0), so that pip
# never resolves a CUDA torch (GBs of downloads). Re-running is cheap: an existing venv whose trl
# already imports is left alone (pass --force to rebuild).
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

make_venv() {  # make_venv DIR TRL_SPEC TRL_VERSION_PREFIX
  local dir="$1" trl_spec="$2" want="$3"
  if [[ $FORCE == 0 && -x "$dir/bin/python" ]] &&
     "$dir/bin/python" -c "import sys, torch, trl; sys.exit(not (trl.__version__.startswith('$want') and torch.__version__.startswith('2.13.0')))" 2>/dev/null; then
    echo "[setup_peers] $dir ok: $("$dir/bin/python" -c 'import trl,transformers,torch;print("trl",trl.__version__,"transformers",transformers.__version__,"torch",torch.__version__)')"
    return
  fi
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip
  # 1) the CPU torch wheel, alone, so nothing later can pull a CUDA build. On this project's machines
  #    pip finds torch-2.13.0+cpu in its local wheel folder; elsewhere point pip at a CPU-only torch
  #    index through TORCH_PIP_ARGS (e.g. "--index-url <cpu index>").
  # shellcheck disable=SC2086
  "$dir/bin/python" -m pip install -q ${TORCH_PIP_ARGS:-} "torch==2.13.0"
  # 2) trl and the libraries it needs; the torch pin stays (constraint file)
  echo "torch==2.13.0" > "$dir/torch-pin.txt"
  "$dir/bin/python" -m pip install -q -c "$dir/torch-pin.txt" "$trl_spec" accelerate datasets
  "$dir/bin/python" -m pip check || true
  "$dir/bin/python" -c 'import trl,transformers,accelerate,torch;print("[setup_peers] '"$dir"':","trl",trl.__version__,"transformers",transformers.__version__,"accelerate",accelerate.__version__,"torch",torch.__version__)'
}

make_venv .venv-trl116 "trl==1.16.*" "1.16."
make_venv .venv-trl112 "trl==1.12.0" "1.12.0"
