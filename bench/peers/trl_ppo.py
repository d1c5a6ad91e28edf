"""Peer of saferlhf's PPO: TRL 1.12.0 `trl.experimental.ppo.PPOTrainer` (run in bench/.venv-trl112).

Same tiny policy (also the reference), reward model folder (AutoModelForSequenceClassification; the
value model is initialised from it, as saferlhf's reward critic is), prompts (chat template with the
generation prompt, i.e. the token ids saferlhf's `encode_prompt` gives), prompts per batch, max new
tokens, temperature 1, top-k off, top-p 1, fp32, no gradient checkpointing, 1 PPO epoch, 1 minibatch,
stop_token="eos" (responses end at eos like saferlhf's; missing_eos_penalty only changes the reward).

Timing: one stamp at `on_train_begin` and one per PPO iteration at `on_step_end` (after generation,
scoring, the update and TRL's own logging). Response lengths are recorded where TRL truncates the
responses at eos (`truncate_response` is wrapped): length = tokens before the first pad after
truncation = tokens up to and including eos, or the full width when there is no eos — the same
definition as saferlhf's `rollout/response_length`. Prints one JSON object (last stdout line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

from peer_util import step_clock

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", required=True)
    ap.add_argument("--reward_model", required=True)
    ap.add_argument("--prompts", required=True, help="jsonl with a 'prompt' field")
    ap.add_argument("--prompts_per_step", type=int, required=True)
    ap.add_argument("--max_new_tokens", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--kl_coef", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    import accelerate
    import datasets
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    import trl.experimental.ppo.ppo_trainer as ppo_mod
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()

    tokenizer = AutoTokenizer.from_pretrained(a.policy, padding_side="left")
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    prompts = [json.loads(line)["prompt"] for line in open(a.prompts) if line.strip()]

    def encode(p: str) -> list[int]:
        text = tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                             add_generation_prompt=True)
        return tokenizer(text)["input_ids"]

    dataset = Dataset.from_dict({"input_ids": [encode(p) for p in prompts]})

    lengths: list[list[int]] = []   # per iteration: response lengths
    widths: list[int] = []          # per iteration: generated width (tokens actually decoded)
    original_truncate = ppo_mod.truncate_response

    def recording_truncate(stop_token_id, pad_token_id, responses):
        out = original_truncate(stop_token_id, pad_token_id, responses)
        n = ppo_mod.first_true_indices(out == pad_token_id)
        lengths.append(n.tolist())
        widths.append(int(responses.shape[1]))
        return out

    ppo_mod.truncate_response = recording_truncate

    stamps: list[float] = []

    f32 = {"dtype": torch.float32}
    policy = AutoModelForCausalLM.from_pretrained(a.policy, **f32)
    ref = AutoModelForCausalLM.from_pretrained(a.policy, **f32)
    reward = AutoModelForSequenceClassification.from_pretrained(a.reward_model, num_labels=1, **f32)
    value = AutoModelForSequenceClassification.from_pretrained(a.reward_model, num_labels=1, **f32)
    iterations = a.warmup + a.steps
    with tempfile.TemporaryDirectory() as out:
        cfg = PPOConfig(
            output_dir=out, per_device_train_batch_size=a.prompts_per_step, gradient_accumulation_steps=1,
            num_mini_batches=1, num_ppo_epochs=1, total_episodes=a.prompts_per_step * iterations,
            local_rollout_forward_batch_size=a.prompts_per_step, response_length=a.max_new_tokens,
            temperature=1.0, stop_token="eos", missing_eos_penalty=1.0, kl_coef=a.kl_coef,
            num_sample_generations=0, bf16=False, fp16=False, gradient_checkpointing=False,
            report_to="none", save_strategy="no", eval_strategy="no", logging_steps=1, disable_tqdm=True,
            use_cpu=True, seed=a.seed, learning_rate=1e-5, dataloader_num_workers=0,
        )
        trainer = PPOTrainer(args=cfg, processing_class=tokenizer, model=policy, ref_model=ref,
                             reward_model=reward, value_model=value, train_dataset=dataset,
                             callbacks=[step_clock(stamps)])
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0

    assert len(stamps) == iterations + 1 and len(lengths) == iterations, (len(stamps), len(lengths))
    step_s = [stamps[i + 1] - stamps[i] for i in range(iterations)]
    tokens = [sum(x) for x in lengths]
    timed = slice(a.warmup, iterations)
    window_s = stamps[-1] - stamps[a.warmup]
    per_iter = [t / s for t, s in zip(tokens[timed], step_s[timed])]
    print(json.dumps({
        "tokens_per_s_window": sum(tokens[timed]) / window_s,
        "tokens_per_s_median": sorted(per_iter)[len(per_iter) // 2] if len(per_iter) % 2 else
        sum(sorted(per_iter)[len(per_iter) // 2 - 1: len(per_iter) // 2 + 1]) / 2,
        "mean_response_length": sum(tokens[timed]) / (a.steps * a.prompts_per_step),
        "mean_generated_width": sum(widths[timed]) / a.steps,
        "eos_rate": sum(n < w for ls, w in zip(lengths[timed], widths[timed]) for n in ls) / (a.steps * a.prompts_per_step),
        "step_seconds": [round(s, 4) for s in step_s],
        "median_iteration_seconds": sorted(step_s[timed])[len(step_s[timed]) // 2] if a.steps % 2 else
        sum(sorted(step_s[timed])[a.steps // 2 - 1: a.steps // 2 + 1]) / 2,
        "iteration_tokens": tokens,
        "timed_seconds": window_s, "train_seconds": train_s,
        "optim": str(cfg.optim), "torch_threads": torch.get_num_threads(),
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                     "accelerate": accelerate.__version__, "torch": torch.__version__,
                     "python": sys.version.split()[0]},
    }))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
