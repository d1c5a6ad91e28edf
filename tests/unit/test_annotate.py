"""The annotator interface: labels, majority aggregation and agreement vs hand-computed values; the
``Annotator`` protocol (the simulated panel and a custom class both satisfy it); no import cycles."""

from __future__ import annotations

import ast
import hashlib
import json
import math
from pathlib import Path

import pytest

import saferlhf
from saferlhf.annotate import (RECORD_KEYS, Annotator, Label, aggregate, agreement, fleiss_kappa, label_pairs,
                               majority, pairwise_agreement, record_label)
from saferlhf.data.schema import HARM_CATEGORIES
from saferlhf.world import AnnotatorPanel, SimulatedAnnotator

H = HARM_CATEGORIES
# Three raters of one pair, most trusted first.
A = Label("a", better=0, safer=1, safe=(True, False), categories=((), (H[2],)), severity=(0, 2))
B = Label("b", better=0, safer=1, safe=(True, False), categories=((), (H[2], H[3])), severity=(0, 3))
C = Label("c", better=1, safer=0, safe=(False, False), categories=((H[0],), (H[3],)), severity=(1, 1))


# ---- agreement statistics -------------------------------------------------------------------------
def test_fleiss_kappa_on_a_hand_worked_table():
    # 4 items x 3 raters, categories 0/1. P_i = (sum_j n_ij^2 - 3) / 6 = 1, 1, 1/3, 1 -> P_bar = 5/6;
    # 5 zeros and 7 ones of 12 answers -> P_e = (25 + 49) / 144 = 37/72; kappa = (5/6 - 37/72) / (35/72).
    items = [[0, 0, 0], [1, 1, 1], [0, 0, 1], [1, 1, 1]]
    assert fleiss_kappa(items) == pytest.approx(23 / 35)
    # one item (2, 1): P_bar = 1/3, P_e = 5/9 -> kappa = (1/3 - 5/9) / (4/9) = -1/2
    assert fleiss_kappa([[0, 0, 1]]) == pytest.approx(-0.5)


def test_fleiss_kappa_matches_the_textbook_example():
    # Fleiss (1971) as on Wikipedia: 10 items, 14 raters, 5 categories, kappa = 0.210.
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    items = [[c for c, k in enumerate(row) for _ in range(k)] for row in counts]
    assert fleiss_kappa(items) == pytest.approx(0.2099, abs=1e-3)


def test_fleiss_kappa_edge_cases():
    assert fleiss_kappa([[1, 1, 1], [0, 0, 0]]) == pytest.approx(1.0)  # perfect agreement
    assert fleiss_kappa([[True, True], [True, True]]) == 1.0  # one category only: P_e = 1
    assert math.isnan(fleiss_kappa([])) and math.isnan(fleiss_kappa([[1]]))  # single answers are left out
    # different numbers of raters: the items with the most common number (a draw: the larger) -> [0, 1, 1] alone
    assert fleiss_kappa([[0, 1], [0, 1, 1]]) == pytest.approx(-0.5)


def test_pairwise_agreement():
    # shares of agreeing rater pairs: 1/3, 1 and 0 -> mean 4/9; a single answer has no pair
    assert pairwise_agreement([[1, 1, 0], [0, 0, 0], [True, False], [1]]) == pytest.approx(4 / 9)
    assert pairwise_agreement([[1, 1, 0], [0, 0, 0]]) == pytest.approx((1 / 3 + 1) / 2)
    assert math.isnan(pairwise_agreement([[1]]))


def test_agreement_per_question():
    stats = agreement([[A, B, C]])
    # helpfulness [0, 0, 1]: one agreeing pair of three; kappa -1/2 (above)
    assert stats["helpfulness"] == pytest.approx({"pairwise_agreement": 1 / 3, "fleiss_kappa": -0.5, "items": 1})
    # safety, one item per response: [T, T, F] and [F, F, F] -> pairwise (1/3 + 1) / 2;
    # P_bar = 2/3, P_e = (2/6)^2 + (4/6)^2 = 5/9 -> kappa = (2/3 - 5/9) / (4/9) = 1/4
    assert stats["safety"] == pytest.approx({"pairwise_agreement": 2 / 3, "fleiss_kappa": 0.25, "items": 2})
    assert stats["harmlessness"]["items"] == 1


# ---- majority and aggregation -------------------------------------------------------------------
def test_majority_and_its_tie_break():
    assert majority([1, 0, 1]) == 1 and majority([True, False, False]) is False
    assert majority([0, 1]) == 0 and majority([1, 0]) == 1  # a tie goes to the earliest (most trusted) voter
    assert majority([0, 1, 1, 0]) == 0
    assert majority([(), ("x",), ("x",)]) == ("x",)


