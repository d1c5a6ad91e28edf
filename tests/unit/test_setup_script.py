"""scripts/setup.sh chooses the torch build and asks before touching the system: the CPU wheel from the PyTorch
CPU index by default (the default index, i.e. a CUDA build on Linux, only with SAFERLHF_TORCH=cuda, or when the
CPU index cannot be used), and apt-get only with SAFERLHF_SETUP_BROWSER=1. Nothing is installed: a dry run
prints the commands, and the fallback runs against a fake venv whose pip only records its arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[2] / "scripts" / "setup.sh"
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def fake_bin(folder: Path, log: Path, **scripts: str) -> Path:
    """Executables that append their name and arguments to ``log`` and then run ``scripts[name]`` (sh)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        exe = folder / name.replace("_", "-")
        exe.write_text(f'#!/bin/sh\necho "{exe.name} $*" >> "{log}"\n{body}\n')
        exe.chmod(0o755)
    return folder


def run_setup(script: Path, path_first: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SAFERLHF_")}
    base["PATH"] = f"{path_first}{os.pathsep}{base['PATH']}"
    return subprocess.run(["bash", str(script)], env=base | env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def guard(tmp_path):
    """pip / python3 / apt-get / id stand-ins first on PATH: any command a dry run really ran shows in the log;
    ``id -u`` says root so that the apt-get branch depends on SAFERLHF_SETUP_BROWSER alone."""
    log = tmp_path / "ran.log"
    return fake_bin(tmp_path / "bin", log, pip="exit 1", python3="exit 1", apt_get="exit 1", id="echo 0"), log


def ran(log: Path) -> list[str]:
    """The stand-ins that ran, less ``id`` (asking who runs the script installs nothing)."""
    return [x for x in log.read_text().splitlines() if not x.startswith("id ")] if log.exists() else []


def torch_line(out: str) -> str:
    lines = [x for x in out.splitlines() if "torch==" in x]
    assert len(lines) == 1, out
    return lines[0]


def test_dry_run_installs_the_cpu_wheel_by_default_and_no_browser(guard):
    bin_, log = guard
    res = run_setup(SETUP, bin_, SAFERLHF_SETUP_DRY_RUN="1")
    assert res.returncode == 0, res.stderr
    assert CPU_INDEX in torch_line(res.stdout)
    assert "pip install -q -e .[test]" in res.stdout and "apt-get" not in res.stdout
    assert not ran(log)  # nothing ran


def test_dry_run_with_cuda_uses_the_default_index(guard):
    bin_, log = guard
    res = run_setup(SETUP, bin_, SAFERLHF_SETUP_DRY_RUN="1", SAFERLHF_TORCH="cuda")
    assert res.returncode == 0, res.stderr
    line = torch_line(res.stdout)
    assert line.endswith("pip install -q torch==2.13.0") and "--index-url" not in line
    assert not ran(log)


def test_dry_run_installs_the_browser_only_when_asked(guard):
    bin_, log = guard
    res = run_setup(SETUP, bin_, SAFERLHF_SETUP_DRY_RUN="1", SAFERLHF_SETUP_BROWSER="1")
    assert res.returncode == 0, res.stderr
    assert "+ apt-get install -y -qq chromium tmux" in res.stdout and not ran(log)


def test_unknown_torch_choice_is_one_line_before_anything_runs(guard):
    bin_, log = guard
    res = run_setup(SETUP, bin_, SAFERLHF_SETUP_DRY_RUN="1", SAFERLHF_TORCH="rocm")
    assert res.returncode == 2 and "SAFERLHF_TORCH must be cpu or cuda" in res.stderr and res.stdout == ""


def test_an_unreachable_cpu_index_falls_back_to_the_default_index(tmp_path):
    """A real (not dry) run in a copy of the script beside a fake .venv: python knows no package, pip fails on the
    CPU index and succeeds elsewhere. No apt-get without SAFERLHF_SETUP_BROWSER, even as root."""
    root, log = tmp_path / "repo", tmp_path / "ran.log"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, root / "scripts" / "setup.sh")
    venv_bin = fake_bin(root / ".venv" / "bin", log, python="exit 1",
                        pip='case "$*" in *--index-url*) exit 1;; esac; exit 0')
    (venv_bin / "activate").write_text(f'PATH="{venv_bin}:$PATH"\n')
    res = run_setup(root / "scripts" / "setup.sh", fake_bin(tmp_path / "bin", log, apt_get="exit 1", id="echo 0"))
    assert res.returncode == 0, res.stderr
    pips = [x for x in log.read_text().splitlines() if x.startswith("pip ")]
    assert pips[:3] == [f"pip install -q torch==2.13.0 {CPU_INDEX} --retries 1 --timeout 30",
                        "pip install -q torch==2.13.0", "pip install -q -e .[test]"]
    assert "could not be used: torch 2.13.0 from the default index" in res.stderr
    assert not any(x.startswith("apt-get") for x in ran(log))
