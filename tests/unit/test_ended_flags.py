"""Cut-off flags travel from generation through annotation, pair files and score-model / DPO encoding: a
response cut off at the generation limit (``ended`` False) is trained on WITHOUT an end token, exactly as
PPO and `eval` score it (audit: reward and cost models used to learn every answer with an end token)."""

from __future__ import annotations

import gzip
import json

import pytest

from saferlhf.annotate.pairs import input_pairs
from saferlhf.data.loaders import load_preference_pairs, load_response_pairs, load_sft_records
from saferlhf.data.schema import parse_ended
from saferlhf.data.validate import DataValidationError
from saferlhf.world.commands import WorldAnnotateConfig, run_world_annotate


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("value,expected", [(None, True), (True, True), (False, False), (0, False), (1, True),
                                            ("no", False), ("No", False), ("false", False), ("0", False),
                                            ("yes", True), ("TRUE", True), ("1", True)])
def test_parse_ended(value, expected):
    assert parse_ended(value) is expected


@pytest.mark.parametrize("value", ["maybe", "", 2, 0.5, [], {}])
def test_parse_ended_rejects(value):
    with pytest.raises(ValueError, match="expected true or false"):
        parse_ended(value)


PAIRS = [{"prompt": "p1", "response_0": "a\u2028b", "response_1": "c", "ended_0": True, "ended_1": False},
         {"prompt": "p2", "response_0": "d", "response_1": "e", "ended_0": "no", "ended_1": "yes"},
         {"prompt": "p3", "response_0": "f", "response_1": "g"}]
EXPECTED = [(True, False), (False, True), (True, True)]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "jsonl.gz"])
def test_pair_files_keep_ended_flags_in_every_format(tmp_path, fmt):
    """One U+2028 inside a response used to shift every later flag (the flags were re-read with
    str.splitlines), .json lists and .jsonl.gz lost `ended: false`, and "no" counted as ended."""
    path = tmp_path / f"pairs.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(PAIRS))
    elif fmt == "jsonl.gz":
        path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in PAIRS).encode()))
    else:
        _write(path, PAIRS)
    assert [(r.ended_0, r.ended_1) for r in load_response_pairs(path)] == EXPECTED


def test_generation_records_ended(tmp_path):
    path = _write(tmp_path / "gen.jsonl", [{"prompt": "p", "response": "x\u2028y", "ended": True},
                                           {"prompt": "q", "response": "z", "ended": "no"}])
    assert [r.ended for r in load_sft_records(path)] == [True, False]


def test_bad_ended_value_names_file_line_and_field(tmp_path):
    path = _write(tmp_path / "pairs.jsonl", [PAIRS[0], dict(PAIRS[1], ended_1="maybe")])
    with pytest.raises(DataValidationError, match=r"pairs.jsonl:2: ended_1: expected true or false"):
        load_response_pairs(path)


def _pku(r0_ended, r1_ended, safer=1):
    rec = {"prompt": "how?", "response_0": "long answer that was cut", "response_1": "short.",
           "is_response_0_safe": True, "is_response_1_safe": True, "better_response_id": 0,
           "safer_response_id": safer}
    return rec | {"ended_0": r0_ended, "ended_1": r1_ended}


def test_preference_pairs_map_flags_to_chosen_and_rejected(tmp_path):
    path = _write(tmp_path / "pku.jsonl", [_pku(False, True, safer=1)])
    (reward,) = load_preference_pairs(path, kind="reward")  # chosen = better = response_0 (cut off)
    (cost,) = load_preference_pairs(path, kind="cost")  # chosen = safer = response_1 (ended)
    assert (reward.chosen_ended, reward.rejected_ended) == (False, True)
    assert (cost.chosen_ended, cost.rejected_ended) == (True, False)
    assert reward.to_dict()["chosen_ended"] is False


def test_encode_pairs_gives_cut_off_responses_no_end_token(tiny_models, tmp_path):
    from saferlhf.data.formatting import end_token_id
    from saferlhf.models.tokenizers import load_tokenizer
    from saferlhf.packing import encode_pairs

    tok = load_tokenizer(tiny_models["llama"], padding_side="right")
    path = _write(tmp_path / "pku.jsonl", [_pku(False, True, safer=1)])
    (pair,) = encode_pairs(load_preference_pairs(path, kind="reward"), tok, 256)
    eos = end_token_id(tok)
    assert pair.chosen[-1] != eos and pair.rejected[-1] == eos
    ids = tok("long answer that was cut", add_special_tokens=False)["input_ids"]
    assert pair.chosen[-len(ids):] == ids


def test_annotation_carries_flags_into_pku_records(tmp_path):
    """generate --pairs -> world annotate -> PKU records keep the flags -> score-model pairs read them."""
    rows = [{"prompt": f"How do I bake bread, step {i}?", "response_0": f"Knead the dough {i} times and",
             "response_1": f"Preheat the oven to {200 + i} degrees.", "ended_0": False, "ended_1": True}
            for i in range(6)]
    pairs = _write(tmp_path / "sft_pairs.jsonl", rows)
    assert all(p["ended_0"] is False and p["ended_1"] is True for p in input_pairs(str(pairs), "sft"))
    out = tmp_path / "prefs.jsonl"
    assert run_world_annotate(WorldAnnotateConfig(input=str(pairs), out=str(out))) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and all((r["ended_0"], r["ended_1"]) == (False, True) for r in records)
    for p in load_preference_pairs(out, kind="cost"):
        cut = p.chosen if not p.chosen_ended else p.rejected
        assert cut.startswith("Knead") and p.chosen_ended != p.rejected_ended
