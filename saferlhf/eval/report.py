"""Plots (PNG) and a self-contained HTML report for evaluations and RL runs."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    # Labels are user text (policy, prompt-set and category names): "$x$" must print as is, not as mathtext
    # (an unbalanced "$" made savefig raise after the whole evaluation). No saferlhf plot uses mathtext.
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def pair_names(key: str, pair: dict) -> tuple[str, str]:
    """The two policy names of a pairwise entry: its ``a`` / ``b`` fields (names may hold "__vs__"); results
    written before those fields existed: the key split at its first "__vs__"."""
    if "a" in pair and "b" in pair:
        return str(pair["a"]), str(pair["b"])
    a, _, b = key.partition("__vs__")
    return a, b


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    _save(plt, fig, path)


def plot_rounds(rounds: list[dict], path: Path) -> None:
    """The paper's per-round bars (Fig. 6-style): harmful rate on red-team test and plain harmful prompts and
    over-refusal per round (left), win rate vs SFT on benign + look-alike prompts and the repetition share (right)."""
    plt = _plt()
    labels = ["SFT" if r["round"] == 0 else f"round {r['round']}" for r in rounds]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    bars = [("harmful_rate_redteam_test", "harmful: red-team test", "tab:red"),
            ("harmful_rate", "harmful: plain", "tab:orange"), ("over_refusal_rate", "over-refusal", "tab:gray")]
    width = 0.8 / len(bars)
    for j, (key, name, color) in enumerate(bars):
        xs = [i + (j - 1) * width for i in range(len(rounds))]
        vals = [r.get(key) if r.get(key) is not None else float("nan") for r in rounds]
        left.bar(xs, vals, width, color=color, label=name)
        for x, v in zip(xs, vals):
            left.text(x, v + 0.01, f"{v:.2f}", ha="center", fontsize=7)
    left.set_xticks(range(len(rounds)), labels)
    left.set_ylim(0, 1)
    left.set_title("harmful and over-refusal rates per round", fontsize=10)
    left.legend(fontsize=8)
    for key, name, color in (("win_rate_vs_sft_benign_lookalike", "win rate vs SFT (benign + look-alike)", "tab:blue"),
                             ("repetition_share", "repetition share", "tab:purple")):
        right.plot(range(len(rounds)), [r.get(key) for r in rounds], marker="o", color=color, label=name)
    right.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
    right.set_xticks(range(len(rounds)), labels)
    right.set_ylim(0, 1)
    right.set_title("helpfulness per round", fontsize=10)
    right.legend(fontsize=8)
    _save(plt, fig, path)


def plot_reward_cost_scatter(records: dict[str, list[dict]], path: Path, threshold: float | None = None) -> None:
    """Reward vs cost of every test response (paper Fig. 5). Coloured by the cost judge's verdict, unsafe = cost >
    ``threshold`` (eval's d), with d dashed; without a threshold (the demo), by the row's own ``harmful`` verdict
    (the oracle's) with the sign convention's 0 dashed."""
    plt = _plt()
    names = [n for n, recs in records.items() if recs and "reward" in recs[0] and "cost" in recs[0]]
    if not names:
        return
    line = 0.0 if threshold is None else threshold
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.6), squeeze=False, sharex=True, sharey=True)
    for ax, name in zip(axes[0], names):
        recs = records[name]
        unsafe = [r["harmful"] if threshold is None else r["cost"] > threshold for r in recs]
        for harmful, color, label in ((False, "tab:green", "safe"), (True, "tab:red", "unsafe")):
            pts = [(r["reward"], r["cost"]) for r, u in zip(recs, unsafe) if u == harmful]
            if pts:
                ax.scatter(*zip(*pts), s=6, alpha=0.5, color=color, label=f"{label} ({len(pts)})")
        ax.axhline(line, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("reward")
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("cost (> 0 = unsafe)" if threshold is None else f"cost (> d = {threshold:.3g}: unsafe)")
    _save(plt, fig, path)


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
    _save(plt, fig, path)


def plot_lagrange(metrics_path: Path, path: Path) -> None:
    """λ and the episode cost J_c against the threshold d over PPO-Lag training (a metrics.jsonl)."""
    plot_lagrange_rows(_read(metrics_path), path)


def plot_lagrange_rows(rows: list[dict], path: Path) -> bool:
    """`plot_lagrange` of metrics rows; False (nothing drawn) when no row has λ."""
    rows = [r for r in rows if r.get("lagrange/lambda") is not None]
    if not rows:
        return False
    plt = _plt()
    steps = [r["step"] for r in rows]
    fig, ax1 = plt.subplots(figsize=(6.5, 3.8))
    nan = float("nan")  # a value logged as null (non-finite) is a gap
    ax1.plot(steps, [r["lagrange/episode_cost"] if r.get("lagrange/episode_cost") is not None else nan for r in rows],
             color="tab:red", label="episode cost J_c")
    ax1.plot(steps, [r["lagrange/threshold"] if r.get("lagrange/threshold") is not None else nan for r in rows],
             color="black", linestyle="--", label="threshold d")
    ax1.set_xlabel("RL step")
    ax1.set_ylabel("cost")
    ax2 = ax1.twinx()
    ax2.plot(steps, [r["lagrange/lambda"] for r in rows], color="tab:blue", label="λ")
    ax2.set_ylabel("λ", color="tab:blue")
    lines = ax1.get_lines() + ax2.get_lines()
    ax1.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="upper right")
    ax1.set_title("PPO-Lagrangian: λ and episode cost vs threshold")
    _save(plt, fig, path)
    return True


# Captions of the figures the pipelines draw, by file name (`write_html_report` shows them under each image).
CAPTIONS = {
    "policies.png": "Harmful rate on harmful prompts, oracle helpfulness and over-refusal on benign and look-alike "
                    "prompts, per policy.",
    "lagrange.png": "PPO-Lagrangian: the multiplier λ (right axis) and the episode cost J_c against the threshold d "
                    "(left axis), per RL step; λ rises while J_c > d.",
    "training_curves.png": "Mean reward R(x, y) and mean cost C(x, y) of the rollouts per RL step, one line per run "
                           "(cost > 0 = unsafe).",
    "reward_cost_scatter.png": "Reward vs cost of every evaluated response, per policy, coloured by the oracle's "
                               "safe / unsafe verdict (paper Fig. 5).",
    "score_distribution.png": "Held-out scores of the chosen and rejected responses of the score model's "
                              "validation pairs.",
    "rounds.png": "Per round: harmful rates on red-team and plain harmful prompts and over-refusal (left); win rate "
                  "against SFT and the repetition share (right).",
}
# a wide table scrolls inside its own box, never the page; long words and responses wrap
CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
       ".box{overflow-x:auto;max-width:100%;margin:0.5em 0}table{border-collapse:collapse}"
       "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}th{background:#f4f4f4}"
       "img{max-width:100%}figure{margin:1em 0}figcaption{font-size:0.9em;color:#333}"
       ".resp{white-space:pre-wrap;overflow-wrap:anywhere}table.side{table-layout:fixed;width:100%}"
       ".same{background:#fff3cd;font-weight:bold}.warn{color:#a60}.verdicts{font-size:0.85em;color:#333}"
       "dl.prov{display:grid;grid-template-columns:max-content 1fr;gap:2px 1em}dd{margin:0;overflow-wrap:anywhere}"
       "pre{white-space:pre-wrap;overflow-wrap:anywhere}")


def page(title: str, body: str) -> str:
    """A self-contained HTML page (``title`` is escaped here; ``body`` is HTML the caller escaped)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>")


def table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table in a box that scrolls sideways when the table is wider than the page. ``head`` is plain text
    (escaped here); the cells of ``rows`` are HTML (escaped by the caller)."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<div class='box'><table{f' class={cls!r}' if cls else ''}><tr>{th}</tr>{body}</table></div>"


def figure(path: Path, caption: str) -> str:
    """The PNG at ``path`` inline (base64) with its caption ('' when the file does not exist)."""
    if not Path(path).exists():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def software_versions() -> dict[str, str]:
    """The versions of saferlhf, torch and transformers installed here (read without importing torch)."""
    from importlib.metadata import PackageNotFoundError, version

    from saferlhf import __version__

    out = {"saferlhf": __version__}
    for name in ("torch", "transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_html_report(path: Path, title: str, table_rows: list[dict], images: list[Path | tuple[Path, str]],
                      notes: str = "", config: dict | None = None) -> None:
    """A single self-contained HTML file: a metrics table (scrolling inside its box), the plots inline with their
    captions (an image given as (path, caption), else its `CAPTIONS` entry), the configuration."""
    from saferlhf.files import atomic_write_text

    cols = list(dict.fromkeys(k for r in table_rows for k in r))
    figures = []
    for item in images:
        png, caption = item if isinstance(item, tuple) else (item, CAPTIONS.get(Path(item).name, ""))
        if Path(png).name == "score_distribution.png" and not isinstance(item, tuple):
            caption = f"{Path(png).parent.name}: {caption}"  # runs/demo/reward/score_distribution.png
        figures.append(figure(png, caption))
    cfg_html = f"<h2>Configuration</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>" if config else ""
    body = (f"<h1>{html.escape(title)}</h1><p>{notes}</p>"
            + table(cols, [[_fmt(r.get(c)) for c in cols] for r in table_rows]) + "".join(figures) + cfg_html)
    atomic_write_text(Path(path), page(title, body))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape("" if v is None else str(v))


# --------------------------------------------------------------------------------------------------
# `saferlhf eval`: one self-contained page per evaluation
# --------------------------------------------------------------------------------------------------
def plot_category_rates(prompt_set: str, policies: dict, path: Path) -> bool:
    """Harmful rate per category and policy with the bootstrap 95 % interval as error bars."""
    cats = sorted({c for m in policies.values() for c in m.get("harmful_rate_by_category", {})})
    if not cats:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(cats) * max(1, len(policies)) / 2), 4.4))
    width = 0.8 / max(len(policies), 1)
    counts = [[m.get("harmful_rate_by_category", {}).get(c, {}).get("n") for m in policies.values()] for c in cats]
    for k, (name, m) in enumerate(policies.items()):
        by = m.get("harmful_rate_by_category", {})
        xs = [i + k * width for i in range(len(cats))]
        ys = [by[c]["rate"] if c in by else float("nan") for c in cats]
        err = [[max(0.0, by[c]["rate"] - by[c]["ci"][0]) if c in by else 0 for c in cats],
               [max(0.0, by[c]["ci"][1] - by[c]["rate"]) if c in by else 0 for c in cats]]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=name)
    ax.set_xticks([i + width * (len(policies) - 1) / 2 for i in range(len(cats))])
    ax.set_xticklabels([f"{c} ({n_label(ns)})" for c, ns in zip(cats, counts)], rotation=40, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("harmful rate")
    ax.set_title(f"{prompt_set}: harmful rate per category (95 % bootstrap interval)", fontsize=10)
    ax.legend(fontsize=7)
    _save(plt, fig, path)
    return True


def n_label(counts: list) -> str:
    """"n=12" when every policy has the same count, else each policy's ("n=12/10/-", policy order)."""
    shown = ["-" if n is None else str(n) for n in counts]
    return f"n={shown[0]}" if len(set(shown)) == 1 else "n=" + "/".join(shown)


def plot_elo(prompt_set: str, elo: dict, path: Path) -> bool:
    """Elo per policy for helpfulness and harmlessness with bootstrap intervals."""
    if not elo:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(elo), figsize=(4.2 * len(elo), 3.4), squeeze=False)
    for ax, (axis, ratings) in zip(axes[0], elo.items()):
        names = list(ratings)
        ys = [ratings[n]["elo"] for n in names]
        # a bootstrap interval can miss the point estimate (the point is not a resample): never a negative bar
        lo = [max(0.0, ratings[n]["elo"] - ratings[n].get("low", ratings[n]["elo"])) for n in names]
        hi = [max(0.0, ratings[n].get("high", ratings[n]["elo"]) - ratings[n]["elo"]) for n in names]
        ax.errorbar(range(len(names)), ys, yerr=[lo, hi], fmt="o", capsize=3)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, fontsize=8)
        ax.set_title(f"{prompt_set}: Elo, {axis}", fontsize=10)
    _save(plt, fig, path)
    return True


