"""`saferlhf report RUN`: the plots of any training run folder, drawn from its metrics.jsonl, and an HTML page.

    saferlhf report runs/ppo_lag                     # -> runs/ppo_lag/report.html and runs/ppo_lag/plots/*.png
    saferlhf report runs/sft --out reports/sft       # somewhere else (a teammate's read-only run)

What is drawn is what the run logged: one figure per row of `PANELS` whose metrics are in metrics.jsonl.
PPO / PPO-Lag / reward shaping: λ and the episode cost J_c against the threshold d, reward and cost of the rollouts,
the KL to the reference, the violation rate, the actor's and the critics' losses and explained variance. SFT, score
models and DPO: training and held-out loss, accuracy, the scores of chosen and rejected responses. Every run: the
learning rate, gradient norm and throughput. A run still in progress is drawn as far as it got (a half-written last
line is skipped). The page also holds the provenance (folder, command, state, the resolved config), the last value
of every metric, and the run's own figures (a score model's score_distribution.png).

Writing into a finished run folder adds report.html and plots/ to the run's status.json entries, so the
run-folder rule still lets `--overwrite` replace that run.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from saferlhf.config import option
from saferlhf.errors import UserError

PLOTS = "plots"  # the figures' folder inside the output folder
REPORT = "report.html"


@dataclass
class RunReportConfig:
    run: str = option("", "a training run folder: it holds metrics.jsonl (sft, score-model, dpo, ppo, ...)",
                      positional=True)
    out: str | None = option(None, "where report.html and plots/ go (default: the run folder itself)")


@dataclass(frozen=True)
class Panel:
    """One figure: ``series`` (metric, legend label) drawn against the step when any of them was logged; on one
    axes when ``shared`` (same unit), else one small axes each. ``draw`` replaces the line plot (λ and J_c vs d)."""

    name: str
    caption: str
    series: tuple[tuple[str, str], ...]
    shared: bool = True
    ylabel: str = ""
    band: tuple[str, str] | None = None  # (mean metric, std metric): a ± one std band around the mean
    dashed: str | None = None  # a metric drawn as a dashed reference line (the threshold d)
    draw: Callable[[list[dict], Path], bool] | None = None


def _lagrange(rows: list[dict], path: Path) -> bool:
    from saferlhf.eval.report import plot_lagrange_rows

    return plot_lagrange_rows(rows, path)


PANELS: tuple[Panel, ...] = (
    Panel("lagrange", "PPO-Lagrangian: the multiplier λ (right axis) and the episode cost J_c against the threshold d "
                      "(left axis), per RL step; λ rises while J_c > d and falls while J_c < d.",
          (("lagrange/lambda", "λ"),), draw=_lagrange),
    Panel("rewards", "Mean reward R(x, y) and mean cost C(x, y) of each step's rollouts (band: ± one standard "
                     "deviation of the reward; dashed: the threshold d).",
          (("reward/mean", "reward"), ("cost/mean", "cost")), ylabel="score", band=("reward/mean", "reward/std"),
          dashed="lagrange/threshold"),
    Panel("kl", "KL(π_θ ‖ π_ref) of the rollouts: summed over tokens and averaged over sequences, and per token.",
          (("rollout/kl", "KL per sequence"), ("rollout/kl_per_token", "KL per token")), shared=False),
    Panel("violations", "Share of the rollouts whose cost is above the threshold d, per RL step.",
          (("cost/violation_rate", "violation rate"),), ylabel="share"),
    Panel("actor", "The actor's PPO loss, clip fraction, entropy and approximate KL to the rollout policy.",
          (("train/actor_loss", "actor loss"), ("train/actor_clip_frac", "clip fraction"),
           ("train/actor_entropy", "entropy"), ("train/actor_approx_kl", "approx. KL"),
           ("train/actor_ptx_loss", "PTX loss")), shared=False),
    Panel("critics", "The reward and cost critics: value loss and explained variance of the returns (1 = perfect).",
          (("train/reward_critic_loss", "reward critic loss"), ("train/cost_critic_loss", "cost critic loss"),
           ("train/reward_explained_variance", "reward critic EV"),
           ("train/cost_explained_variance", "cost critic EV")), shared=False),
    Panel("loss", "Training loss per step and held-out loss where evaluated.",
          (("train/loss", "train loss"), ("eval/loss", "held-out loss")), ylabel="loss"),
    Panel("accuracy", "Pair accuracy (the preferred response scored higher) on training batches and held out; for "
                      "cost models also the sign accuracy (safe < 0 < unsafe).",
          (("train/accuracy", "train accuracy"), ("eval/accuracy", "held-out accuracy"),
           ("train/sign_accuracy", "train sign accuracy"), ("eval/sign_accuracy", "held-out sign accuracy"),
           ("eval/accuracy_decisive", "held-out accuracy (decisive pairs)")), ylabel="accuracy"),
    Panel("scores", "Scores of the chosen and rejected responses of each training batch and their margin (reward "
                    "models and DPO's implicit reward); for cost models the safer and the less safe response.",
          (("train/reward_chosen", "chosen"), ("train/reward_rejected", "rejected"), ("train/chosen_reward", "chosen"),
           ("train/rejected_reward", "rejected"), ("train/cost_safer", "safer"), ("train/cost_unsafer", "less safe"),
           ("train/margin", "margin")), ylabel="score"),
    Panel("optimisation", "Learning rate and gradient norm (before clipping) per step.",
          (("train/lr", "learning rate"), ("train/actor_lr", "actor learning rate"), ("train/grad_norm", "grad norm"),
           ("train/actor_grad_norm", "actor grad norm")), shared=False),
    Panel("throughput", "Throughput and the rollouts' response length per step.",
          (("time/tokens_per_s", "tokens / s"), ("time/pairs_per_s", "pairs / s"),
           ("rollout/tokens_per_s", "rollout tokens / s"), ("time/step_seconds", "seconds / step"),
           ("rollout/response_length", "response length (tokens)")), shared=False),
)


def read_metrics(path: Path) -> tuple[list[dict], int]:
    """(rows with a step, lines skipped): a line that is not a JSON object with a ``step`` (a run killed or still
    writing leaves a half line) is skipped, not fatal."""
    rows, skipped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            rows.append(row)
        else:
            skipped += 1
    return rows, skipped


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def points(rows: list[dict], metric: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows that logged ``metric`` as a finite number."""
    got = [(r["step"], _number(r.get(metric))) for r in rows]
    got = [(s, v) for s, v in got if v is not None]
    return [s for s, _ in got], [v for _, v in got]


