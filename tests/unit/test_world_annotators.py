"""The simulated annotator panel: qualification, majority labels, agreement, PKU-SafeRLHF records."""

from __future__ import annotations

import json

import pytest

import saferlhf.world
from saferlhf.world import HARM_CATEGORIES, AnnotatorPanel, Oracle, SimulatedAnnotator


@pytest.fixture(scope="module")
def annotated(world):
    panel = AnnotatorPanel(world, seed=0)
    records, stats = panel.annotate(world.response_pairs(1500, seed=1))
    return panel, records, stats


def test_qualification_rejects_bad_and_admits_good(annotated):
    panel, _, stats = annotated
    q = stats["qualification"]["annotators"]
    assert not q["careless"]["admitted"] and not q["random_clicker"]["admitted"]
    assert q["careless"]["accuracy"] < 0.8 and q["random_clicker"]["accuracy"] < 0.7
    assert all(q[n]["admitted"] for n in ("careful_a", "careful_b", "likes_long", "lenient"))
    assert all(q[n]["accuracy"] >= 0.9 for n in stats["qualification"]["admitted"])
    assert [a.name for a in panel.admitted] == stats["qualification"]["admitted"]


def test_majority_agrees_with_the_oracle(annotated):
    _, _, stats = annotated
    agree = stats["oracle_agreement"]
    assert agree["helpfulness"] >= 0.9 and agree["harmlessness"] >= 0.9 and agree["safety"] >= 0.9
    audit = stats["audit"]
    assert audit["records"] == 150 and audit["accuracy"] >= 0.9


def test_majority_safety_and_categories_match_the_oracle(world, annotated):
    _, records, _ = annotated
    oracle = Oracle(world)
    safety, cats = [], []
    for r in records:
        for i in (0, 1):
            j = oracle.judge(r["prompt"], r[f"response_{i}"])
            safety.append(r[f"is_response_{i}_safe"] == (not j.harmful))
            if j.harmful and not r[f"is_response_{i}_safe"]:
                cats.append([c for c, v in r[f"response_{i}_harm_category"].items() if v] == j.categories)
    assert sum(safety) / len(safety) >= 0.95
    assert len(cats) > 300 and sum(cats) / len(cats) >= 0.9


def test_records_are_pku_v1_and_consistent(annotated):
    _, records, stats = annotated
    assert len(records) == stats["counts"]["records"] == 1500
    for r in records:
        assert r["prompt_source"] == "saferlhf-world" and r["response_0_source"] == "world"
        assert r["better_response_id"] in (0, 1) and r["safer_response_id"] in (0, 1)
        for i in (0, 1):
            cats = r[f"response_{i}_harm_category"]
            assert list(cats) == list(HARM_CATEGORIES)
            safe, sev = r[f"is_response_{i}_safe"], r[f"response_{i}_severity_level"]
            assert (sev == 0 and not any(cats.values())) if safe else (1 <= sev <= 3 and any(cats.values()))
        s = r["safer_response_id"]
        assert not (not r[f"is_response_{s}_safe"] and r[f"is_response_{1 - s}_safe"])  # no contradiction
    both = {(r["is_response_0_safe"], r["is_response_1_safe"]) for r in records}
    assert both == {(True, True), (True, False), (False, True), (False, False)}


def test_agreement_statistics(annotated):
    _, _, stats = annotated
    for q in ("helpfulness", "harmlessness", "safety"):
        a = stats["agreement"][q]
        assert 0.0 < a["fleiss_kappa"] <= 1.0 and 0.5 <= a["pairwise_agreement"] <= 1.0
    assert stats["agreement"]["helpfulness"]["fleiss_kappa"] > 0.6
    assert stats["agreement"]["safety"]["items"] == 2 * 1500


def test_identical_responses_skipped_and_sources_kept(world):
    panel = AnnotatorPanel(world, seed=1)
    pairs = world.response_pairs(20, seed=3)
    dicts = [{"prompt": p, "response_0": a, "response_1": b, "response_0_source": "sft", "response_1_source": "sft"}
             for p, a, b in pairs]
    dicts.append({"prompt": pairs[0][0], "response_0": "same", "response_1": "same"})
    records, stats = panel.annotate(dicts)
    assert stats["counts"]["skipped_identical"] == 1 and len(records) == 20
    assert all(r["response_0_source"] == "sft" for r in records)


def test_deterministic(world):
    pairs = world.response_pairs(200, seed=4)
    a = AnnotatorPanel(world, seed=2).annotate(pairs)
    b = AnnotatorPanel(world, seed=2).annotate(pairs)
    assert a[0] == b[0] and json.dumps(a[1], sort_keys=True) == json.dumps(b[1], sort_keys=True)


def test_custom_panel_and_no_admitted(world):
    assert not hasattr(saferlhf.world, "Annotator")  # one Annotator: the saferlhf.annotate protocol
    solo, bad = SimulatedAnnotator("solo", noise=0.0), SimulatedAnnotator("bad", noise=0.5)
    panel = AnnotatorPanel(world, annotators=[solo, bad])
    records, stats = panel.annotate(world.response_pairs(30, seed=5))
    assert stats["qualification"]["admitted"] == ["solo"] and stats["counts"]["raters_per_pair"] == 1
    assert stats["oracle_agreement"]["safety"] == 1.0
    with pytest.raises(RuntimeError):
        AnnotatorPanel(world, annotators=[bad]).annotate(world.response_pairs(5))


def test_records_pass_the_data_loader(annotated, tmp_path):
    loaders = pytest.importorskip("saferlhf.data.loaders")
    _, records, _ = annotated
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = loaders.load_safety_preferences(str(path))
    assert len(loaded) == len(records)
    assert loaded[0].response_0_harm_category == records[0]["response_0_harm_category"]
