"""Run folders, metrics JSONL and progress bars (atomic writes and valid JSON: `saferlhf.files`).

Every run writes ``<out>/config.yaml`` (the resolved config) and ``<out>/metrics.jsonl`` (one JSON object
per logged step, fixed metric names: train/, rollout/, reward/, cost/, lagrange/, eval/).
TensorBoard and Weights & Biases are optional (``runtime.report_to: tensorboard | wandb``, the extras of the same
names) and imported lazily; a missing one is a one-line error before the run folder is made (`check_report_to`).
A W&B run goes to ``runtime.wandb_project``, is named after the run folder and carries the resolved config. Every
JSON file written here is valid JSON: non-finite floats become ``null``.

The run-folder rule (``start_run`` / ``finish_run``), the same for every command that writes a folder:
* a new or empty folder: the run starts;
* a folder that already holds a run: refused, unless ``resume`` (training commands: continue from the
  folder's checkpoint; the saved config must match, field by field, except the fields in
  ``RESUME_FREE``, unless ``allow_config_change``; so must the content of every input file, ``inputs.json``)
  or ``overwrite`` (the old run is deleted first, only when ``deletable_run`` allows it: the folder's
  ``status.json`` carries saferlhf's signature, every entry in it is one the finished or failed run wrote, and
  no input of the new run lies inside it);
* a running folder is locked (``flock`` on the folder, held until the process ends: a killed run leaves no
  stale lock): a second process on it is refused (``run folder X is in use by another process (pid N)``);
* the folder must be writable and have ``files.MIN_FREE_BYTES`` free before the work starts;
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

from saferlhf.files import (atomic_write_json, atomic_write_text, check_writable, dumps, file_sha256, is_inside,
                            recover_atomic_dirs)

try:
    import fcntl
except ImportError:  # not POSIX: run folders are not locked
    fcntl = None


# report_to -> (the module to import, the pip extra that installs it)
REPORT_EXTRAS = {"tensorboard": ("torch.utils.tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


def check_report_to(report_to: str) -> None:
    """A one-line ``UserError`` when the package behind ``runtime.report_to`` is not importable: called before
    the run folder is made, so a missing extra never leaves a failed run that needs ``--overwrite``."""
    import importlib

    from saferlhf.errors import UserError

    if report_to not in REPORT_EXTRAS:
        return
    module, extra = REPORT_EXTRAS[report_to]
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise UserError(f"runtime.report_to {report_to}: the {extra} package is not installed ({e})",
                        hint=f"pip install 'saferlhf[{extra}]', or --runtime.report_to none") from None


class MetricsLogger:
    """Appends one JSON object per step to ``metrics.jsonl``; optionally mirrors to TensorBoard or W&B.

    Only the main process writes (``enabled=False`` elsewhere); values are plain floats. W&B gets the project
    ``runtime.wandb_project``, the run folder's name as run name and ``config`` (the resolved config: a config
    dataclass or dict; default: the run folder's ``config.yaml``, which ``start_run`` wrote).
    """

    def __init__(self, out_dir: str | Path, enabled: bool = True, report_to: str = "none",
                 filename: str = "metrics.jsonl", config: Any = None):
        self.path = Path(out_dir) / filename
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            check_report_to(report_to)
            if report_to == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter  # lazy: optional dependency

                self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
            elif report_to == "wandb":
                import wandb  # lazy: optional dependency

                if wandb.run is None:
                    resolved = _resolved_config(Path(out_dir), config)
                    project = (resolved.get("runtime") or {}).get("wandb_project") or "saferlhf"
                    wandb.init(project=project, name=Path(out_dir).resolve().name, config=resolved,
                               dir=str(out_dir))
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


def _resolved_config(out: Path, config: Any) -> dict[str, Any]:
    """The resolved config as a dict: ``config`` (a dataclass or a dict), else ``out/config.yaml``, else {}."""
    if config is not None:
        from saferlhf.config import to_dict

        return to_dict(config) if hasattr(config, "__dataclass_fields__") else dict(config)
    import yaml

    try:
        loaded = yaml.safe_load((out / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


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
INPUTS_FILE = "inputs.json"  # sha256 of every input file of the run, checked on resume
SIGNATURE = "saferlhf run folder"  # status.json["written_by"]: only such a folder is ever deleted by --overwrite
# what a run may write before its status lists it (a killed run's folder can still be overwritten)
RUN_ENTRIES = frozenset({STATUS_FILE, INPUTS_FILE, "config.yaml", "metrics.jsonl", "checkpoint", "tensorboard",
                         "wandb"})
# config fields that may change when a run is resumed: they do not change what is computed
RESUME_FREE = frozenset({"resume", "overwrite", "allow_config_change", "save_every", "log_every",
                         "runtime.progress", "runtime.threads", "runtime.report_to", "runtime.wandb_project"})
_ACTIVE: dict[Path, str] = {}  # run folders started by this process and not finished (for fail_active_runs)
_LOCKS: dict[Path, int] = {}  # run folder -> the open descriptor holding its flock


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
    """status.json with saferlhf's signature, the writer's pid and the entries the run has written so far."""
    entries = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    atomic_write_json(out / STATUS_FILE, {"state": state, "command": command, "time": round(time.time(), 3),
                                          "written_by": SIGNATURE, "pid": os.getpid(), "entries": entries, **extra})


def _status(out: Path) -> dict[str, Any]:
    try:
        status = json.loads((out / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def is_marked_run(folder: Path) -> bool:
    """True for a folder whose status.json carries saferlhf's signature (written by ``start_run``)."""
    return folder.is_dir() and _status(folder).get("written_by") == SIGNATURE