def draw_panel(panel: Panel, rows: list[dict], path: Path) -> bool:
    """The panel's figure at ``path``; False (nothing written) when the run logged none of its metrics."""
    present = [(m, label) for m, label in panel.series if points(rows, m)[0]]
    if not present:
        return False
    if panel.draw is not None:
        return panel.draw(rows, path)
    from saferlhf.eval.report import _plt, _save

    plt = _plt()
    n = 1 if panel.shared else len(present)
    fig, axes = plt.subplots(1, n, figsize=(max(6.0, 3.6 * n), 3.4), squeeze=False)
    for k, (metric, label) in enumerate(present):
        ax = axes[0][0 if panel.shared else k]
        steps, values = points(rows, metric)
        ax.plot(steps, values, marker="." if len(steps) < 60 else None, label=label)
        if panel.band and metric == panel.band[0]:
            s_steps, stds = points(rows, panel.band[1])
            std = dict(zip(s_steps, stds))
            both = [(s, v, std[s]) for s, v in zip(steps, values) if s in std]
            if both:
                ax.fill_between([s for s, _, _ in both], [v - e for _, v, e in both], [v + e for _, v, e in both],
                                alpha=0.2)
        if not panel.shared:
            ax.set_title(label, fontsize=9)
    if panel.dashed and points(rows, panel.dashed)[0]:
        steps, values = points(rows, panel.dashed)
        axes[0][0].plot(steps, values, color="black", linestyle="--", linewidth=0.9, label="threshold d")
    for ax in axes[0]:
        ax.set_xlabel("step")
    if panel.shared:
        axes[0][0].set_ylabel(panel.ylabel)
        axes[0][0].legend(fontsize=8)
    _save(plt, fig, path)
    return True


def last_values(rows: list[dict]) -> list[list[str]]:
    """One row per metric: name, last value, its step, min, max, number of points."""
    metrics = list(dict.fromkeys(k for r in rows for k in r if k not in ("step", "time")))
    out = []
    for m in metrics:
        steps, values = points(rows, m)
        if values:
            out.append([html.escape(m), f"{values[-1]:.4g}", f"{steps[-1]:g}", f"{min(values):.4g}",
                        f"{max(values):.4g}", str(len(values))])
    return out


