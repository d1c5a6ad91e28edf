"""The LLM annotator's pure parts on hand-written answers: the strict JSON parser, the A/B order mapping and the
two-order rule (ties, disagreements, unsafe if either order says so), the request text, the answer cache; and
the labeller's accounting with a scripted client (re-asks, failures never turned into labels, cache hits, the
dead-judge stop and the failure-rate limit). HTTP is tested in tests/recipes/test_annotate_llm.py."""

from __future__ import annotations

import hashlib
import json

import pytest

from saferlhf.annotate import Label, label_from_dict, label_to_dict
from saferlhf.annotate.llm import (EARLY_ASKS, PROMPT_VERSION, PROMPTS, AnswerCache, LLMLabeller, cache_key, combine,
                                   parse_answer, render)
from saferlhf.data.schema import HARM_CATEGORIES, as_prompt, prompt_json
from saferlhf.endpoint import EndpointError, EndpointFailure

H = HARM_CATEGORIES
VIOLENCE, PRIVACY = "Violence, Aiding and Abetting, Incitement", "Privacy Violation"
SAFE = {"safe": True, "categories": [], "severity": 0}


def unsafe(*cats, severity=2):
    return {"safe": False, "categories": list(cats), "severity": severity}


def harm_answer(a=SAFE, b=SAFE, more="tie", **extra):
    return json.dumps({"response_a": a, "response_b": b, "more_harmless": more, **extra})


def help_answer(more, **extra):
    return json.dumps({"more_helpful": more, **extra})


PAIR = {"pair_id": "0123456789abcdef", "prompt": "how do I open a lock?", "response_0": "ZERO answer",
        "response_1": "ONE answer", "response_0_source": "m", "response_1_source": "m", "prompt_source": "t"}


# ---- the parser ------------------------------------------------------------------------------------------
def test_parse_accepts_the_documented_format():
    assert parse_answer("helpfulness", help_answer("A")) == {"more_helpful": "A"}
    spaced = '  {"reason": "B is clearer.", "more_helpful": "tie"}\n'
    assert parse_answer("helpfulness", spaced) == {"more_helpful": "tie"}
    got = parse_answer("harmlessness", harm_answer(SAFE, unsafe(PRIVACY, "violence,aiding_and_abetting,incitement",
                                                                PRIVACY, severity=3), "A", reason="B leaks"))
    # categories canonical, de-duplicated, in HARM_CATEGORIES order (violence before privacy); slugs accepted
    assert got == {"response_a": (True, (), 0), "response_b": (False, (VIOLENCE, PRIVACY), 3), "more_harmless": "A"}
    fenced = "```json\n" + help_answer("B") + "\n```"
    assert parse_answer("helpfulness", fenced) == {"more_helpful": "B"}


@pytest.mark.parametrize("task, text, error", [
    ("helpfulness", "A is better.", "answer: not a JSON object"),
    ("helpfulness", 'Sure! {"more_helpful": "A"}', "answer: not a JSON object"),  # nothing around the object
    ("helpfulness", '[{"more_helpful": "A"}]', "answer: a JSON list, not an object"),
    ("helpfulness", "{}", "more_helpful: missing"),
    ("helpfulness", '{"more_helpful": "a"}', "more_helpful: 'a' is not \"A\", \"B\" or \"tie\""),
    ("helpfulness", '{"more_helpful": "C"}', "more_helpful: 'C' is not"),
    ("helpfulness", '{"more_helpful": 1}', "more_helpful: 1 is not"),
    ("helpfulness", '{"more_helpful": "A", "confidence": 0.9}', "confidence: unknown key"),
    ("helpfulness", '{"more_helpful": "A", "reason": 3}', "reason: not a string"),
    ("harmlessness", help_answer("A"), "more_harmless: missing"),
    ("harmlessness", harm_answer(b={"safe": "no", "categories": [], "severity": 0}), "response_b.safe: 'no' is not"),
    ("harmlessness", harm_answer(b={"safe": True, "categories": []}),
     "response_b: keys ['categories', 'safe'] are not"),
    ("harmlessness", harm_answer(a=unsafe("Cybercrime")), "response_a.categories: unknown harm category 'Cybercrime'"),
    ("harmlessness", harm_answer(a=unsafe(VIOLENCE.lower())), "response_a.categories: unknown harm category"),
    ("harmlessness", harm_answer(a=unsafe(VIOLENCE, severity=4)), "response_a.severity: 4 is not 0, 1, 2 or 3"),
    ("harmlessness", harm_answer(a=unsafe(VIOLENCE, severity=True)), "response_a.severity: True is not"),
    ("harmlessness", harm_answer(a={"safe": True, "categories": [VIOLENCE], "severity": 0}),
     "response_a: safe, but with a category or a severity"),
    ("harmlessness", harm_answer(a=unsafe(severity=2)), "response_a: unsafe needs at least one category and severity"),
    ("harmlessness", harm_answer(a=unsafe(VIOLENCE, severity=0)), "response_a: unsafe needs at least one category"),
    ("harmlessness", harm_answer(a=[]), "response_a: not an object"),
])
def test_parse_rejects_anything_else_with_field_and_reason(task, text, error):
    with pytest.raises(ValueError) as e:
        parse_answer(task, text)
    assert str(e.value).startswith(error)


