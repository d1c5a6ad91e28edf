"""Shared by the peer scripts (run inside the peers' virtual environments): the step clock and its summary."""

from __future__ import annotations

import sys
import time


def step_clock(stamps: list[float]):
    """A transformers TrainerCallback that stamps the start of training and the end of every optimiser step."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            stamps.clear()
            stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    return Clock()


def step_summary(stamps: list[float], warmup: int, steps: int, batch: int) -> dict:
    """pairs/s over the timed steps warmup+1 .. warmup+steps: batch / median step time, and over the window."""
    assert len(stamps) == warmup + steps + 1, (len(stamps), warmup, steps)
    timed = stamps[-1] - stamps[warmup]
    timed_steps = sorted(stamps[i + 1] - stamps[i] for i in range(warmup, len(stamps) - 1))
    n = len(timed_steps)
    median = timed_steps[n // 2] if n % 2 else sum(timed_steps[n // 2 - 1: n // 2 + 1]) / 2
    return {"pairs_per_s_median": batch / median, "pairs_per_s": steps * batch / timed, "timed_seconds": timed,
            "timed_steps": steps, "step_seconds": [round(stamps[i + 1] - stamps[i], 4) for i in range(len(stamps) - 1)]}


def peer_versions() -> dict:
    import accelerate
    import torch
    import transformers
    import trl

    return {"trl": trl.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "torch": torch.__version__, "python": sys.version.split()[0]}
