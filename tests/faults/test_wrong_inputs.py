"""Inputs of the wrong kind are one clear line (exit 2), found by the audit: a model of another role (a cost model
as reward model, a causal LM as embedding model, a score model as policy), an unknown world split, a UTF-16
exclude file, a sampling budget past the model's positions, a damaged GGUF header or vocabulary; a damaged
generation-cache entry is regenerated; `ppo --train_prompts world:train` reads the world's prompts."""

from __future__ import annotations

import json
import struct

import pytest

from util import one_line

from saferlhf.cli import main
from saferlhf.errors import UserError


@pytest.fixture(scope="module")
def judges(tiny_models, tmp_path_factory) -> dict:
    """Untrained reward and cost models (a new head on the tiny llama): right kinds, random scores."""
    from saferlhf.models.score import ScoreModel
    from saferlhf.models.tokenizers import load_tokenizer

    root = tmp_path_factory.mktemp("judges")
    tok = load_tokenizer(tiny_models["llama"], padding_side="right")
    for kind in ("reward", "cost"):
        model = ScoreModel.from_pretrained(tiny_models["llama"], score_type=kind, allow_new_head=True)
        model.save_pretrained(root / kind, tok)
    return {"reward": root / "reward", "cost": root / "cost"}


# model kinds ----------------------------------------------------------------------------------------


def test_check_model_kind_names_flag_path_and_config_field(judges, tiny_models):
    from saferlhf.models.hf import check_model_kind

    with pytest.raises(UserError, match=r"^--reward_model_path \S+ is a cost model \(config.json score_type=cost\); "
                                        r"expected a reward model$"):
        check_model_kind(judges["cost"], "reward", "--reward_model_path")
    with pytest.raises(UserError, match=r"is a reward model \(config.json score_type=reward\); expected a cost"):
        check_model_kind(judges["reward"], "cost", "--cost_model")
    with pytest.raises(UserError, match=r"is a causal LM \(config.json architectures=LlamaForCausalLM\); expected an "
                                        r"encoder"):
        check_model_kind(tiny_models["llama"], "embedding", "--embedding_model")
    with pytest.raises(UserError, match=r"is a reward model .*; expected a causal LM \(a policy\)"):
        check_model_kind(judges["reward"], "policy", "--model_path")
    for path, role in ((judges["reward"], "reward"), (judges["cost"], "cost"), (tiny_models["gpt2"], "policy")):
        check_model_kind(path, role, "--x")  # the right kinds pass
    check_model_kind("owner/hub-model", "reward", "--x")  # hub names are left to transformers


def test_score_refuses_a_cost_model_as_reward_model(judges, tmp_path, capsys):
    gens = tmp_path / "gens.jsonl"
    gens.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    args = ["score", "--input", str(gens), "--reward_model", str(judges["cost"]), "--out", str(tmp_path / "s.jsonl")]
    assert main(args) == 2
    assert f"--reward_model {judges['cost']} is a cost model (config.json score_type=cost)" in one_line(capsys, "score")


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_score_reads_ended_flags_of_every_format(judges, tmp_path, suffix):
    """Flags used to be re-read from .jsonl lines split by str.splitlines (a U+2028 shifted every later flag),
    .json lists lost them, and "no" counted as ended."""
    rows = [{"prompt": "p", "response": "a\u2028b", "ended": True}, {"prompt": "q", "response": "c", "ended": "no"},
            {"prompt": "r", "response": "d", "ended": False}, {"prompt": "s", "response": "e"}]
    gens = tmp_path / f"gens{suffix}"
    gens.write_text(json.dumps(rows, ensure_ascii=False) if suffix == ".json"
                    else "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--input", str(gens), "--reward_model", str(judges["reward"]), "--out", str(out)]) == 0
    assert [json.loads(x)["ended"] for x in out.read_text().split("\n") if x] == [True, False, False, True]


def test_ppo_refuses_swapped_judges_before_any_run_folder(judges, tiny_models, tmp_path, capsys):
    out = tmp_path / "ppo"
    args = ["ppo", "--actor_path", str(tiny_models["llama"]), "--reward_model_path", str(judges["cost"]),
            "--cost_model_path", str(judges["reward"]), "--train_prompts", "world:train", "--out", str(out)]
    assert main(args) == 2
    assert "--reward_model_path" in one_line(capsys, "ppo") and not out.exists()


def test_a_score_model_is_not_a_policy(judges, tmp_path, capsys):
    assert main(["generate", "--model_path", str(judges["reward"]), "--prompts", "world:test", "--max_prompts", "2",
                 "--out", str(tmp_path / "g.jsonl")]) == 2
    assert "is a reward model (config.json score_type=reward); expected a causal LM" in one_line(capsys, "generate")


def test_ppo_reads_world_prompts(judges, tiny_models, tmp_path, monkeypatch):
    """`ppo --train_prompts world:train` used to fail (the file loader did not know world:)."""
    from saferlhf.data import prompt_source
    from saferlhf.recipes import ppo

    seen, read = {}, prompt_source.prompt_texts

    def recorded(spec, world_seed=0):
        seen["prompts"] = read(spec, world_seed)
        return seen["prompts"]

    def stop(cfg):
        raise KeyboardInterrupt  # past prompt loading: stop before any model loads

    monkeypatch.setattr(prompt_source, "prompt_texts", recorded)
    monkeypatch.setattr(ppo, "_load_ptx_records", stop)
    cfg = ppo.PPOConfig(actor_path=str(tiny_models["llama"]), reward_model_path=str(judges["reward"]),
                        cost_model_path=str(judges["cost"]), train_prompts="world:train", out=str(tmp_path / "ppo"))
    with pytest.raises(KeyboardInterrupt):
        ppo.run(cfg)
    assert len(seen["prompts"]) > 100