def foreign_entries(out: Path) -> list[str]:
    """Entries of the run folder ``out`` that its run did not write: not listed in its status, not one of
    ``RUN_ENTRIES``, not a hidden temporary, not a run folder of its own (or a folder of such run folders)."""
    known = set(_status(out).get("entries") or []) | RUN_ENTRIES

    def owned(p: Path) -> bool:
        return (p.name in known or p.name.startswith(".") or is_marked_run(p)
                or (p.is_dir() and any(is_marked_run(q) for q in p.iterdir())))

    return sorted(p.name for p in out.iterdir() if not owned(p))


def deletable_run(out: Path, command: str, inputs: dict[str, Path]) -> None:
    """Raise ``UserError`` unless ``--overwrite`` may delete ``out``: a saferlhf run folder (signature), holding
    only what its run wrote, and none of the new run's ``inputs``."""
    from saferlhf.errors import UserError

    if not is_marked_run(out):
        raise UserError(f"{command}: {out} is not empty and is not a saferlhf run folder (no status.json with "
                        "saferlhf's signature); refusing to delete it with --overwrite",
                        hint="choose another --out, or delete the folder yourself")
    # a killed run (still "running") listed only what it had written at its start: its later outputs (a
    # pipeline's stage files) cannot be told from foreign ones, so only the signature is checked there
    foreign = foreign_entries(out) if _status(out).get("state") != "running" else []
    if foreign:
        raise UserError(f"{command}: refusing to delete {out} with --overwrite: it holds "
                        f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which its run did not write",
                        hint="move those files elsewhere, or choose another --out")
    inside = [f"{k} ({v})" for k, v in inputs.items() if is_inside(v, out)]
    if inside:
        raise UserError(f"{command}: refusing to delete {out} with --overwrite: the new run reads "
                        f"{inside[0]} from it", hint="choose another --out, or move the input first")


def config_paths(config: Any) -> dict[str, Path]:
    """Every config field (dotted name) whose value names an existing file or folder: the run's inputs."""
    from saferlhf.config import to_dict

    def walk(d: dict[str, Any], prefix: str) -> Iterable[tuple[str, Path]]:
        for k, v in d.items():
            if isinstance(v, dict):
                yield from walk(v, f"{prefix}{k}.")
            elif isinstance(v, str) and v and k not in ("out", "cache_dir") and os.path.exists(v):
                yield f"{prefix}{k}", Path(v)

    return dict(walk(to_dict(config), ""))


def input_hashes(config: Any) -> dict[str, dict[str, Any]]:
    """Field -> {path, size, sha256} of every input *file* of ``config`` (folders, e.g. models, are skipped)."""
    return {k: {"path": str(p), "size": p.stat().st_size, "sha256": file_sha256(p)}
            for k, p in config_paths(config).items() if p.is_file()}


def changed_inputs(saved: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]]) -> list[str]:
    """Fields whose input file is the same path as when the run started but whose content differs (or which
    is gone)."""
    out = []
    for field, old in saved.items():
        new = current.get(field)
        if new is None and os.path.exists(old["path"]):
            continue  # now a folder or no longer a file field
        if new is None or (new["path"] == old["path"] and new["sha256"] != old["sha256"]):
            out.append(field)
    return out


def check_inputs_unchanged(out: Path, config: Any, command: str, allow: bool) -> None:
    """On resume: the input files must hold what they held when the run started (``inputs.json``)."""
    from saferlhf.errors import UserError

    try:
        saved = json.loads((out / INPUTS_FILE).read_text())
    except (OSError, ValueError):
        return  # a run from before inputs.json: nothing to compare
    changed = changed_inputs(saved, input_hashes(config))
    if changed and not allow:
        field = changed[0]
        raise UserError(f"{command}: cannot resume {out}: the input file {saved[field]['path']} ({field}) changed "
                        "since the run started (its content differs)",
                        hint="restore the file, start a new run, or pass --allow_config_change true")


