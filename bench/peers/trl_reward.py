"""Peer of saferlhf's reward-model training: TRL's RewardTrainer (run in bench/.venv-trl116).

Prints one JSON object (last stdout line): pairs/s over the timed steps (steps warmup+1 .. warmup+steps,
measured between `on_step_end` callbacks, so model loading, tokenisation and the warm-up steps are
excluded), token statistics of the tokenised data and the versions used.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings

from peer_util import peer_versions, step_clock, step_summary

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="conversational prompt/chosen/rejected jsonl")
    ap.add_argument("--batch_size", type=int, required=True)
    ap.add_argument("--max_length", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    import datasets
    import transformers
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    rows = [json.loads(line) for line in open(a.data) if line.strip()]
    dataset = Dataset.from_list(rows)

    stamps: list[float] = []

    with tempfile.TemporaryDirectory() as out:
        cfg = RewardConfig(
            output_dir=out, per_device_train_batch_size=a.batch_size, max_steps=a.warmup + a.steps,
            max_length=a.max_length, bf16=False, fp16=False, gradient_checkpointing=False,
            eval_strategy="no", save_strategy="no", report_to="none", dataloader_num_workers=0,
            logging_steps=1, disable_tqdm=True, use_cpu=True, seed=a.seed,
            learning_rate=2e-5, weight_decay=0.1, adam_beta2=0.95, lr_scheduler_type="cosine",
            warmup_steps=0.03, max_grad_norm=1.0,
            model_init_kwargs={"dtype": torch.float32},
        )
        t_init = time.perf_counter()
        trainer = RewardTrainer(model=a.model, args=cfg, train_dataset=dataset, callbacks=[step_clock(stamps)])
        init_s = time.perf_counter() - t_init
        lengths = [len(x) for x in trainer.train_dataset["chosen_ids"]] + \
                  [len(x) for x in trainer.train_dataset["rejected_ids"]]
        t_train = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t_train

    print(json.dumps(step_summary(stamps, a.warmup, a.steps, a.batch_size) | {
        "init_seconds": init_s, "train_seconds": train_s,
        "pairs_kept": len(trainer.train_dataset), "pairs_in_file": len(rows),
        "mean_tokens_per_sequence": sum(lengths) / len(lengths),
        "optim": str(cfg.optim), "dtype": str(next(trainer.model.parameters()).dtype),
        "attn_implementation": getattr(trainer.model.config, "_attn_implementation", None),
        "torch_threads": torch.get_num_threads(),
        "versions": peer_versions(),
    }))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
