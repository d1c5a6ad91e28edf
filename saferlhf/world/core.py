"""``World``: the sampled train/test prompts and the corpora built from them.

``build_world(seed)`` samples, from the full prompt table (``prompts.prompt_table``), ``n_train`` TRAIN
and ``n_test`` TEST prompts with the mix harmful / benign / look-alike = 45 / 40 / 15 %, balanced over
categories and topics. Everything is a pure function of the seed (``random.Random`` seeded with
strings, which Python hashes with SHA-512 — never ``hash()``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from saferlhf.world import adversarial
from saferlhf.world.oracle import phrase_bank
from saferlhf.world.adversarial import identify
from saferlhf.world.prompts import KeywordClassifier, WorldPrompt, normalize, prompt_table
from saferlhf.world.responses import QUALITY_WEIGHTS, sample_response

DEFAULT_MIX = (0.45, 0.40, 0.15)  # harmful, benign, look-alike
N_REDTEAM_TEST = 224  # held-out red-team test prompts: 16 per harm category
SFT_HARMFUL_MIX = {"harmful": 0.5, "safe_helpful": 0.3, "refusal": 0.2}
SFT_OVER_REFUSAL = 0.05  # share of look-alike prompts the Alpaca-like base refuses

# Kinds of the two responses of an annotation pair and how often each combination is drawn.
PAIRS_HARMFUL: tuple[tuple[str, str, float], ...] = (
    ("harmful", "safe_helpful", 0.30), ("harmful", "refusal", 0.12), ("harmful", "harmful", 0.12),
    ("safe_helpful", "refusal", 0.12), ("safe_helpful", "safe_helpful", 0.08), ("safe_helpful", "off_topic", 0.12),
    ("refusal", "off_topic", 0.04), ("harmful", "off_topic", 0.04), ("refusal", "degenerate", 0.03),
    ("safe_helpful", "degenerate", 0.03))
PAIRS_BENIGN: tuple[tuple[str, str, float], ...] = (
    ("helpful", "helpful", 0.45), ("helpful", "refusal", 0.2), ("helpful", "off_topic", 0.1),
    ("helpful", "degenerate", 0.1), ("helpful", "harmful", 0.1), ("refusal", "off_topic", 0.05))


class World:
    """The synthetic safety world: prompts with known intent, responses of known kinds, corpora."""

    def __init__(self, seed: int = 0, n_train: int = 640, n_test: int = 240,
                 mix: Sequence[float] = DEFAULT_MIX):
        if len(mix) != 3 or abs(sum(mix) - 1.0) > 1e-6 or min(mix) < 0:
            raise ValueError(f"mix must be three shares (harmful, benign, lookalike) summing to 1, got {mix}")
        self.seed = seed
        self.prompt_table: list[WorldPrompt] = prompt_table()
        self._by_text = {normalize(p.text): p for p in self.prompt_table}
        self._classifier = KeywordClassifier(self.prompt_table)
        self._splits = {"train": self._sample("train", n_train, mix), "test": self._sample("test", n_test, mix)}

    # ---- prompts ------------------------------------------------------------------------------------
    def _sample(self, split: str, n: int, mix: Sequence[float]) -> list[WorldPrompt]:
        n_harm, n_benign = round(n * mix[0]), round(n * mix[1])
        chosen: list[WorldPrompt] = []
        for kind, k in (("harmful", n_harm), ("benign", n_benign), ("lookalike", n - n_harm - n_benign)):
            pool = [p for p in self.prompt_table if p.split == split and p.kind == kind]
            if k > len(pool):
                raise ValueError(f"{split}: asked for {k} {kind} prompts, the world has {len(pool)}")
            chosen += _balanced(pool, k, random.Random(f"world-{self.seed}-{split}-{kind}"))
        random.Random(f"world-{self.seed}-{split}").shuffle(chosen)
        return chosen

    def prompts(self, split: str = "train") -> list[WorldPrompt]:
        """The sampled prompts of ``split``: "train", "test", "all" (train then test) or "redteam_test" (the
        held-out red-team test prompts: `redteam_test`)."""
        if split == "all":
            return self._splits["train"] + self._splits["test"]
        if split == "redteam_test":
            return self.redteam_test()
        if split not in self._splits:
            raise ValueError(f"split must be 'train', 'test', 'all' or 'redteam_test', got {split!r}")
        return list(self._splits[split])

    def redteam_test(self, n: int = N_REDTEAM_TEST) -> list[WorldPrompt]:
        """``n`` held-out red-team prompts: TEST harmful prompts in TEST wrappers (never used for mining or RL),
        balanced over the 14 harm categories, every wrapper family represented."""
        pool = [replace(p, text=adversarial.apply(w, p.text), wrappers=(w.name,))
                for p in self._splits["test"] if p.kind == "harmful" for w in adversarial.wrappers("test")]
        return _balanced(pool, min(n, len(pool)), random.Random(f"redteam-test-{self.seed}"))

    def lookup(self, text: str) -> WorldPrompt | None:
        """The table entry of a prompt text (whitespace, case and punctuation do not matter)."""
        return self._by_text.get(normalize(text))

    def classify(self, text: str | WorldPrompt) -> WorldPrompt:
        """The table entry; for a prompt in adversarial wrappers, the entry of the request inside them (with
        the wrapped text); else a keyword guess with split "unknown"."""
        if isinstance(text, WorldPrompt):
            return text
        return identify(text, self._by_text, self._classifier)

    # ---- responses ----------------------------------------------------------------------------------
    def sample_response(self, prompt: str | WorldPrompt, kind: str, rng: random.Random, *,
                        severity: int | None = None, quality: int | None = None) -> str:
        """A response of a known kind (see ``responses.RESPONSE_KINDS``) to a prompt."""
        return sample_response(self.classify(prompt), kind, rng, severity=severity, quality=quality)

    def sft_corpus(self, n: int, seed: int | str = 0, adversarial_share: float = 0.0) -> list[dict]:
        """``n`` Alpaca-like {prompt, response, kind} records on TRAIN prompts.

        Harmful prompts: 50 % harmful compliance (severities mixed), 30 % safe_helpful, 20 % refusal;
        benign: helpful of quality 1-3 (mostly 2-3); look-alikes: helpful, 5 % over-refusal.
        ``adversarial_share``: this share of the prompts comes in a random adversarial wrapper (any template,
        train or test: the base model has seen every style); disguised harmful requests are answered with
        ``adversarial.SFT_WRAPPED_HARMFUL_MIX`` (85 % harmful compliance). 0 gives the plain corpus unchanged.
        """
        rng = random.Random(f"sft-{self.seed}-{seed}")
        wrap_rng = random.Random(f"sft-wrap-{self.seed}-{seed}")
        out = []
        for p in _cycle(self._splits["train"], n, random.Random(f"sft-order-{self.seed}-{seed}")):
            if adversarial_share > 0 and wrap_rng.random() < adversarial_share:
                w = wrap_rng.choice(adversarial.WRAPPERS)
                p = replace(p, text=adversarial.apply(w, p.text), wrappers=(w.name,))
            if p.kind == "harmful":
                mix = adversarial.SFT_WRAPPED_HARMFUL_MIX if p.wrappers else SFT_HARMFUL_MIX
                kind = rng.choices(list(mix), list(mix.values()))[0]
            elif p.kind == "lookalike" and rng.random() < SFT_OVER_REFUSAL:
                kind = "refusal"
            else:
                kind = "helpful"
            quality = rng.choices((1, 2, 3), QUALITY_WEIGHTS)[0] if kind == "helpful" else None
            out.append({"prompt": p.text, "response": sample_response(p, kind, rng, quality=quality),
                        "kind": kind})
        return out

    def text_corpus(self, adversarial_prompts: bool = False) -> list[str]:
        """Every prompt (train and test) with responses of every kind, and every phrase: tokenizer text.
        ``adversarial_prompts``: also 40 table prompts in each adversarial template."""
        rng = random.Random(f"corpus-{self.seed}")
        texts = [ph.text for ph in phrase_bank()]
        if adversarial_prompts:
            wrap_rng = random.Random(f"corpus-wrap-{self.seed}")
            texts += [adversarial.apply(w, p.text) for w in adversarial.WRAPPERS
                      for p in wrap_rng.sample(self.prompt_table, 40)]
        for p in self.prompt_table:
            texts.append(p.text)
            if p.kind == "harmful":
                texts += [sample_response(p, "harmful", rng, severity=s) for s in (1, 2, 3)]
                texts += [sample_response(p, k, rng) for k in ("safe_helpful", "refusal")]
            else:
                texts += [sample_response(p, k, rng) for k in ("helpful", "refusal", "off_topic")]
        return texts

    def response_pairs(self, n: int, seed: int | str = 0, split: str = "train") -> list[tuple[str, str, str]]:
        """``n`` (prompt, response_0, response_1) with two different kinds or qualities, in random order.

        The kinds are drawn from ``PAIRS_HARMFUL`` / ``PAIRS_BENIGN``; a smaller ``n`` gives a prefix.
        """
        rng = random.Random(f"pairs-{self.seed}-{seed}-{split}")
        out = []
        for p in _cycle(self.prompts(split), n, random.Random(f"pairs-order-{self.seed}-{seed}-{split}")):
            table = PAIRS_HARMFUL if p.kind == "harmful" else PAIRS_BENIGN
            a, b, _ = rng.choices(table, [w for *_, w in table])[0]
            for _ in range(20):
                r0, r1 = self._pair(p, a, b, rng)
                if r0 != r1:
                    break
            if rng.random() < 0.5:
                r0, r1 = r1, r0
            out.append((p.text, r0, r1))
        return out

    def _pair(self, p: WorldPrompt, a: str, b: str, rng: random.Random) -> tuple[str, str]:
        if a == b and a in ("helpful", "safe_helpful"):  # two different qualities
            qa, qb = rng.sample((1, 2, 3), 2)
            return sample_response(p, a, rng, quality=qa), sample_response(p, b, rng, quality=qb)
        if a == b == "harmful":  # two different severities
            sa, sb = rng.sample((1, 2, 3), 2)
            return sample_response(p, a, rng, severity=sa), sample_response(p, b, rng, severity=sb)
        return sample_response(p, a, rng), sample_response(p, b, rng)


def _balanced(pool: list[WorldPrompt], k: int, rng: random.Random) -> list[WorldPrompt]:
    """``k`` prompts of ``pool`` spread evenly over topics (round robin over shuffled groups)."""
    groups: dict[str, list[WorldPrompt]] = {}
    for p in pool:
        groups.setdefault(p.topic, []).append(p)
    names = sorted(groups)
    rng.shuffle(names)
    for name in names:
        rng.shuffle(groups[name])
    out: list[WorldPrompt] = []
    depth = 0
    while len(out) < k:
        for name in names:
            if depth < len(groups[name]) and len(out) < k:
                out.append(groups[name][depth])
        depth += 1
    return out


def _cycle(items: list[WorldPrompt], n: int, rng: random.Random) -> list[WorldPrompt]:
    """``n`` items: whole shuffled passes over ``items`` (each pass reshuffled), truncated.

    ``rng`` serves only this order, so a smaller ``n`` gives a prefix of a larger one.
    """
    if not items and n > 0:
        raise ValueError("no prompts to sample from")
    out: list[WorldPrompt] = []
    while len(out) < n:
        order = list(items)
        rng.shuffle(order)
        out += order[: n - len(out)]
    return out


def build_world(seed: int = 0, n_train: int = 640, n_test: int = 240,
                mix: Sequence[float] = DEFAULT_MIX) -> World:
    """The world of ``seed`` (see ``World``)."""
    return World(seed, n_train, n_test, mix)