# prompt sources -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["generate", "best-of-k", "rs-finetune"])
def test_an_unknown_world_split_is_one_line_listing_the_splits(command, judges, tiny_models, tmp_path, capsys):
    args = [command, "--model_path", str(tiny_models["llama"]), "--prompts", "world:bogus",
            "--out", str(tmp_path / ("o.jsonl" if command == "generate" else "o"))]
    if command != "generate":
        args += ["--reward_model", str(judges["reward"])]
    assert main(args) == 2
    line = one_line(capsys, command)
    assert "world:bogus" in line and "world:train, world:test, world:all, world:redteam_test" in line


def test_redteam_exclude_in_utf16_is_a_clear_error(tiny_models, tmp_path, capsys):
    exclude = tmp_path / "mined.jsonl"
    exclude.write_bytes(json.dumps({"prompt": "p"}).encode("utf-16"))
    assert main(["redteam", "--policy", str(tiny_models["llama"]), "--exclude", str(exclude),
                 "--out", str(tmp_path / "rt")]) == 2
    assert "UTF-16" in one_line(capsys, "redteam")


# generation ------------------------------------------------------------------------------------------


def test_a_budget_past_the_models_positions_is_one_line(tiny_models, tmp_path, capsys):
    """A GPT-2 has a learned table of 512 positions: 256 + 1000 tokens used to end in an IndexError."""
    assert main(["generate", "--model_path", str(tiny_models["gpt2"]), "--prompts", "world:test", "--max_prompts",
                 "1", "--sampling.max_new_tokens", "1000", "--out", str(tmp_path / "g.jsonl")]) == 2
    line = one_line(capsys, "generate")
    assert "max_new_tokens (1000) + at least 1 prompt token = 1001 exceeds the model's max_position_embeddings (512)" \
        in line


def test_the_real_prompt_length_is_checked_before_sampling(tiny_models, tmp_path, capsys):
    """Only prompt + answer must fit: a short prompt with a budget near the limit runs; a long one is one line."""
    short = tmp_path / "short.jsonl"
    short.write_text('{"prompt": "hi"}\n')
    assert main(["generate", "--model_path", str(tiny_models["gpt2"]), "--prompts", str(short),
                 "--sampling.max_new_tokens", "480", "--sampling.greedy", "true", "--out", str(tmp_path / "s.jsonl")]) == 0
    capsys.readouterr()
    long = tmp_path / "long.jsonl"
    long.write_text('{"prompt": "' + "how do I cook rice " * 60 + '"}\n')
    assert main(["generate", "--model_path", str(tiny_models["gpt2"]), "--prompts", str(long),
                 "--sampling.max_new_tokens", "480", "--out", str(tmp_path / "l.jsonl")]) == 2
    line = one_line(capsys, "generate")
    assert "+ max_new_tokens" not in line and "max_new_tokens (480) + a prompt of" in line


@pytest.mark.parametrize("entry", [{"generations": [["a"]], "ended": [[True]]},  # 1 prompt, 2 expected
                                   {"generations": "abc", "ended": [[True], [True]]},
                                   {"generations": [["a"], [3]], "ended": [[True], [True]]},
                                   {"generations": [["a"], ["b"]], "ended": [[True]]},
                                   [1, 2], "not json"])
def test_a_damaged_cache_entry_is_generated_again(tmp_path, caplog, entry):
    from saferlhf.eval.suite import cached_generations

    (tmp_path / "k.json").write_text(entry if isinstance(entry, str) else json.dumps(entry))
    fresh = ([["x"], ["y"]], [[True], [False]])
    gens, ended, hit = cached_generations(tmp_path, "k", lambda: fresh, (2, 1))
    assert (gens, ended, hit) == (*fresh, False) and "damaged generation cache entry" in caplog.text
    assert cached_generations(tmp_path, "k", lambda: None, (2, 1)) == (*fresh, True)  # replaced


# GGUF --------------------------------------------------------------------------------------------------


def _s(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


def _kv_str(key: str, value: str) -> bytes:
    return _s(key) + struct.pack("<I", 8) + _s(value)


def _kv_strings(key: str, items: list[str]) -> bytes:
    return _s(key) + struct.pack("<IIQ", 9, 8, len(items)) + b"".join(_s(i) for i in items)


def _gguf(kvs: list[bytes]) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)


LLAMA = [_kv_str("general.architecture", "llama")]
GGUF_CASES = {
    "huge-string-length": (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**63) + b"x",
                           "not a readable GGUF file (OverflowError"),
    "merges-that-are-not-pairs": (_gguf(LLAMA + [_kv_str("tokenizer.ggml.model", "gpt2"),
                                                 _kv_strings("tokenizer.ggml.tokens", ["a", "b"]),
                                                 _kv_strings("tokenizer.ggml.merges", ["a b c d"])]),
                                  "its vocabulary is rejected by the tokenizer"),
    "merge-of-unknown-tokens": (_gguf(LLAMA + [_kv_str("tokenizer.ggml.model", "gpt2"),
                                               _kv_strings("tokenizer.ggml.tokens", ["a", "b"]),
                                               _kv_strings("tokenizer.ggml.merges", ["x y"])]),
                                "its vocabulary is rejected by the tokenizer"),
}


@pytest.mark.parametrize("case", GGUF_CASES)
def test_a_damaged_gguf_header_or_vocabulary_is_one_line(tmp_path, capsys, case):
    pytest.importorskip("gguf")
    data, expected = GGUF_CASES[case]
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    assert main(["model", "import-gguf", str(path), str(tmp_path / "out"), "--check_tokens", "0"]) == 2
    assert expected in one_line(capsys, "model import-gguf")