# ---- the request and the order mapping -------------------------------------------------------------------
def test_render_puts_response_0_first_in_order_ab_and_second_in_ba():
    for task in PROMPTS:
        ab, ba = render(task, PAIR, "ab"), render(task, PAIR, "ba")
        assert ab.index("[Response A]\nZERO answer") < ab.index("[Response B]\nONE answer")
        assert ba.index("[Response A]\nONE answer") < ba.index("[Response B]\nZERO answer")
        assert "[User request]\nhow do I open a lock?" in ab
    assert all(name in render("harmlessness", PAIR, "ab") for name in H)  # the 14 categories, verbatim
    assert "HELPFULNESS ONLY" in render("helpfulness", PAIR, "ab")
    assert "risk-neutral in all 14" in PROMPTS["harmlessness"].template
    # a prompt holding template syntax is shown as it is; a conversation as its transcript
    tricky = PAIR | {"prompt": [{"role": "user", "content": "hi $response_a"}, {"role": "assistant", "content": "yo"},
                                {"role": "user", "content": "and?"}]}
    assert "[User request]\nHuman: hi $response_a\n\nAssistant: yo\n\nHuman: and?\n\n[Response A]" in render(
        "helpfulness", tricky, "ab")


def answers(help_ab, help_ba, harm_ab, harm_ba):
    return {("helpfulness", "ab"): parse_answer("helpfulness", help_answer(help_ab)),
            ("helpfulness", "ba"): parse_answer("helpfulness", help_answer(help_ba)),
            ("harmlessness", "ab"): parse_answer("harmlessness", harm_ab),
            ("harmlessness", "ba"): parse_answer("harmlessness", harm_ba)}


def test_combine_maps_the_swapped_order_back():
    # response_1 wins helpfulness in both orders: "B" in ab, "A" in ba; response_0 (A in ab, B in ba) is unsafe
    label, d = combine(answers("B", "A", harm_answer(unsafe(VIOLENCE), SAFE, "B"),
                               harm_answer(SAFE, unsafe(VIOLENCE), "A")), "llm:m")
    assert label == Label("llm:m", 1, 1, (False, True), ((VIOLENCE,), ()), (2, 0))
    assert d == {"helpfulness": 0, "harmlessness": 0, "safety": 0}
    assert label_from_dict(label_to_dict(label)) == label  # a valid label


def test_orders_that_disagree_make_a_tie_and_are_counted():
    both_a = answers("A", "A", harm_answer(more="A"), harm_answer(more="A"))  # position bias: always "A"
    label, d = combine(both_a, "j")
    assert (label.better, label.safer) == (None, None) and d == {"helpfulness": 1, "harmlessness": 1, "safety": 0}
    one_tie = answers("A", "tie", harm_answer(more="tie"), harm_answer(more="tie"))  # a winner, then a tie
    label, d = combine(one_tie, "j")
    assert label.better is None and d["helpfulness"] == 1
    assert label.safer is None and d["harmlessness"] == 0  # two ties agree: a tie, not a disagreement


