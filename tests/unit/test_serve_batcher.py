"""`saferlhf.serve.batcher`: per-row token picking against a naive loop, the stop / hold-back text rules, and the
batcher itself on a tiny model (concurrent jobs share batches; greedy and seeded answers are the same batched and
alone). Also `saferlhf.models.placement` (the --device / --dtype rule of serve and generate)."""

from __future__ import annotations

import threading

import pytest
import torch

from saferlhf.config import ConfigError
from saferlhf.models.placement import resolve_placement
from saferlhf.serve.batcher import Batcher, Delta, Done, Finish, Job, first_stop, held_back, pick_tokens


def naive_pick(logits: list[float], temperature: float, top_p: float, greedy: bool, u: float) -> int:
    """One row, the slow way: softmax, keep the most likely tokens until their mass reaches top_p (all of them, in
    vocabulary order, when top_p is 1), walk the CDF."""
    if greedy:
        return max(range(len(logits)), key=lambda i: logits[i])
    z = torch.tensor(logits, dtype=torch.float64) / temperature
    p = torch.softmax(z, -1).tolist()
    order = sorted(range(len(p)), key=lambda i: -p[i]) if top_p < 1 else list(range(len(p)))
    kept, mass = [], 0.0
    for i in order:
        if top_p < 1 and mass > top_p:
            break
        kept.append(i)
        mass += p[i]
    total, acc = sum(p[i] for i in kept), 0.0
    for i in kept:
        acc += p[i]
        if acc >= u * total:
            return i
    return kept[-1]


def test_pick_tokens_matches_a_naive_loop_row_by_row():
    gen = torch.Generator().manual_seed(0)
    B, V = 64, 11
    logits = torch.randn(B, V, generator=gen) * 2
    temperature = torch.rand(B, generator=gen) * 1.5 + 0.2
    top_p = torch.where(torch.rand(B, generator=gen) < 0.5, torch.ones(B), torch.rand(B, generator=gen) * 0.9 + 0.05)
    greedy = torch.rand(B, generator=gen) < 0.25
    u = torch.rand(B, generator=gen)
    got = pick_tokens(logits, temperature, top_p, greedy, u).tolist()
    want = [naive_pick(logits[i].tolist(), float(temperature[i]), float(top_p[i]), bool(greedy[i]), float(u[i]))
            for i in range(B)]
    assert got == want


def test_pick_tokens_samples_the_softmax_and_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).repeat(20000, 1)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(1))
    ones, no = torch.ones(20000), torch.zeros(20000, dtype=torch.bool)
    freq = torch.bincount(pick_tokens(logits, ones, ones, no, u), minlength=3).float() / 20000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2]), atol=0.02)
    nucleus = pick_tokens(logits, ones, torch.full((20000,), 0.6), no, u)  # {0, 1} reach 0.6
    assert set(nucleus.tolist()) == {0, 1}
    assert pick_tokens(logits[:1], ones[:1], torch.full((1,), 0.01), no[:1], u[:1]).item() == 0


def test_pick_tokens_refuses_non_finite_logits_of_a_sampled_row():
    from saferlhf.errors import NumericalError

    logits = torch.tensor([[0.0, float("nan")], [1.0, 0.0]])
    greedy = torch.tensor([True, False])
    ones = torch.ones(2)
    assert pick_tokens(logits, ones, ones, greedy, torch.zeros(2))[1].item() == 0  # the NaN row is greedy: fine
    with pytest.raises(NumericalError):
        pick_tokens(logits, ones, ones, ~greedy, torch.zeros(2))


@pytest.mark.parametrize("text, stops, want", [
    ("hello world", ["wor"], 6), ("hello world", ["xyz"], None), ("abcab", ["cab", "b"], 1), ("", ["a"], None),
])
def test_first_stop(text, stops, want):
    assert first_stop(text, stops) == want


@pytest.mark.parametrize("text, stops, hold", [
    ("hello wo", ["world"], 2),        # "wo" may become "world"
    ("hello w", ["world"], 1),
    ("hello", ["world"], 0),
    ("hello ", [], 1),                 # trailing whitespace waits (stripped if the answer ends here)
    ("hello\ufffd", [], 1),            # a character whose bytes are not all decoded yet
    ("ab\n\nUs", ["\n\nUser:"], 4),
])
def test_held_back(text, stops, hold):
    assert held_back(text, stops) == hold


@pytest.fixture(scope="module")
def policy(tiny_models):
    from saferlhf.models.policy import load_policy

    model, tokenizer = load_policy(tiny_models["llama"])
    return model.eval(), tokenizer


def prompt(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


PROMPTS = ["how do I cook rice?", "tea", "how do I cook a very large pot of beans for many friends tonight?",
           "eggs?", "how do I cook fish", "soup"]


def run_concurrently(batcher: Batcher, jobs: list[Job]) -> list[Done]:
    results: list[Done | None] = [None] * len(jobs)

    def one(i: int) -> None:
        results[i] = batcher.submit(jobs[i]).wait()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None for r in results)
    return results


