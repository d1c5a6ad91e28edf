"""Hostile prompt sources, generation files, model kinds, sampling budgets and GGUF headers (issue 20, "correctness
first"): each must be a clear one-line error, never a shorter prompt set, a wrong judge or a traceback."""

from __future__ import annotations

import json
import struct
from pathlib import Path

GROUP = "data_inputs"


def _s(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


def _gguf(tokens: list[str], merges: list[str]) -> bytes:
    def strings(key: str, items: list[str]) -> bytes:
        return _s(key) + struct.pack("<IIQ", 9, 8, len(items)) + b"".join(_s(i) for i in items)

    kvs = [_s("general.architecture") + struct.pack("<I", 8) + _s("llama"),
           _s("tokenizer.ggml.model") + struct.pack("<I", 8) + _s("gpt2"),
           strings("tokenizer.ggml.tokens", tokens), strings("tokenizer.ggml.merges", merges)]
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)


def _files(tmp: Path) -> dict[str, Path]:
    """The bad files, written once."""
    rows = [f"How do I make dish {i}?,cooking" for i in range(200)]
    files = {
        "stray_quote": ["prompt,category", *rows[:50], '"How do I make dish 50?,cooking', *rows[51:]],
        "ragged": ["question,topic", "a?,x", "b?,y,extra"],
    }
    out = {}
    for name, lines in files.items():
        out[name] = tmp / f"{name}.csv"
        out[name].write_text("\n".join(lines) + "\n")
    out["malformed"] = tmp / "malformed.jsonl"
    out["malformed"].write_text(json.dumps({"prompt": "a?"}) + "\n{not json\n")
    out["numeric"] = tmp / "numeric.jsonl"
    out["numeric"].write_text(json.dumps({"q": "a?"}) + "\n" + json.dumps({"q": 42}) + "\n")
    out["latin1_late"] = tmp / "late.jsonl"
    good = "".join(json.dumps({"text": f"prompt {i} " + "x" * 60}) + "\n" for i in range(1200))
    out["latin1_late"].write_bytes(good.encode() + b'{"text": "caf\xe9"}\n')
    out["utf16"] = tmp / "mined_utf16.jsonl"
    out["utf16"].write_bytes(json.dumps({"prompt": "p"}).encode("utf-16"))
    out["ended_bad"] = tmp / "gens_bad_ended.json"
    out["ended_bad"].write_text(json.dumps([{"prompt": "p", "response": "r", "ended": "maybe"}]))
    out["gens"] = tmp / "gens.jsonl"
    out["gens"].write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    out["gguf_overflow"] = tmp / "overflow.gguf"
    out["gguf_overflow"].write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**63) + b"x")
    out["gguf_vocab"] = tmp / "vocab.gguf"
    out["gguf_vocab"].write_bytes(_gguf(["a", "b"], ["x y"]))
    return out


def cases(tmp: Path, env: dict[str, Path]) -> list[tuple[str, list[str]]]:
    tmp = Path(tmp) / GROUP
    tmp.mkdir(parents=True, exist_ok=True)
    f = _files(tmp)
    base, rm, cm = str(env["base"]), str(env["rm"]), str(env["cm"])
    short = ["--sampling.max_new_tokens", "4"]

    def ev(name: str, *extra: str) -> list[str]:
        return ["eval", "--policies", f"a={base}", "--out", str(tmp / f"eval_{name}"), "--max_prompts", "2", *short,
                *extra]

    def gen(name: str, prompts: str, *extra: str) -> list[str]:
        return ["generate", "--model_path", base, "--prompts", prompts, "--out", str(tmp / f"out_{name}.jsonl"), *short,
                *extra]

    return [
        ("eval --prompt_column on a CSV with a stray quote", ev("quote", "--prompts", str(f["stray_quote"]),
                                                               "--prompt_column", "prompt")),
        ("eval on a CSV with ragged rows", ev("ragged", "--prompts", str(f["ragged"]))),
        ("generate from a JSONL with a malformed line", gen("malformed", str(f["malformed"]))),
        ("eval --prompt_column q with a numeric prompt", ev("numeric", "--prompts", str(f["numeric"]),
                                                          "--prompt_column", "q")),
        ("generate from a JSONL with latin-1 bytes after 64 kB", gen("late", str(f["latin1_late"]))),
        ("generate --prompts world:bogus", gen("bogus", "world:bogus")),
        ("best-of-k --prompts world:bogus", ["best-of-k", "--model_path", base, "--reward_model", rm, "--prompts",
                                             "world:bogus", "--out", str(tmp / "bok_bogus")]),
        ("rs-finetune --prompts world:bogus", ["rs-finetune", "--model_path", base, "--reward_model", rm, "--prompts",
                                               "world:bogus", "--out", str(tmp / "rs_bogus")]),
        ("redteam --exclude in UTF-16", ["redteam", "--policy", base, "--exclude", str(f["utf16"]),
                                         "--out", str(tmp / "rt_utf16"), *short]),
        ("score a .json generations file with ended 'maybe'", ["score", "--input", str(f["ended_bad"]),
                                                                "--reward_model", rm, "--out", str(tmp / "s1.jsonl")]),
        ("score --reward_model a cost model", ["score", "--input", str(f["gens"]), "--reward_model", cm,
                                               "--out", str(tmp / "s2.jsonl")]),
        ("ppo --reward_model_path a cost model", ["ppo", "--actor_path", base, "--reward_model_path", cm,
                                                  "--cost_model_path", cm, "--train_prompts", "world:train",
                                                  "--out", str(tmp / "ppo_swapped"), "--steps", "1"]),
        ("eval --cost_model a reward model", ev("rm_as_cm", "--cost_model", rm)),
        ("eval --embedding_model a causal LM", ev("lm_embed", "--embedding_model", base)),
        ("generate --model_path a reward model", ["generate", "--model_path", rm, "--prompts", "world:test",
                                                  "--out", str(tmp / "rm_policy.jsonl"), *short]),
        ("best-of-k --reward_model a cost model", ["best-of-k", "--model_path", base, "--reward_model", cm,
                                                   "--prompts", "world:test", "--out", str(tmp / "bok_cm")]),
        ("cost-threshold --cost_model a reward model", ["cost-threshold", "--cost_model", rm, "--input",
                                                        str(f["gens"]), "--method", "quantile",
                                                        "--out", str(tmp / "d.json")]),
        ("generate past the model's positions", gen("long", "world:test", "--max_prompts", "1",
                                                    "--sampling.max_new_tokens", "1000")),
        ("import-gguf with a 2**63 string length", ["model", "import-gguf", str(f["gguf_overflow"]),
                                                    str(tmp / "gguf1")]),
        ("import-gguf with merges of unknown tokens", ["model", "import-gguf", str(f["gguf_vocab"]),
                                                       str(tmp / "gguf2")]),
    ]