def test_a_response_is_unsafe_if_either_order_says_so():
    # ab: response_0 (A) unsafe, violence 1; response_1 (B) safe. ba: response_0 (B) unsafe, privacy 3; response_1
    # (A) unsafe, privacy 1 -> response_0 unsafe with both categories, severity 3; response_1 unsafe (ba alone)
    label, d = combine(answers("A", "B", harm_answer(unsafe(VIOLENCE, severity=1), SAFE, "B"),
                               harm_answer(unsafe(PRIVACY, severity=1), unsafe(PRIVACY, severity=3), "A")), "j")
    assert label.safe == (False, False)
    assert label.categories == ((VIOLENCE, PRIVACY), (PRIVACY,)) and label.severity == (3, 1)
    assert label.better == 0 and label.safer == 1 and d == {"helpfulness": 0, "harmlessness": 0, "safety": 1}


# ---- the cache ---------------------------------------------------------------------------------------------
def test_cache_keys_differ_by_model_task_order_and_pair():
    keys = {cache_key(m, t, o, p) for m in ("m1", "m2") for t in ("helpfulness", "harmlessness") for o in ("ab", "ba")
            for p in (PAIR, PAIR | {"response_1": "other"})}
    assert len(keys) == 16 and cache_key("m1", "helpfulness", "ab", PAIR) == cache_key("m1", "helpfulness", "ab",
                                                                                        dict(PAIR))
    expected = json.dumps(["m", PROMPT_VERSION, "helpfulness", "ab", prompt_json(PAIR["prompt"]), PAIR["response_0"],
                           PAIR["response_1"]])
    assert cache_key("m", "helpfulness", "ab", PAIR) == hashlib.sha256(expected.encode()).hexdigest()
    chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert cache_key("m", "helpfulness", "ab", PAIR | {"prompt": chat}) == cache_key(
        "m", "helpfulness", "ab", PAIR | {"prompt": as_prompt(chat)})  # a message list (JSON) or a Conversation


def test_cache_survives_a_torn_line_and_garbage(tmp_path):
    path = tmp_path / "llm_cache.jsonl"
    cache = AnswerCache(path)
    cache.put("k1", "answer one", task="helpfulness")
    cache.put("k2", "answer two")
    with open(path, "a") as f:
        f.write("not json\n[1]\n" + '{"key": "k3", "answer": "cut o')  # garbage lines, then a killed write
    again = AnswerCache(path)
    assert again.answers == {"k1": "answer one", "k2": "answer two"}
    again.put("k4", "answer four")  # the torn line is cut before appending: the new line is whole
    assert AnswerCache(path).answers == {"k1": "answer one", "k2": "answer two", "k4": "answer four"}
    assert path.read_text().endswith('"answer": "answer four"}\n')


# ---- the labeller with a scripted client -------------------------------------------------------------------
class ScriptedClient:
    """A stand-in for ``ChatClient``: ``reply(user_text, n)`` gives the answer (or raises ``EndpointError``)."""

    def __init__(self, reply, model="m"):
        self.reply, self.model, self.base_url, self.retries = reply, model, "http://judge/v1", 0
        self.asked: list[str] = []

    def complete(self, user, system=None, temperature=None):
        self.asked.append(user)
        return self.reply(user, len(self.asked) - 1)


def good(user, n=0):
    """response_0 ("ZERO ...") more helpful and unsafe, in whichever place it is shown."""
    zero_is_a = user.index("ZERO") < user.index("ONE", user.index("[Response A]"))
    if "HELPFULNESS ONLY" in user:
        return help_answer("A" if zero_is_a else "B")
    a, b = (unsafe(VIOLENCE), SAFE) if zero_is_a else (SAFE, unsafe(VIOLENCE))
    return harm_answer(a, b, "B" if zero_is_a else "A")


def test_four_requests_both_orders_and_a_cache_hit_on_the_second_labeller(tmp_path):
    client = ScriptedClient(good)
    labeller = LLMLabeller(client, cache_path=tmp_path / "c.jsonl", concurrency=1)
    assert labeller.label(dict(PAIR)) == [Label("llm:m", 0, 1, (False, True), ((VIOLENCE,), ()), (2, 0))]
    assert len(client.asked) == 4 and sum("[Response A]\nZERO" in u for u in client.asked) == 2  # both orders
    never = ScriptedClient(lambda u, n: pytest.fail("asked despite the cache"))
    again = LLMLabeller(never, cache_path=tmp_path / "c.jsonl")
    assert again.label(dict(PAIR)) == labeller.label(dict(PAIR))
    assert (again.requests, again.cached) == (0, 4)
    stats = again.stats([PAIR], {PAIR["pair_id"]: again.label(dict(PAIR))})
    assert stats["labels"] == 1 and stats["order_disagreements"] == {"pairs": 1, "helpfulness": 0, "harmlessness": 0,
                                                                     "safety": 0}
    assert LLMLabeller(ScriptedClient(good, model="other"), cache_path=tmp_path / "c.jsonl").label(dict(PAIR))
    # another model misses the cache


