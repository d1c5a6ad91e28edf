"""Reward and cost models on REAL human preferences (Anthropic HH-RLHF samples in ../shared/data).

A tiny Llama (tokenizer trained on the HH transcripts, model created from a config) is first fine-tuned
on the chosen helpful responses (a few hundred steps of SFT, so that the backbone has seen English), then
  * the reward model trains on helpful-base pairs (`saferlhf score-model --kind reward`),
  * the cost model trains on harmless-base pairs (`--kind cost`, ranking term only: HH-RLHF has no
    per-response safety labels; chosen = the less harmful response),
each on 90 % of the file with 10 % held out. Prints JSON; writes bench/results/hh_rlhf.json.

    python bench/bench_hh_rlhf.py
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SAFERLHF_NO_PROGRESS", "1")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden_size", type=int, default=128)
    ap.add_argument("--num_layers", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} not found: this benchmark needs the shared HH-RLHF samples")

    from saferlhf.data.loaders import load_preference_pairs
    from saferlhf.models import build_tiny_model
    from saferlhf.recipes import score_model, sft
    from saferlhf.training import OptimConfig, RuntimeConfig

    t0 = time.time()
    root = Path(tempfile.mkdtemp(prefix="saferlhf-hh-"))
    texts = []
    for name in ("helpful-base", "harmless-base"):
        with gzip.open(SHARED / f"{name}.jsonl.gz", "rt") as f:
            for line in f:
                r = json.loads(line)
                texts += [r["chosen"], r["rejected"]]
    build_tiny_model(root / "base", texts, arch="llama", vocab_size=4096, hidden_size=args.hidden_size,
                     num_layers=args.num_layers, num_heads=4, max_position_embeddings=512, seed=args.seed)
    pairs = load_preference_pairs(SHARED / "helpful-base.jsonl.gz", kind="reward")
    corpus = root / "sft.jsonl"
    corpus.write_text("".join(json.dumps({"prompt": p.prompt, "response": p.chosen}) + "\n"
                              for p in pairs if p.chosen.strip()))
    rt = RuntimeConfig(seed=args.seed, progress=False)
    sft.run(sft.SFTConfig(model_path=str(root / "base"), train_file=str(corpus), out=str(root / "sft"), max_length=256,
                          batch_size=16, epochs=2.0, optim=OptimConfig(lr=2e-3, weight_decay=0.0), runtime=rt))
    result = {"model": f"tiny llama {args.hidden_size}x{args.num_layers}, vocab 4096, SFT on chosen helpful replies"}
    for kind, name in (("reward", "helpful-base"), ("cost", "harmless-base")):
        out = root / kind
        score_model.run(score_model.ScoreModelConfig(
            kind=kind, model_path=str(root / "sft" / "model"), train_file=str(SHARED / f"{name}.jsonl.gz"),
            eval_ratio=0.1, out=str(out), max_length=256, batch_size=16, epochs=args.epochs,
            optim=OptimConfig(lr=5e-4, weight_decay=0.1), runtime=rt))
        ev = json.loads((out / "eval.json").read_text())
        result[kind] = {"file": f"hh-rlhf/{name}.jsonl.gz", "train_pairs": ev["train/pairs"],
                        "heldout_pairs": ev["eval/pairs"], "heldout_accuracy": ev["eval/accuracy"],
                        "train_seconds": round(ev["train/seconds"], 1)}
    result["seconds"] = round(time.time() - t0, 1)
    result["command"] = "python bench/bench_hh_rlhf.py"
    text = json.dumps(result, indent=2)
    print(text)
    dest = Path(__file__).parent / "results" / "hh_rlhf.json"
    dest.write_text(text + "\n")


if __name__ == "__main__":
    main()
