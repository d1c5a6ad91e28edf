"""Issue 22 item 12: files and folders written atomically follow the user's umask (0644 / 0755 under umask 022),
not tempfile's private 0600, so teammates on a shared cluster can read runs, models and reports."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from saferlhf.files import atomic_save_dir, atomic_write, atomic_write_json, current_umask


@pytest.fixture
def umask():
    """Set the process umask for one test, restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                       (0o002, 0o664, 0o775)])
def test_atomic_writes_follow_the_umask(mask, file_mode, dir_mode, umask, tmp_path):
    umask(mask)
    assert current_umask() == mask
    atomic_write_json(tmp_path / "report.json", {"a": 1})
    assert mode(tmp_path / "report.json") == file_mode

    def save(folder: Path) -> None:
        atomic_write_json(folder / "config.json", {"b": 2})
        (folder / "model.safetensors").write_bytes(b"x")  # what save_pretrained writes: a plain open

    atomic_save_dir(save, tmp_path / "model")
    assert mode(tmp_path / "model") == dir_mode
    assert mode(tmp_path / "model" / "config.json") == file_mode == mode(tmp_path / "model" / "model.safetensors")
    atomic_save_dir(save, tmp_path / "model")  # replacing a folder: the same modes
    assert mode(tmp_path / "model") == dir_mode and mode(tmp_path / "model" / "config.json") == file_mode


def test_a_writer_that_replaces_the_temporary_file_gets_the_mode_too(umask, tmp_path):
    umask(0o022)

    def write(tmp: str) -> None:  # e.g. a library that writes elsewhere and renames over the path it was given
        other = Path(tmp).with_suffix(".other")
        other.write_text("x")
        os.chmod(other, 0o600)
        os.replace(other, tmp)

    atomic_write(tmp_path / "f.txt", write)
    assert mode(tmp_path / "f.txt") == 0o644


def test_a_run_folder_is_readable_by_the_group_and_others(umask, tmp_path):
    from saferlhf.config import option
    from saferlhf.tracking import finish_run, start_run

    @dataclass
    class Config:
        steps: int = option(1, "steps")

    umask(0o022)
    out = start_run(tmp_path / "run", Config(), "test")
    finish_run(out)
    assert mode(out) == 0o755
    for name in ("config.yaml", "status.json", "inputs.json"):
        assert mode(out / name) == 0o644, name