def test_a_parse_failure_is_asked_again_with_the_reason_then_used():
    client = ScriptedClient(lambda u, n: "I think A." if n == 0 else good(u))
    labeller = LLMLabeller(client, parse_retries=2)
    assert labeller.label(dict(PAIR))[0].better == 0
    assert len(client.asked) == 5 and labeller.requests == 5 and labeller.parse_failures == 0
    assert client.asked[1] == client.asked[0] + (
        "\n\nYour previous answer could not be used (answer: not a JSON object (Expecting value)). Answer again with "
        "the JSON object only, exactly in the format above.")


def test_a_pair_without_a_usable_answer_is_not_labelled_and_is_listed():
    client = ScriptedClient(lambda u, n: help_answer("maybe") if "HELPFULNESS" in u else good(u))
    labeller = LLMLabeller(client, parse_retries=1, max_failure_rate=1.0)
    assert labeller.label(dict(PAIR)) == []  # never a default label
    assert len(client.asked) == 2  # asked once more, then given up; the rest of the pair is not asked
    stats = labeller.stats([PAIR], {})
    assert stats["parse_failures"] == 1 and stats["labels"] == 0 and stats["requests"] == 2
    reason = "unparseable answer: more_helpful: 'maybe' is not \"A\", \"B\" or \"tie\""
    assert stats["unlabelled"] == [{"pair_id": PAIR["pair_id"], "task": "helpfulness", "order": "ab", "reason": reason}]
    assert stats["failure_reasons"] == {"unparseable answer": 1} and stats["failure_rate"] == 1.0
    labeller.finish()  # within --judge.max_failure_rate 1


def test_an_endpoint_error_is_not_asked_again_and_the_limit_stops_the_run():
    def dead(user, n):
        raise EndpointError("no answer after 1 attempt(s) (HTTP 500: oops)", "HTTP 500")

    labeller = LLMLabeller(ScriptedClient(dead), parse_retries=2, max_failure_rate=0.05)
    assert labeller.label(dict(PAIR)) == [] and labeller.requests == 1 and labeller.endpoint_failures == 1
    with pytest.raises(EndpointFailure, match=r"1 of 1 requests got no usable answer \(100% > "
                                              r"--judge.max_failure_rate 0.05\): 1x HTTP 500"):
        labeller.finish()


def test_a_dead_judge_stops_early():
    labeller = LLMLabeller(ScriptedClient(lambda u, n: "garbage"), parse_retries=0, max_failure_rate=0.05)
    pairs = [PAIR | {"pair_id": f"{k:016x}", "response_0": f"ZERO {k}"} for k in range(EARLY_ASKS + 5)]
    for p in pairs[:EARLY_ASKS - 1]:
        assert labeller.label(p) == []
    with pytest.raises(EndpointFailure, match=f"stopped early: {EARLY_ASKS} of the first {EARLY_ASKS} requests got "
                                              "no usable answer: 20x unparseable answer"):
        labeller.label(pairs[EARLY_ASKS - 1])
    lenient = LLMLabeller(ScriptedClient(lambda u, n: "garbage"), parse_retries=0, max_failure_rate=1.0)
    assert all(lenient.label(p) == [] for p in pairs)  # accepting every failure: no early stop


def test_the_docs_quote_the_prompts_verbatim():
    from pathlib import Path

    from saferlhf.annotate.llm import RETRY_NOTE
    from saferlhf.endpoint import SYSTEM

    doc = (Path(__file__).parents[3] / "docs" / "ai-feedback.md").read_text()
    for text in (*(t.template for t in PROMPTS.values()), RETRY_NOTE.strip("\n"), SYSTEM, f"`{PROMPT_VERSION}`"):
        assert text in doc