def lock_folder(out: Path, command: str) -> None:
    """Hold an exclusive ``flock`` on the folder ``out`` until ``release_folder`` or the end of the process (a
    killed process releases it: no stale lock). Another process holding it: ``UserError`` naming its pid."""
    from saferlhf.errors import UserError

    if fcntl is None:
        return
    key = out.resolve()
    fd = _LOCKS.get(key)
    if fd is not None:
        st, now = os.fstat(fd), os.stat(out)
        if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
            return  # this process holds it already
        release_folder(out)
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        pid = _status(out).get("pid", "unknown")
        raise UserError(f"{command}: run folder {out} is in use by another process (pid {pid})",
                        hint="wait for it to finish (or stop it), or choose another --out") from None
    _LOCKS[key] = fd


def release_folder(out: Path) -> None:
    fd = _LOCKS.pop(Path(out).resolve(), None)
    if fd is not None:
        os.close(fd)


def start_run(out_dir: str | Path, config: Any, command: str, *, resume: bool = False, overwrite: bool = False,
              allow_config_change: bool = False, is_main: bool = True) -> Path:
    """Apply the run-folder rule (module docstring), save the resolved config, mark the run ``running``.

    Returns the folder. Raises ``UserError`` for a folder that holds another run (no ``resume`` /
    ``overwrite``), a changed config or input file on resume, a folder that ``--overwrite`` may not delete, a
    folder in use by another process, a folder that is not writable or has too little free space, or a
    ``runtime.report_to`` whose package is not installed (`check_report_to`, before the folder is made).
    """
    from saferlhf.config import check_config, save_config
    from saferlhf.errors import UserError

    check_config(config)
    check_report_to(getattr(getattr(config, "runtime", None), "report_to", "none"))  # before the folder exists
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{command}: out: {out} exists and is not a folder")
    if is_main:
        check_writable(out, command)
        lock_folder(out, command)
    try:
        state = _check_folder(out, config, command, resume, overwrite, allow_config_change, is_main)
    except BaseException:
        release_folder(out)
        raise
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        lock_folder(out, command)  # a new folder after --overwrite
        for line in recover_atomic_dirs(out):
            print(f"{command}: {out}: {line}")
        save_config(config, out / "config.yaml")
        if not (resume and state is not None and (out / INPUTS_FILE).exists()) or allow_config_change:
            atomic_write_json(out / INPUTS_FILE, input_hashes(config))
        _write_status(out, "running", command, resumed=state is not None and resume)
    _ACTIVE[out.resolve()] = command
    return out


def _check_folder(out: Path, config: Any, command: str, resume: bool, overwrite: bool, allow_config_change: bool,
                  is_main: bool) -> str | None:
    """The run-folder rule for an existing folder (deleting it for ``overwrite``); returns its state."""
    from saferlhf.config import to_dict
    from saferlhf.errors import UserError

    state = run_state(out)
    if state is not None and not (resume and state != "unknown"):
        if not overwrite:
            raise UserError(f"{command}: {out} already holds a run ({state})",
                            hint="pass --resume true to continue it, --overwrite true to replace it, or "
                                 "choose another --out" if state != "unknown" else
                            "it is not a saferlhf run folder: choose another --out")
        deletable_run(out, command, config_paths(config))
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
        check_inputs_unchanged(out, config, command, allow_config_change)
    return state


def finish_run(out_dir: str | Path, is_main: bool = True, **summary: Any) -> None:
    """Mark the run ``complete`` (call after every output is written: the status is written last)."""
    out = Path(out_dir)
    command = _ACTIVE.pop(out.resolve(), "")
    if is_main:
        _write_status(out, "complete", command, **summary)
    release_folder(out)


def fail_active_runs(error: BaseException) -> None:
    """Mark every run started by this process and not finished as ``failed`` (the CLI calls this), where the
    disk still lets status.json be written (a full disk: replaced in place, or left as it is)."""
    for out, command in list(_ACTIVE.items()):
        if (out / STATUS_FILE).exists():
            try:
                _write_status(out, "failed", command, error=f"{type(error).__name__}: {error}")
            except OSError:
                _overwrite_status_in_place(out, command, error)
        _ACTIVE.pop(out, None)
        release_folder(out)


def _overwrite_status_in_place(out: Path, command: str, error: BaseException) -> None:
    """Last resort on a full disk (no room for a temporary file): truncate status.json and write a short
    ``failed`` status into the blocks it frees. Gives up silently when even that fails."""
    try:
        text = dumps({"state": "failed", "command": command, "written_by": SIGNATURE, "pid": os.getpid(),
                      "entries": sorted(p.name for p in out.iterdir() if not p.name.startswith(".")),
                      "error": f"{type(error).__name__}: {str(error)[:200]}"})
        with open(out / STATUS_FILE, "r+") as f:
            f.truncate(0)
            f.write(text + "\n")
    except OSError:
        pass
