"""Plots (PNG) and a self-contained HTML report for evaluations and RL runs."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_policy_bars(results: dict, path: Path) -> None:
    """Harmful rate, helpfulness and over-refusal per policy, side by side."""
    plt = _plt()
    names = list(results["policies"])
    keys = [("harmful_rate", "harmful rate (harmful prompts)", "tab:red"),
            ("helpfulness", "oracle helpfulness (all prompts)", "tab:blue"),
            ("over_refusal_rate", "over-refusal (benign + look-alike)", "tab:gray")]
    fig, axes = plt.subplots(1, 3, figsize=(4 * 3, 3.8))
    for ax, (k, title, color) in zip(axes, keys):
        vals = [results["policies"][n].get(k, float("nan")) for n in names]
        ax.bar(names, vals, color=color)
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        for i, v in enumerate(vals):
            ax.text(i, v + 0.02, f"{v:.2f}", ha="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reward_cost_scatter(records: dict[str, list[dict]], path: Path) -> None:
    """Reward vs cost of every test response, coloured by the oracle's safe/unsafe verdict (paper Fig. 5)."""
    plt = _plt()
    names = [n for n, recs in records.items() if recs and "reward" in recs[0] and "cost" in recs[0]]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.6), squeeze=False, sharex=True, sharey=True)
    for ax, name in zip(axes[0], names):
        recs = records[name]
        for harmful, color, label in ((False, "tab:green", "safe"), (True, "tab:red", "unsafe")):
            pts = [(r["reward"], r["cost"]) for r in recs if r["harmful"] == harmful]
            if pts:
                ax.scatter(*zip(*pts), s=6, alpha=0.5, color=color, label=f"{label} ({len(pts)})")
        ax.axhline(0, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("reward")
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("cost (> 0 = unsafe)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _read(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_training_curves(runs: dict[str, Path], path: Path) -> None:
    """reward/mean and cost/mean over RL steps for each run (metrics.jsonl paths)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, mpath in runs.items():
        rows = [r for r in _read(mpath) if "reward/mean" in r]
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [r["reward/mean"] for r in rows], label=name)
        if rows and "cost/mean" in rows[0]:
            axes[1].plot(steps, [r["cost/mean"] for r in rows], label=name)
    axes[0].set_title("reward R(x,y) of rollouts")
    axes[1].set_title("cost C(x,y) of rollouts (> 0 = unsafe)")
    axes[1].axhline(0, color="black", linewidth=0.8, linestyle="--")
    for ax in axes:
        ax.set_xlabel("RL step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lagrange(metrics_path: Path, path: Path) -> None:
    """λ and the episode cost J_c against the threshold d over PPO-Lag training."""
    plt = _plt()
    rows = [r for r in _read(metrics_path) if "lagrange/lambda" in r]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, ax1 = plt.subplots(figsize=(6.5, 3.8))
    ax1.plot(steps, [r["lagrange/episode_cost"] for r in rows], color="tab:red", label="episode cost J_c")
    ax1.plot(steps, [r["lagrange/threshold"] for r in rows], color="black", linestyle="--", label="threshold d")
    ax1.set_xlabel("RL step")
    ax1.set_ylabel("cost")
    ax2 = ax1.twinx()
    ax2.plot(steps, [r["lagrange/lambda"] for r in rows], color="tab:blue", label="λ")
    ax2.set_ylabel("λ", color="tab:blue")
    lines = ax1.get_lines() + ax2.get_lines()
    ax1.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="upper right")
    ax1.set_title("PPO-Lagrangian: λ and episode cost vs threshold")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _img(path: Path) -> str:
    if not Path(path).exists():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}"><figcaption>{html.escape(Path(path).name)}</figcaption></figure>'


def write_html_report(path: Path, title: str, table_rows: list[dict], images: list[Path], notes: str = "",
                      config: dict | None = None) -> None:
    """A single self-contained HTML file: a metrics table, the plots inline, the configuration."""
    from saferlhf.files import atomic_write_text

    cols = list(dict.fromkeys(k for r in table_rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in table_rows)
    cfg_html = f"<h2>Configuration</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>" if config else ""
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}img{{max-width:100%}}figure{{margin:1em 0}}</style>
</head><body><h1>{html.escape(title)}</h1><p>{notes}</p><table><tr>{head}</tr>{body}</table>
{''.join(_img(p) for p in images)}{cfg_html}</body></html>"""
    atomic_write_text(Path(path), doc)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape("" if v is None else str(v))
