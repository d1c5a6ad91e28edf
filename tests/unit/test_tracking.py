"""Run folders (one rule for every command), valid JSON, recovery after a kill during a folder save."""

import json
import math
from dataclasses import dataclass

import pytest

from saferlhf.config import option
from saferlhf.errors import UserError
from saferlhf.files import atomic_write_json, dumps, json_safe, recover_atomic_dirs
from saferlhf.tracking import (MetricsLogger, config_differences, fail_active_runs, finish_run, read_jsonl, run_state,
                               start_run)


@dataclass
class Cfg:
    seed: int = option(0, "seed")
    lr: float = option(0.1, "lr", gt=0)
    resume: bool = option(False, "resume")
    save_every: int = option(0, "save every", ge=0)


def status(out):
    return json.loads((out / "status.json").read_text())


def test_new_folder_runs_then_completes(tmp_path):
    out = start_run(tmp_path / "r", Cfg(), "x")
    assert status(out)["state"] == "running" and (out / "config.yaml").exists()
    (out / "model").mkdir()
    finish_run(out, model="model")
    assert status(out)["state"] == "complete" and status(out)["model"] == "model"
    assert run_state(out) == "complete"


def test_existing_run_is_refused_without_resume_or_overwrite(tmp_path):
    out = start_run(tmp_path / "r", Cfg(), "x")
    finish_run(out)
    with pytest.raises(UserError, match=r"already holds a run \(complete\)") as e:
        start_run(out, Cfg(), "x")
    assert "--resume" in str(e.value) and "--overwrite" in str(e.value)


def test_overwrite_deletes_the_old_run_first(tmp_path):
    out = start_run(tmp_path / "r", Cfg(), "x")
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    start_run(out, Cfg(seed=1), "x", overwrite=True)
    assert not (out / "metrics.jsonl").exists() and status(out)["state"] == "running"


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not a saferlhf run folder"):
        start_run(tmp_path / "home", Cfg(), "x", overwrite=True)
    assert (tmp_path / "home" / "thesis.tex").read_text() == "precious"


def test_resume_refuses_a_changed_config_naming_the_fields(tmp_path):
    out = start_run(tmp_path / "r", Cfg(), "x")
    with pytest.raises(UserError, match="differs from the saved run in lr, seed"):
        start_run(out, Cfg(seed=3, lr=0.2, resume=True), "x", resume=True)
    start_run(out, Cfg(resume=True, save_every=5), "x", resume=True)  # resume / save_every may change
    start_run(out, Cfg(seed=3, resume=True), "x", resume=True, allow_config_change=True)
    assert status(out)["resumed"] is True


def test_config_differences_nested():
    assert config_differences({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 2, "d": 4}, "e": 5}) == ["b.d", "e"]


def test_failed_run_is_marked_with_the_error(tmp_path):
    out = start_run(tmp_path / "r", Cfg(), "x")
    fail_active_runs(ValueError("boom"))
    assert status(out)["state"] == "failed" and "boom" in status(out)["error"]


def test_config_is_range_checked_before_the_folder_is_touched(tmp_path):
    from saferlhf.config import ConfigError

    with pytest.raises(ConfigError, match="lr"):
        start_run(tmp_path / "r", Cfg(lr=-1.0), "x")
    assert not (tmp_path / "r").exists()


def test_json_is_always_valid():
    obj = {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -math.inf}, "e": 2.5}
    assert json_safe(obj) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 2.5}
    assert json.loads(dumps(obj)) == json_safe(obj)  # strict parsers accept it


def test_metrics_and_json_files_never_hold_nan(tmp_path):
    log = MetricsLogger(tmp_path)
    log.log(1, {"cost/mean": float("nan"), "reward/mean": 1.0})
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and read_jsonl(tmp_path / "metrics.jsonl")[0]["cost/mean"] is None
    atomic_write_json(tmp_path / "e.json", {"x": float("nan")})
    json.loads((tmp_path / "e.json").read_text(), parse_constant=lambda c: pytest.fail(f"invalid JSON {c}"))


def test_recover_after_a_kill_between_the_two_renames(tmp_path):
    """atomic_save_dir moves the old folder aside, then renames the new one in: a kill in between leaves
    only `.model.old-*` (and the new `.model.tmp-*`): the old model comes back, the half-done one goes."""
    (tmp_path / ".model.old-abcd1234").mkdir()
    (tmp_path / ".model.old-abcd1234" / "w").write_text("old")
    (tmp_path / ".model.tmp-abcd1234").mkdir()
    done = recover_atomic_dirs(tmp_path)
    assert (tmp_path / "model" / "w").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and len(done) == 2


def test_stray_temporary_folders_are_removed_at_start(tmp_path):
    out = start_run(tmp_path / "r", Cfg(), "x")
    (out / ".model.tmp-deadbeef").mkdir()
    start_run(out, Cfg(resume=True), "x", resume=True)
    assert not (out / ".model.tmp-deadbeef").exists()
