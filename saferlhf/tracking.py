"""Run directories, atomic writes, metrics JSONL and progress bars.

Every run writes ``<out>/config.yaml`` (the resolved config) and ``<out>/metrics.jsonl`` (one JSON object
per logged step, fixed metric names: train/, rollout/, reward/, cost/, lagrange/, eval/).
TensorBoard is optional (``report_to: tensorboard``) and imported lazily.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any, Iterable


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> None:
    """Write a file so that readers never see a partial version.

    ``write(tmp)`` writes a temporary file in the same folder; it is then fsynced and renamed over
    ``path``. On any failure the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """``atomic_write`` of a text file."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    return str(o)


class MetricsLogger:
    """Appends one JSON object per step to ``metrics.jsonl``; optionally mirrors to TensorBoard.

    Only the main process writes (``enabled=False`` elsewhere); values are plain floats.
    """

    def __init__(self, out_dir: str | Path, enabled: bool = True, report_to: str = "none",
                 filename: str = "metrics.jsonl"):
        self.path = Path(out_dir) / filename
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if report_to == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter  # lazy: optional dependency

                self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
            elif report_to == "wandb":
                import wandb  # lazy: optional dependency

                if wandb.run is None:
                    wandb.init(dir=str(out_dir))
                self._tb = "wandb"

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: _to_float(v) for k, v in metrics.items()}
        row = {"step": step, "time": round(time.time(), 3), **clean}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        if self._tb == "wandb":
            import wandb

            wandb.log(clean, step=step)
        elif self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, float) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def truncate_after(self, step: int) -> None:
        """On resume: drop rows logged after the checkpointed step."""
        if not self.enabled or not self.path.exists():
            return
        rows = [r for r in read_jsonl(self.path) if r.get("step", -1) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))


def _to_float(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, (int, float, bool)):
        return float(v)
    return v


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "",
             disable: bool = False):
    """A tqdm progress bar (rich-styled when a terminal is attached)."""
    from tqdm.auto import tqdm

    disable = disable or os.environ.get("SAFERLHF_NO_PROGRESS") == "1"
    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True, leave=False)


def prepare_out_dir(out_dir: str | Path, config: Any, is_main: bool = True) -> Path:
    """Create the run directory and save the resolved config in it."""
    from saferlhf.config import save_config

    out = Path(out_dir)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    return out