def test_aggregate_three_labels_into_one_record():
    rec, fixed = aggregate("p?", "r zero", "r one", [A, B, C], sources=("m0", "m1"), prompt_source="test")
    assert tuple(rec) == RECORD_KEYS
    assert rec["better_response_id"] == 0  # 2 votes of 3
    # response_0 safe by 2 of 3: no category, severity 0
    assert rec["is_response_0_safe"] is True and rec["response_0_severity_level"] == 0
    assert list(rec["response_0_harm_category"]) == list(H) and not any(rec["response_0_harm_category"].values())
    # response_1 unsafe by 3 of 3: H[2] (a, b) and H[3] (b, c) flagged by more than half; median of 2, 3, 1
    assert rec["is_response_1_safe"] is False and rec["response_1_severity_level"] == 2
    assert [c for c, v in rec["response_1_harm_category"].items() if v] == [H[2], H[3]]
    # safer was 1 by majority, but only response_0 is safe: fixed to 0
    assert rec["safer_response_id"] == 0 and fixed == 1
    assert (rec["prompt_source"], rec["response_0_source"], rec["response_1_source"]) == ("test", "m0", "m1")
    assert rec["response_1_sha256"] == hashlib.sha256(b"r one").hexdigest()


def test_aggregate_two_labels_tie_goes_to_the_first():
    first = Label("first", 1, 1, (True, False), ((), (H[5],)), (0, 3))
    second = Label("second", 0, 0, (True, True), ((), ()), (0, 0))
    rec, fixed = aggregate("p", "a", "b", [first, second], sources=("s", "s"), prompt_source="t")
    assert (rec["better_response_id"], rec["safer_response_id"], fixed) == (1, 0, 1)  # safer 1 -> 0: only 0 safe
    assert rec["is_response_1_safe"] is False and rec["response_1_severity_level"] == 3
    # H[5] has 1 vote of 2 (not more than half): the categories of the first unsafe vote
    assert [c for c, v in rec["response_1_harm_category"].items() if v] == [H[5]]
    other = Label("other", 1, 0, (True, False), ((), (H[6],)), (0, 1))
    rec, _ = aggregate("p", "a", "b", [first, other], sources=("s", "s"), prompt_source="t")
    assert [c for c, v in rec["response_1_harm_category"].items() if v] == [H[5]]
    assert rec["response_1_severity_level"] == 1  # the lower median of 1, 3


def test_record_label_reads_a_record_back():
    rec, _ = aggregate("p", "a", "b", [A, B, C], sources=("s", "s"), prompt_source="t")
    assert record_label(rec) == Label("majority", 0, 0, (True, False), ((), (H[2], H[3])), (0, 2))
    assert record_label(rec, annotator="x").annotator == "x"


# ---- the protocol ---------------------------------------------------------------------------------
class FirstIsBetter:
    """A tiny annotator: response_0 is always more helpful and safer, both responses safe."""

    def annotate(self, pairs):
        label = Label("rule", 0, 0, (True, True), ((), ()), (0, 0))
        records = [aggregate(p, r0, r1, [label], sources=("x", "y"), prompt_source="rule")[0] for p, r0, r1 in pairs]
        return records, {"records": len(records)}


class Contradicts(FirstIsBetter):
    """Writes a record the data loader rejects: the safer response is labelled unsafe, the other safe."""

    def annotate(self, pairs):
        records, stats = super().annotate(pairs)
        return [r | {"is_response_0_safe": False} for r in records], stats


def test_the_simulated_panel_is_an_annotator_and_its_crowdworkers_are_not(world):
    assert isinstance(AnnotatorPanel(world, seed=0), Annotator)
    assert not isinstance(SimulatedAnnotator("x"), Annotator)
    assert isinstance(FirstIsBetter(), Annotator) and not isinstance(object(), Annotator)


def test_label_pairs_takes_any_annotator(world, tmp_path):
    pairs = world.response_pairs(40, seed=7)
    checked = label_pairs(AnnotatorPanel(world, seed=3), pairs)
    plain = AnnotatorPanel(world, seed=3).annotate(pairs)
    assert json.dumps(checked) == json.dumps(plain)  # the check changes nothing
    records, stats = label_pairs(FirstIsBetter(), pairs)
    assert stats == {"records": 40} and all(tuple(r) == RECORD_KEYS for r in records)
    path = tmp_path / "rule.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = pytest.importorskip("saferlhf.data.loaders").load_safety_preferences(str(path))
    assert len(loaded) == 40 and loaded[0].better_response_id == 0


def test_label_pairs_rejects_a_non_annotator_and_bad_records(world):
    pairs = world.response_pairs(3, seed=8)
    with pytest.raises(TypeError, match="not an Annotator"):
        label_pairs(SimulatedAnnotator("x"), pairs)
    with pytest.raises(ValueError, match="Contradicts wrote a bad record #0: safer_response_id"):
        label_pairs(Contradicts(), pairs)


# ---- layering -------------------------------------------------------------------------------------
def _imports(package: str) -> set[str]:
    """Every module imported anywhere (functions included) in the files of ``saferlhf.<package>``."""
    found = set()
    for path in (Path(saferlhf.__file__).parent / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
    return found


def test_no_import_cycles():
    assert not {m for m in _imports("annotate") if m.startswith("saferlhf.world")}
    forbidden = ("saferlhf.recipes", "saferlhf.pipelines", "saferlhf.eval")
    assert not {m for m in _imports("world") if m.startswith(forbidden)}
