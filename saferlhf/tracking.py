"""Run folders, metrics JSONL and progress bars (atomic writes and valid JSON: `saferlhf.files`).

Every run writes ``<out>/config.yaml`` (the resolved config) and ``<out>/metrics.jsonl`` (one JSON object
per logged step, fixed metric names: train/, rollout/, reward/, cost/, lagrange/, eval/).
TensorBoard is optional (``report_to: tensorboard``) and imported lazily. Every JSON file written here is
valid JSON: non-finite floats become ``null``.

The run-folder rule (``start_run`` / ``finish_run``), the same for every command that writes a folder:
* a new or empty folder: the run starts;
* a folder that already holds a run: refused, unless ``resume`` (training commands: continue from the
  folder's checkpoint; the saved config must match, field by field, except the fields in
  ``RESUME_FREE``, unless ``allow_config_change``) or ``overwrite`` (the old run is deleted first;
  a non-empty folder that is not a saferlhf run is never deleted);
* ``status.json`` says ``running`` from the start, ``failed`` (with the error) when the command stops
  on an error, and ``complete`` only after every output is in place: it is written last. A folder
  without ``"state": "complete"`` is visibly not a finished run (a killed run keeps ``running``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable

from saferlhf.files import atomic_write_json, atomic_write_text, dumps, recover_atomic_dirs


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
            f.write(dumps(row) + "\n")
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
        atomic_write_text(self.path, "".join(dumps(r) + "\n" for r in rows))


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


STATUS_FILE = "status.json"
# config fields that may change when a run is resumed: they do not change what is computed
RESUME_FREE = frozenset({"resume", "overwrite", "allow_config_change", "save_every", "log_every",
                         "runtime.progress", "runtime.threads", "runtime.report_to"})
_ACTIVE: dict[Path, str] = {}  # run folders started by this process and not finished (for fail_active_runs)


def run_state(out_dir: str | Path) -> str | None:
    """``running`` | ``failed`` | ``complete`` from ``status.json``; ``unknown`` for a folder with files
    but no readable status; None for a missing or empty folder."""
    out = Path(out_dir)
    if not out.is_dir() or not any(out.iterdir()):
        return None
    try:
        return str(json.loads((out / STATUS_FILE).read_text())["state"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def config_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two (nested) config dicts."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def _write_status(out: Path, state: str, command: str, **extra: Any) -> None:
    atomic_write_json(out / STATUS_FILE, {"state": state, "command": command, "time": round(time.time(), 3),
                                          **extra})


def start_run(out_dir: str | Path, config: Any, command: str, *, resume: bool = False, overwrite: bool = False,
              allow_config_change: bool = False, is_main: bool = True) -> Path:
    """Apply the run-folder rule (module docstring), save the resolved config, mark the run ``running``.

    Returns the folder. Raises ``UserError`` for a folder that holds another run (no ``resume`` /
    ``overwrite``), a changed config on resume, or a non-run folder with ``overwrite``.
    """
    from saferlhf.config import check_config, save_config, to_dict
    from saferlhf.errors import UserError

    check_config(config)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{command}: out: {out} exists and is not a folder")
    state = run_state(out)
    if state is not None and not (resume and state != "unknown"):
        if not overwrite:
            raise UserError(f"{command}: {out} already holds a run ({state})",
                            hint="pass --resume true to continue it, --overwrite true to replace it, or "
                                 "choose another --out" if state != "unknown" else
                            "it is not a saferlhf run folder: choose another --out")
        if state == "unknown" and not (out / "config.yaml").exists():
            raise UserError(f"{command}: {out} is not empty and is not a saferlhf run folder; refusing to "
                            "delete it with --overwrite", hint="choose another --out")
        if is_main:
            shutil.rmtree(out)
    elif state is not None and resume and (out / "config.yaml").exists():
        import yaml

        saved = yaml.safe_load((out / "config.yaml").read_text()) or {}
        changed = [k for k in config_differences(saved, to_dict(config)) if k not in RESUME_FREE]
        if changed and not allow_config_change:
            raise UserError(f"{command}: cannot resume {out}: the config differs from the saved run in "
                            f"{', '.join(changed)}",
                            hint="resume with the same settings, or pass --allow_config_change true")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        for line in recover_atomic_dirs(out):
            print(f"{command}: {out}: {line}")
        save_config(config, out / "config.yaml")
        _write_status(out, "running", command, resumed=state is not None and resume)
    _ACTIVE[out.resolve()] = command
    return out


def finish_run(out_dir: str | Path, is_main: bool = True, **summary: Any) -> None:
    """Mark the run ``complete`` (call after every output is written: the status is written last)."""
    out = Path(out_dir)
    command = _ACTIVE.pop(out.resolve(), "")
    if is_main:
        _write_status(out, "complete", command, **summary)


def fail_active_runs(error: BaseException) -> None:
    """Mark every run started by this process and not finished as ``failed`` (the CLI calls this)."""
    for out, command in list(_ACTIVE.items()):
        if (out / STATUS_FILE).exists():
            _write_status(out, "failed", command, error=f"{type(error).__name__}: {error}")
        _ACTIVE.pop(out, None)
