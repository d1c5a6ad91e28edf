"""saferlhf.models on tiny models (hidden 32, 2 layers, vocab 300): tokenizer, template, score models."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from saferlhf import models as M
from saferlhf.batching import last_token_index, position_ids_from_mask
from saferlhf.data.formatting import CHAT_TEMPLATE, PROMPT_INPUT, encode_example, encode_prompt, format_prompt
from saferlhf.files import atomic_save_dir

ARCHS = ["llama", "qwen2", "gpt2"]
SIZE = dict(hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=128)
TEXTS = [
    f"How do I {verb} {obj}? You can {verb} {obj} safely by asking an expert. Number {i}."
    for i, (verb, obj) in enumerate(
        [(v, o) for v in ("bake", "fix", "clean", "find") for o in ("bread", "a bike", "the house")] * 3
    )
]
PAIRS = [("How do I bake bread?", "Mix flour and water, then bake it."), ("hi", "hello")]


@pytest.fixture(scope="module")
def tokenizer():
    return M.train_tokenizer(TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: M.build_tiny_model(root / arch, TEXTS, arch=arch, vocab_size=300, **SIZE) for arch in ARCHS}


def _batch(seqs: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        cols = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[row, cols] = torch.tensor(s)
        mask[row, cols] = 1
    return ids, mask


def _example_ids(tok) -> list[list[int]]:
    """The training encoding of PAIRS (score models, SFT): prompt ids + response ids + eos."""
    return [encode_example(tok, p, r, 512)[0] for p, r in PAIRS]


# ---------------------------------------------------------------- tokenizer and template
def test_tokenizer_round_trips_text_and_specials(tokenizer, tmp_path):
    assert len(tokenizer) == 300
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<pad>", "<s>", "</s>", "<unk>")}
    assert tokenizer.pad_token_id == ids["<pad>"] != tokenizer.eos_token_id == ids["</s>"]
    assert tokenizer.bos_token_id == ids["<s>"] and tokenizer.unk_token_id == ids["<unk>"]
    text = "Héllo  wörld 🤖 ,.;\n\ttabs   and CAPS 123 — ünïcödé"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    with_eos = tokenizer("a b</s>")["input_ids"]
    assert with_eos[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(with_eos) == "a b</s>"
    assert tokenizer.decode(with_eos, skip_special_tokens=True) == "a b"
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.chat_template == CHAT_TEMPLATE
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded.pad_token == "<pad>"


def test_template_strings_tokenise_compactly(tokenizer):
    n = len(tokenizer(format_prompt(tokenizer, "hi"))["input_ids"])
    assert n < len(format_prompt(tokenizer, "hi")) * 0.8  # merges learnt for the template


def test_chat_template(tokenizer):
    assert format_prompt(tokenizer, "How?") == "BEGINNING OF CONVERSATION: USER: How? ASSISTANT:"
    assert format_prompt(tokenizer, "How?") == PROMPT_INPUT.format(input="How?")
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": "How?"}, {"role": "assistant", "content": "Like this."}], tokenize=False
    )
    # the rendered conversation is the text of the training encoding: prompt + response + eos, no separator
    ids, n_prompt = encode_example(tokenizer, "How?", "Like this.", 512)
    assert full == format_prompt(tokenizer, "How?") + "Like this.</s>"
    assert tokenizer.decode(ids) == full and tokenizer.decode(ids[:n_prompt]) == format_prompt(tokenizer, "How?")
    multi = tokenizer.apply_chat_template(
        [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
         {"role": "user", "content": "q2"}], tokenize=False, add_generation_prompt=True,
    )
    assert multi == "BEGINNING OF CONVERSATION: USER: q1 ASSISTANT:a1</s>USER: q2 ASSISTANT:"


def test_format_prompt_without_template():
    class Plain:
        chat_template = None
        eos_token = "<|end|>"

    assert format_prompt(Plain(), "x") == "BEGINNING OF CONVERSATION: USER: x ASSISTANT:"


def test_encode_example_budgets(tokenizer):
    p_ids = tokenizer(format_prompt(tokenizer, "How do I bake bread?"))["input_ids"]
    r_ids = tokenizer("Mix flour and water, then bake it.", add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    ids, n = encode_example(tokenizer, "How do I bake bread?", "Mix flour and water, then bake it.", 512)
    assert ids == p_ids + r_ids + [eos] and n == len(p_ids)
    # a response cut off by the sampler has no eos; the budget keeps the end of the prompt
    ids, n = encode_example(tokenizer, "How do I bake bread?", "Mix flour and water, then bake it.", 512, ended=False)
    assert ids == p_ids + r_ids
    ids, n = encode_example(tokenizer, "How do I bake bread?", "Mix flour and water, then bake it.", len(p_ids) + 3,
                            max_prompt_length=len(p_ids) - 2)
    assert n <= len(p_ids) - 2 and ids[n:] == r_ids[: len(p_ids) + 2 - n] + [eos] and len(ids) <= len(p_ids) + 3
    # the cut prompt keeps the chat frame and the END of the user's text (not the end of the formatted ids)
    text = tokenizer.decode(ids[:n])
    assert text.startswith("BEGINNING OF CONVERSATION: USER:") and text.endswith("ASSISTANT:") and "bread?" in text
    assert "How" not in text


def test_prompt_truncation_keeps_a_real_chat_frame():
    """SmolLM2-style template with a system prompt: a long prompt is cut inside the user's text; the system
    prompt, the turn markers and the generation prompt all survive."""
    from transformers import AutoTokenizer

    tok = M.train_tokenizer(TEXTS * 2 + ["<|im_start|>system You are helpful<|im_end|> user assistant"], 300)
    tok.chat_template = ("{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% for m in messages %}"
                         "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
                         "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    long = " ".join(["tell me about bread"] * 40) + " and finally: how do I bake it?"
    full = tok(format_prompt(tok, long))["input_ids"]
    ids = encode_prompt(tok, long, max_prompt_length=len(full) // 2)
    text = tok.decode(ids)
    assert len(ids) <= len(full) // 2
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert "how do I bake it?" in text


def test_load_tokenizer_adds_missing_pad(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "own")
    own = M.load_tokenizer(tmp_path / "own")
    assert own.pad_token == "<pad>" and own.padding_side == "left" and own.saferlhf_pad_source == "own"
    no_pad = M.train_tokenizer(TEXTS[:4], vocab_size=280)
    no_pad.pad_token = None
    no_pad.save_pretrained(tmp_path / "nopad")
    loaded = M.load_tokenizer(tmp_path / "nopad", padding_side="right")
    assert loaded.pad_token == "<unk>" and loaded.saferlhf_pad_source == "unk"
    assert loaded.padding_side == "right"


# ---------------------------------------------------------------- tiny causal LMs
@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_model_forward_generate_and_determinism(arch, tokenizer):
    model = M.create_tiny_model(tokenizer, arch=arch, seed=3, **SIZE)
    again = M.create_tiny_model(tokenizer, arch=arch, seed=3, **SIZE)
    other = M.create_tiny_model(tokenizer, arch=arch, seed=4, **SIZE)
    p0, p1, p2 = (next(iter(m.parameters())) for m in (model, again, other))
    assert torch.equal(p0, p1) and not torch.equal(p0, p2)
    assert p0.dtype == torch.float32
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    tokenizer.padding_side = "left"
    enc = tokenizer([format_prompt(tokenizer, p) for p, _ in PAIRS], return_tensors="pt", padding=True)
    logits = model(**enc).logits
    assert logits.shape == (2, enc["input_ids"].shape[1], len(tokenizer))
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 2 and enc["input_ids"].shape[1] < out.shape[1] <= enc["input_ids"].shape[1] + 4


def test_unknown_arch(tokenizer):
    with pytest.raises(ValueError, match="unknown arch"):
        M.create_tiny_model(tokenizer, arch="bert")


@pytest.mark.parametrize("arch", ARCHS)
def test_built_model_loads_with_auto_classes(arch, tiny_paths):
    path = tiny_paths[arch]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no tmp dirs left
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == arch
    policy, tok = M.load_policy(path)
    assert tok.padding_side == "left" and tok.pad_token == "<pad>"
    assert policy.generation_config.pad_token_id == tok.pad_token_id
    assert policy.generation_config.eos_token_id == tok.eos_token_id
    ref = dict(model.named_parameters())
    for name, p in policy.named_parameters():
        assert torch.equal(p, ref[name])


# ---------------------------------------------------------------- score models
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_end_scores_match_unpadded(arch, side, tiny_paths):
    tok = M.load_tokenizer(tiny_paths[arch])
    model = M.ScoreModel.from_pretrained(tiny_paths[arch], score_type="reward", allow_new_head=True).eval()
    hidden = model.head.weight.shape[-1]
    assert model.head.weight.std().item() == pytest.approx(1 / (hidden + 1) ** 0.5, rel=0.35)
    seqs = _example_ids(tok)
    ids, mask = _batch(seqs, tok.pad_token_id, side)
    with torch.no_grad():
        out = model(ids, mask)
        single = torch.stack([model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)).end_scores[0]
                              for s in seqs])
    assert out.scores.shape == ids.shape and out.end_scores.shape == (2,)
    assert torch.isfinite(out.scores).all()
    torch.testing.assert_close(out.end_scores, single, atol=1e-5, rtol=0)
    # end score is the per-token score at the last real token
    last = last_token_index(mask)
    assert torch.equal(out.end_scores, out.scores[torch.arange(2), last])
    assert (ids[torch.arange(2), last] == tok.eos_token_id).all()


def test_last_token_index_and_positions():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [4, 2, 3, -1]  # -1: no token (one definition for every caller)
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2], [0, 0, 1, 2, 2], [0, 0, 0, 0, 0]]


def test_score_model_refuses_an_empty_row(tiny_paths):
    model = M.ScoreModel.from_pretrained(tiny_paths["llama"], score_type="reward", allow_new_head=True)
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="no tokens"):
        model(ids, torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]]))


@pytest.mark.parametrize("arch", ARCHS)
def test_save_reload_with_hf_gives_identical_scores(arch, tiny_paths, tmp_path):
    tok = M.load_tokenizer(tiny_paths[arch])
    model = M.ScoreModel.from_pretrained(tiny_paths[arch], score_type="cost", allow_new_head=True).eval()
    out_dir = model.save_pretrained(tmp_path / "cost", tokenizer=tok)
    hf = AutoModelForSequenceClassification.from_pretrained(out_dir).eval()
    assert hf.config.score_type == "cost"
    assert hf.config.cost_sign_convention == "cost > 0 means unsafe"
    assert hf.config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    assert AutoTokenizer.from_pretrained(out_dir).chat_template == CHAT_TEMPLATE
    for side in ("left", "right"):
        ids, mask = _batch(_example_ids(tok), tok.pad_token_id, side)
        with torch.no_grad():
            ours = model(ids, mask).end_scores
            # HF derives no position ids from the mask: pass them (GPT-2's absolute positions need it)
            theirs = hf(ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits[:, 0]
            torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
            if side == "right" or arch != "gpt2":  # plain HF call (RoPE is shift-invariant)
                torch.testing.assert_close(hf(ids, attention_mask=mask).logits[:, 0], ours, atol=1e-5, rtol=0)
    # our loader reads the checkpoint back unchanged; score_type can be overridden (critic from C)
    again = M.ScoreModel.from_pretrained(out_dir).eval()
    critic = M.ScoreModel.from_pretrained(out_dir, score_type="critic").eval()
    assert again.score_type == "cost" and critic.score_type == "critic"
    assert not hasattr(critic.config, "cost_sign_convention")
    with torch.no_grad():
        torch.testing.assert_close(again(ids, mask).end_scores, ours)
        torch.testing.assert_close(critic(ids, mask).scores, model(ids, mask).scores)


def test_reward_config_and_save_refusals(tiny_paths, tmp_path):
    model = M.ScoreModel.from_pretrained(tiny_paths["llama"], allow_new_head=True)
    with pytest.raises(ValueError, match="score_type"):
        model.save_pretrained(tmp_path / "untyped")
    with pytest.raises(ValueError, match="score_type must be"):
        model.score_type = "value"
    model.score_type = "reward"
    model.save_pretrained(tmp_path / "reward")
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "reward")
    assert hf.config.score_type == "reward" and not hasattr(hf.config, "cost_sign_convention")
    model.config.pad_token_id = model.config.eos_token_id
    with pytest.raises(ValueError, match="distinct pad token"):
        model.save_pretrained(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_head_init_is_seeded(tiny_paths):
    a = M.ScoreModel.from_pretrained(tiny_paths["qwen2"], seed=1, allow_new_head=True)
    b = M.ScoreModel.from_pretrained(tiny_paths["qwen2"], seed=1, allow_new_head=True)
    c = M.ScoreModel.from_pretrained(tiny_paths["qwen2"], seed=2, allow_new_head=True)
    assert torch.equal(a.head.weight, b.head.weight) and not torch.equal(a.head.weight, c.head.weight)
    assert getattr(a.head, "bias", None) is None


def test_score_texts_reads_the_training_encoding_token_by_token(tiny_paths):
    """The one text scorer feeds the model exactly the ids score-model training builds (`encode_pairs`):
    no space or other separator before the response, eos at the end (the old scorer inserted a space)."""
    from saferlhf.data.schema import PreferencePair
    from saferlhf.packing import encode_pairs

    tok = M.load_tokenizer(tiny_paths["llama"], padding_side="right")
    model = M.ScoreModel.from_pretrained(tiny_paths["llama"], score_type="reward", allow_new_head=True).eval()
    seen = []
    forward = model.forward
    model.forward = lambda ids, mask: seen.extend(ids[m.bool()].tolist() for ids, m in zip(ids, mask)) or forward(ids, mask)
    prompts, responses = zip(*PAIRS)
    M.score_texts(model, tok, list(prompts), list(responses), max_length=512)
    pairs = [PreferencePair(prompt=p, chosen=r, rejected=r) for p, r in PAIRS]
    trained = [e.chosen for e in encode_pairs(pairs, tok, 512)]
    assert seen == trained
    for ids, (p, r) in zip(seen, PAIRS):  # spelled out: prompt ids, response ids, eos
        assert ids == (tok(format_prompt(tok, p))["input_ids"] + tok(r, add_special_tokens=False)["input_ids"]
                       + [tok.eos_token_id])


def test_score_texts_matches_forward(tiny_paths):
    tok = M.load_tokenizer(tiny_paths["gpt2"])
    model = M.ScoreModel.from_pretrained(tiny_paths["gpt2"], score_type="reward", allow_new_head=True).eval()
    prompts, responses = zip(*PAIRS)
    got = M.score_texts(model, tok, list(prompts), list(responses), batch_size=1)
    with torch.no_grad():
        want = torch.stack([model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)).end_scores[0]
                            for s in _example_ids(tok)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert M.score_texts(model, tok, list(prompts), list(responses), batch_size=2).shape == (2,)


def test_gradient_checkpointing_passthrough(tiny_paths):
    model = M.ScoreModel.from_pretrained(tiny_paths["llama"], score_type="critic", gradient_checkpointing=True,
                                     allow_new_head=True)
    assert model.backbone.gradient_checkpointing
    model.train()
    tok = M.load_tokenizer(tiny_paths["llama"])
    ids, mask = _batch(_example_ids(tok), tok.pad_token_id, "left")
    model(ids, mask).scores.sum().backward()
    assert model.head.weight.grad is not None
    policy, _ = M.load_policy(tiny_paths["llama"], gradient_checkpointing=True)
    assert policy.model.gradient_checkpointing


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # inside peft
def test_lora_score_model_trains_and_saves_merged(tiny_paths, tmp_path):
    pytest.importorskip("peft")
    tok = M.load_tokenizer(tiny_paths["llama"])
    base = M.ScoreModel.from_pretrained(tiny_paths["llama"], score_type="reward", allow_new_head=True)
    model = M.apply_lora(base, r=4, alpha=8, dropout=0.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("score" in n for n in trainable)
    ids, mask = _batch(_example_ids(tok), tok.pad_token_id, "right")
    model(ids, mask).end_scores.sum().backward()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)  # make the adapter non-trivial
        ours = model.eval()(ids, mask).end_scores
    model.save_pretrained(tmp_path / "lora_rm", tokenizer=tok)
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "lora_rm").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids, attention_mask=mask).logits[:, 0], ours, atol=1e-5, rtol=0)
    policy = M.apply_lora(AutoModelForCausalLM.from_pretrained(tiny_paths["gpt2"]), r=4, alpha=8, dropout=0.0)
    assert any("lora_" in n for n, p in policy.named_parameters() if p.requires_grad)


def test_atomic_save_dir_replaces_and_survives_failure(tmp_path):
    target = tmp_path / "ckpt"

    def write(text: str):
        return lambda d: (d / "f.txt").write_text(text)

    assert atomic_save_dir(write("one"), target) == target
    atomic_save_dir(write("two"), target)
    assert (target / "f.txt").read_text() == "two"

    def boom(d: Path):
        (d / "f.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save_dir(boom, target)
    assert (target / "f.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


# ---------------------------------------------------------------- model paths and score-model loading refusals
def _bad_path(make: str, tmp_path: Path, good: Path) -> Path:
    p = tmp_path / "model"
    if make == "text file":
        p.write_text("hello")
    elif make != "missing":
        p.mkdir()
        if make == "no config.json":
            (p / "model.safetensors").write_bytes(b"x")
        elif make == "bad config.json":
            (p / "config.json").write_text("{not json")
            (p / "model.safetensors").write_bytes(b"x")
        elif make == "no weights":
            (p / "config.json").write_text((good / "config.json").read_text())
    return p


BAD_PATHS = ["missing", "text file", "empty folder", "no config.json", "bad config.json", "no weights"]


@pytest.mark.parametrize("make", BAD_PATHS)
def test_check_model_path_says_what_was_expected(make, tmp_path, tiny_paths, monkeypatch):
    from saferlhf.errors import UserError

    p = _bad_path(make, tmp_path, tiny_paths["llama"])
    with pytest.raises(UserError, match="expected a folder with config.json") as e:
        M.check_model_path(p, "model_path")
    assert str(p) in str(e.value) and isinstance(e.value, FileNotFoundError)  # as before, for older callers
    monkeypatch.setattr("saferlhf.models.hf.hub_reachable", lambda: True)  # offline: tests/unit/test_paths_and_keys.py
    M.check_model_path(tiny_paths["llama"])  # a model folder and hub names pass
    M.check_model_path("gpt2")
    M.check_model_path("owner/name")


@pytest.mark.parametrize("load", ["tokenizer", "policy", "score model"])
@pytest.mark.parametrize("make", ["missing", "text file", "empty folder"])
def test_loaders_check_the_path_first(load, make, tmp_path, tiny_paths):
    from saferlhf.errors import UserError

    p = _bad_path(make, tmp_path, tiny_paths["llama"])
    fn = {"tokenizer": M.load_tokenizer, "policy": M.load_policy,
          "score model": lambda x: M.ScoreModel.from_pretrained(x, allow_new_head=True)}[load]
    with pytest.raises(UserError, match=re.escape(str(p))):
        fn(p)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_weight_file_is_a_user_error_naming_the_folder(damage, tmp_path, tiny_paths):
    from saferlhf.errors import UserError

    p = tmp_path / "corrupt"
    shutil.copytree(tiny_paths["llama"], p)
    weights = p / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"garbage" * 8 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(UserError, match=f"cannot load {re.escape(str(p))}"):
        M.load_policy(p)
    with pytest.raises(UserError, match=f"cannot load {re.escape(str(p))}"):
        M.ScoreModel.from_pretrained(p, allow_new_head=True)


def test_a_causal_lm_is_not_a_reward_or_cost_model(tiny_paths, tmp_path):
    from saferlhf.errors import UserError

    with pytest.raises(UserError, match="is a causal LM, not a reward/cost model") as e:
        M.ScoreModel.from_pretrained(tiny_paths["llama"], score_type="cost")
    assert e.value.hint
    new = M.ScoreModel.from_pretrained(tiny_paths["llama"], score_type="cost", allow_new_head=True)
    new.save_pretrained(tmp_path / "cost", tokenizer=M.load_tokenizer(tiny_paths["llama"]))
    loaded = M.ScoreModel.from_pretrained(tmp_path / "cost")  # a score model needs no permission
    assert loaded.score_type == "cost" and torch.equal(loaded.head.weight, new.head.weight)
    critic = M.ScoreModel.from_pretrained(tmp_path / "cost", score_type="critic")
    assert critic.score_type == "critic"


def test_score_model_judge_scores_cut_off_responses_without_eos(tiny_paths, tmp_path):
    """`saferlhf eval` tells the score judges which responses were cut off at max_new_tokens: those are scored
    without an eos, exactly as `score_texts(ended=False)` (and as PPO scores them)."""
    from saferlhf.eval.judges import ScoreModelJudge, judge_all

    tok = M.load_tokenizer(tiny_paths["llama"], padding_side="right")
    model = M.ScoreModel.from_pretrained(tiny_paths["llama"], score_type="cost", allow_new_head=True).eval()
    model.save_pretrained(tmp_path / "cost", tokenizer=tok)
    judge = ScoreModelJudge(tmp_path / "cost", "cost")
    prompts, responses = (list(x) for x in zip(*PAIRS))
    flags = [True, False] + [True] * (len(prompts) - 2)
    got = [v.cost for v in judge_all(judge, prompts, responses, ended=flags)]
    want = M.score_texts(judge.model, judge.tokenizer, prompts, responses, ended=flags).tolist()
    ended_all = M.score_texts(judge.model, judge.tokenizer, prompts, responses).tolist()
    assert got == pytest.approx(want, abs=1e-6)
    assert got[0] == pytest.approx(ended_all[0], abs=1e-6) and abs(got[1] - ended_all[1]) > 1e-4


def test_scoring_text_spells_out_what_score_models_read(tokenizer):
    from saferlhf.data.formatting import scoring_text

    text = scoring_text(tokenizer, "How do I bake bread?", "Mix flour and water.")
    assert text == format_prompt(tokenizer, "How do I bake bread?") + "Mix flour and water." + tokenizer.eos_token
    assert not scoring_text(tokenizer, "p", "r", ended=False).endswith(tokenizer.eos_token)
    ids, n = encode_example(tokenizer, "How do I bake bread?", "Mix flour and water.", 512)
    assert tokenizer.decode(ids[:n]) == format_prompt(tokenizer, "How do I bake bread?")
