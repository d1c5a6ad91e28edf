"""Issue 23 end to end on a tiny policy: `generate --pairs` response pairs -> `annotate users add` / `annotate
import` -> two annotators label every pair through the JSON API of a live server (overlap 2, responses shown in a
random A/B order) -> `annotate export` -> `score-model` (cost and reward) trains on the exported records."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("fastapi", reason="the annotate extra is not installed (pip install -e '.[annotate]')")
pytest.importorskip("sqlalchemy", reason="the annotate extra is not installed (pip install -e '.[annotate]')")
httpx = pytest.importorskip("httpx", reason="the annotate extra is not installed (pip install -e '.[annotate]')")

from saferlhf.cli import main  # noqa: E402

TOPICS = ["rice", "pasta", "soup", "bread", "tea", "salad", "eggs", "beans"]
PROMPTS = [f"how do I cook {t}?" for t in TOPICS] + [f"what goes well with {t}?" for t in TOPICS]


def intended(i: int) -> dict:
    """The label both annotators give the i-th imported pair, in the IMPORTED order: even pairs have an unsafe
    response_0 (the more helpful one, as in the paper's conflicting pairs), odd pairs two safe responses."""
    if i % 2 == 0:
        return {"better": 0, "safer": 1, "categories": [["Violence, Aiding and Abetting, Incitement"], []],
                "severity": [2, 0]}
    return {"better": 1, "safer": 0, "categories": [[], []], "severity": [0, 0]}


def answer(task: dict, pairs: dict) -> tuple[dict, bool]:
    """The label body for a task as served: find the pair by its prompt and responses, then give ``intended`` in
    the DISPLAYED order (a BeaverTails slug for the category: the API accepts both spellings); and whether the
    task shows the pair swapped."""
    shown = task["responses"]
    i, r0, r1 = pairs[(task["prompt"], frozenset(shown))]
    want = intended(i)
    swapped = shown == [r1, r0]
    assert swapped or shown == [r0, r1]
    flip = (lambda v: 1 - v) if swapped else (lambda v: v)
    cats = [["violence,aiding_and_abetting,incitement"] if c else [] for c in want["categories"]]
    sev = list(want["severity"])
    if swapped:
        cats, sev = cats[::-1], sev[::-1]
    return {"task_id": task["task_id"], "helpful": flip(want["better"]), "harmless": flip(want["safer"]),
            "categories": cats, "severity": sev}, swapped


def token_of(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 0
    return next(ln.split(":", 1)[1].strip() for ln in capsys.readouterr().out.splitlines() if ln.startswith("token:"))


def test_generate_import_label_export_train(tiny_models, tmp_path, live_server, capsys):
    from saferlhf.annotate.app.api import create_app
    from saferlhf.annotate.labels import record_label
    from saferlhf.models import ScoreModel
    from saferlhf.tracking import read_jsonl

    policy = tiny_models["llama"]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    pairs_file = tmp_path / "pairs.jsonl"
    assert main(["generate", "--model_path", str(policy), "--prompts", str(tmp_path / "prompts.jsonl"),
                 "--pairs", "--sampling.max_new_tokens", "16", "--out", str(pairs_file)]) == 0
    generated = [json.loads(x) for x in pairs_file.read_text().splitlines()]
    usable = [g for g in generated if g["response_0"].strip() and g["response_1"].strip()
              and g["response_0"].strip() != g["response_1"].strip()]
    assert len(usable) >= 8, "the tiny policy gave too few distinct non-empty pairs"
    pairs = {(g["prompt"], frozenset((g["response_0"], g["response_1"]))): (i, g["response_0"], g["response_1"])
             for i, g in enumerate(usable)}

    url = f"sqlite:///{tmp_path / 'annotate.db'}"
    tokens = [token_of(capsys, ["annotate", "users", "add", name, "--role", "annotator", "--db", url])
              for name in ("ann1", "ann2")]
    assert main(["annotate", "import", str(pairs_file), "--overlap", "2", "--gold_rate", "0", "--db", url]) == 0
    assert f"{len(usable)} real pairs added" in capsys.readouterr().out

    base = live_server(create_app(url))
    swapped_seen = set()
    for token in tokens:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            done = 0
            while (resp := client.get("/api/tasks/next")).status_code == 200:
                task = resp.json()
                assert task["qualification"] is False  # nothing but real pairs was imported
                body, swapped = answer(task, pairs)
                swapped_seen.add(swapped)
                assert client.post("/api/labels", json=body).status_code == 201
                assert client.post("/api/labels", json=body).status_code == 409  # never stored twice
                done += 1
            assert resp.status_code == 204 and done == len(usable)  # overlap 2 with two annotators: every pair
    assert swapped_seen == {True, False}  # both A/B orders were shown, so the mapping back was exercised

    out = tmp_path / "export" / "prefs.jsonl"
    assert main(["annotate", "export", "--out", str(out), "--db", url]) == 0
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(records) == len(usable)
    for rec in records:
        i, r0, r1 = pairs[(rec["prompt"], frozenset((rec["response_0"], rec["response_1"])))]
        assert (rec["response_0"], rec["response_1"]) == (r0, r1)  # exactly as imported
        want = intended(i)
        assert (rec["better_response_id"], rec["safer_response_id"]) == (want["better"], want["safer"])
        assert [rec["is_response_0_safe"], rec["is_response_1_safe"]] == [not c for c in want["categories"]]
        label = record_label(rec)  # the category dicts and severities read back
        assert [list(c) for c in label.categories] == want["categories"] and list(label.severity) == want["severity"]
    raw = [json.loads(x) for x in (tmp_path / "export" / "prefs.labels.jsonl").read_text().splitlines()]
    labelled = sorted(r["annotator"] for r in raw if r["type"] == "label")
    assert labelled == ["ann1"] * len(usable) + ["ann2"] * len(usable)
    stats = json.loads((tmp_path / "export" / "prefs.stats.json").read_text())
    assert stats["progress"]["complete"] == len(usable)

    for kind in ("cost", "reward"):
        run = tmp_path / kind
        assert main(["score-model", "--kind", kind, "--model_path", str(policy), "--train_file", str(out),
                     "--out", str(run), "--batch_size", "4", "--max_steps", "3", "--log_every", "1",
                     "--max_length", "64", "--optim.lr", "3e-3", "--optim.weight_decay", "0", "--eval_ratio", "0.25",
                     "--runtime.progress", "false"]) == 0
        init = ScoreModel.from_pretrained(policy, score_type=kind, allow_new_head=True).state_dict()
        trained = ScoreModel.from_pretrained(run / "model").state_dict()
        assert not [k for k in init if torch_equal(init[k], trained[k])]  # every parameter was trained
        losses = [r["train/loss"] for r in read_jsonl(run / "metrics.jsonl") if "train/loss" in r]
        assert len(losses) == 3 and all(math.isfinite(v) for v in losses)


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)
