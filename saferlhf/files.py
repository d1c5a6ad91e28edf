"""Atomic file and folder writes, valid JSON, and the fault-injection points of the fault tests.

The lowest layer of saferlhf's file handling (only `saferlhf.errors` imported): `config` saves the resolved
config.yaml through it, `tracking` writes run folders through it, `models` saves weights through it.

Output safety, shared by every command: `check_output_file` (a single output file is never one of the command's
inputs), `check_writable` (the output folder is writable and has free space before any long work starts),
`replaceable_model_folder` (``--overwrite`` replaces only a folder that holds a model and nothing else) and
`disk_problem` (a full disk or a read-only folder found later: one line for the CLI).

Permissions: what is written here follows the user's umask like any ``open`` / ``mkdir`` (files 0666 & ~umask,
folders 0777 & ~umask: 0644 / 0755 under umask 022, so teammates on a shared cluster can read runs, models and
reports), not ``tempfile``'s private 0600 / 0700.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from saferlhf.errors import UserError


def current_umask() -> int:
    """The process's umask, read from ``/proc/self/status`` where there is one (setting it, even for a moment, would
    change it for every thread), else set and restored at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> None:
    """Write a file so that readers never see a partial version.

    ``write(tmp)`` writes a temporary file in the same folder; it is then fsynced and renamed over
    ``path``. On any failure the temporary file is removed and ``path`` is left as it was. The file gets the
    mode a plain ``open`` would give it (0666 & ~umask), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # after write: a writer may have replaced the file
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
    folder is removed and the old one restored. The folder gets the mode of a plain ``mkdir`` (0777 & ~umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = path.parent / f".{path.name}.tmp-{tag}"
    old = path.parent / f".{path.name}.old-{tag}"
    tmp.mkdir(mode=0o777)  # & ~umask, as any mkdir
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
    ``dir_save`` (inside ``atomic_save_dir``, the new folder written, not yet renamed into place), ``label``
    (``annotate run``: after a pair's labels are appended)."""
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


# ----------------------------------------------------------------------------- output safety

MIN_FREE_BYTES = 50 * 2**20  # an output folder with less free space is refused before any work starts
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT})


def same_path(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` name the same file (resolved paths, or ``os.path.samefile`` for hard links)."""
    a, b = Path(a).expanduser(), Path(b).expanduser()
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """True when ``path`` is ``folder`` or lies anywhere below it (resolved)."""
    p, f = Path(path).expanduser().resolve(), Path(folder).expanduser().resolve()
    return p == f or f in p.parents


def check_output_file(out: str | Path, inputs: dict[str, Any], command: str) -> Path:
    """Refuse a single output file that is one of the command's inputs (``inputs``: field name -> path; empty
    values are skipped) or an existing folder; then ``check_writable`` of its folder. Returns ``out``."""
    out = Path(out)
    for field, path in inputs.items():
        if path and str(path) and same_path(out, path):
            raise UserError(f"{command}: out: {out} is the {field} file; writing it would replace the input",
                            hint="choose another --out")
    if out.is_dir():
        raise UserError(f"{command}: out: {out} is a folder; expected a file name")
    check_writable(out.parent if str(out.parent) else Path("."), command)
    return out


def check_writable(folder: str | Path, command: str, min_free: int = MIN_FREE_BYTES) -> None:
    """Create ``folder`` if needed and make sure a file can be written there and that at least ``min_free``
    bytes are free: a ``UserError`` now instead of an ``OSError`` after hours of work."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".saferlhf-write-test.")
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise UserError(f"{command}: cannot write to {folder}: {e.strerror or e}",
                        hint="choose a writable --out") from None
    free = shutil.disk_usage(folder).free
    if free < min_free:
        raise UserError(f"{command}: only {free / 2**20:.1f} MB free on the disk of {folder} (at least "
                        f"{min_free / 2**20:.0f} MB needed)", hint="free some space or choose another --out")


def disk_problem(error: BaseException) -> str | None:
    """The one-line message for an error caused by the disk (full, read-only, no permission), looking through
    the exception's causes (torch and safetensors wrap the ``OSError``); None for anything else."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            where = f"{e.filename}: " if e.filename else ""
            return f"{where}{e.strerror or os.strerror(e.errno)}"
        text = str(e)
        for errno_ in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
            if os.strerror(errno_) in text:
                return f"{os.strerror(errno_)} ({type(e).__name__}: {text.splitlines()[0][:200]})"
        e = e.__cause__ or e.__context__
    return None


# the files an HF model folder holds (transformers' save_pretrained, tokenizers, saferlhf's import.json)
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".jinja", ".pt", ".pth", ".tiktoken")


def replaceable_model_folder(out: str | Path, command: str, required: str = "config.json") -> None:
    """``--overwrite`` of a model folder: allowed for a missing or empty folder, or one that holds ``required``
    and only model files (``MODEL_FILE_SUFFIXES``, hidden temporaries); anything else (a user's file, a
    sub-folder) is a ``UserError``, so that a wrong ``--out`` never deletes what saferlhf did not write."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{command}: out: {out} exists and is not a folder")
    entries = [p for p in out.iterdir() if not p.name.startswith(".")]
    if not entries:
        return
    foreign = [p.name for p in entries if p.is_dir() or not p.name.endswith(MODEL_FILE_SUFFIXES)]
    if not (out / required).is_file() or foreign:
        why = f"it holds {', '.join(sorted(foreign)[:3])}" if foreign else f"it has no {required}"
        raise UserError(f"{command}: refusing to replace {out} with --overwrite: {why}, which saferlhf did not "
                        "write there", hint="choose another --out, or delete the folder yourself")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a whole file's content (streamed in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
