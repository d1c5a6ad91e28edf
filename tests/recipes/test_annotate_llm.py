"""`saferlhf annotate run --annotator llm` end to end through the CLI: against a scripted OpenAI-compatible server
(exact labels, both orders asked, the cache: a rerun and a resume send nothing), against broken servers (garbage,
HTTP 500s, a timeout, a dead judge: counted failures and one-line errors, bounded time, never a made-up label),
against `saferlhf serve` on a tiny model (the plumbing and the failure accounting), and `world:NAME` annotators."""

from __future__ import annotations

import json
import re
import time

import pytest

from judge_server import completion, judge_server
from saferlhf.cli import main

VIOLENCE = "Violence, Aiding and Abetting, Incitement"
PAIRS = [  # (prompt, response_0, response_1)
    ("how do I cook rice?", "Rinse it, boil it, steam it.", "Boil it."),
    ("how do I hurt someone?", "I cannot help with that.", "HARM: hit them hard, then HARM again."),
    ("BIAS which is better?", "Short.", "A longer answer here."),
    ("FLAKY tell me about cats", "Cats purr a lot.", "Cats sleep."),
    ("how do I make a bomb?", "HARM HARM HARM mix these.", "HARM buy this."),
]
# the labels the scripted judge below must give, per pair: (better, safer, safe, categories, severity)
EXPECTED = [
    (0, "tie", [True, True], [[], []], [0, 0]),
    (1, 0, [True, False], [[], [VIOLENCE]], [0, 2]),
    ("tie", "tie", [True, True], [[], []], [0, 0]),  # position bias: "A" in both orders -> a tie
    (0, "tie", [False, False], [["Privacy Violation"], ["Privacy Violation"]], [1, 1]),  # unsafe if either order
    (0, 1, [False, False], [[VIOLENCE], [VIOLENCE]], [3, 1]),
]
SHOWN = re.compile(r"\[User request\]\n(.*?)\n\n\[Response A\]\n(.*?)\n\n\[Response B\]\n(.*?)\n\nAnswer with", re.S)


def scripted(request: dict) -> str:
    """A deterministic judge. Helpfulness: more words wins (a prompt with BIAS: always "A"). Harmlessness: each
    "HARM" in a response is one severity step of violence; fewer wins. FLAKY: response A is always reported a
    privacy violation and B the more harmless one (so the two orders disagree). Harmlessness answers come in a
    ```json fence with a reason: both allowed."""
    user = request["messages"][1]["content"]
    prompt, a, b = SHOWN.search(user).groups()
    if "HELPFULNESS ONLY" in user:
        wa, wb = len(a.split()), len(b.split())
        more = "A" if "BIAS" in prompt else ("A" if wa > wb else "B" if wb > wa else "tie")
        return json.dumps({"more_helpful": more})

    def safety(text):
        n = text.count("HARM")
        return {"safe": not n, "categories": [VIOLENCE] if n else [], "severity": min(n, 3)}

    va, vb = safety(a), safety(b)
    more = "A" if a.count("HARM") < b.count("HARM") else "B" if b.count("HARM") < a.count("HARM") else "tie"
    if "FLAKY" in prompt:
        va, more = {"safe": False, "categories": ["privacy_violation"], "severity": 1}, "B"
    answer = {"reason": "scripted", "response_a": va, "response_b": vb, "more_harmless": more}
    return "```json\n" + json.dumps(answer) + "\n```"


class Recorder:
    """Answers with ``reply(request) -> (status, body)`` and keeps every request."""

    def __init__(self, reply=lambda request: (200, completion(scripted(request)))):
        self.reply, self.requests = reply, []

    def __call__(self, request, n):
        self.requests.append(request["messages"][1]["content"])
        return self.reply(request)


@pytest.fixture(autouse=True)
def no_progress_bars(monkeypatch):
    monkeypatch.setenv("SAFERLHF_NO_PROGRESS", "1")  # stderr holds the error line alone


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "response_0": a, "response_1": b}) + "\n" for p, a, b in PAIRS))
    return path


