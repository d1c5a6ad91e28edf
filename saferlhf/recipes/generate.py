"""Sample responses from a policy for a prompt file: one per prompt, or pairs for annotation.

`--pairs` (the same as `--sampling.n 2`) writes {prompt, response_0, response_1} records (the input of `saferlhf world annotate`,
i.e. and of `saferlhf annotate import`: the paper's "collect response pairs from the current model" step); otherwise {prompt, response}. Each
record also says whether each response ended with eos (``ended_0`` / ``ended_1``, or ``ended``; False: cut off
at ``sampling.max_new_tokens``), which `saferlhf score` uses. Sampling: ``--sampling.*`` (`saferlhf.sampling`).
Prompts: any prompt file (`saferlhf data check` lists the formats) or `world:train` / `world:test`.
``--device`` / ``--dtype`` (`saferlhf.models.placement`): auto is cuda in bfloat16 when a GPU is visible, else
cpu in float32.

Launch: `saferlhf generate --model_path M --prompts world:train --pairs --out pairs.jsonl`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from saferlhf.config import option
from saferlhf.models.placement import DEVICE_HELP, DTYPE_HELP, Device, DType, resolve_placement
from saferlhf.sampling import RENAMED, SamplingConfig


@dataclass
class GenerateConfig:
    __renamed__ = RENAMED | {"n_samples": "sampling.n", "batch_size": "sampling.batch_size"}

    model_path: str = option("", "HF causal LM path")
    prompts: str = option("world:test", "prompt file, or world:train / world:test (the synthetic world's prompts)")
    world_seed: int = option(0, "world seed for world:* prompts")
    out: str = option("generations.jsonl", "output JSONL")
    max_prompts: int = option(0, "use at most this many prompts (0 = all)", ge=0)
    sample_prompts: bool = option(False, "with max_prompts: a seeded random sample (--seed) instead of the file's head")
    sampling: SamplingConfig = option(SamplingConfig(), "response sampling (n: responses per prompt; 2 writes "
                                                        "response pairs response_0, response_1)")
    seed: int = option(0, "sampling seed")
    device: Device = option("auto", DEVICE_HELP)
    dtype: DType = option("auto", DTYPE_HELP)
    pairs: bool = option(False, "write response pairs for annotation ({prompt, response_0, response_1}): the same as "
                                "--sampling.n 2")
    distinct_pairs: bool = option(True, "with sampling.n=2, resample (up to 4 times) pairs whose responses are identical")


def run(cfg: GenerateConfig) -> int:
    from saferlhf.data.schema import prompt_json
    from saferlhf.files import atomic_write_text
    from saferlhf.models.policy import load_policy
    from saferlhf.rollout import HFGenerator
    from saferlhf.training import set_seed

    from saferlhf.data.prompt_source import prompt_texts

    from saferlhf.files import check_output_file

    if cfg.pairs:
        from dataclasses import replace

        from saferlhf.config import ConfigError

        if cfg.sampling.n not in (1, 2):
            raise ConfigError(f"pairs: --pairs writes two responses per prompt, but --sampling.n is {cfg.sampling.n}; "
                              "drop one of them")
        cfg.sampling = replace(cfg.sampling, n=2)
    check_output_file(cfg.out, {"prompts": cfg.prompts}, "generate")  # never over its own input
    device, dtype = resolve_placement(cfg.device, cfg.dtype)
    prompts = prompt_texts(cfg.prompts, cfg.world_seed)
    if cfg.max_prompts:
        from saferlhf.eval.suite import take_prompts

        prompts = take_prompts(prompts, cfg.max_prompts, cfg.seed if cfg.sample_prompts else None)
    set_seed(cfg.seed)
    model, tokenizer = load_policy(cfg.model_path, dtype=dtype, device=device)
    generator = HFGenerator(model, tokenizer, cfg.sampling)
    samples, ended = generator.generate_ended(prompts, cfg.sampling.n, progress_desc="generate")
    if cfg.sampling.n == 2 and cfg.distinct_pairs:
        for _ in range(4):
            same = [i for i, s in enumerate(samples) if s[0] == s[1]]
            if not same:
                break
            again, again_ended = generator.generate_ended([prompts[i] for i in same], 1)
            for i, (r,), (e,) in zip(same, again, again_ended):
                samples[i][1], ended[i][1] = r, e
    # ``ended`` / ``ended_<k>``: False where the response was cut off at max_new_tokens (`saferlhf score` then
    # scores it without eos, as training and PPO do)
    rows = []
    for p, s, e in zip(prompts, samples, ended):
        if cfg.sampling.n == 2:
            rows.append({"prompt": prompt_json(p), "response_0": s[0], "response_1": s[1], "ended_0": e[0],
                         "ended_1": e[1]})
        else:
            rows += [{"prompt": prompt_json(p), "response": r, "ended": done} for r, done in zip(s, e)]
    atomic_write_text(Path(cfg.out), "".join(json.dumps(r) + "\n" for r in rows))
    print(f"generate: {len(rows)} records from {cfg.model_path} -> {cfg.out}")
    return 0
