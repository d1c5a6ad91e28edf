"""Shared helpers of the peer benchmarks: synthetic data, tiny models, peer venvs, results.

Everything here is deterministic for a seed and needs nothing from the network: the tiny Llama, its
tokenizer and the data are built on the fly in a temporary folder. Peers (TRL) run as subprocesses in
their own virtual environments (`bench/setup_peers.sh`) and print one JSON object on their last line.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
PEER_VENVS = {"trl116": BENCH / ".venv-trl116", "trl112": BENCH / ".venv-trl112"}

_SYLLABLES = ("ka", "lo", "mi", "ner", "sa", "tu", "vel", "dor", "pi", "ran", "gol", "fe", "shi", "bo",
              "tra", "ven", "qui", "mar", "zel", "nu", "ho", "jas", "wen", "ric")
_COMMON = ("the", "a", "of", "to", "and", "is", "in", "that", "it", "for", "you", "can", "how", "what",
           "with", "be", "not", "this", "my", "do", "I", "please", "help", "should", "safe", "way")


def set_threads(n: int) -> None:
    """Same torch intra-op thread count for every side (and for the BLAS libraries it may call)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


def thread_env(n: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n), OPENBLAS_NUM_THREADS=str(n),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", WANDB_DISABLED="true", PYTHONWARNINGS="ignore")
    return env


class Words:
    """A pseudo-language: a fixed lexicon of made-up words plus common English function words."""

    def __init__(self, seed: int = 0, size: int = 3000):
        rng = random.Random(seed)
        lex = set()
        while len(lex) < size:
            lex.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))))
        self.lexicon = sorted(lex)
        self.rng = random.Random(seed + 1)

    def word(self) -> str:
        return self.rng.choice(_COMMON) if self.rng.random() < 0.35 else self.rng.choice(self.lexicon)

    def sentence(self, n_words: int) -> str:
        words = [self.word() for _ in range(n_words)]
        return " ".join(words).capitalize() + self.rng.choice((".", ".", "!", "?"))

    def prompt(self) -> str:
        return self.sentence(self.rng.randint(6, 16))[:-1] + "?"

    def corpus(self, n: int) -> list[str]:
        return [" ".join(self.sentence(self.rng.randint(5, 20)) for _ in range(3)) for _ in range(n)]


def build_tiny_llama(out_dir: Path, seed: int = 0, hidden_size: int = 256, num_layers: int = 4,
                     num_heads: int = 4, vocab_size: int = 2048) -> Path:
    """Tokenizer (byte-level BPE, vocab 2048) + tiny Llama saved with `saferlhf.models.build_tiny_model`."""
    from saferlhf.models import build_tiny_model

    words = Words(seed)
    return build_tiny_model(out_dir, words.corpus(3000), arch="llama", vocab_size=vocab_size,
                            hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, seed=seed)


def response_of_tokens(words: Words, tokenizer, n_tokens: int) -> str:
    """A response of about ``n_tokens`` tokens (the first sentence boundary after reaching it)."""
    parts: list[str] = []
    text = ""
    while len(tokenizer(" " + text, add_special_tokens=False)["input_ids"]) < n_tokens:
        parts.append(words.word())
        text = " ".join(parts)
    return text.capitalize() + "."


def make_preference_file(path: Path, tokenizer, n_pairs: int, seed: int = 0,
                         min_tokens: int = 30, max_tokens: int = 120) -> dict[str, Any]:
    """TRL-style ``{"prompt", "chosen", "rejected"}`` JSONL with response lengths U[min, max] tokens.

    Also writes ``<stem>.conversational.jsonl``: the same pairs as TRL conversational messages, so that
    TRL applies the tokenizer's chat template and sees exactly the token sequences saferlhf builds.
    """
    words = Words(seed + 7)
    rng = random.Random(seed + 11)
    rows = []
    for _ in range(n_pairs):
        rows.append({"prompt": words.prompt(),
                     "chosen": response_of_tokens(words, tokenizer, rng.randint(min_tokens, max_tokens)),
                     "rejected": response_of_tokens(words, tokenizer, rng.randint(min_tokens, max_tokens))})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    conv = path.with_name(path.stem + ".conversational.jsonl")
    conv.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": r["prompt"]}],
        "chosen": [{"role": "assistant", "content": r["chosen"]}],
        "rejected": [{"role": "assistant", "content": r["rejected"]}]}) + "\n" for r in rows))
    return {"pairs": n_pairs, "response_tokens": [min_tokens, max_tokens], "file": str(path),
            "conversational_file": str(conv)}


def make_prompt_file(path: Path, n: int, seed: int = 0) -> list[str]:
    words = Words(seed + 3)
    prompts = [words.prompt() for _ in range(n)]
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return prompts


def peer_python(name: str) -> Path:
    py = PEER_VENVS[name] / "bin" / "python"
    if not py.exists():
        raise SystemExit(f"peer venv {PEER_VENVS[name]} is missing: run `bash bench/setup_peers.sh` first")
    return py


def run_peer(name: str, script: str, args: list[str], threads: int, timeout: int = 900) -> dict[str, Any]:
    """Run ``bench/peers/<script>`` in the peer venv; its last stdout line is a JSON object."""
    cmd = [str(peer_python(name)), str(BENCH / "peers" / script), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=thread_env(threads), timeout=timeout,
                          cwd=str(BENCH))
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + "\n" + proc.stderr[-8000:] + "\n")
        raise SystemExit(f"peer {script} in {name} failed with exit status {proc.returncode}")
    return json.loads(lines[-1])


def versions() -> dict[str, str]:
    import accelerate
    import torch
    import transformers

    import saferlhf

    def git_rev() -> str:
        try:
            rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                 text=True, timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--", "saferlhf"], cwd=REPO,
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return rev + ("+uncommitted saferlhf changes" if dirty else "")
        except Exception:  # noqa: BLE001 - informational only
            return "unknown"

    return {"saferlhf": getattr(saferlhf, "__version__", "dev"), "saferlhf_git": git_rev(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "python": platform.python_version()}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def run_saferlhf(args: list[str], log: Path, name: str | None = None) -> dict[str, float]:
    """``python -m saferlhf *args`` in a fresh process (all cores, no progress bars), its output appended to
    ``log``; its wall seconds and peak RSS (the child's own rusage, via wait4). A failure stops the benchmark."""
    import time

    t = time.time()
    with log.open("a") as f:
        f.write(f"\n== {name + ': ' if name else ''}saferlhf {' '.join(args)}\n")
        f.flush()
        proc = subprocess.Popen([sys.executable, "-m", "saferlhf", *args], stdout=f, stderr=subprocess.STDOUT,
                                env=thread_env(os.cpu_count() or 1) | {"SAFERLHF_NO_PROGRESS": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{f'stage {name}' if name else f'saferlhf {args[0]}'} failed (exit {code}); see {log}")
    return {"seconds": round(time.time() - t, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}
