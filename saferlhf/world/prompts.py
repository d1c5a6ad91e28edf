"""World prompts: the full prompt table (every template x slot value), its train/test split, and a
keyword classifier for prompts the table does not know.

Split rule (held-out combinations): a prompt is TEST when (template index + slot index) is divisible by
the number of templates of its spec, otherwise TRAIN. Every template and every slot value of a spec
therefore appears in training, but no test prompt text does: the test split measures generalisation
to unseen phrasing x task combinations, which a ~1M-parameter model can learn in minutes. (A first
version also held out whole slot values and templates; tiny models cannot map a never-seen word such
as "stretching" to its topic, so every policy looked equally off-topic there: docs/LOG.md.)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from saferlhf.world.harms import HARM_TEMPLATES, HARMS
from saferlhf.world.lookalikes import LOOKALIKES
from saferlhf.world.topics import TOPICS

PromptKind = Literal["harmful", "benign", "lookalike"]
PROMPT_KINDS: tuple[str, ...] = ("harmful", "benign", "lookalike")


@dataclass(frozen=True)
class WorldPrompt:
    """One prompt of the world.

    ``topic``: the harm category's slug (harmful), the everyday topic (benign) or the look-alike's id.
    ``slot``: the slot value the template was filled with (the task of a harmful prompt).
    ``split``: "train", "test", or "unknown" for a prompt classified by keywords.
    """

    text: str
    kind: str
    category: str | None
    topic: str
    split: str
    slot: str = ""
    template: int = -1
    wrappers: tuple[str, ...] = ()  # adversarial templates around the request (``adversarial.py``), outermost first

    def to_dict(self) -> dict:
        out = {"prompt": self.text, "kind": self.kind, "category": self.category, "topic": self.topic,
               "split": self.split}
        return out | ({"wrappers": list(self.wrappers)} if self.wrappers else {})


def words(text: str) -> list[str]:
    """Lower-case word tokens; punctuation and apostrophes split words ("neighbor's" -> neighbor, s)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def normalize(text: str) -> str:
    return " ".join(words(text))


def _split_of(template: int, n_templates: int, slot: int) -> str:
    return "test" if (template + slot) % n_templates == 0 else "train"


def prompt_table() -> list[WorldPrompt]:
    """Every prompt the world can ask, in a fixed order, each with its kind, category, topic and split."""
    table: list[WorldPrompt] = []
    for spec in HARMS:
        for si, task in enumerate(spec.tasks):
            for ti, template in enumerate(HARM_TEMPLATES):
                split = _split_of(ti, len(HARM_TEMPLATES), si)
                table.append(WorldPrompt(template.format(x=task), "harmful", spec.category, spec.slug, split,
                                         task, ti))
    for kind, specs in (("benign", TOPICS), ("lookalike", LOOKALIKES)):
        for spec in specs:
            for si, slot in enumerate(spec.slots):
                for ti, template in enumerate(spec.templates):
                    split = _split_of(ti, len(spec.templates), si)
                    table.append(WorldPrompt(template.format(x=slot), kind, None, spec.topic, split, slot, ti))
    return table


class KeywordClassifier:
    """Guesses kind / category / topic of an unknown prompt from its words.

    Each intent (a harm category, a topic or a look-alike) is described by the content words of its
    templates and slot values; a word's weight is ``log(1 + n_intents / n_intents_with_word)`` (rare
    words count more). The intent with the largest summed weight wins (benign and look-alike intents
    win ties); with no shared word the prompt is "benign" with topic "unknown".
    """

    _STOP = frozenset("a an the and or to of in on at for with my me i is it how do what can you be "
                      "should any tips best way want where start tell give".split())

    def __init__(self, table: list[WorldPrompt]):
        self.vocab: dict[tuple[str, str | None, str], set[str]] = {}
        for p in sorted(table, key=lambda p: p.kind == "harmful"):  # benign intents first: they win ties
            key = (p.kind, p.category, p.topic)
            self.vocab.setdefault(key, set()).update(w for w in words(p.text) if w not in self._STOP)
        counts: dict[str, int] = {}
        for ws in self.vocab.values():
            for w in ws:
                counts[w] = counts.get(w, 0) + 1
        n = len(self.vocab)
        self.weight = {w: math.log(1.0 + n / c) for w, c in counts.items()}

    def classify(self, text: str) -> WorldPrompt:
        ws = set(words(text)) - self._STOP
        best, best_score = None, 0.0
        for key, vocab in self.vocab.items():  # dict order is fixed, so ties resolve deterministically
            score = sum(self.weight[w] for w in ws & vocab)
            if score > best_score + 1e-12:
                best, best_score = key, score
        if best is None:
            return WorldPrompt(text, "benign", None, "unknown", "unknown")
        kind, category, topic = best
        return WorldPrompt(text, kind, category, topic, "unknown")
