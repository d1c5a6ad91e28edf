"""The world's panel through the labelling seam: ``label_each`` gives exactly the labels ``annotate`` aggregates,
and ``PanelLabeller`` labels a pair the same wherever it sits in a queue."""

from __future__ import annotations

import json

from saferlhf.annotate import Labeller, aggregate
from saferlhf.annotate.pairs import pair_id
from saferlhf.world.annotators import PROMPT_SOURCE, AnnotatorPanel, PanelLabeller, panel_labeller


def test_label_each_is_what_annotate_aggregates(world):
    pairs = world.response_pairs(40, seed=11)
    pairs.append((pairs[0][0], "same answer", "same answer "))  # identical after strip: no labels, skipped
    records, stats = AnnotatorPanel(world, seed=4).annotate(pairs)
    each = AnnotatorPanel(world, seed=4).label_each(pairs)
    assert each[-1] == [] and stats["counts"]["skipped_identical"] == 1
    again = [aggregate(p, r0, r1, labels, sources=("world", "world"), prompt_source=PROMPT_SOURCE)[0]
             for (p, r0, r1), labels in zip(pairs, each) if labels]
    assert json.dumps(again) == json.dumps(records)
    assert all(len(labels) == 3 and labels[0].annotator != labels[1].annotator for labels in each[:-1])


def test_panel_labeller_keys_draws_by_pair_id(world):
    labeller = panel_labeller(seed=0, overlap=2)
    assert isinstance(labeller, PanelLabeller) and isinstance(labeller, Labeller)
    rows = [{"pair_id": pair_id(p, a, b), "prompt": p, "response_0": a, "response_1": b}
            for p, a, b in world.response_pairs(6, seed=2)]
    forward = [labeller.label(r) for r in rows]
    backward = [panel_labeller(seed=0, overlap=2).label(r) for r in reversed(rows)][::-1]
    assert forward == backward and all(len(labels) == 2 for labels in forward)
    other_seed = [panel_labeller(seed=1, overlap=2).label(r) for r in rows]
    assert other_seed != forward