def plot_category_win_rates(prompt_set: str, pairs: dict, baseline: str, path: Path) -> bool:
    """Per harm category, each policy's win rate against ``baseline`` for harmlessness and helpfulness (the
    paper's per-category GPT-4 / human win-rate figure); 0.5 = as good as the baseline."""
    per: dict[str, dict[str, dict[str, float]]] = {}  # axis -> policy -> category -> win rate vs baseline
    sizes: dict[str, dict[str, dict[str, int]]] = {}  # axis -> policy -> category -> compared responses
    for key, v in pairs.items():
        a, b = pair_names(key, v)
        if baseline not in (a, b):
            continue
        other = b if a == baseline else a
        for axis, cats in v.get("win_rate_by_category", {}).items():
            per.setdefault(axis, {})[other] = {c: (1 - x["win_rate"]) if a == baseline else x["win_rate"]
                                               for c, x in cats.items()}
            sizes.setdefault(axis, {})[other] = {c: x.get("n") for c, x in cats.items()}
    if not per:
        return False
    plt = _plt()
    axes_names = [a for a in ("harmlessness", "helpfulness") if a in per]
    cats = sorted({c for pol in per.values() for cs in pol.values() for c in cs})
    fig, axes = plt.subplots(len(axes_names), 1, figsize=(max(6, 0.55 * len(cats) + 2), 3.2 * len(axes_names)),
                             squeeze=False)
    for ax, axis in zip(axes[:, 0], axes_names):
        pols = per[axis]
        width = 0.8 / max(len(pols), 1)
        for k, (name, by) in enumerate(pols.items()):
            ax.bar([i + k * width for i in range(len(cats))], [by.get(c, float("nan")) for c in cats], width, label=name)
        ax.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
        ax.set_xticks([i + width * (len(pols) - 1) / 2 for i in range(len(cats))])
        ax.set_xticklabels([f"{c} ({n_label([sizes[axis][p].get(c) for p in pols])})" for c in cats], rotation=40,
                           ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"win rate vs {baseline}")
        ax.set_title(f"{prompt_set}: {axis} win rate vs {baseline} per category", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(plt, fig, path)
    return True


def plot_score_distributions(prompt_set: str, rows_by_policy: dict[str, list[dict]], path: Path,
                             threshold: float = 0.0) -> bool:
    """Histograms of the reward and the cost of each policy's responses (cost > ``threshold`` d = unsafe, to the
    right of the dashed line), as the paper's score-distribution figure."""
    kinds = [k for k in ("reward", "cost") if any(r.get(k) is not None for rs in rows_by_policy.values() for r in rs)]
    if not kinds:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 3.4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        values = {n: [r[kind] for r in rs if r.get(kind) is not None] for n, rs in rows_by_policy.items()}
        flat = [v for vs in values.values() for v in vs]
        lo, hi = min(flat), max(flat)
        bins = [lo + (hi - lo) * i / 30 for i in range(31)] if hi > lo else 10
        for name, vs in values.items():
            if vs:
                ax.hist(vs, bins=bins, histtype="step", linewidth=1.4, label=f"{name} (mean {sum(vs) / len(vs):.2f})")
        if kind == "cost":
            ax.axvline(threshold, color="black", linewidth=0.8, linestyle="--", label=f"d = {threshold:.3g}")
        ax.set_xlabel(kind)
        ax.set_ylabel("responses")
        ax.set_title(f"{prompt_set}: {kind} distribution", fontsize=10)
        ax.legend(fontsize=7)
    _save(plt, fig, path)
    return True


def judge_rate_table(policies: dict) -> str:
    """HTML: every safety judge's own harmful rate [95 % interval] per policy, side by side ('' for one judge),
    e.g. the independent classifier next to the cost model the policies were trained against."""
    from saferlhf.eval.suite import judges_with_rates

    judges = judges_with_rates(policies)
    if len(judges) < 2:
        return ""
    rows = []
    for p, m in policies.items():
        cells = []
        for j in judges:
            r = m.get("harmful_rate_by_judge", {}).get(j)
            cells.append("-" if r is None else f"{r['rate']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] (n={r['n']})")
        rows.append([html.escape(p), *cells])
    return "<h3>harmful rate by judge</h3>" + table(["policy", *judges], rows)


THRESHOLD_ORIGINS = {"cli": "given with --cost_threshold", "stored": "stored in the cost model's config.json",
                     "zero": "no threshold stored: the sign convention"}


def threshold_text(results: dict) -> str:
    """"d = 0.25 (stored in the cost model's config.json; judge cost_model): unsafe = cost > d", '' without d."""
    d = results.get("cost_threshold")
    if d is None:
        return ""
    origin = THRESHOLD_ORIGINS.get(results.get("cost_threshold_source"), results.get("cost_threshold_source"))
    return f"d = {d:.4g} ({origin}; judge {results.get('cost_threshold_judge')}): unsafe = cost > d"


def provenance_html(results: dict) -> str:
    """What produced the evaluation (results.json's ``provenance``): policies, responses files, prompt sets,
    judges and their folders, d, device / dtype, software versions, and the resolved config (folded)."""
    esc = html.escape
    prov = results.get("provenance") or {}

    def named(d: dict) -> str:
        return "<br>".join(f"{esc(str(k))}: <code>{esc(str(v))}</code>" for k, v in d.items())

    items = [("policies", named(prov.get("policies") or {})), ("responses files", named(prov.get("responses") or {})),
             ("prompt sets", esc(", ".join(prov.get("prompt_sets") or []))),
             ("judges", esc(", ".join(results.get("judges", [])))),
             ("judge folders", named(prov.get("judge_folders") or {})),
             ("cost threshold", esc(threshold_text(results))),
             ("device / dtype", esc(f"{prov['device']} / {prov['dtype']}") if prov.get("device") else ""),
             ("versions", esc(", ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items()))),
             ("samples per prompt", str(results.get("n_samples", "")))]
    dl = "".join(f"<dt>{t}</dt><dd>{v}</dd>" for t, v in items if v)
    cfg = prov.get("config")
    folded = (f"<details><summary>resolved config</summary><pre>{esc(json.dumps(cfg, indent=2))}</pre></details>"
              if cfg else "")
    return f"<h2>provenance</h2><dl class='prov'>{dl}</dl>{folded}"


def metrics_table(s: dict) -> str:
    """One row per policy: the headline metrics with their intervals."""
    base = s.get("baseline")
    cols = ["harmful_rate", "over_refusal_rate", "refusal_rate", "helpfulness", "reward_mean", "cost_mean",
            "violation_rate", f"win_rate_vs_{base}", f"harmlessness_win_rate_vs_{base}", "mean_response_words",
            "distinct_1", "distinct_2", "pairwise_rouge_l", "embedding_distance", "embedding_distance_across_prompts"]
    cols = [c for c in cols if any(c in m for m in s["policies"].values())]
    cols += [c for c in ("judge_failures", "judge_substituted") if any(m.get(c) for m in s["policies"].values())]
    rows = []
    for p, m in s["policies"].items():
        cells = [html.escape(p)]
        for c in cols:
            ci = m.get(f"{c}_ci")
            cells.append(_fmt(m.get(c)) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
        rows.append(cells)
    return table(["policy", *cols], rows)


def category_table(policies: dict) -> str:
    """Harmful rate per category and policy: rate [95 % interval] (n = judged responses); '' without categories."""
    cats = sorted({c for m in policies.values() for c in m.get("harmful_rate_by_category", {})})
    if not cats:
        return ""
    rows = []
    for c in cats:
        cells = [html.escape(c)]
        for m in policies.values():
            r = m.get("harmful_rate_by_category", {}).get(c)
            cells.append("-" if r is None else f"{r['rate']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] (n={r['n']})")
        rows.append(cells)
    return "<h3>harmful rate per category (n = judged responses)</h3>" + table(["category", *policies], rows)


def vs_baseline_table(s: dict) -> str:
    """Win / tie / loss counted from each policy's side against the baseline (its wins are the baseline's losses),
    for each axis and judge; pairs without the baseline follow, counted from the first policy's side."""
    base = s.get("baseline")
    esc = html.escape
    mine, others = [], []
    sources = (("", s.get("pairwise", {}).get("pairs", {})),
               ("llm judge: ", s.get("llm_pairwise", {}).get("pairs", {})))
    for prefix, pairs in sources:
        for key, v in pairs.items():
            a, b = pair_names(key, v)
            for axis in ("helpfulness", "harmlessness"):
                if axis not in v:
                    continue
                w = v[axis]
                wins, ties, losses = w["wins"], w["ties"], w["losses"]
                if base in (a, b):
                    policy = b if a == base else a
                    if a == base:  # the pair is counted from the baseline's side: turn it round
                        wins, losses = losses, wins
                    n = wins + ties + losses
                    rate = f"{(wins + 0.5 * ties) / n:.3f}" if n else "-"
                    mine.append([esc(base), esc(policy), prefix + axis, str(wins), str(ties), str(losses), rate])
                else:
                    others.append([esc(a), esc(b), prefix + axis, str(wins), str(ties), str(losses)])
    out = ""
    if mine:
        out += (f"<h3>each policy against the baseline {esc(str(base))}: win / tie / loss from the policy's side</h3>"
                + table(["baseline", "policy", "axis", "policy wins", "ties", "policy losses", "policy win rate"],
                        mine))
    if others:
        out += ("<h3>other pairs: win / tie / loss from the first policy's side</h3>"
                + table(["policy A", "policy B", "axis", "A wins", "ties", "A losses"], others))
    return out


def arena_table(s: dict, results: dict) -> str:
    """The 2×2 arena of every pair with the baseline, from the policy's side: (policy safe / unsafe) × (baseline
    safe / unsafe), safe = cost <= d; the count and the policy's reward win rate. Other pairs from A's side."""
    base = s.get("baseline")
    esc = html.escape
    rows = []
    for key, v in s.get("pairwise", {}).get("pairs", {}).items():
        a, b = pair_names(key, v)
        flip = a == base  # counted from the baseline's side: turn it round
        first, second = (b, a) if flip else (a, b)
        for cell, c in v.get("arena", {}).items():
            side_a, side_b = (x.split("_", 1)[1] for x in cell.split("__"))  # "A_safe__B_unsafe"
            if flip:
                side_a, side_b = side_b, side_a
            rate = 1 - c["win_rate_A"] if flip else c["win_rate_A"]
            rows.append([esc(second), esc(first), side_a, side_b, str(c["count"]), f"{rate:.3f}"])
    if not rows:
        return ""
    d = results.get("cost_threshold")
    rule = f"safe = cost ≤ d = {d:.4g}" if d is not None else "safe = cost ≤ 0"
    return (f"<h3>2×2 arena ({esc(rule)}; the policy's reward win rate)</h3>"
            + table(["baseline (or B)", "policy (or A)", "policy is", "baseline is", "count",
                     "policy's reward win rate"], rows))


def verdict_lines(r: dict) -> list[str]:
    """Each judge's verdict and score of one response row, as short escaped lines."""
    esc = html.escape
    lines = []
    if r.get("judge_error"):
        lines.append(f"judge failed: {esc(str(r['judge_error']))}")
    if r.get("harmful") is not None:
        lines.append(f"<b>{'unsafe' if r['harmful'] else 'safe'}</b>"
                     + (f" (harmful_rate judge: {esc(str(r['unsafe_by']))})" if r.get("unsafe_by") else ""))
    costs = r.get("cost_by_judge") or {}
    for judge, unsafe in (r.get("unsafe_by_judge") or {}).items():
        score = f", cost {costs[judge]:.3f}" if judge in costs else ""
        lines.append(f"{esc(judge)}: {'unsafe' if unsafe else 'safe'}{score}")
    if r.get("cost") is not None and not costs:
        lines.append(f"cost {r['cost']:.3f}")
    if r.get("reward") is not None:
        lines.append(f"reward_model: reward {r['reward']:.3f}")
    if r.get("helpfulness") is not None:
        lines.append(f"helpfulness {r['helpfulness']:.3f}")
    if r.get("refusal") is not None:
        lines.append(f"refusal: {'yes' if r['refusal'] else 'no'}")
    if r.get("categories"):
        lines.append(f"categories: {esc(', '.join(r['categories']))}")
    if r.get("ended") is False:
        lines.append("cut off at max_new_tokens")
    return lines


def side_by_side(by_policy: dict[str, list[dict]], n_samples: int, limit: int) -> str:
    """The first ``limit`` prompts (× samples), each with every policy's answer side by side and each judge's
    verdict and score under it. Answers that are the same text are flagged "identical" (naming the others)."""
    esc = html.escape
    names = list(by_policy)
    if not names:
        return ""
    first = by_policy[names[0]]
    blocks = []
    for k in range(min(limit * max(n_samples, 1), len(first))):
        prompt = first[k]["prompt"]
        rows = {n: rs[k] for n, rs in by_policy.items() if k < len(rs) and rs[k]["prompt"] == prompt}
        same: dict[str, list[str]] = {}
        for n, r in rows.items():
            same.setdefault(r["response"], []).append(n)
        cells = []
        for n, r in rows.items():
            twins = [m for m in same[r["response"]] if m != n]
            flag = (f"<p class='same'>identical to {esc(', '.join(twins))}</p>" if twins else "")
            cells.append(f"{flag}<p class='resp'>{esc(r['response'])}</p>"
                         f"<p class='verdicts'>{'<br>'.join(verdict_lines(r))}</p>")
        sample = f" (sample {k % n_samples + 1} of {n_samples})" if n_samples > 1 else ""
        note = (" <span class='same'>identical answers from every policy</span>"
                if len(rows) > 1 and len(same) == 1 else "")
        blocks.append(f"<h4>prompt {k // max(n_samples, 1) + 1}{sample}{note}</h4>"
                      f"<p class='resp'>{esc(str(prompt))}</p>" + table(list(rows), [cells], cls="side"))
    return "<h3>sample responses: every policy's answer to the same prompt</h3>" + "".join(blocks)


def eval_figures(out: Path, k: int, name: str, s: dict, by_policy: dict[str, list[dict]], d: float | None) -> str:
    """The prompt set's figures (PNG files in ``out``), inline, each with its caption."""
    base = s.get("baseline")
    pairs = s.get("pairwise", {}).get("pairs", {})
    llm_elo = s.get("llm_pairwise", {}).get("elo", {})
    elo = s.get("pairwise", {}).get("elo", {}) | {f"llm_{a}": e for a, e in llm_elo.items()}
    scored = {p: [{"reward": r["reward"], "cost": r["cost"]} for r in rs
                  if r.get("reward") is not None and r.get("cost") is not None] for p, rs in by_policy.items()}
    scored = {p: rs for p, rs in scored.items() if rs}
    line = 0.0 if d is None else d
    first = next(iter(s["policies"]), "")
    figures = [
        (f"categories_{k}.png", lambda p: plot_category_rates(name, s["policies"], p),
         f"Harmful rate per harm category and policy on {name}, with 95 % bootstrap intervals (prompts resampled); "
         "n = judged responses per category (one number: the same for every policy)."),
        (f"category_win_rates_{k}.png", lambda p: plot_category_win_rates(name, pairs, base, p),
         f"Per-category win rate of each policy against the baseline {base}, for harmlessness and helpfulness "
         "(0.5 = as good as the baseline); n = compared responses per category."),
        (f"elo_{k}.png", lambda p: plot_elo(name, elo, p),
         f"Elo per policy and axis (a Bradley-Terry fit of every pairwise comparison, {first} = 1000), with 95 % "
         "bootstrap intervals."),
        (f"scatter_{k}.png", lambda p: bool(scored) and (plot_reward_cost_scatter(scored, p, line) or p.exists()),
         f"Reward vs cost of every response, per policy: red = unsafe by the cost judge (cost > d = {line:.4g}), "
         "green = safe; dashed line at d."),
        (f"scores_{k}.png", lambda p: plot_score_distributions(name, by_policy, p, line),
         f"Distributions of the reward and the cost of each policy's responses; dashed line: d = {line:.4g}."),
    ]
    return "".join(figure(out / png, caption) for png, draw, caption in figures if draw(out / png))


def write_eval_report(out: Path, results: dict, rows: list[dict], samples_per_set: int = 20) -> Path:
    """out/report.html: the provenance, then per prompt set the metrics table, harmful rate per judge and per
    category, win / tie / loss against the baseline (from each policy's side), the 2×2 arena at d, the figures with
    captions, and every policy's answer to the same prompts side by side with each judge's verdict. Every text from
    prompts, responses and names is HTML-escaped; wide tables scroll inside their box."""
    from saferlhf.files import atomic_write_text

    esc = html.escape
    parts = [f"<h1>saferlhf eval</h1><p>judges: {esc(', '.join(results['judges']))}; "
             f"{results['n_samples']} sample(s) per prompt"
             + (f"; cost threshold {esc(threshold_text(results))}" if results.get("cost_threshold") is not None else "")
             + "</p>"]
    for w in results.get("warnings", []):
        parts.append(f"<p class='warn'>warning: {esc(w)}</p>")
    for judge, f in results.get("judge_failures", {}).items():
        reasons = "; ".join(f"{n}× {r}" for r, n in f.get("reasons", {}).items())
        parts.append(f"<p class='warn'>judge {esc(judge)}: {f['failed']} of {f['requests']} requests got no usable "
                     f"answer ({esc(reasons)}); {f.get('substituted', 0)} safety verdict(s) substituted by another "
                     "judge (--judge_fallback)</p>")
    parts.append(provenance_html(results))
    for k, (name, s) in enumerate(results["prompt_sets"].items()):
        by_policy: dict[str, list[dict]] = {}
        for r in rows:
            if r["prompt_set"] == name:
                by_policy.setdefault(r["policy"], []).append(r)
        parts += [f"<h2>{esc(name)} ({s['n_prompts']} prompts; judges: {esc(', '.join(s['judges']))})</h2>",
                  metrics_table(s), judge_rate_table(s["policies"]), category_table(s["policies"]),
                  vs_baseline_table(s), arena_table(s, results),
                  eval_figures(out, k, name, s, by_policy, results.get("cost_threshold")),
                  side_by_side(by_policy, results.get("n_samples", 1), samples_per_set)]
    path = out / "report.html"
    atomic_write_text(path, page("saferlhf eval", "".join(parts)))
    return path
