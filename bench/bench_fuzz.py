"""Fuzz run of the CLI: hundreds of bad inputs, configs, model paths, run folders and numerical faults.

Every case runs `saferlhf.cli.main(argv)` in this process (stderr captured, a time limit per case) and is
classified:
  clear_error        non-zero exit, a short message on stderr (at most 3 lines: error + hint), no traceback
  traceback          an exception escaped the CLI, or stderr holds "Traceback"
  silently_accepted  exit 0 on an input that is wrong
  hang               the case ran past its time limit
The last three must be 0 (docs/reliability.md). Prints one JSON object and writes
bench/results/fuzz.json.

    python bench/bench_fuzz.py                 # ~2-4 min on 2 CPU cores
    python bench/bench_fuzz.py --groups config,data --show 20
    PYTHONPATH=OLD_CHECKOUT python bench/bench_fuzz.py --limit_s 4 --result_name fuzz_before
        the same inputs against an older saferlhf (a case still running after 4 s has accepted the input
        and is training on it)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests" / "faults"))  # the bad data files live with the fault tests
sys.path.insert(0, str(BENCH))  # fuzz_groups/: one module of extra cases per area

os.environ.setdefault("SAFERLHF_NO_PROGRESS", "1")


class Hang(Exception):
    pass


def run_case(argv: list[str], limit_s: float) -> dict[str, Any]:
    """Run one CLI call; return its classification and what it printed."""
    from saferlhf.cli import main

    err, out = io.StringIO(), io.StringIO()

    def alarm(*_):
        raise Hang()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    t0 = time.time()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(argv)
        verdict = None
    except Hang:
        rc, verdict = None, "hang"
    except SystemExit as e:  # a bare SystemExit("text") still gives a clear line (exit 1)
        rc = e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, int):
            err.write(f"{e.code}\n")
        verdict = None
    except BaseException as e:  # noqa: BLE001 - an escaped exception is what we count
        import traceback

        rc, verdict = None, "traceback"
        err.write("".join(traceback.format_exception(e)))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    text = err.getvalue()
    lines = [x for x in text.splitlines() if x.strip() and not _is_noise(x)]
    if verdict is None:
        if "Traceback" in text:
            verdict = "traceback"
        elif rc == 0:
            verdict = "silently_accepted"
        elif not lines or len(lines) > 3 and not _problem_listing(lines):
            verdict = "unclear_error"
        else:
            verdict = "clear_error"
    return {"verdict": verdict, "rc": rc, "seconds": round(time.time() - t0, 2),
            "message": (lines[0] if lines else out.getvalue().strip().splitlines()[-1:] or [""])[:300]
            if verdict != "traceback" else text[-600:]}


def _is_noise(line: str) -> bool:
    """Python warnings and library chatter on stderr (not the command's own message)."""
    s = line.strip()
    return ("Warning:" in s or s.lower().startswith("warning") or s.startswith(("[RANK", "warnings.warn"))
            or "Writing model shards" in s)


def _problem_listing(lines: list[str]) -> bool:
    """A data error lists one `file:line: field: reason` per problem: long but clear."""
    return sum(":" in x for x in lines) >= len(lines) - 2


# --------------------------------------------------------------------------- case generators
def config_cases(commands) -> list[tuple[str, list[str]]]:
    """For every command and field: out-of-range values, non-finite floats, wrong types, bogus choices."""
    import importlib

    from saferlhf.config import _is_optional, leaf_fields

    cases = []
    for cmd in commands:
        cls = getattr(importlib.import_module(cmd.module), cmd.config)
        name = cmd.name.split()
        for key, tp, meta in leaf_fields(cls):
            for bad in _bad_values(_is_optional(tp)[1], meta):
                cases.append((f"{cmd.name} --{key} {bad}", [*name, f"--{key}", bad]))
        cases.append((f"{cmd.name} unknown key", [*name, "--no_such_key", "1"]))
        last_valued = [k for k, tp, _ in leaf_fields(cls) if tp is not bool][-1]  # a bare bool flag means true
        cases.append((f"{cmd.name} missing value", [*name, f"--{last_valued}"]))
        cases.append((f"{cmd.name} extra positional", [*name, "a", "b", "c"]))
    return cases


def _bad_values(tp, meta) -> list[str]:
    bad = []
    if get_origin(tp) is Literal:
        return ["bogus_choice"]
    if tp is bool:
        return ["maybe"]
    if tp in (int, float):
        bad.append("abc")
        if tp is int:
            bad.append("1.5")
        for k, delta in (("ge", -1), ("gt", 0), ("le", 1), ("lt", 0)):
            if meta.get(k) is not None:
                v = meta[k] + delta
                bad.append(str(int(v)) if tp is int and float(v).is_integer() else repr(float(v)))
        if tp is float:
            bad += ["nan", "inf"]
    if get_origin(tp) is list and get_args(tp)[0] in (int, float):
        bad.append("1,abc")
    return bad


def data_cases(tmp: Path, env: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """The fault tests' bad data files, through `data check` and through the command that trains on them."""
    from bad_data_cases import bad_data_cases

    cases = []
    for name, path, kind in bad_data_cases(tmp / "data"):
        cases.append((f"data check {name}", ["data", "check", str(path)]))
        if kind in ("pairs-reward", "pairs-cost"):
            cases.append((f"score-model {name}", ["score-model", "--kind", kind.split("-")[1], "--model_path",
                                                  str(env["base"]), "--train_file", str(path), "--out",
                                                  str(tmp / "o" / name), "--max_steps", "1"]))
        elif kind == "prompts":
            cases.append((f"generate {name}", ["generate", "--model_path", str(env["base"]), "--prompts", str(path),
                                               "--out", str(tmp / "o" / f"{name}.jsonl"), "--sampling.max_new_tokens", "2"]))
        elif kind == "sft":
            cases.append((f"sft {name}", ["sft", "--model_path", str(env["base"]), "--train_file", str(path),
                                          "--out", str(tmp / "o" / name), "--max_steps", "1"]))
    return cases


def model_path_cases(tmp: Path, env: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """Missing / wrong model folders for every command that loads a model."""
    bad = {"missing": tmp / "nope", "text file": env["textfile"], "empty folder": env["empty"],
           "config only": env["config_only"], "corrupt weights": env["corrupt"], "bad config": env["bad_config"]}
    cases = []
    for what, p in bad.items():
        cases += [
            (f"sft model {what}", ["sft", "--model_path", str(p), "--train_file", str(env["sft"]),
                                   "--out", str(tmp / "m" / f"sft-{what}")]),
            (f"score-model model {what}", ["score-model", "--model_path", str(p), "--train_file", str(env["pku"]),
                                           "--out", str(tmp / "m" / f"sm-{what}")]),
            (f"generate model {what}", ["generate", "--model_path", str(p), "--prompts", str(env["prompts"]),
                                        "--out", str(tmp / "m" / f"g-{what}.jsonl")]),
            (f"ppo reward model {what}", _ppo(env, tmp / "m" / f"ppo-{what}", reward=p)),
            (f"ppo actor {what}", _ppo(env, tmp / "m" / f"ppoa-{what}", actor=p)),
            (f"evaluate policy {what}", ["evaluate", "--policies", f"a={p}", "--out", str(tmp / "m" / f"e-{what}")]),
        ]
    cases += [
        ("ppo causal LM as reward model", _ppo(env, tmp / "m" / "ppo-lm-rm", reward=env["base"])),
        ("ppo causal LM as cost model", _ppo(env, tmp / "m" / "ppo-lm-cm", cost=env["base"])),
        ("evaluate causal LM as cost model", ["evaluate", "--policies", f"a={env['base']}", "--cost_model",
                                              str(env["base"]), "--out", str(tmp / "m" / "e-lm"), "--max_prompts", "4"]),
        ("ppo without cost model", [*_ppo(env, tmp / "m" / "ppo-nocm"), "--cost_model_path", "none"]),
        ("evaluate no policies", ["evaluate", "--out", str(tmp / "m" / "e-none")]),
        ("evaluate bad policy spec", ["evaluate", "--policies", "justapath", "--out", str(tmp / "m" / "e-spec")]),
        ("evaluate unknown baseline", ["evaluate", "--policies", f"a={env['base']}", "--baseline", "zzz",
                                       "--out", str(tmp / "m" / "e-base")]),
        ("tiny-model corpus missing", ["tiny-model", "--corpus", str(tmp / "nope.txt"), "--out", str(tmp / "m" / "t1")]),
        ("tiny-model corpus empty", ["tiny-model", "--corpus", str(env["emptyfile"]), "--out", str(tmp / "m" / "t2")]),
        ("tiny-model heads do not divide", ["tiny-model", "--hidden_size", "30", "--num_heads", "4",
                                            "--out", str(tmp / "m" / "t3")]),
        ("config file missing", ["sft", "--config", str(tmp / "nope.yaml")]),
        ("config file not a mapping", ["sft", "--config", str(env["list_yaml"])]),
        ("config file bad yaml", ["sft", "--config", str(env["bad_yaml"])]),
    ]
    return cases


def _ppo(env, out: Path, actor=None, reward=None, cost=None, extra=()) -> list[str]:
    return ["ppo", "--actor_path", str(actor or env["base"]), "--reward_model_path", str(reward or env["rm"]),
            "--cost_model_path", str(cost or env["cm"]), "--train_prompts", str(env["prompts"]), "--out", str(out),
            "--steps", "2", "--rollout.prompts_per_step", "4", "--sampling.max_new_tokens", "4", *extra]


def run_folder_cases(tmp: Path, env: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """Reruns into finished folders, resumes with changed settings, an output path that is a file."""
    done = env["done_sft"]
    sft = ["sft", "--model_path", str(env["base"]), "--train_file", str(env["sft"]), "--max_steps", "2"]
    return [
        ("sft rerun into a finished run", [*sft, "--out", str(done)]),
        ("sft resume with another seed", [*sft, "--out", str(done), "--resume", "true", "--runtime.seed", "7"]),
        ("sft resume with another lr", [*sft, "--out", str(done), "--resume", "true", "--optim.lr", "0.5"]),
        ("sft out is a file", [*sft, "--out", str(env["textfile"])]),
        ("sft overwrite a non-run folder", [*sft, "--out", str(env["notrun"]), "--overwrite", "true"]),
        ("evaluate rerun into a finished run", ["evaluate", "--policies", f"a={env['base']}", "--out",
                                                str(env["done_eval"]), "--max_prompts", "2"]),
        ("tiny-model into an existing folder", ["tiny-model", "--out", str(env["base"])]),
        ("demo into a finished run", ["demo", "--fast", "--out", str(env["done_sft"])]),
    ]


def numeric_cases(tmp: Path, env: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """Broken judges and exploding optimisers: must stop, never save non-finite weights, never exit 0."""
    return [
        ("ppo NaN reward model", _ppo(env, tmp / "n" / "nan-rm", reward=env["nan_rm"])),
        ("ppo NaN cost model", _ppo(env, tmp / "n" / "nan-cm", cost=env["nan_cm"])),
        ("ppo 1e30 reward model", _ppo(env, tmp / "n" / "big-rm", reward=env["big_rm"])),
        ("ppo 1e30 cost model", _ppo(env, tmp / "n" / "big-cm", cost=env["big_cm"])),
        ("ppo actor lr 1e30", _ppo(env, tmp / "n" / "lr", extra=("--actor_optim.lr", "1e30"))),
        ("score-model lr 1e30", ["score-model", "--model_path", str(env["base"]), "--train_file", str(env["pku"]),
                                 "--out", str(tmp / "n" / "sm-lr"), "--optim.lr", "1e30", "--max_steps", "3"]),
        ("sft lr 1e30", ["sft", "--model_path", str(env["base"]), "--train_file", str(env["sft"]),
                         "--out", str(tmp / "n" / "sft-lr"), "--optim.lr", "1e30", "--max_steps", "3"]),
        ("evaluate NaN cost model", ["evaluate", "--policies", f"a={env['base']}", "--cost_model",
                                     str(env["nan_cm"]), "--out", str(tmp / "n" / "e-nan"), "--max_prompts", "4",
                                     "--sampling.max_new_tokens", "4"]),
        ("ppo PTX file empty", _ppo(env, tmp / "n" / "ptx-empty", extra=("--ptx_file", str(env["emptyfile"])))),
        ("score-model all records dropped", ["score-model", "--model_path", str(env["base"]), "--train_file",
                                             str(env["all_bad_pku"]), "--on_error", "drop",
                                             "--out", str(tmp / "n" / "sm-empty")]),
        ("score-model eval_ratio leaves nothing", ["score-model", "--model_path", str(env["base"]), "--train_file",
                                                   str(env["one_pku"]), "--eval_ratio", "0.99",
                                                   "--out", str(tmp / "n" / "sm-ratio")]),
    ]


# --------------------------------------------------------------------------- environment
def build_env(tmp: Path) -> dict[str, Path]:
    """A tiny model, reward/cost models (healthy, NaN, 1e30), data files and finished runs."""
    import torch

    from saferlhf.cli import main
    from saferlhf.models import ScoreModel, build_tiny_model

    texts = [f"how do I cook {t}? {g} and serve it warm." for t in ("rice", "tea", "soup", "eggs")
             for g in ("rinse it first", "use low heat", "stir it often", "hurt the cook")] * 4
    env = {"base": build_tiny_model(tmp / "base", texts, vocab_size=300, hidden_size=32, num_layers=1, num_heads=2)}
    for name, fill in (("rm", None), ("cm", None), ("nan_rm", float("nan")), ("nan_cm", float("nan")),
                       ("big_rm", 1e30), ("big_cm", 1e30)):
        kind = "reward" if name.endswith("rm") else "cost"
        sm = _new_head(ScoreModel, env["base"], kind)
        if fill is not None:  # a broken judge, written behind saferlhf's back (its own saves refuse this)
            with torch.no_grad():
                sm.head.weight.fill_(fill if math.isnan(fill) else 0.0)
                if not math.isnan(fill):
                    sm.head.weight[0, 0] = fill
            sm.model.config.score_type = kind
            sm.model.save_pretrained(tmp / name)
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(env["base"]).save_pretrained(tmp / name)
        else:
            sm.save_pretrained(tmp / name, tokenizer=__import__("saferlhf.models", fromlist=["x"]).load_tokenizer(
                env["base"]))
        env[name] = tmp / name
    rows = [{"prompt": f"how do I cook {t}?", "response": f"{g} and serve it warm."}
            for t in ("rice", "tea", "soup", "eggs") for g in ("rinse it first", "use low heat")]
    env["sft"] = _jsonl(tmp / "sft.jsonl", rows)
    env["prompts"] = _jsonl(tmp / "prompts.jsonl", [{"prompt": r["prompt"]} for r in rows])
    pku = [{"prompt": f"how do I cook {t}? ({i})", "response_0": "rinse it first and use low heat.",
            "response_1": "hurt the cook.", "is_response_0_safe": True, "is_response_1_safe": False,
            "better_response_id": 0, "safer_response_id": 0} for i, t in enumerate(["rice", "tea", "soup", "eggs"] * 4)]
    env["pku"] = _jsonl(tmp / "pku.jsonl", pku)
    env["one_pku"] = _jsonl(tmp / "one_pku.jsonl", pku[:1])
    env["all_bad_pku"] = _jsonl(tmp / "bad_pku.jsonl", [dict(r, better_response_id=7) for r in pku])
    env["textfile"] = tmp / "notes.txt"
    env["textfile"].write_text("not a model\n")
    env["emptyfile"] = tmp / "empty.jsonl"
    env["emptyfile"].write_text("")
    for d in ("empty", "config_only", "corrupt", "bad_config", "notrun"):
        (tmp / d).mkdir()
        env[d] = tmp / d
    (tmp / "notrun" / "thesis.tex").write_text("precious")
    (tmp / "config_only" / "config.json").write_text((env["base"] / "config.json").read_text())
    for f in env["base"].iterdir():
        (tmp / "corrupt" / f.name).write_bytes(f.read_bytes())
    (tmp / "corrupt" / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    (tmp / "bad_config" / "config.json").write_text("{not json")
    env["list_yaml"] = tmp / "list.yaml"
    env["list_yaml"].write_text("- a\n- b\n")
    env["bad_yaml"] = tmp / "bad.yaml"
    env["bad_yaml"].write_text("a: [1,\n")
    env["done_sft"] = tmp / "done_sft"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["sft", "--model_path", str(env["base"]), "--train_file", str(env["sft"]), "--out",
                     str(env["done_sft"]), "--max_steps", "2"]) == 0
        env["done_eval"] = tmp / "done_eval"
        assert main(["evaluate", "--policies", f"a={env['base']}", "--out", str(env["done_eval"]),
                     "--max_prompts", "2", "--sampling.max_new_tokens", "2"]) == 0
    return env


def _new_head(ScoreModel, path, kind):
    import inspect

    kw = {"allow_new_head": True} if "allow_new_head" in inspect.signature(ScoreModel.from_pretrained).parameters else {}
    return ScoreModel.from_pretrained(path, score_type=kind, **kw)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from fuzz_groups import extra_groups

    extra = extra_groups()
    ap.add_argument("--groups", default=",".join(["config", "data", "model_path", "run_folder", "numeric", *extra]))
    ap.add_argument("--limit_s", type=float, default=60.0, help="time limit per case (a hang above it)")
    ap.add_argument("--show", type=int, default=50, help="list at most this many non-clear cases")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--result_name", default="fuzz", help="write bench/results/NAME.json ('' = do not write)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from saferlhf.cli import COMMANDS

    t0 = time.time()
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.chdir(tmp)  # a case that does run writes its default output folder here, not into the repository
        env = build_env(tmp)
        gens = {"config": lambda: config_cases(COMMANDS), "data": lambda: data_cases(tmp, env),
                "model_path": lambda: model_path_cases(tmp, env), "run_folder": lambda: run_folder_cases(tmp, env),
                "numeric": lambda: numeric_cases(tmp, env)}
        gens.update({g: (lambda f=f: f(tmp, env)) for g, f in extra.items()})
        for group in args.groups.split(","):
            for name, argv in gens[group]():
                r = run_case(argv, args.limit_s)
                results.setdefault(group, []).append({"case": name, **r})
                if r["verdict"] != "clear_error":
                    print(f"[{group}] {name}: {r['verdict']} ({r['message'][:200]!r})", file=sys.stderr)
    verdicts = ("clear_error", "unclear_error", "traceback", "silently_accepted", "hang")
    summary = {v: sum(r["verdict"] == v for rs in results.values() for r in rs) for v in verdicts}
    report = {
        "inputs_tried": sum(len(rs) for rs in results.values()),
        **summary,
        "by_group": {g: {v: sum(r["verdict"] == v for r in rs) for v in verdicts} | {"cases": len(rs)}
                     for g, rs in results.items()},
        "not_clear": [dict(group=g, **r) for g, rs in results.items() for r in rs
                      if r["verdict"] != "clear_error"][: args.show],
        "examples": {g: [r["message"] for r in rs[:: max(1, len(rs) // 4)]][:4] for g, rs in results.items()},
        "messages": {g: {r["case"]: r["message"] for r in rs} for g, rs in results.items() if len(rs) <= 60},
        "seconds": round(time.time() - t0, 1),
        "command": "python bench/bench_fuzz.py " + " ".join(sys.argv[1:]),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.result_name and args.groups == ap.get_default("groups"):
        (BENCH / "results" / f"{args.result_name}.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
