"""The Python API: every recipe as a function that takes its typed config and returns what the run left behind.

    import saferlhf

    sft = saferlhf.sft(model_path="runs/tiny", train_file="corpus.jsonl", out="runs/sft", max_steps=50)
    rm = saferlhf.score_model(kind="reward", model_path=sft.model_dir, train_file="prefs.jsonl", out="runs/rm")
    sft.metrics["train/loss"], rm.metrics["eval/accuracy"], rm.model_dir
    saferlhf.score(rm.model_dir, "How do I cook rice?", "Rinse it first.")   # the reward, as training computes it

`sft`, `score_model`, `ppo`, `dpo` and `evaluate` run the same code as `saferlhf sft | score-model | ppo | dpo |
eval`, in this process, and return a `RunResult` (run folder, model folder, final metrics, the written results);
`run(command, ...)` does the same for any other command (``run("world corpus", out=..., n=400)``). Each takes
a config object (`SFTConfig`, `ScoreModelConfig`, `PPOConfig`, `DPOConfig`, `EvalConfig`, also importable from
here), a YAML preset path or a mapping, and / or keyword overrides: ``optim={"lr": 1e-4}`` or, for dotted keys,
``**{"optim.lr": 1e-4}``; they are merged by the YAML rules of `saferlhf.config` (defaults < config < overrides;
types and ranges checked, unknown keys refused). User mistakes raise `saferlhf.errors.UserError` with the
CLI's one-line message (a `ConfigError` for config keys and values); a non-finite loss raises `NumericalError`.

This module is a front door like `saferlhf.cli`: it reaches each recipe through the CLI's command table
(`saferlhf.cli.COMMANDS`), so the two cannot drift. docs/api.md has a notebook-style walk-through.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

# the config classes this module re-exports (lazily, `__getattr__`): name -> the CLI command that owns it
CONFIGS = {"SFTConfig": "sft", "ScoreModelConfig": "score-model", "PPOConfig": "ppo", "DPOConfig": "dpo",
           "EvalConfig": "eval"}
# where a command leaves its trained model, first match wins; and the JSON file holding its results
MODEL_FOLDERS = ("model", "actor", ".")  # ".": the folder is the model (tiny-model, model import-gguf)
RESULT_FILES = ("results.json", "eval.json", "summary.json", "stats.json")

__all__ = ["RunResult", "run", "sft", "score_model", "ppo", "dpo", "evaluate", "score", *CONFIGS]


@dataclass
class RunResult:
    """What a run left behind.

    command: the CLI command that ran (``"sft"``, ``"eval"``, ...).
    run_dir: the run folder (``out``, as an absolute path); for commands that write one file (``world corpus``),
        that file.
    model_dir: the trained model (``out/model``; PPO: ``out/actor``; ``out`` itself for ``tiny-model``), None
        when the command writes none.
    metrics: the final value of every metric: the last value logged under each name in ``metrics.jsonl``
        (docs/metrics.md), then every number of the results file, flattened with ``/`` (score models and DPO:
        ``eval.json``, e.g. ``eval/accuracy``; eval: ``results.json``, e.g. ``world_test/sft/harmful_rate``).
        JSON ``null`` (a non-finite value) reads as NaN.
    results: the results file as written (``results.json``, ``eval.json``, ``summary.json``), or None.
    status: ``status.json`` (``state`` is ``complete``; the run's summary fields), or {} for a file command.
    config: the resolved config the command ran with.
    """

    command: str
    run_dir: Path
    model_dir: Path | None
    metrics: dict[str, float]
    results: dict | None
    status: dict
    config: Any = field(repr=False)

    def history(self) -> list[dict]:
        """Every row of ``metrics.jsonl`` (one per logged step), [] when the run logs none."""
        from saferlhf.tracking import read_jsonl

        path = self.run_dir / "metrics.jsonl"
        return read_jsonl(path) if path.is_file() else []


def sft(config: Any = None, /, **overrides: Any) -> RunResult:
    """Supervised fine-tuning (`saferlhf sft`, `SFTConfig`): ``model_dir`` is the fine-tuned policy."""
    return run("sft", config, **overrides)


def score_model(config: Any = None, /, **overrides: Any) -> RunResult:
    """A reward (``kind="reward"``) or cost model (``kind="cost"``, cost > 0 = unsafe) (`saferlhf score-model`,
    `ScoreModelConfig`): ``model_dir`` is the score model, ``metrics`` has its held-out ``eval/*`` numbers."""
    return run("score-model", config, **overrides)


def ppo(config: Any = None, /, **overrides: Any) -> RunResult:
    """PPO-Lagrangian (Safe RLHF), PPO or reward shaping (`saferlhf ppo`, `PPOConfig`): ``model_dir`` is the
    trained actor, ``metrics`` the last step's (``lagrange/lambda``, ``cost/mean``, ``reward/mean``, ...)."""
    return run("ppo", config, **overrides)


def dpo(config: Any = None, /, **overrides: Any) -> RunResult:
    """DPO and its safety variants (`saferlhf dpo`, `DPOConfig`): ``model_dir`` is the trained policy."""
    return run("dpo", config, **overrides)


def evaluate(config: Any = None, /, **overrides: Any) -> RunResult:
    """`saferlhf eval` (`EvalConfig`): ``results`` is ``results.json``; ``metrics`` flattens it as
    ``<prompt set>/<policy>/<metric>``. ``policies`` (and ``responses``) may be a mapping name -> path."""
    for name in ("policies", "responses"):
        if isinstance(overrides.get(name), Mapping):
            overrides[name] = [f"{k}={v}" for k, v in overrides[name].items()]
    return run("eval", config, **overrides)


def run(command: str, config: Any = None, /, **overrides: Any) -> RunResult:
    """Run the CLI command ``command`` (``"sft"``, ``"world corpus"``, ...) in this process with ``config`` (its
    config object, a YAML preset path or a mapping; default: the defaults) and ``overrides``; return what it left
    behind. Raises `UserError` (the CLI's one-line message) for a user mistake and `NumericalError` when training
    stops on a non-finite value; the run folder then says ``failed``, as after the CLI."""
    cmd = _command(command)
    cfg = build_config(command, config, **overrides)
    status = _call(cmd, cfg)
    if status:
        from saferlhf.errors import UserError

        raise UserError(f"{cmd.name}: stopped with exit status {status} (its output above says why)")
    return collect(cmd.name, cfg)


def build_config(command: str, config: Any = None, /, **overrides: Any) -> Any:
    """The resolved config of ``command``: its defaults, then ``config`` (an instance of the command's config class,
    copied; a YAML preset path; or a mapping), then ``overrides`` (dotted keys or nested mappings; config objects
    for nested configs), merged and checked as `saferlhf.config` merges YAML (`from_dict`, `check_config`)."""
    from saferlhf.config import ConfigError, check_config, from_dict, load_yaml

    cmd = _command(command)
    cls = getattr(importlib.import_module(cmd.module), cmd.config)
    if config is None:
        obj = None  # the defaults
    elif isinstance(config, cls):
        obj = copy.deepcopy(config)
    elif isinstance(config, (str, Path)):
        try:
            obj = from_dict(cls, load_yaml(config))
        except ConfigError as e:
            raise ConfigError(f"{cmd.name}: config error: {e.args[0]}", hint=e.hint) from None
    elif isinstance(config, Mapping):
        obj = None
        overrides = {**config, **overrides}
    else:
        raise ConfigError(f"{cmd.name}: the config must be a {cls.__name__}, a YAML path or a mapping, not "
                          f"{type(config).__name__}")
    try:
        return check_config(from_dict(cls, nested(cls, overrides), base=obj))
    except ConfigError as e:  # named like the CLI's "saferlhf sft: config error: ..."
        raise ConfigError(f"{cmd.name}: config error: {e.args[0]}", hint=e.hint) from None


def nested(cls: type, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword overrides as the nested mapping a YAML preset would hold: ``{"optim.lr": 1e-4}`` ->
    ``{"optim": {"lr": 1e-4}}`` (old names renamed, `renamed_key`); config objects and paths become plain values."""
    from saferlhf.config import renamed_key

    out: dict[str, Any] = {}
    for key, value in overrides.items():
        *path, last = renamed_key(cls, key).split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        value = _plain(value)
        node[last] = _merge(node[last], value) if isinstance(node.get(last), dict) and isinstance(value, dict) \
            else value
    return out


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def _plain(value: Any) -> Any:
    """A config value as YAML would give it: dataclasses as mappings, paths as strings (recursively)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _command(name: str) -> Any:
    from saferlhf.cli import COMMANDS
    from saferlhf.errors import UserError

    for c in COMMANDS:
        if c.name == name:
            return c
    raise UserError(f"unknown command {name!r}; commands: {', '.join(c.name for c in COMMANDS)}")


def _call(cmd: Any, cfg: Any) -> int:
    """``cmd``'s run function on ``cfg``, with the CLI's error rules (`saferlhf.cli._main`): a user mistake is one
    `UserError` line, a disk problem too; every run this process started and did not finish is marked failed."""
    from saferlhf.cli import USER_ERRORS, _one_message
    from saferlhf.errors import NumericalError, UserError
    from saferlhf.files import disk_problem
    from saferlhf.tracking import fail_active_runs

    try:
        return int(getattr(importlib.import_module(cmd.module), cmd.run)(cfg) or 0)
    except USER_ERRORS as e:
        fail_active_runs(e)
        if isinstance(e, UserError):  # the same error, its message named like the CLI's ("sft: ...")
            if e.args and isinstance(e.args[0], str) and not e.args[0].startswith(f"{cmd.name}: "):
                e.args = (f"{cmd.name}: {e.args[0]}", *e.args[1:])
            raise
        raise UserError(f"{cmd.name}: {_one_message(e, cmd.name)}") from None
    except NumericalError as e:
        fail_active_runs(e)
        raise
    except BaseException as e:
        fail_active_runs(e)
        problem = disk_problem(e)
        if problem is not None:
            raise UserError(f"{cmd.name}: {problem}") from e
        raise


def collect(command: str, cfg: Any) -> RunResult:
    """The `RunResult` of a finished run of ``command`` with config ``cfg`` (read from its ``out``)."""
    out = Path(cfg.out).absolute()  # still valid after the caller changes folder
    model = next((out / m for m in MODEL_FOLDERS if (out / m / "config.json").is_file()), None)
    metrics: dict[str, float] = {}
    if (out / "metrics.jsonl").is_file():
        from saferlhf.tracking import read_jsonl

        for row in read_jsonl(out / "metrics.jsonl"):
            metrics |= {k: _number(v) for k, v in row.items() if k not in ("step", "time") and _is_number(v)}
    results = None
    for name in RESULT_FILES if out.is_dir() else ():
        if (out / name).is_file():
            results = json.loads((out / name).read_text())
            source = results.get("prompt_sets", results) if isinstance(results, dict) else {}
            metrics |= flatten(source)
            break
    status = json.loads((out / "status.json").read_text()) if (out / "status.json").is_file() else {}
    return RunResult(command=command, run_dir=out, model_dir=model, metrics=metrics, results=results, status=status,
                     config=cfg)


def flatten(data: Any, prefix: str = "") -> dict[str, float]:
    """Every number of a JSON object (``null`` as NaN; bools and lists skipped), keyed by its path joined with
    ``/``. ``results.json`` sets: ``world_test/sft/harmful_rate``; the policies level is dropped."""
    out: dict[str, float] = {}
    if not isinstance(data, dict):
        return out
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten(v, prefix if k == "policies" else f"{key}/")
        elif _is_number(v):
            out[key] = _number(v)
    return out


def _is_number(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _number(v: Any) -> float:
    return math.nan if v is None else float(v)


def score(model: Any, prompt: str | Sequence[str], response: str | Sequence[str], *, tokenizer: Any = None,
          ended: bool | Sequence[bool] = True, max_length: int | None = None, batch_size: int = 64) -> Any:
    """Reward / cost scores of (prompt, response) texts, exactly as saferlhf trains, evaluates and uses them
    (`saferlhf.models.score.score_texts`: the chat-formatted prompt and the response tokenised separately, the end
    token appended, no segment ids; docs/cost-model.md says how to reproduce them with plain transformers).

    model: a score-model folder (a str or Path), a loaded `ScoreModel` or HF ``*ForSequenceClassification`` model
        (its tokenizer: ``tokenizer``, else loaded from the folder it was loaded from), or a ``(model, tokenizer)``
        pair (`saferlhf.models.load_judge`; pass a loaded model when scoring many times).
    prompt, response: strings -> one float; lists (or one prompt and a list of responses) -> a list of floats.
    ended: False for a response cut off at a generation limit (it then gets no end token, as in RL and eval).
    max_length: the token budget (default: the model's ``max_position_embeddings``); the prompt gets half of it.
    Cost models: cost > `saferlhf.models.score.unsafe_threshold(model)` means unsafe (0 where none is stored).
    """
    from saferlhf.errors import UserError
    from saferlhf.models.score import context_length, score_texts

    single = isinstance(prompt, str) and isinstance(response, str)
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    responses = [response] if isinstance(response, str) else list(response)
    if len(prompts) == 1 and len(responses) != 1:
        prompts = prompts * len(responses)
    if len(prompts) != len(responses):
        raise UserError(f"score: {len(prompts)} prompts but {len(responses)} responses")
    flags = [bool(ended)] * len(prompts) if isinstance(ended, bool) else [bool(e) for e in ended]
    if len(flags) != len(prompts):
        raise UserError(f"score: {len(flags)} ended flags for {len(prompts)} responses")
    judge, tok = _score_model(model, tokenizer)
    scores = score_texts(judge, tok, prompts, responses, ended=flags, batch_size=batch_size,
                         max_length=max_length or context_length(judge)).tolist()
    return scores[0] if single else scores


def _score_model(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    """(ScoreModel, tokenizer) from what `score` accepts."""
    from saferlhf.errors import UserError
    from saferlhf.models.score import ScoreModel, load_judge
    from saferlhf.models.tokenizers import load_tokenizer

    if isinstance(model, tuple) and len(model) == 2:
        model, tokenizer = model
    if isinstance(model, (str, Path)):
        judge, tok = load_judge(model)
        return judge, tokenizer or tok
    judge = model if isinstance(model, ScoreModel) else ScoreModel(model)
    if not hasattr(judge.config, "num_labels") or judge.config.num_labels != 1:
        raise UserError(f"score: {type(model).__name__} is not a score model (a ScoreModel or an HF "
                        "*ForSequenceClassification model with one label)")
    if tokenizer is None:
        source = getattr(judge.config, "_name_or_path", "") or getattr(judge.config, "name_or_path", "")
        if not source:
            raise UserError("score: pass tokenizer=...: the model was not loaded from a folder that holds one")
        tokenizer = load_tokenizer(source, padding_side="right")
    return judge, tokenizer


def __getattr__(name: str) -> Any:
    """The recipes' config classes (`CONFIGS`), imported on first use through the CLI's command table."""
    if name in CONFIGS:
        cmd = _command(CONFIGS[name])
        return getattr(importlib.import_module(cmd.module), cmd.config)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