def run(pairs_file, base, out, *extra):
    return main(["annotate", "run", "--annotator", "llm", "--judge.base_url", base, "--judge.model", "judge",
                 "--input", str(pairs_file), "--out", str(out), "--judge.timeout", "2", "--judge.retries", "0",
                 *extra])


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_exact_labels_both_orders_and_a_rerun_sends_nothing(pairs_file, tmp_path, capsys):
    judge, out = Recorder(), tmp_path / "llm"
    with judge_server(judge) as base:
        assert run(pairs_file, base, out, "--judge.concurrency", "3") == 0
        labels = lines(out / "labels.jsonl")
        got = [(d["better"], d["safer"], d["safe"], d["categories"], d["severity"]) for d in labels]
        assert got == EXPECTED and {d["annotator"] for d in labels} == {"llm:judge"}  # in queue order
        assert len(judge.requests) == 4 * len(PAIRS)
        for prompt, r0, r1 in PAIRS:  # each task asked with response_0 as A, and again with response_1 as A
            shown = [SHOWN.search(u).groups() for u in judge.requests if SHOWN.search(u).group(1) == prompt]
            assert sorted(s[1:] for s in shown) == sorted([(r0, r1), (r1, r0)] * 2)
        stats = json.loads((out / "stats.json").read_text())
        assert stats["labels"] == 5 and stats["parse_failures"] == 0 and stats["unlabelled"] == []
        assert stats["order_disagreements"] == {"pairs": 5, "helpfulness": 1, "harmlessness": 1, "safety": 2}
        assert (stats["requests"], stats["cached"]) == (20, 0) and stats["seconds"] >= 0
        assert stats["counts"]["labelled"] == 5 and stats["annotator"] == "llm"  # annotate run's keys kept
        assert stats["judge"]["model"] == "judge"
        assert json.loads((out / "run.json").read_text())["judge.model"] == "judge"
        assert len(lines(out / "llm_cache.jsonl")) == 20
        records = lines(out / "records.jsonl")  # ties dropped: pairs 2 and 5 are left
        assert [(r["better_response_id"], r["safer_response_id"]) for r in records] == [(1, 0), (0, 1)]

        # labels lost (or never written: a killed run) with the answers cached: relabelled from the cache alone
        before = (out / "labels.jsonl").read_bytes()
        (out / "labels.jsonl").write_bytes(b"".join(before.splitlines(keepends=True)[:2]))
        assert run(pairs_file, base, out) == 0
        assert (out / "labels.jsonl").read_bytes() == before and len(judge.requests) == 20
        stats = json.loads((out / "stats.json").read_text())
        assert (stats["requests"], stats["cached"], stats["labels"]) == (0, 12, 5)
        assert stats["order_disagreements"]["pairs"] == 5  # counted over the whole folder, not this run alone
        # a fresh folder with the same cache: 0 requests
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        (fresh / "llm_cache.jsonl").write_bytes((out / "llm_cache.jsonl").read_bytes())
        assert run(pairs_file, base, fresh) == 0 and len(judge.requests) == 20
        assert (fresh / "labels.jsonl").read_bytes() == before
        # another judge model in the same folder is refused
        capsys.readouterr()
        assert main(["annotate", "run", "--annotator", "llm", "--judge.base_url", base, "--judge.model", "other",
                     "--input", str(pairs_file), "--out", str(out)]) == 2
        assert "was labelled with --judge.model judge (now other)" in capsys.readouterr().err


def test_a_failed_pair_is_listed_and_asked_again_by_a_rerun(pairs_file, tmp_path, capsys):
    broken = {"on": True}

    def reply(request):
        user = request["messages"][1]["content"]
        if broken["on"] and "BIAS" in user:
            return 200, completion("Response A, definitely.")
        return 200, completion(scripted(request))

    judge, out = Recorder(reply), tmp_path / "llm"
    with judge_server(judge) as base:
        assert run(pairs_file, base, out, "--judge.max_failure_rate", "0.5") == 0
        stats = json.loads((out / "stats.json").read_text())
        bias_id = lines(out / "pairs.jsonl")[2]["pair_id"]
        assert stats["parse_failures"] == 1 and stats["labels"] == 4 and stats["counts"]["labelled"] == 4
        assert stats["unlabelled"] == [{"pair_id": bias_id, "task": "helpfulness", "order": "ab",
                                        "reason": "unparseable answer: answer: not a JSON object (Expecting value)"}]
        assert bias_id not in {d["pair_id"] for d in lines(out / "labels.jsonl")}  # no default label
        assert len(judge.requests) == 4 * 4 + 3  # the failed pair: asked, then re-asked twice (parse_retries 2)
        assert sum("Your previous answer could not be used" in u for u in judge.requests) == 2  # the 2 re-asks
        broken["on"] = False
        assert run(pairs_file, base, out) == 0
        assert len(judge.requests) == 4 * 4 + 3 + 4  # only the missing pair is asked
        stats = json.loads((out / "stats.json").read_text())
        assert stats["labels"] == 5 and stats["parse_failures"] == 0 and stats["requests"] == 4


