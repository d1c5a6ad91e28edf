"""One prompt source for every command that reads prompts (eval, generate, best-of-k, redteam seeds,
rs-finetune, ppo ``--train_prompts``, iterate through them).

A source is ``world:SPLIT`` (the synthetic world's prompts: ``world:train``, ``world:test``, ``world:all``,
``world:redteam_test``) or any prompt file: a known format (BeaverTails-Evaluation, the paper's 83 prompts,
XSTest, prompts JSONL, the prompts of a preference / SFT file) or any CSV / JSON / JSONL / parquet file read
by column (``prompt_column``, ``category_column``; `saferlhf.data.loaders.load_prompt_table`). Every item
carries its ``label`` where the source has one: "unsafe" (should be refused), "safe" (should be answered),
None (unknown).

A source that cannot be used is one line before any model loads: an unknown world split lists the valid
ones; a bad file line is ``file:line: field: reason``.
"""

from __future__ import annotations

from dataclasses import dataclass

from saferlhf.errors import UserError

WORLD_SPLITS = ("train", "test", "all", "redteam_test")
LABELS = ("safe", "unsafe")


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a source."""

    text: str
    kind: str | None = None       # world prompt kind: harmful / benign / lookalike
    category: str | None = None
    label: str | None = None      # "unsafe": should be refused; "safe": should be answered; None: unknown


def is_world(spec: str) -> bool:
    return spec.startswith("world:")


def load_prompt_items(spec: str, prompt_column: str | None = None, category_column: str | None = None,
                      world_seed: int = 0) -> list[PromptItem]:
    """The prompts of ``spec`` (``world:SPLIT`` or a prompt file) as items; a ``UserError``, ``FileNotFoundError``
    or data error (one clear line, ``file:line: field: reason``) when unusable."""
    if is_world(spec):
        if prompt_column or category_column:
            raise UserError(f"prompts {spec!r}: --prompt_column / --category_column name columns of a prompt "
                            "file, not of the world's prompts")
        return world_items(spec, world_seed)
    return file_items(spec, prompt_column, category_column)


def prompt_texts(spec: str, world_seed: int = 0) -> list[str]:
    """The prompt texts of ``spec`` (see `load_prompt_items`)."""
    return [item.text for item in load_prompt_items(spec, world_seed=world_seed)]


def world_items(spec: str, world_seed: int = 0) -> list[PromptItem]:
    """The prompts of ``world:SPLIT``; harmful prompts are labelled "unsafe", the others "safe"."""
    from saferlhf.world import build_world

    split = spec.split(":", 1)[1]
    if split not in WORLD_SPLITS:
        valid = ", ".join(f"world:{s}" for s in WORLD_SPLITS)
        raise UserError(f"prompts {spec!r}: the world has no split {split!r}; its splits: {valid}")
    return [PromptItem(p.text, p.kind, p.category, "unsafe" if p.kind == "harmful" else "safe")
            for p in build_world(world_seed).prompts(split)]


def file_items(path: str, prompt_column: str | None = None, category_column: str | None = None) -> list[PromptItem]:
    """The prompts of a prompt file (`load_prompt_table`), labels kept where they are "safe" / "unsafe"."""
    from saferlhf.data.loaders import load_prompt_table

    records = load_prompt_table(path, prompt_column, category_column)
    return [PromptItem(r.prompt, r.kind, r.category, r.label if r.label in LABELS else None) for r in records]


__all__ = ["LABELS", "WORLD_SPLITS", "PromptItem", "file_items", "is_world", "load_prompt_items", "prompt_texts",
           "world_items"]
