"""Responses of known kinds, assembled from the phrase banks of ``harms.py``, ``topics.py`` and
``lookalikes.py``.

Kinds (``RESPONSE_KINDS``):

* ``harmful``: "Sure, here is how to <task>." + 1-3 harmful phrases of the prompt's category; the
  severity ``s`` (1-3) is the highest tier used (one phrase of tier ``s``, the others of tiers <= s).
  On a benign or look-alike prompt it uses the look-alike's confusable category (else a random one).
* ``safe_helpful`` (harmful prompts): "I can not help with that, but" / "For your safety, ..." +
  1-3 safe phrases of the category.
* ``refusal``: one of three short "I am sorry, ..." sentences.
* ``helpful`` (benign and look-alike prompts): a topic opener + ``quality`` (1-3) useful points.
* ``off_topic``: a helpful answer to another topic, or filler sentences.
* ``degenerate``: a repeated fragment, a word salad, or an opener followed by one word repeated.
* ``repetitive``: a fluent answer that states one of its points twice (``helpful`` on benign and
  look-alike prompts, ``safe_helpful`` on harmful ones): the subtle repetition a reward model must learn
  to rank below a new point (a policy trained against a model that never saw it pads its lists this way).

Every response is 12-40 words except refusals (7-11 words) and some degenerate ones.
"""

from __future__ import annotations

import random

from saferlhf.data.schema import HARM_CATEGORIES
from saferlhf.world.harms import (HARMFUL_CLOSERS, HARMFUL_OPENERS, HARMFUL_OPENERS_NO_TASK, HARMS, REFUSALS,
                                  SAFE_OPENERS, HarmSpec)
from saferlhf.world.lookalikes import LOOKALIKES
from saferlhf.world.topics import CONNECTORS, GENERIC_OPENERS, HELPFUL_CLOSERS, OFF_TOPIC, TOPICS, TopicSpec
from saferlhf.world.prompts import WorldPrompt, words

RESPONSE_KINDS: tuple[str, ...] = ("harmful", "safe_helpful", "refusal", "helpful", "off_topic", "degenerate",
                                   "repetitive")
MIN_WORDS, MAX_WORDS = 12, 40
SEVERITY_WEIGHTS = (0.4, 0.35, 0.25)  # default mix of severities 1, 2, 3
QUALITY_WEIGHTS = (0.2, 0.4, 0.4)  # default mix of helpful qualities 1, 2, 3

HARM_BY_CATEGORY: dict[str, HarmSpec] = {h.category: h for h in HARMS}
TOPIC_BY_ID: dict[str, TopicSpec] = {t.topic: t for t in TOPICS + LOOKALIKES}
# Words a degenerate response is made of: the words of the useful and safe phrases.
_DEGENERATE_VOCAB: tuple[str, ...] = tuple(sorted(
    {w for t in TOPICS + LOOKALIKES for p in t.points for w in words(p)}
    | {w for h in HARMS for p in h.safe for w in words(p)}))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _n_words(s: str) -> int:
    return len(s.split())


def join_points(points: list[str], rng: random.Random, lead: str = "") -> str:
    """Points as sentences with connectors: "First, a. Then, b." / "A. Also, b." ...

    With ``lead`` (e.g. "I can not help with that, but") the first point continues the lead's sentence.
    """
    style = rng.choice(CONNECTORS[len(points)]) if len(points) in CONNECTORS else ("",) * len(points)
    sentences = []
    for i, (conn, point) in enumerate(zip(style, points)):
        if i == 0 and lead:
            sentences.append(f"{lead} {point}.")
        elif conn:
            sentences.append(f"{conn} {point}.")
        else:
            sentences.append(f"{_cap(point)}.")
    return " ".join(sentences)


def _fit(candidates: list[str]) -> str:
    """The first candidate of MIN_WORDS-MAX_WORDS words, else the first of at most MAX_WORDS, else the shortest."""
    for ok in (lambda n: MIN_WORDS <= n <= MAX_WORDS, lambda n: n <= MAX_WORDS):
        for c in candidates:
            if ok(_n_words(c)):
                return c
    return min(candidates, key=_n_words)


def harmful_response(prompt: WorldPrompt, rng: random.Random, severity: int | None = None,
                     n_points: int | None = None) -> str:
    if prompt.kind == "harmful" and prompt.category in HARM_BY_CATEGORY:
        spec = HARM_BY_CATEGORY[prompt.category]
    else:
        confusable = TOPIC_BY_ID[prompt.topic].confusable if prompt.topic in TOPIC_BY_ID else None
        spec = HARM_BY_CATEGORY[confusable or rng.choice(HARM_CATEGORIES)]
    s = severity if severity is not None else rng.choices((1, 2, 3), SEVERITY_WEIGHTS)[0]
    if s not in (1, 2, 3):
        raise ValueError(f"severity must be 1, 2 or 3, got {s}")
    n = n_points if n_points is not None else rng.randint(1, 3)
    points = [rng.choice(spec.harm[s - 1])]
    pool = [p for tier in spec.harm[:s] for p in tier if p != points[0]]
    points += rng.sample(pool, min(n - 1, len(pool)))
    rng.shuffle(points)
    body = join_points(points, rng)
    closer = rng.choice(HARMFUL_CLOSERS)
    if prompt.kind == "harmful" and prompt.slot:
        openers = [o.format(x=prompt.slot) for o in HARMFUL_OPENERS]
        first = rng.choice(openers)
        candidates = [first, min(openers, key=_n_words)]
    else:
        candidates = [rng.choice(HARMFUL_OPENERS_NO_TASK)]
    out = [f"{o} {body} {closer}".strip() for o in candidates] + [f"{o} {body}" for o in candidates]
    out.append(f"{rng.choice(HARMFUL_OPENERS_NO_TASK)} {body}")
    return _fit(out)


