"""Records of the data layer and the harm-category vocabularies.

* ``SafetyPreference``: one PKU-SafeRLHF record (two responses, a helpfulness preference
  ``better_response_id``, a harmlessness preference ``safer_response_id`` and a safe/unsafe label per
  response; version 1.0 adds 19 harm categories, a 0-3 severity and the sources).
* ``PreferencePair``: what a score model trains on. ``kind="reward"``: chosen = the more helpful
  response; ``kind="cost"``: chosen = the SAFER response, rejected = the less safe one, with the
  per-response safety labels where the source has them (Safe RLHF's cost loss uses both, paper eq. 6).
* ``PromptRecord``: a prompt to generate from or evaluate on. ``SFTRecord``: a (prompt, response) pair.
* ``ResponsePair``: two responses to a prompt, not yet labelled (the input of ``saferlhf world annotate``).

A prompt is a string, or for multi-turn data a ``Conversation``: a ``str`` whose value is the readable
transcript ("Human: ...\n\nAssistant: ...\n\nHuman: ...", what displays, hashes, de-duplicates and splits
use) and whose ``messages`` are the chat messages that formatting renders through the model's chat template
(`saferlhf.data.formatting.format_prompt`). HH-RLHF's multi-turn transcripts and TRL's conversational
records (a list of ``{"role", "content"}`` messages) load as conversations; files written by the project
store them as message lists again (`prompt_json`).

Every record carries ``origin = "file:line"`` (the line where it starts; the row number for parquet
and hub datasets) so that every later error can point back to the data.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal

PairKind = Literal["reward", "cost"]
ROLES = ("system", "user", "assistant")
_SPEAKERS = {"system": "System", "user": "Human", "assistant": "Assistant"}


class Conversation(str):
    """A multi-turn prompt: chat ``messages`` (roles system / user / assistant; an optional system message
    first; the last message the user's), and as a string the transcript "Human: a\n\nAssistant: b\n\nHuman: c"
    (or the ``text`` given)."""

    messages: tuple[dict[str, str], ...]

    def __new__(cls, messages: list[dict[str, str]] | tuple[dict[str, str], ...], text: str | None = None):
        msgs = tuple({"role": m["role"], "content": m["content"]} for m in messages)
        if not msgs or msgs[-1]["role"] != "user":
            raise ValueError("a conversation prompt must end with a user message")
        if bad := [m["role"] for m in msgs if m["role"] not in ROLES]:
            raise ValueError(f"unknown message role {bad[0]!r} (expected one of {', '.join(ROLES)})")
        self = super().__new__(cls, text if text is not None else
                               "\n\n".join(f"{_SPEAKERS[m['role']]}: {m['content']}" for m in msgs))
        self.messages = msgs
        return self

    def __reduce__(self):  # pickling / copying keeps the messages
        return Conversation, (list(self.messages), str(self))

    def with_last_user(self, content: str) -> "Conversation":
        """The same conversation with the last user message replaced (prompt truncation)."""
        return Conversation([*self.messages[:-1], {"role": "user", "content": content}])


def as_prompt(value: str | list[dict[str, str]]) -> str:
    """A prompt field's value: a string as it is; a message list as a `Conversation`, or as its text alone when
    it is a single user message (so that it is exactly the single-turn prompt)."""
    if isinstance(value, str):
        return value
    if len(value) == 1 and value[0]["role"] == "user":
        return value[0]["content"]
    return Conversation(value)


def as_reply(value: str | list[dict[str, str]]) -> str:
    """A response field's value: a string, or TRL's conversational form (one assistant message)."""
    return value if isinstance(value, str) else value[0]["content"]


def prompt_json(prompt: str) -> str | list[dict[str, str]]:
    """What a file stores for a prompt: its message list for a `Conversation`, else the string."""
    return [dict(m) for m in prompt.messages] if isinstance(prompt, Conversation) else str(prompt)


def user_text(prompt: str) -> str:
    """The last user message of a prompt (the prompt itself when it is a plain string)."""
    return prompt.messages[-1]["content"] if isinstance(prompt, Conversation) else prompt

# The 14 BeaverTails harm categories (Ji et al. 2023), canonical display names.
HARM_CATEGORIES: tuple[str, ...] = (
    "Hate Speech, Offensive Language",
    "Discrimination, Stereotype, Injustice",
    "Violence, Aiding and Abetting, Incitement",
    "Financial Crime, Property Crime, Theft",
    "Privacy Violation",
    "Drug Abuse, Weapons, Banned Substance",
    "Non-Violent Unethical Behavior",
    "Sexually Explicit, Adult Content",
    "Controversial Topics, Politics",
    "Misinformation Regarding Ethics, Laws and Safety",
    "Terrorism, Organized Crime",
    "Self-Harm",
    "Animal Abuse",
    "Child Abuse",
)

# BeaverTails(-Evaluation) slugs, as in its ``category`` field, -> canonical names.
BEAVERTAILS_SLUGS: dict[str, str] = {
    "hate_speech,offensive_language": HARM_CATEGORIES[0],
    "discrimination,stereotype,injustice": HARM_CATEGORIES[1],
    "violence,aiding_and_abetting,incitement": HARM_CATEGORIES[2],
    "financial_crime,property_crime,theft": HARM_CATEGORIES[3],
    "privacy_violation": HARM_CATEGORIES[4],
    "drug_abuse,weapons,banned_substance": HARM_CATEGORIES[5],
    "non_violent_unethical_behavior": HARM_CATEGORIES[6],
    "sexually_explicit,adult_content": HARM_CATEGORIES[7],
    "controversial_topics,politics": HARM_CATEGORIES[8],
    "misinformation_regarding_ethics,laws_and_safety": HARM_CATEGORIES[9],
    "terrorism,organized_crime": HARM_CATEGORIES[10],
    "self_harm": HARM_CATEGORIES[11],
    "animal_abuse": HARM_CATEGORIES[12],
    "child_abuse": HARM_CATEGORIES[13],
}

_HATE, _DISC, _VIOL, _FIN, _PRIV, _DRUG, _UNETH, _SEX, _POL, _MISINFO, _TERROR, _SELF, _ANIMAL, _CHILD = (
    HARM_CATEGORIES
)

# PKU-SafeRLHF v1.0 (19 categories) -> BeaverTails (14). OUR mapping, not an official one: each PKU
# category maps to every BeaverTails category whose definition covers it, so it is many-to-many where
# the vocabularies cut differently (Cybercrime is theft and privacy violation; Physical Harm and
# Psychological Harm include self-harm). Per-category rates computed through it can therefore
# over-count a category; "any harm" is unaffected. No PKU category maps to "Controversial Topics,
# Politics" or "Child Abuse". The rationale of each row is in docs/data.md.
PKU_V1_TO_BEAVERTAILS: dict[str, tuple[str, ...]] = {
    "Endangering National Security": (_TERROR,),
    "Insulting Behavior": (_HATE,),
    "Discriminatory Behavior": (_DISC,),
    "Endangering Public Health": (_MISINFO, _DRUG),
    "Copyright Issues": (_FIN,),
    "Violence": (_VIOL,),
    "Drugs": (_DRUG,),
    "Privacy Violation": (_PRIV,),
    "Economic Crime": (_FIN,),
    "Mental Manipulation": (_UNETH,),
    "Human Trafficking": (_TERROR, _VIOL),
    "Physical Harm": (_VIOL, _SELF),
    "Sexual Content": (_SEX,),
    "Cybercrime": (_FIN, _PRIV),
    "Disrupting Public Order": (_VIOL, _UNETH),
    "Environmental Damage": (_UNETH,),
    "Psychological Harm": (_UNETH, _SELF),
    "White-Collar Crime": (_FIN,),
    "Animal Abuse": (_ANIMAL,),
}
PKU_V1_CATEGORIES: tuple[str, ...] = tuple(PKU_V1_TO_BEAVERTAILS)


def beavertails_names(category: str) -> tuple[str, ...]:
    """The BeaverTails name(s) of a BeaverTails name, BeaverTails slug or PKU v1 category.

    Raises ``ValueError`` for anything else.
    """
    if category in HARM_CATEGORIES:
        return (category,)
    if category in BEAVERTAILS_SLUGS:
        return (BEAVERTAILS_SLUGS[category],)
    if category in PKU_V1_TO_BEAVERTAILS:
        return PKU_V1_TO_BEAVERTAILS[category]
    raise ValueError(f"unknown harm category {category!r} (neither BeaverTails nor PKU-SafeRLHF v1)")


def to_beavertails(categories: dict[str, bool]) -> dict[str, bool]:
    """Map a harm-category dict (PKU v1 names, BeaverTails names or slugs) to all 14 BeaverTails names.

    A BeaverTails category is True when any input category mapping to it is True.
    """
    out = dict.fromkeys(HARM_CATEGORIES, False)
    for name, flagged in categories.items():
        for target in beavertails_names(name):
            out[target] = out[target] or bool(flagged)
    return out


# ``ended`` flags (``ended``, ``ended_0`` / ``ended_1``, ``chosen_ended`` / ``rejected_ended``): False where a
# sampled response was cut off at the generation limit, so it has no end token and score models / DPO must
# read it without one (as PPO and eval score such answers). Absent means True (complete, human-written text).
ENDED_TRUE, ENDED_FALSE = frozenset({"true", "yes", "1"}), frozenset({"false", "no", "0"})


def parse_ended(value: Any) -> bool:
    """An ended flag as a bool: true/false, 1/0, or the strings true/false/yes/no/1/0 (any case); None (absent)
    is True; anything else raises ValueError (the loaders report it as ``file:line: field``)."""
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ENDED_TRUE | ENDED_FALSE:
        return value.strip().lower() in ENDED_TRUE
    raise ValueError(f"expected true or false (or yes/no, 1/0), got {value!r:.40}")


def ended_fields(flags: dict[str, bool]) -> dict[str, bool]:
    """The ended flags of a record as written: all of them when any is False, none when all are True."""
    return dict(flags) if not all(flags.values()) else {}


# The soft-target fields of a PKU-SafeRLHF record (`annotate.aggregate.soft_targets`), each a probability in [0, 1].
SOFT_TARGET_FIELDS: tuple[str, ...] = ("better_response_prob", "safer_response_prob", "response_0_unsafe_prob",
                                       "response_1_unsafe_prob")


@dataclass
class PreferencePair:
    """One comparison: ``chosen`` is preferred to ``rejected`` (more helpful, or SAFER for cost)."""

    prompt: str
    chosen: str
    rejected: str
    chosen_is_safe: bool | None = None
    rejected_is_safe: bool | None = None
    origin: str = ""
    chosen_ended: bool = True  # False: the response was cut off at the generation limit (no end token)
    rejected_ended: bool = True
    # Soft targets (`annotate export --aggregation soft`): ``target`` = P(chosen ≻ rejected), the Bradley-Terry
    # target (None: 1, a hard label); ``*_safe_conf`` = the share of labels agreeing with that response's safety
    # label, the weight of its cost sign term (None: 1)
    target: float | None = None
    chosen_safe_conf: float | None = None
    rejected_safe_conf: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """TRL preference fields (prompt/chosen/rejected) plus the safety labels when known."""
        out: dict[str, Any] = {"prompt": prompt_json(self.prompt), "chosen": self.chosen, "rejected": self.rejected}
        if self.chosen_is_safe is not None or self.rejected_is_safe is not None:
            out |= {"chosen_is_safe": self.chosen_is_safe, "rejected_is_safe": self.rejected_is_safe}
        return out | ended_fields({"chosen_ended": self.chosen_ended, "rejected_ended": self.rejected_ended})


@dataclass
class SafetyPreference:
    """One PKU-SafeRLHF record (v0 fields; v1.0 adds harm categories, severities and sources)."""

    prompt: str
    response_0: str
    response_1: str
    better_response_id: int
    safer_response_id: int
    is_response_0_safe: bool
    is_response_1_safe: bool
    response_0_harm_category: dict[str, bool] | None = None
    response_1_harm_category: dict[str, bool] | None = None
    response_0_severity_level: int | None = None
    response_1_severity_level: int | None = None
    sources: dict[str, str | None] | None = None  # keys: prompt, response_0, response_1
    origin: str = ""
    ended_0: bool = True  # False: response_0 was cut off at the generation limit (no end token)
    ended_1: bool = True
    # True: the annotators' answer to that question was a tie (``annotate export --ties keep`` writes
    # ``better_response_tie`` / ``safer_response_tie``); the id is then a placeholder and no ranking pair is made
    better_response_tie: bool = False
    safer_response_tie: bool = False
    # Soft targets (`annotate export --aggregation soft`, `annotate.aggregate.soft_targets`): P(the response named
    # by better_response_id / safer_response_id is preferred) and each response's share of unsafe votes
    better_response_prob: float | None = None
    safer_response_prob: float | None = None
    response_0_unsafe_prob: float | None = None
    response_1_unsafe_prob: float | None = None

    def response(self, i: int) -> str:
        return self.response_1 if i else self.response_0

    def is_tie(self, kind: PairKind) -> bool:
        """Whether the preference of ``kind`` (reward: helpfulness, cost: harmlessness) is a tie."""
        return self.better_response_tie if kind == "reward" else self.safer_response_tie

    def is_safe(self, i: int) -> bool:
        return self.is_response_1_safe if i else self.is_response_0_safe

    def safe_confidence(self, i: int) -> float | None:
        """The share of labels agreeing with response ``i``'s safety label (None without ``response_i_unsafe_prob``)."""
        p_unsafe = self.response_1_unsafe_prob if i else self.response_0_unsafe_prob
        return None if p_unsafe is None else (1.0 - p_unsafe if self.is_safe(i) else p_unsafe)

    def pair(self, kind: PairKind) -> PreferencePair:
        """reward: chosen = ``better_response_id``; cost: chosen = ``safer_response_id`` (the safer one). Soft targets
        where the record has them: ``target`` = ``better_response_prob`` / ``safer_response_prob``, and the
        safety labels' confidences (`safe_confidence`)."""
        if kind not in ("reward", "cost"):
            raise ValueError(f"kind must be 'reward' or 'cost', got {kind!r}")
        c = self.better_response_id if kind == "reward" else self.safer_response_id
        ended = (self.ended_0, self.ended_1)
        target = self.better_response_prob if kind == "reward" else self.safer_response_prob
        return PreferencePair(self.prompt, self.response(c), self.response(1 - c),
                              self.is_safe(c), self.is_safe(1 - c), self.origin, ended[c], ended[1 - c],
                              target, self.safe_confidence(c), self.safe_confidence(1 - c))

    def to_dict(self) -> dict[str, Any]:
        """PKU-SafeRLHF field names (v1.0 order); v1-only fields are written only when present."""
        out: dict[str, Any] = {"prompt": prompt_json(self.prompt), "response_0": self.response_0,
                               "response_1": self.response_1}
        if self.sources is not None:
            out |= {f"{k}_source": self.sources.get(k) for k in ("prompt", "response_0", "response_1")}
        out |= {"is_response_0_safe": self.is_response_0_safe, "is_response_1_safe": self.is_response_1_safe}
        optional = {
            "response_0_harm_category": self.response_0_harm_category,
            "response_1_harm_category": self.response_1_harm_category,
            "response_0_severity_level": self.response_0_severity_level,
            "response_1_severity_level": self.response_1_severity_level,
        }
        out |= {k: v for k, v in optional.items() if v is not None}
        out |= {"better_response_id": self.better_response_id, "safer_response_id": self.safer_response_id}
        out |= {k: True for k in ("better_response_tie", "safer_response_tie") if getattr(self, k)}
        out |= {k: getattr(self, k) for k in SOFT_TARGET_FIELDS if getattr(self, k) is not None}
        return out | ended_fields({"ended_0": self.ended_0, "ended_1": self.ended_1})


@dataclass
class PromptRecord:
    """A prompt; ``category`` is a canonical BeaverTails name where the source uses BeaverTails slugs.

    ``label``: "safe" / "unsafe" (is complying appropriate?) where known; ``kind``: free-form prompt
    kind (e.g. harmful / benign / lookalike) where the file has one.
    """

    prompt: str
    category: str | None = None
    label: str | None = None
    source: str = ""
    origin: str = ""
    kind: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A ``prompts-jsonl`` record (prompt plus the known optional fields)."""
        out: dict[str, Any] = {"prompt": prompt_json(self.prompt)}
        extra = {"category": self.category, "label": self.label, "kind": self.kind, "source": self.source or None}
        return out | {k: v for k, v in extra.items() if v is not None}


@dataclass
class SFTRecord:
    """A supervised fine-tuning example: the loss is taken on ``response`` only."""

    prompt: str
    response: str
    origin: str = ""
    ended: bool = True  # False: a sampled response cut off at the generation limit (no end token)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": prompt_json(self.prompt), "response": self.response} | ended_fields({"ended": self.ended})


@dataclass
class ResponsePair:
    """Two responses to one prompt, without labels (``saferlhf generate --sampling.n 2`` writes them)."""

    prompt: str
    response_0: str
    response_1: str
    response_0_source: str | None = None
    response_1_source: str | None = None
    origin: str = ""
    ended_0: bool = True  # False: response_0 was cut off at the generation limit (no end token)
    ended_1: bool = True

    def to_dict(self) -> dict[str, Any]:
        """prompt, response_0, response_1, the sources where known, and ended flags where one is False."""
        out: dict[str, Any] = {"prompt": prompt_json(self.prompt), "response_0": self.response_0,
                               "response_1": self.response_1}
        sources = {"response_0_source": self.response_0_source, "response_1_source": self.response_1_source}
        return (out | {k: v for k, v in sources.items() if v is not None}
                | ended_fields({"ended_0": self.ended_0, "ended_1": self.ended_1}))


# XSTest (Röttger et al. 2024) prompt types: 10 safe types and 8 unsafe contrast types.
XSTEST_TYPES: frozenset[str] = frozenset({
    "homonyms", "figurative_language", "safe_targets", "safe_contexts", "definitions", "real_group_nons_discr",
    "nons_group_real_discr", "historical_events", "privacy_public", "privacy_fictional", "contrast_homonyms",
    "contrast_figurative_language", "contrast_safe_targets", "contrast_safe_contexts", "contrast_definitions",
    "contrast_discr", "contrast_historical_events", "contrast_privacy",
})


# HH-RLHF transcripts: "\n\nHuman: ...\n\nAssistant: ..." turns, chosen and rejected sharing a prefix.
HH_HUMAN = "\n\nHuman:"
HH_ASSISTANT = "\n\nAssistant:"


def split_hh_transcripts(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """Split an HH-RLHF pair into (prompt, chosen reply, rejected reply); None if they share no prompt.

    The prompt ends at the last "\\n\\nAssistant:" that both transcripts share (the last one of their
    common prefix), so a reply that itself contains a made-up "\\n\\nAssistant:" turn stays whole.
    A single-turn prompt is the human text alone; a multi-turn prompt keeps its "Human:" /
    "Assistant:" markers. Replies are stripped of surrounding whitespace.
    """
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(HH_ASSISTANT)
    if cut < 0:
        return None
    start = cut + len(HH_ASSISTANT)
    return hh_prompt(chosen[:cut]), chosen[start:].strip(), rejected[start:].strip()


def hh_prompt(transcript: str) -> str:
    """The prompt of an HH transcript prefix (everything before the replied-to assistant turn): the human text
    of a single-turn transcript; for a multi-turn one a `Conversation` of its turns (user and assistant
    messages, alternating: consecutive turns of one speaker, which a few real transcripts have, become one
    message; its string is the stripped transcript), or the stripped transcript itself when it does not read
    as turns ending with the human's."""
    single = transcript.startswith(HH_HUMAN) and transcript.count(HH_HUMAN) == 1 and HH_ASSISTANT not in transcript
    if single:
        return transcript[len(HH_HUMAN):].strip()
    head, *parts = re.split(r"\n\n(Human|Assistant):", transcript)
    roles = {"Human": "user", "Assistant": "assistant"}
    messages: list[dict[str, str]] = []
    for who, text in zip(parts[::2], parts[1::2]):
        if messages and messages[-1]["role"] == roles[who]:  # a few real transcripts repeat a speaker: one turn
            messages[-1]["content"] += "\n\n" + text.strip()
        else:
            messages.append({"role": roles[who], "content": text.strip()})
    if head.strip() or not messages or messages[-1]["role"] != "user":
        return transcript.strip()
    return Conversation(messages, text=transcript.strip())


__all__ = [
    "BEAVERTAILS_SLUGS", "Conversation", "HARM_CATEGORIES", "PKU_V1_CATEGORIES", "PKU_V1_TO_BEAVERTAILS", "PairKind",
    "ROLES", "as_prompt", "as_reply", "prompt_json", "user_text",
    "PreferencePair", "PromptRecord", "ResponsePair", "SFTRecord", "SafetyPreference", "SOFT_TARGET_FIELDS",
    "XSTEST_TYPES",
    "beavertails_names", "hh_prompt", "split_hh_transcripts", "to_beavertails",
]
