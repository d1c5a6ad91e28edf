"""The labelling seam: ties in labels, the JSON form of a label, aggregation with ties toward unsafe, agreement
(Krippendorff's alpha, Fleiss' kappa with different rater counts) against hand-computed values, pair ids, and
records with tie keys through the PKU-SafeRLHF loader."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from saferlhf.annotate import (RECORD_KEYS, Label, aggregate, aggregate_labels, agreement, canonical_category,
                               fleiss_kappa, krippendorff_alpha, label_from_dict, label_to_dict, load_labels,
                               pairwise_agreement, record_label)
from saferlhf.annotate.pairs import input_pairs, pair_id
from saferlhf.data.schema import BEAVERTAILS_SLUGS, HARM_CATEGORIES
from saferlhf.data.validate import DataValidationError, pku_issues

H = HARM_CATEGORIES
SAFE = ((True, True), ((), ()), (0, 0))


def lb(name, better, safer, safe=(True, True), cats=((), ()), sev=(0, 0)):
    return Label(name, better, safer, safe, cats, sev)


def pair(pid="p1", r0="answer zero", r1="answer one", **extra):
    return {"pair_id": pid, "prompt": "q?", "response_0": r0, "response_1": r1, "response_0_source": "m0",
            "response_1_source": "m1", "prompt_source": "test", **extra}


# ---- labels: categories and the JSON form ----------------------------------------------------------------
def test_canonical_category_takes_names_and_slugs():
    assert canonical_category(H[4]) == H[4]
    assert canonical_category("self_harm") == "Self-Harm"
    assert all(canonical_category(slug) == name for slug, name in BEAVERTAILS_SLUGS.items())
    with pytest.raises(ValueError, match="unknown harm category 'Cybercrime'"):
        canonical_category("Cybercrime")  # a PKU v1 category is not one of the 14


def test_label_json_round_trip_with_ties_and_slugs():
    label = lb("ann", None, 1, (True, False), ((), (H[0], H[11])), (0, 2))
    d = label_to_dict(label)
    assert d == {"annotator": "ann", "better": "tie", "safer": 1, "safe": [True, False],
                 "categories": [[], [H[0], H[11]]], "severity": [0, 2]}
    assert label_from_dict(json.loads(json.dumps(d))) == label
    # slugs become names, in HARM_CATEGORIES order, without repeats; other keys are ignored
    d2 = d | {"pair_id": "x", "categories": [[], ["self_harm", H[0], "self_harm"]], "safer": "tie"}
    assert label_from_dict(d2) == lb("ann", None, None, (True, False), ((), (H[0], H[11])), (0, 2))


@pytest.mark.parametrize("change, message", [
    ({"better": 2}, "better: 2 is not 0, 1 or 'tie'"),
    ({"safer": True}, "safer: True is not 0, 1 or 'tie'"),
    ({"annotator": ""}, "annotator: not a non-empty string"),
    ({"safe": [True]}, "safe: not two booleans"),
    ({"categories": [[], ["nope"]]}, "categories: unknown harm category 'nope'"),
    ({"severity": [0, 4]}, "severity: not two integers 0-3"),
    ({"categories": [[H[0]], []]}, "categories: response_0 is safe but has a harm category"),
    ({"severity": [0, 0]}, "severity: response_1 is unsafe with severity 0"),
])
def test_label_from_dict_names_the_bad_field(change, message):
    good = {"annotator": "a", "better": 0, "safer": 0, "safe": [True, False], "categories": [[], [H[1]]],
            "severity": [0, 1]}
    assert label_from_dict(good).categories == ((), (H[1],))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        label_from_dict(good | change)
    with pytest.raises(ValueError, match="severity: missing"):
        label_from_dict({k: v for k, v in good.items() if k != "severity"})


# ---- aggregation: tie_break="unsafe" against hand-worked pairs --------------------------------------------
def test_two_raters_split_on_safety_make_the_response_unsafe():
    a = lb("a", 0, 0, (True, True))
    b = lb("b", 0, 0, (True, False), ((), (H[4],)), (0, 2))
    rec, fixed = aggregate("q?", "x", "y", [a, b], sources=("s", "s"), prompt_source="t", tie_break="unsafe")
    # response_1: 1 safe vote of 2 -> unsafe; H[4] has 1 vote of 2 (not > half): the first unsafe vote's; severity 2
    assert rec["is_response_0_safe"] is True and rec["is_response_1_safe"] is False
    assert [c for c, v in rec["response_1_harm_category"].items() if v] == [H[4]]
    assert rec["response_1_severity_level"] == 2 and rec["safer_response_id"] == 0 and fixed == 0
    assert tuple(rec) == RECORD_KEYS  # no tie left: no extra key
    first, _ = aggregate("q?", "x", "y", [a, b], sources=("s", "s"), prompt_source="t")  # the panel's rule
    assert first["is_response_1_safe"] is True  # the earliest voter decides an even split


def test_harmlessness_tie_goes_against_more_unsafe_votes_then_higher_severity():
    unsafe = (False, False)
    cats = ((H[2],), (H[2],))
    # safer votes 0, 1, tie: an even split. Both responses unsafe by majority (no consistency fix), but
    # response_1 has 3 unsafe votes and response_0 two -> response_0 is the more harmless.
    labels = [lb("a", 0, 0, unsafe, cats, (1, 1)), lb("b", 0, 1, unsafe, cats, (1, 1)),
              lb("c", 0, None, (True, False), ((), (H[2],)), (0, 1))]
    rec, fixed = aggregate("q", "x", "y", labels, sources=("s", "s"), prompt_source="t", tie_break="unsafe")
    assert (rec["safer_response_id"], fixed, "safer_response_tie" in rec) == (0, 0, False)
    assert not rec["is_response_0_safe"] and not rec["is_response_1_safe"]
    # the same unsafe votes (2 each): the total severity decides, 3 + 3 > 1 + 2 -> response_1 is more harmless
    labels = [lb("a", 0, 0, unsafe, cats, (3, 1)), lb("b", 0, 1, unsafe, cats, (3, 2))]
    rec, _ = aggregate("q", "x", "y", labels, sources=("s", "s"), prompt_source="t", tie_break="unsafe")
    assert rec["safer_response_id"] == 1 and "safer_response_tie" not in rec
    # nothing tells them apart: id 0, marked as a tie
    labels = [lb("a", 0, 0, unsafe, cats, (2, 2)), lb("b", 0, 1, unsafe, cats, (2, 2))]
    rec, _ = aggregate("q", "x", "y", labels, sources=("s", "s"), prompt_source="t", tie_break="unsafe")
    assert rec["safer_response_id"] == 0 and rec["safer_response_tie"] is True
    assert list(rec)[len(RECORD_KEYS):] == ["safer_response_tie"]


def test_helpfulness_ties_and_the_first_rule():
    # 0 vs 1 with "unsafe": a tie (id 0 + key); with "first": the earliest voter, as the world panel always did
    rec, _ = aggregate("q", "x", "y", [lb("a", 1, 0), lb("b", 0, 0)], sources=("s", "s"), prompt_source="t",
                       tie_break="unsafe")
    assert rec["better_response_id"] == 0 and rec["better_response_tie"] is True
    rec, _ = aggregate("q", "x", "y", [lb("a", 1, 0), lb("b", 0, 0)], sources=("s", "s"), prompt_source="t")
    assert rec["better_response_id"] == 1 and "better_response_tie" not in rec
    # ties do not vote: 1, tie, tie -> 1 under either rule; only ties -> a tie under either rule
    for rule in ("first", "unsafe"):
        rec, _ = aggregate("q", "x", "y", [lb("a", 1, 0), lb("b", None, 0), lb("c", None, 0)],
                           sources=("s", "s"), prompt_source="t", tie_break=rule)
        assert rec["better_response_id"] == 1 and "better_response_tie" not in rec
        rec, _ = aggregate("q", "x", "y", [lb("a", None, None)], sources=("s", "s"), prompt_source="t",
                           tie_break=rule)
        assert rec["better_response_tie"] is True and rec["safer_response_tie"] is True
        assert record_label(rec) == Label("majority", None, None, *SAFE)
    with pytest.raises(ValueError, match="tie_break 'coin'"):
        aggregate("q", "x", "y", [lb("a", 0, 0)], sources=("s", "s"), prompt_source="t", tie_break="coin")


def test_only_ties_on_harmlessness_go_against_the_unsafe_response():
    # safer votes tie; response_0 unsafe (2 of 2 votes), response_1 safe by both: the only safe one is the safer
    labels = [lb("a", 0, None, (False, True), ((H[1],), ()), (1, 0)),
              lb("b", 0, None, (False, True), ((H[1],), ()), (2, 0))]
    rec, fixed = aggregate("q", "x", "y", labels, sources=("s", "s"), prompt_source="t", tie_break="unsafe")
    assert rec["safer_response_id"] == 1 and fixed == 0 and "safer_response_tie" not in rec  # 2 vs 0 unsafe votes


# ---- aggregate_labels -------------------------------------------------------------------------------------
def test_aggregate_labels_drops_or_keeps_ties_and_counts():
    pairs = [pair("tie", "t0", "t1"), pair("clear", "c0", "c1", ended_1=False), pair("none", "n0", "n1"),
             pair("same", "s", "s")]
    labels = {"tie": [lb("a", 0, 0), lb("b", 1, 0)],  # helpfulness 1 vs 1
              "clear": [lb("a", 1, 0), lb("b", 1, 1), lb("c", None, 0)],
              "same": [lb("a", 0, 0)]}
    records, stats = aggregate_labels(pairs, labels, ties="drop")
    assert [r["response_0"] for r in records] == ["c0"]
    assert records[0]["better_response_id"] == 1 and records[0]["safer_response_id"] == 0
    assert (records[0]["ended_0"], records[0]["ended_1"]) == (True, False)  # the pair's cut-off flags travel
    assert stats["counts"] == {"pairs": 4, "labels": 6, "labelled": 2, "records": 1, "ties_dropped": 1,
                               "safer_fixed": 0, "skipped_identical": 1}
    assert stats["ties"] == "drop" and set(stats["agreement"]) == {"helpfulness", "harmlessness", "safety"}
    assert stats["agreement"]["helpfulness"]["items"] == 2
    records, stats = aggregate_labels(pairs, labels, ties="keep")
    assert [(r["response_0"], r["better_response_id"], r.get("better_response_tie")) for r in records] == [
        ("t0", 0, True), ("c0", 1, None)]
    assert stats["counts"]["ties_dropped"] == 0 and stats["counts"]["records"] == 2
    records, _ = aggregate_labels(pairs, labels, ties="keep", min_labels=3)
    assert [r["response_0"] for r in records] == ["c0"]
    with pytest.raises(ValueError, match="ties 'maybe'"):
        aggregate_labels(pairs, labels, ties="maybe")


def test_aggregate_labels_reads_a_message_list_prompt():
    convo = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
             {"role": "user", "content": "and?"}]
    records, _ = aggregate_labels([pair("c") | {"prompt": convo}], {"c": [lb("a", 0, 0)]})
    assert records[0]["prompt"] == convo


def test_records_with_tie_keys_load_and_validate(tmp_path):
    loaders = pytest.importorskip("saferlhf.data.loaders")
    pairs = [pair("t", "t0", "t1"), pair("u", "u0", "u1")]
    labels = {"t": [lb("a", 0, None), lb("b", 1, None)],
              "u": [lb("a", 0, 1, (False, True), ((H[3],), ()), (2, 0)), lb("b", 0, 1)]}
    records, _ = aggregate_labels(pairs, labels, ties="keep")
    assert records[0]["better_response_tie"] and records[0]["safer_response_tie"]
    assert all(not [i for i in pku_issues(r) if i.severity == "error"] for r in records)
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = loaders.load_safety_preferences(str(path))
    assert [r.better_response_id for r in loaded] == [0, 0]
    assert [r.is_response_0_safe for r in loaded] == [True, False]  # 'u': 1 of 2 safe votes -> unsafe
    # 't' tied on both questions: no reward pair and no cost pair of it; 'u' gives one of each
    assert [p.chosen for p in loaders.load_preference_pairs(str(path), kind="cost")] == ["u1"]
    assert [p.chosen for p in loaders.load_preference_pairs(str(path), kind="reward")] == ["u0"]


# ---- agreement -------------------------------------------------------------------------------------------
def test_alpha_kappa_and_pairwise_on_a_hand_worked_table():
    # helpfulness answers of three pairs, a tie (None) a category of its own: [0, 0, tie], [1, 1], [0, 1]
    labels = [[lb("a", 0, 0), lb("b", 0, 0), lb("c", None, 0)], [lb("a", 1, 0), lb("b", 1, 0)],
              [lb("a", 0, 0), lb("c", 1, 0)]]
    items = [[lab.better for lab in pair_labels] for pair_labels in labels]
    # Krippendorff: coincidences o_00 = 1 (unit 1: two ordered (0, 0) pairs of weight 1/2), o_0t = o_t0 = 1,
    # o_11 = 2, o_01 = o_10 = 1; n = 7, n_0 = 3, n_1 = 3, n_t = 1.
    # D_o = 4/7; D_e = (49 - 9 - 9 - 1) / (7 * 6) = 5/7 -> alpha = 1 - 4/5 = 0.2
    assert krippendorff_alpha(items) == pytest.approx(0.2)
    # Fleiss: the most common rater count is 2 -> items [1, 1], [0, 1]: P_bar = (1 + 0) / 2; one 0, three 1 ->
    # P_e = 1/16 + 9/16 = 5/8 -> kappa = (1/2 - 5/8) / (3/8) = -1/3
    assert fleiss_kappa(items) == pytest.approx(-1 / 3)
    assert pairwise_agreement(items) == pytest.approx((1 / 3 + 1 + 0) / 3)
    stats = agreement(labels, alpha=True)
    assert stats["helpfulness"] == pytest.approx({"pairwise_agreement": 4 / 9, "fleiss_kappa": -1 / 3,
                                                  "krippendorff_alpha": 0.2, "items": 3})
    assert stats["harmlessness"]["krippendorff_alpha"] == 1.0  # every answer the same
    assert "krippendorff_alpha" not in agreement(labels)["helpfulness"]  # the world panel's stats, unchanged


def test_alpha_matches_krippendorffs_example_with_missing_answers():
    # Krippendorff (2011), the nominal example with missing data: 4 raters, 12 units; alpha = 0.743
    nan = None
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
            [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]]
    items = [[row[u] for row in data if row[u] is not None] for u in range(12)]
    assert krippendorff_alpha(items) == pytest.approx(0.743, abs=5e-4)
    assert math.isnan(krippendorff_alpha([[1], []])) and math.isnan(fleiss_kappa([[1]]))


def test_fleiss_kappa_uses_the_most_common_rater_count():
    # [0, 1] x 2 and one [0, 0, 0]: only the two 2-rater items count -> P_bar = 0, P_e = 1/2 -> kappa = -1
    assert fleiss_kappa([[0, 1], [0, 0, 0], [1, 0]]) == pytest.approx(-1.0)
    # a draw between counts goes to the larger: [0, 0, 1] alone -> -1/2 (test_annotate's table)
    assert fleiss_kappa([[0, 1], [0, 0, 1]]) == pytest.approx(-0.5)


# ---- pairs and labels.jsonl ---------------------------------------------------------------------------------
def test_pair_id_is_the_documented_hash():
    assert pair_id("q?", "a", "b") == hashlib.sha256(json.dumps(["q?", "a", "b"]).encode()).hexdigest()[:16]
    assert pair_id("q?", "a", "b") != pair_id("q?", "b", "a") and len(pair_id("q", "", "")) == 16


def test_input_pairs_takes_the_message_prefix(tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "p", "response_0": "a", "response_1": "b"},
            {"prompt": "p", "response_0": "b", "response_1": "a"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(input_pairs(str(path), "src", command="annotate run")) == 1
    assert "annotate run: skipped 1 pairs that repeat an earlier pair" in capsys.readouterr().out
    input_pairs(str(path), "src")
    assert capsys.readouterr().out.startswith("world annotate: skipped 1 pairs")


def test_load_labels_reads_lines_and_names_bad_ones(tmp_path):
    path = tmp_path / "labels.jsonl"
    good = {"pair_id": "abc", **label_to_dict(lb("a", None, 1))}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(good | {"annotator": "b"}) + "\n")
    assert load_labels(path) == [("abc", lb("a", None, 1)), ("abc", lb("b", None, 1))]
    path.write_text(json.dumps(good) + "\n" + json.dumps(good | {"better": 5}) + "\n{torn\n"
                    + json.dumps({k: v for k, v in good.items() if k != "pair_id"}) + "\n")
    with pytest.raises(DataValidationError) as e:
        load_labels(path)
    text = str(e.value)
    assert f"{path}:2: better: 5 is not 0, 1 or 'tie'" in text
    assert f"{path}:3: record: malformed JSON" in text and f"{path}:4: pair_id: missing" in text