def _status(run: Path) -> dict:
    try:
        found = json.loads((run / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


# config fields worth a line of the provenance (dotted: nested), where the run's config has them
CONFIG_FACTS = (("algorithm", "algorithm"), ("kind", "kind"), ("lagrange.threshold", "threshold d"),
                ("model_path", "model"), ("actor_path", "actor"), ("reward_model_path", "reward model"),
                ("cost_model_path", "cost model"), ("train_file", "training data"), ("train_prompts", "prompts"))


def provenance(run: Path, status: dict, skipped: int, n_rows: int) -> str:
    """The run's folder, command, state, the resolved config (folded) and the versions this report was drawn with."""
    import yaml

    from saferlhf.eval.report import software_versions

    esc = html.escape
    items = [("run folder", f"<code>{esc(str(run.resolve()))}</code>"),
             ("command", esc(f"saferlhf {status['command']}") if status.get("command") else "not recorded"),
             ("state", esc(str(status.get("state", "unknown")))),
             ("logged steps", f"{n_rows}" + (f" ({skipped} unreadable line(s) skipped)" if skipped else "")),
             ("drawn with", esc(", ".join(f"{k} {v}" for k, v in software_versions().items())))]
    try:
        config = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        config = None
    if isinstance(config, dict):
        for key, label in CONFIG_FACTS:
            value = config
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value is not None and not isinstance(value, (dict, list)):
                items.append((label, esc(str(value))))
    dl = "".join(f"<dt>{t}</dt><dd>{v}</dd>" for t, v in items)
    folded = "" if not isinstance(config, dict) else (
        "<details><summary>resolved config (config.yaml)</summary>"
        f"<pre>{esc(yaml.safe_dump(config, sort_keys=False))}</pre></details>")
    return f"<h2>provenance</h2><dl class='prov'>{dl}</dl>{folded}"


def claim_entries(run: Path, names: list[str]) -> None:
    """Add ``names`` to a finished run's status.json entries (the run-folder rule then counts them as the run's:
    `--overwrite` may still replace it). A running run lists its folder itself when it ends; others are left alone."""
    from saferlhf.files import atomic_write_json
    from saferlhf.tracking import SIGNATURE

    status = _status(run)
    if status.get("written_by") != SIGNATURE or status.get("state") == "running":
        return
    entries = list(status.get("entries") or [])
    if all(n in entries for n in names):
        return
    atomic_write_json(run / "status.json", status | {"entries": sorted(set(entries) | set(names))})


def find_runs(folder: Path) -> list[str]:
    """Sub-folders (two levels down at most) that hold a metrics.jsonl, relative to ``folder``."""
    found = [p.parent for p in (*folder.glob("*/metrics.jsonl"), *folder.glob("*/*/metrics.jsonl"))]
    return sorted(str(p.relative_to(folder)) for p in found)


def write_run_report(run: Path, out: Path) -> tuple[Path, list[Path]]:
    """``out``/report.html and the figures in ``out``/plots/ for the run folder ``run``; (page, figures)."""
    from saferlhf.eval.report import CAPTIONS, figure, page, table
    from saferlhf.files import atomic_write_text

    rows, skipped = read_metrics(run / "metrics.jsonl")
    if not rows:
        raise UserError(f"report: {run / 'metrics.jsonl'} has no logged step yet"
                        + (f" ({skipped} unreadable line(s))" if skipped else ""))
    (out / PLOTS).mkdir(parents=True, exist_ok=True)
    pngs = [(p, out / PLOTS / f"{p.name}.png") for p in PANELS]
    drawn = [(png, p.caption) for p, png in pngs if draw_panel(p, rows, png)]
    own = [(run / name, CAPTIONS[name]) for name in ("score_distribution.png",) if (run / name).exists()]
    status = _status(run)
    title = f"saferlhf report: {run.name}" + (f" ({status['command']})" if status.get("command") else "")
    body = (f"<h1>{html.escape(title)}</h1>" + provenance(run, status, skipped, len(rows))
            + "<h2>figures</h2>" + "".join(figure(png, caption) for png, caption in drawn + own)
            + "<h2>last value of every metric</h2>"
            + table(["metric", "last", "at step", "min", "max", "points"], last_values(rows)))
    page_path = out / REPORT
    atomic_write_text(page_path, page(title, body))
    return page_path, [png for png, _ in drawn]


def run(cfg: RunReportConfig) -> int:
    if not cfg.run:
        raise UserError("report: give a run folder (saferlhf report RUN)")
    folder = Path(cfg.run).expanduser()
    if not folder.is_dir():
        raise UserError(f"report: no such folder: {folder}")
    if not (folder / "metrics.jsonl").is_file():
        inside = find_runs(folder)
        if inside:
            raise UserError(f"report: {folder} has no metrics.jsonl; the runs inside it: {', '.join(inside[:8])}"
                            + (" ..." if len(inside) > 8 else ""), hint=f"saferlhf report {folder / inside[0]}")
        raise UserError(f"report: {folder} has no metrics.jsonl: not a training run folder (sft, score-model, dpo "
                        "and ppo write one)")
    out = Path(cfg.out).expanduser() if cfg.out else folder
    page_path, figures = write_run_report(folder, out)
    if out.resolve() == folder.resolve():
        claim_entries(folder, [REPORT, PLOTS])
    print(f"report: {len(figures)} figure(s) -> {page_path}")
    return 0
