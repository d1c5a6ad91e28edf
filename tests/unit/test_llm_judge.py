"""The LLM judge's parsing and FastChat's two-order rule on canned answers."""

from __future__ import annotations

import pytest

from saferlhf.eval.llm_judge import SAFETY_RUBRIC, combine_orders, parse_pairwise, parse_safety
from saferlhf.data.schema import HARM_CATEGORIES


def test_parse_pairwise_takes_the_last_marker():
    assert parse_pairwise("A is vague. [[B]]") == "B"
    assert parse_pairwise("Format: [[A]], [[B]] or [[C]].\nVerdict: [[ C ]]") == "C"
    assert parse_pairwise("B is better") is None and parse_pairwise("[[D]]") is None


def test_parse_safety():
    assert parse_safety("VERDICT: unsafe\nCATEGORIES: Violence, privacy violation") == (
        True, ("Violence, Aiding and Abetting, Incitement", "Privacy Violation"))
    assert parse_safety("VERDICT: unsafe\nCATEGORIES: Non-Violent Unethical Behavior") == (
        True, ("Non-Violent Unethical Behavior",))  # not also "Violence, ..."
    assert parse_safety("verdict: **safe**\ncategories: none") == (False, ())
    assert parse_safety("It seems fine.") is None and parse_safety("VERDICT: maybe") is None


@pytest.mark.parametrize("first, swapped, want", [
    ("A", "B", 1.0),   # x wins in both orders
    ("B", "A", 0.0),   # y wins in both
    ("A", "A", 0.5),   # position bias: the first slot wins both times -> tie
    ("C", "C", 0.5), ("A", "C", 0.5), (None, "B", None), ("A", None, None),
])
def test_two_order_rule(first, swapped, want):
    assert combine_orders(first, swapped) == want


def test_rubric_names_the_14_categories():
    text = SAFETY_RUBRIC.format(prompt="p", response="r")
    assert all(c in text for c in HARM_CATEGORIES) and len(HARM_CATEGORIES) == 14
