"""`saferlhf ppo` shows where each step is in its progress bar ("rollout", "score", "update"), so a first step that
takes minutes on a real model is not a silent 0/N; SAFERLHF_NO_PROGRESS=1 keeps it quiet."""

from __future__ import annotations

import pytest

from saferlhf import tracking
from saferlhf.cli import main
from tiny_judges import build_tiny_judges, tiny_ppo_args

PHASES = ["ppo_lag: rollout", "ppo_lag: score", "ppo_lag: update"]


@pytest.fixture(scope="module")
def judges(tiny_models, pku_file, tmp_path_factory):
    return build_tiny_judges(tmp_path_factory.mktemp("phases"), tiny_models["llama"], pku_file)


class RecordingBar:
    """The progress bar's calls, in order: descriptions, and "+n" for every step counted."""

    def __init__(self, desc: str, disable: bool) -> None:
        self.desc, self.disable, self.events = desc, disable, []

    def update(self, n: int = 1) -> None:
        if n:
            self.events.append(f"+{n}")

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.events.append(desc)

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass


def test_every_step_reports_rollout_then_score_then_update(judges, tmp_path, monkeypatch):
    bars: list[RecordingBar] = []

    def recording_progress(iterable=None, total=None, desc="", disable=False):
        bars.append(RecordingBar(desc, disable))
        return bars[-1]

    monkeypatch.setattr(tracking, "progress", recording_progress)
    assert main(tiny_ppo_args(judges, tmp_path / "run", steps=2, progress=True)) == 0
    [bar] = [b for b in bars if b.desc == "ppo_lag"]
    assert not bar.disable
    assert bar.events == [*PHASES, "+1", *PHASES, "+1"]


def test_the_phases_reach_the_terminal_and_no_progress_keeps_it_quiet(judges, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SAFERLHF_NO_PROGRESS", raising=False)
    assert main(tiny_ppo_args(judges, tmp_path / "shown", steps=1, progress=True)) == 0
    err = capsys.readouterr().err
    assert all(p in err for p in PHASES), err[-2000:]
    monkeypatch.setenv("SAFERLHF_NO_PROGRESS", "1")
    assert main(tiny_ppo_args(judges, tmp_path / "quiet", steps=1, progress=True)) == 0
    err = capsys.readouterr().err
    assert not any(p in err for p in PHASES), err[-2000:]