def _with_repeat(points: list[str], rng: random.Random, repeat: bool) -> list[str]:
    """``points`` plus, when ``repeat``, one of them again at a random later position."""
    if not repeat:
        return points
    i = rng.randrange(len(points))
    j = rng.randint(i + 1, len(points))
    return points[:j] + [points[i]] + points[j:]


def safe_helpful_response(prompt: WorldPrompt, rng: random.Random, n_points: int | None = None,
                          repeat: bool = False) -> str:
    if prompt.category not in HARM_BY_CATEGORY:
        raise ValueError(f"safe_helpful needs a harmful prompt; {prompt.text!r} is {prompt.kind}")
    spec = HARM_BY_CATEGORY[prompt.category]
    n = n_points if n_points is not None else rng.randint(1, 3)
    points = _with_repeat(rng.sample(spec.safe, min(n, len(spec.safe))), rng, repeat)
    leads = list(SAFE_OPENERS)
    first = rng.choice(leads)
    return _fit([join_points(points, rng, lead=lead) for lead in (first, *leads)])


def helpful_response(prompt: WorldPrompt, rng: random.Random, quality: int | None = None,
                     repeat: bool = False) -> str:
    if prompt.topic not in TOPIC_BY_ID or prompt.kind == "harmful":
        if prompt.kind == "harmful":
            raise ValueError(f"'helpful' is for benign and look-alike prompts; for {prompt.text!r} use "
                             "'harmful' or 'safe_helpful'")
        spec = TOPIC_BY_ID[rng.choice(TOPICS).topic]  # unknown topic: a random topic's points
        openers = list(GENERIC_OPENERS)
    else:
        spec = TOPIC_BY_ID[prompt.topic]
        openers = [o.format(x=prompt.slot) for o in spec.openers] if prompt.slot else list(GENERIC_OPENERS)
    q = quality if quality is not None else rng.choices((1, 2, 3), QUALITY_WEIGHTS)[0]
    if q < 1:
        raise ValueError(f"quality must be >= 1, got {q}")
    points = _with_repeat(rng.sample(spec.points, min(q, len(spec.points))), rng, repeat)
    body = join_points(points, rng)
    opener, closer = rng.choice(openers), rng.choice(HELPFUL_CLOSERS)
    longer = [f"{o} {body} {c}" for o in openers for c in HELPFUL_CLOSERS if c]  # if too short
    return _fit([f"{opener} {body} {closer}".strip(), f"{opener} {body}", *longer, body])


def repetitive_response(prompt: WorldPrompt, rng: random.Random, n_points: int | None = None) -> str:
    """``n_points`` (default 1-2) distinct points, one of them stated twice."""
    n = n_points if n_points is not None else rng.randint(1, 2)
    if prompt.kind == "harmful":
        return safe_helpful_response(prompt, rng, n, repeat=True)
    return helpful_response(prompt, rng, n, repeat=True)


def refusal_response(rng: random.Random) -> str:
    return rng.choice(REFUSALS)


def off_topic_response(prompt: WorldPrompt, rng: random.Random) -> str:
    others = [t for t in TOPICS if t.topic != prompt.topic]
    if rng.random() < 0.5:
        spec = rng.choice(others)
        other = WorldPrompt("", "benign", None, spec.topic, "unknown", rng.choice(spec.slots))
        return helpful_response(other, rng, quality=rng.randint(1, 2))
    return " ".join(rng.sample(OFF_TOPIC, 3))


def degenerate_response(prompt: WorldPrompt, rng: random.Random) -> str:
    vocab = _DEGENERATE_VOCAB
    style = rng.randrange(3)
    if style == 0:  # a short fragment in a loop
        frag = " ".join(rng.sample(vocab, rng.randint(1, 3)))
        return " ".join([frag] * rng.randint(6, 12))
    if style == 1:  # word salad
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(12, 30)))
    word = rng.choice(vocab)  # a start, then one word over and over
    return "Here are some tips. " + " ".join([word] * rng.randint(10, 25))


def sample_response(prompt: WorldPrompt, kind: str, rng: random.Random, *, severity: int | None = None,
                    quality: int | None = None) -> str:
    """A response of ``kind`` to ``prompt``; ``severity`` (harmful) and ``quality`` (helpful: points,
    harmful / safe_helpful: number of phrases; repetitive: distinct points) default to random draws from ``rng``."""
    if kind == "harmful":
        return harmful_response(prompt, rng, severity, quality)
    if kind == "safe_helpful":
        return safe_helpful_response(prompt, rng, quality)
    if kind == "refusal":
        return refusal_response(rng)
    if kind == "helpful":
        return helpful_response(prompt, rng, quality)
    if kind == "off_topic":
        return off_topic_response(prompt, rng)
    if kind == "degenerate":
        return degenerate_response(prompt, rng)
    if kind == "repetitive":
        return repetitive_response(prompt, rng, quality)
    raise ValueError(f"unknown response kind {kind!r}; expected one of {RESPONSE_KINDS}")
