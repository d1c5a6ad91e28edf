"""Atomic file and folder writes, valid JSON, and the fault-injection points of the fault tests.

The lowest layer of saferlhf's file handling (no saferlhf imports): `config` saves the resolved config.yaml through it,
`tracking` writes run folders through it, `models` saves weights through it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


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


def atomic_save_dir(save_fn: Callable[[Path], Any], path: str | Path) -> Path:
    """Call ``save_fn(tmp_dir)`` then rename ``tmp_dir`` over ``path``.

    Readers see the old folder or the new one, never a half-written one. An existing ``path`` is
    moved aside first and deleted only after the new folder is in place; on failure the temporary
    folder is removed and the old one restored.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = path.parent / f".{path.name}.tmp-{tag}"
    old = path.parent / f".{path.name}.old-{tag}"
    tmp.mkdir()
    try:
        save_fn(tmp)
        fault_point("dir_save")
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists():
                os.replace(old, path)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path


_FAULT_COUNTS: dict[str, int] = {}


def fault_point(kind: str) -> None:
    """Fault injection for the tests in ``tests/faults``: with ``SAFERLHF_FAULT=<kind>:<n>`` in the
    environment, the n-th call of ``fault_point(kind)`` in this process kills it with SIGKILL (no clean-up
    runs, as with a power cut or the OOM killer). Kinds: ``step`` (after a training step is complete and
    logged), ``checkpoint`` (inside ``Checkpointer.save``, state written, not yet swapped in),
    ``dir_save`` (inside ``atomic_save_dir``, the new folder written, not yet renamed into place)."""
    spec = os.environ.get("SAFERLHF_FAULT")
    if not spec:
        return
    _FAULT_COUNTS[kind] = _FAULT_COUNTS.get(kind, 0) + 1
    want, _, n = spec.partition(":")
    if want == kind and _FAULT_COUNTS[kind] == int(n or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def recover_atomic_dirs(folder: str | Path) -> list[str]:
    """Clean up after an ``atomic_save_dir`` killed half-way in ``folder``: a folder moved aside
    (``.NAME.old-*``) whose replacement never arrived is put back; temporary folders are deleted.
    Returns what was done, one line per folder."""
    folder, done = Path(folder), []
    if not folder.is_dir():
        return done
    for old in sorted(folder.glob(".*.old-*")):
        target = folder / old.name[1:].rsplit(".old-", 1)[0]
        if not target.exists():
            os.replace(old, target)
            done.append(f"restored {target.name} from an interrupted save")
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in sorted([*folder.glob(".*.tmp-*"), *folder.glob(".checkpoint.tmp")]):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            done.append(f"removed the unfinished {tmp.name}")
    return done


def atomic_write_text(path: Path, text: str) -> None:
    """``atomic_write`` of a text file."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """One JSON object per line, written atomically (the JSONL files the commands write)."""
    atomic_write_text(Path(path), "".join(json.dumps(r) + "\n" for r in rows))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as valid JSON (non-finite floats become ``null``), atomically."""
    atomic_write_text(path, dumps(obj, indent=2) + "\n")


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN / Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") or hasattr(obj, "__dataclass_fields__"):
        return json_safe(_json_default(obj))
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always writes valid JSON (``json_safe``; ``allow_nan=False`` as a guard)."""
    return json.dumps(json_safe(obj), allow_nan=False, default=_json_default, **kwargs)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    return str(o)