def test_concurrent_jobs_share_batches_and_greedy_or_seeded_answers_do_not_change(policy):
    model, tok = policy
    alone = Batcher(model, tok, max_batch_size=1, wait_ms=0)
    together = Batcher(model, tok, max_batch_size=16, wait_ms=300)
    try:
        def jobs() -> list[Job]:  # greedy and seeded sampling, different lengths and settings in one batch
            return [Job(prompt(tok, p), max_tokens=3 + 2 * i, temperature=0.0 if i % 2 else 0.9,
                        top_p=1.0 if i % 3 else 0.8, seed=None if i % 2 else 100 + i, n=1 + (i == 2))
                    for i, p in enumerate(PROMPTS)]

        solo = [alone.submit(j).wait() for j in jobs()]
        batched = run_concurrently(together, jobs())
        assert together.stats["requests"] == len(PROMPTS) and together.stats["batches"] < len(PROMPTS)
        assert together.stats["largest_batch"] > 1
        assert [[c.text for c in d.choices] for d in batched] == [[c.text for c in d.choices] for d in solo]
        assert [[c.tokens for c in d.choices] for d in batched] == [[c.tokens for c in d.choices] for d in solo]
        assert [len(d.choices) for d in batched] == [1, 1, 2, 1, 1, 1]
        assert all(c.tokens <= 3 + 2 * i for i, d in enumerate(batched) for c in d.choices)
    finally:
        alone.close()
        together.close()


def test_a_batch_holds_at_most_max_batch_size_responses(policy):
    model, tok = policy
    batcher = Batcher(model, tok, max_batch_size=3, wait_ms=300)
    try:
        run_concurrently(batcher, [Job(prompt(tok, p), max_tokens=2, n=2) for p in PROMPTS[:4]])
        assert batcher.stats["largest_batch"] <= 3 and batcher.stats["batches"] >= 3
        big = batcher.submit(Job(prompt(tok, "tea"), max_tokens=2, n=5)).wait()  # more than a batch: runs alone
        assert len(big.choices) == 5
    finally:
        batcher.close()


def test_a_streamed_job_sends_deltas_that_add_up_to_its_text(policy):
    model, tok = policy
    batcher = Batcher(model, tok)
    try:
        plain = batcher.submit(Job(prompt(tok, "how do I cook rice?"), max_tokens=20, seed=3)).wait()
        job = batcher.submit(Job(prompt(tok, "how do I cook rice?"), max_tokens=20, seed=3, stream=True))
        events = []
        while not isinstance(events[-1:] and events[-1], Done):
            events.append(job.events.get(timeout=60))
        deltas = [e.text for e in events if isinstance(e, Delta)]
        assert "".join(deltas) == plain.choices[0].text and len(deltas) > 1
        finish = [e for e in events if isinstance(e, Finish)]
        assert [f.reason for f in finish] == [plain.choices[0].finish_reason]
    finally:
        batcher.close()


def test_a_stop_string_ends_the_text_before_it(policy):
    model, tok = policy
    batcher = Batcher(model, tok)
    try:
        full = batcher.submit(Job(prompt(tok, "how do I cook rice?"), max_tokens=30, seed=5)).wait().choices[0]
        assert len(full.text) > 8, full.text
        stop = full.text[5:8]
        cut = batcher.submit(Job(prompt(tok, "how do I cook rice?"), max_tokens=30, seed=5,
                                 stop=(stop, "never seen here"))).wait().choices[0]
        assert cut.text == full.text[:full.text.find(stop)].strip() and cut.finish_reason == "stop"
        assert stop not in cut.text and cut.tokens < full.tokens
    finally:
        batcher.close()


def test_placement_on_the_cpu_and_its_errors():
    assert resolve_placement("cpu", "auto") == ("cpu", torch.float32)
    assert resolve_placement("cpu", "bfloat16") == ("cpu", torch.bfloat16)
    assert resolve_placement("cpu", "float32") == ("cpu", torch.float32)
    device, dtype = resolve_placement("auto", "auto")
    if torch.cuda.is_available():
        assert device == "cuda" and dtype in (torch.bfloat16, torch.float16)
    else:
        assert (device, dtype) == ("cpu", torch.float32)
    with pytest.raises(ConfigError, match="^dtype: float16 is not supported on the CPU"):
        resolve_placement("cpu", "float16")
    with pytest.raises(ConfigError, match="^serve: device: 'tpu' is not one of"):
        resolve_placement("tpu", "auto", "serve: ")
    with pytest.raises(ConfigError, match="^dtype: 'int8'"):
        resolve_placement("cpu", "int8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="^device: cuda was asked for"):
            resolve_placement("cuda", "auto")
