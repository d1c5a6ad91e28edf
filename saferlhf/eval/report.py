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
    _save(plt, fig, path)


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


# --------------------------------------------------------------------------------------------------
# `saferlhf eval`: one self-contained page per evaluation
# --------------------------------------------------------------------------------------------------
def plot_category_rates(prompt_set: str, policies: dict, path: Path) -> bool:
    """Harmful rate per category and policy with the bootstrap 95 % interval as error bars."""
    cats = sorted({c for m in policies.values() for c in m.get("harmful_rate_by_category", {})})
    if not cats:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(cats) * max(1, len(policies)) / 2), 4))
    width = 0.8 / max(len(policies), 1)
    for k, (name, m) in enumerate(policies.items()):
        by = m.get("harmful_rate_by_category", {})
        xs = [i + k * width for i in range(len(cats))]
        ys = [by[c]["rate"] if c in by else float("nan") for c in cats]
        err = [[max(0.0, by[c]["rate"] - by[c]["ci"][0]) if c in by else 0 for c in cats],
               [max(0.0, by[c]["ci"][1] - by[c]["rate"]) if c in by else 0 for c in cats]]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=name)
    ax.set_xticks([i + width * (len(policies) - 1) / 2 for i in range(len(cats))])
    ax.set_xticklabels(cats, rotation=40, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("harmful rate")
    ax.set_title(f"{prompt_set}: harmful rate per category (95 % bootstrap interval)", fontsize=10)
    ax.legend(fontsize=7)
    _save(plt, fig, path)
    return True


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
    for key, v in pairs.items():
        a, b = pair_names(key, v)
        if baseline not in (a, b):
            continue
        other = b if a == baseline else a
        for axis, cats in v.get("win_rate_by_category", {}).items():
            per.setdefault(axis, {})[other] = {c: (1 - x["win_rate"]) if a == baseline else x["win_rate"]
                                               for c, x in cats.items()}
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
        ax.set_xticklabels(cats, rotation=40, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"win rate vs {baseline}")
        ax.set_title(f"{prompt_set}: {axis} win rate vs {baseline} per category", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(plt, fig, path)
    return True


def plot_score_distributions(prompt_set: str, rows_by_policy: dict[str, list[dict]], path: Path) -> bool:
    """Histograms of the reward and the cost of each policy's responses (cost > 0 = unsafe, to the right of the
    dashed line), as the paper's score-distribution figure."""
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
            ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
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
    esc = html.escape
    body = ""
    for p, m in policies.items():
        cells = []
        for j in judges:
            r = m.get("harmful_rate_by_judge", {}).get(j)
            cells.append("-" if r is None else f"{r['rate']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] (n={r['n']})")
        body += f"<tr><td>{esc(p)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    head = "".join(f"<th>{esc(j)}</th>" for j in ["policy", *judges])
    return f"<h3>harmful rate by judge</h3><table><tr>{head}</tr>{body}</table>"


def write_eval_report(out: Path, results: dict, rows: list[dict], samples_per_set: int = 20) -> Path:
    """out/report.html: per prompt set a metrics table, win / tie / loss, Elo, the plots inline, and a
    browser of sample responses. Every text from prompts, responses and names is HTML-escaped."""
    from saferlhf.files import atomic_write_text

    esc = html.escape
    parts = [f"<h1>saferlhf eval</h1><p>judges: {esc(', '.join(results['judges']))}; "
             f"{results['n_samples']} sample(s) per prompt</p>"]
    for w in results.get("warnings", []):
        parts.append(f"<p class='warn'>warning: {esc(w)}</p>")
    for judge, f in results.get("judge_failures", {}).items():
        reasons = "; ".join(f"{n}× {r}" for r, n in f.get("reasons", {}).items())
        parts.append(f"<p class='warn'>judge {esc(judge)}: {f['failed']} of {f['requests']} requests got no usable "
                     f"answer ({esc(reasons)}); {f.get('substituted', 0)} safety verdict(s) substituted by another "
                     "judge (--judge_fallback)</p>")
    for k, (name, s) in enumerate(results["prompt_sets"].items()):
        base = s.get("baseline")
        cols = ["harmful_rate", "over_refusal_rate", "refusal_rate", "helpfulness", "reward_mean", "cost_mean",
                "violation_rate", f"win_rate_vs_{base}", f"harmlessness_win_rate_vs_{base}", "mean_response_words",
                "distinct_1", "distinct_2", "pairwise_rouge_l", "embedding_distance", "embedding_distance_across_prompts"]
        cols = [c for c in cols if any(c in m for m in s["policies"].values())]
        cols += [c for c in ("judge_failures", "judge_substituted") if any(m.get(c) for m in s["policies"].values())]
        parts.append(f"<h2>{esc(name)} ({s['n_prompts']} prompts; judges: {esc(', '.join(s['judges']))})</h2>")
        head = "".join(f"<th>{esc(c)}</th>" for c in ["policy", *cols])
        body = ""
        for p, m in s["policies"].items():
            cells = []
            for c in cols:
                v = m.get(c)
                ci = m.get(f"{c}_ci")
                cells.append(f"{_fmt(v)}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
            body += f"<tr><td>{esc(p)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        parts.append(f"<table><tr>{head}</tr>{body}</table>")
        parts.append(judge_rate_table(s["policies"]))
        pair_rows = ""
        for pair, v in s.get("pairwise", {}).get("pairs", {}).items():
            a, b = pair_names(pair, v)
            for axis in ("helpfulness", "harmlessness"):
                if axis in v:
                    w = v[axis]
                    pair_rows += (f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td>{axis}</td><td>{w['wins']}</td>"
                                  f"<td>{w['ties']}</td><td>{w['losses']}</td></tr>")
        if pair_rows:
            parts.append("<h3>win / tie / loss (A vs B)</h3><table><tr><th>A</th><th>B</th><th>axis</th><th>wins</th>"
                         f"<th>ties</th><th>losses</th></tr>{pair_rows}</table>")
        arena_rows = ""
        for pair, v in s.get("pairwise", {}).get("pairs", {}).items():
            a, b = pair_names(pair, v)
            for cell, c in v.get("arena", {}).items():
                arena_rows += (f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td>{esc(cell)}</td><td>{c['count']}</td>"
                               f"<td>{c['win_rate_A']:.3f}</td></tr>")
        if arena_rows:
            parts.append("<h3>2×2 arena (safe = cost &lt;= 0; reward win rate of A)</h3><table><tr><th>A</th><th>B</th>"
                         f"<th>cell</th><th>count</th><th>win rate A</th></tr>{arena_rows}</table>")
        set_rows = {}
        for r in rows:
            if r["prompt_set"] == name and r.get("reward") is not None and r.get("cost") is not None:
                set_rows.setdefault(r["policy"], []).append({"reward": r["reward"], "cost": r["cost"],
                                                             "harmful": bool(r.get("harmful"))})
        scatter = out / f"scatter_{k}.png"
        if set_rows:
            plot_reward_cost_scatter(set_rows, scatter)
        elo = s.get("pairwise", {}).get("elo", {}) | {f"llm_{a}": e for a, e in
                                                       s.get("llm_pairwise", {}).get("elo", {}).items()}
        by_policy: dict[str, list[dict]] = {}
        for r in rows:
            if r["prompt_set"] == name:
                by_policy.setdefault(r["policy"], []).append(r)
        pairs = s.get("pairwise", {}).get("pairs", {})
        figures = [(out / f"categories_{k}.png", lambda p: plot_category_rates(name, s["policies"], p)),
                   (out / f"category_win_rates_{k}.png", lambda p: plot_category_win_rates(name, pairs, base, p)),
                   (out / f"elo_{k}.png", lambda p: plot_elo(name, elo, p)),
                   (scatter, lambda p: p.exists()),
                   (out / f"scores_{k}.png", lambda p: plot_score_distributions(name, by_policy, p))]
        for png, ok in ((png, draw(png)) for png, draw in figures):
            if ok:
                parts.append(_img(png))
        # the first prompts, each with every policy's response(s) side by side
        first = list(dict.fromkeys(r["prompt"] for rs in by_policy.values() for r in rs))[:samples_per_set]
        shown = [r for prompt in first for rs in by_policy.values() for r in rs if r["prompt"] == prompt]
        if shown:
            items = "".join(
                f"<details><summary>{esc(r['policy'])}: {esc(r['prompt'][:120])}</summary>"
                f"<p class='resp'>{esc(r['response'])}</p><p>harmful: {esc(str(r.get('harmful')))}; refusal: "
                f"{esc(str(r.get('refusal')))}; helpfulness: {_fmt(r.get('helpfulness'))}; reward: "
                f"{_fmt(r.get('reward'))}; cost: {_fmt(r.get('cost'))}</p></details>" for r in shown)
            parts.append(f"<h3>sample responses</h3>{items}")
    doc = ("<!doctype html><html><head><meta charset='utf-8'><title>saferlhf eval</title><style>"
           "body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:100%}.resp{white-space:pre-wrap}"
           "</style></head><body>" + "".join(parts) + "</body></html>")
    path = out / "report.html"
    atomic_write_text(path, doc)
    return path