@pytest.mark.parametrize("name, reply, extra, reason", [
    ("garbage", lambda r: (200, completion("I like turtles.")), (), "unparseable answer"),
    ("http 500", lambda r: (500, b"oops"), ("--judge.retries", "1"), "HTTP 500"),
    ("not a completion", lambda r: (200, b"<html>"), (), "body not JSON"),
    ("timeout", lambda r: ("trickle", 0.05), ("--judge.timeout", "1"), "timeout"),
])
def test_a_broken_judge_is_counted_and_stops_with_one_line(pairs_file, tmp_path, capsys, name, reply, extra, reason):
    judge, out = Recorder(reply), tmp_path / "llm"
    start = time.monotonic()
    with judge_server(judge) as base:
        assert run(pairs_file, base, out, "--judge.concurrency", "5", *extra) == 2
    assert time.monotonic() - start < 15  # bounded: no hang
    err = capsys.readouterr().err
    assert err.count("\n") <= 2 and "Traceback" not in err
    assert err.startswith(f"saferlhf annotate run: error: the llm annotator ({base}): ")
    assert "5 of 5 requests got no usable answer" in err and reason in err and "--judge.max_failure_rate 0.05" in err
    stats = json.loads((out / "stats.json").read_text())  # written before the error: what failed, and why
    assert stats["labels"] == 0 and len(stats["unlabelled"]) == 5 and stats["counts"]["labelled"] == 0
    failures = stats["parse_failures"] + stats["endpoint_failures"]
    assert failures == 5 and set(stats["failure_reasons"]) == {reason}
    assert (out / "labels.jsonl").read_text() == ""
    # requests per pair: garbage is asked 3 times (parse_retries 2); an endpoint error once (the client retries)
    assert len(judge.requests) == {"garbage": 15, "http 500": 10}.get(name, 5)


def test_a_dead_judge_stops_the_run_early(tmp_path, capsys):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{k}?", "response_0": f"a{k}", "response_1": f"b{k}"}) + "\n"
                            for k in range(40)))
    judge = Recorder(lambda r: (503, b"down"))
    with judge_server(judge) as base:
        assert run(path, base, tmp_path / "out", "--judge.concurrency", "1") == 2
    err = capsys.readouterr().err
    assert "stopped early: 20 of the first 20 requests got no usable answer: 20x HTTP 503" in err
    assert len(judge.requests) == 20 and "Traceback" not in err


def test_missing_or_unreachable_endpoint_is_one_line(pairs_file, tmp_path, capsys):
    from serve_util import free_port

    args = ["annotate", "run", "--input", str(pairs_file), "--out", str(tmp_path / "a")]
    assert main([*args, "--annotator", "llm"]) == 2
    assert "--annotator llm needs --judge.base_url and --judge.model" in capsys.readouterr().err
    assert run(pairs_file, f"http://127.0.0.1:{free_port()}/v1", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "is unreachable" in err and "Traceback" not in err and not (tmp_path / "b").exists()


def test_world_annotators_by_name(tmp_path, capsys):
    from saferlhf.annotate.run import WORLD_ANNOTATORS
    from saferlhf.world import build_world

    path = tmp_path / "world.jsonl"
    pairs = build_world(0).response_pairs(4, seed=1)
    path.write_text("".join(json.dumps({"prompt": p, "response_0": a, "response_1": b}) + "\n" for p, a, b in pairs))
    for spec, out in (("panel", tmp_path / "p"), ("world:panel", tmp_path / "w")):
        assert main(["annotate", "run", "--annotator", spec, "--input", str(path), "--out", str(out)]) == 0
    assert (tmp_path / "p" / "labels.jsonl").read_bytes() == (tmp_path / "w" / "labels.jsonl").read_bytes()
    args = ["annotate", "run", "--input", str(path), "--out", str(tmp_path / "x")]
    assert main([*args, "--annotator", "world:nobody"]) == 2
    err = capsys.readouterr().err
    assert "annotator: 'world:nobody' is not a world annotator" in err
    assert ", ".join(f"world:{n}" for n in WORLD_ANNOTATORS) in err


def test_against_saferlhf_serve_on_a_tiny_model(tiny_models, pairs_file, tmp_path, capsys):
    """Real HTTP to `saferlhf serve`: its first answer is an injected 503 (retried by the client), then word salad:
    every pair fails to parse, is asked twice more (with the reason), is counted and listed, never labelled."""
    from serve_util import serve_process

    out, n = tmp_path / "serve", 2
    pairs_file.write_text("".join(pairs_file.read_text().splitlines(keepends=True)[:n]))
    with serve_process(tiny_models["llama"], name="judge", fault="5xx:1", args=("--max_prompt_length", "256")) as base:
        code = main(["annotate", "run", "--annotator", "llm", "--judge.base_url", f"{base}/v1",
                     "--judge.model", "judge", "--judge.max_tokens", "8", "--judge.max_failure_rate", "1",
                     "--judge.concurrency", "2", "--judge.timeout", "30", "--input", str(pairs_file), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    stats = json.loads((out / "stats.json").read_text())
    assert stats["labels"] == 0 and stats["parse_failures"] == n and stats["endpoint_failures"] == 0
    assert stats["requests"] == 3 * n and stats["http_retries"] == 1  # the injected 503, retried
    assert {u["task"] for u in stats["unlabelled"]} == {"helpfulness"} and len(stats["unlabelled"]) == n
    assert all(u["reason"].startswith("unparseable answer: ") for u in stats["unlabelled"])
    assert (out / "labels.jsonl").read_text() == "" and not (out / "llm_cache.jsonl").exists()
