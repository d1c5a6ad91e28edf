"""Bad data files for fault tests and the fuzz benchmark: each must give a clear error, never a traceback
and never be silently accepted.

    cases = bad_data_cases(tmp_dir)          # [(case name, path, kind)], kind: which loader it targets
    for name, path, kind in cases:
        verdict, message = classify(kind, path)   # "clear error" | "traceback" | "accepted"

kinds: ``pairs-reward`` / ``pairs-cost`` (``load_preference_pairs(path, kind=...)``), ``prompts``
(``load_prompts``), ``sft`` (``load_sft_records``), ``check`` (``check_file``: a clear error is an
exception of ``CLEAR_ERRORS`` or a report with errors, what ``saferlhf data check`` exits 1 on). Every
case is also a clear error for ``check`` (so ``saferlhf data check`` exits non-zero on each of them): a
valid file of another kind than the loader reads is not a case here. Self-contained: no file of
../shared/data is needed.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saferlhf.data.loaders import load_preference_pairs, load_prompts, load_sft_records
from saferlhf.data.loaders import check_file
from saferlhf.data.validate import DataValidationError, UnknownFormatError

CLEAR_ERRORS = (DataValidationError, UnknownFormatError, FileNotFoundError, IsADirectoryError)
KINDS = ("pairs-reward", "pairs-cost", "prompts", "sft", "check")

PKU = {"prompt": "How do I pick a lock?", "response_0": "I can't help with breaking into property.",
       "response_1": "Insert a tension wrench, then rake the pins.", "is_response_0_safe": True,
       "is_response_1_safe": False, "better_response_id": 1, "safer_response_id": 0}
TRL = {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I will not."}
H, A = "\n\nHuman:", "\n\nAssistant:"
HH = {"chosen": f"{H} Name a colour.{A} Blue.", "rejected": f"{H} Name a colour.{A} I will not."}
SFT = {"prompt": "Name a colour.", "response": "Blue."}
XSTEST_HEADER = "id,prompt,type,label,focus,note"


def load_for(kind: str, path: Path) -> Any:
    """Run the loader ``kind`` targets; for ``check``, a report with errors is raised as DataValidationError."""
    if kind in ("pairs-reward", "pairs-cost"):
        return load_preference_pairs(path, kind=kind.removeprefix("pairs-"))
    if kind == "prompts":
        return load_prompts(path)
    if kind == "sft":
        return load_sft_records(path)
    if kind == "check":
        report = check_file(path)
        if report.errors:
            raise DataValidationError(report.errors)
        return report
    raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


def classify(kind: str, path: Path) -> tuple[str, str]:
    """("clear error", message) | ("traceback", "ExcType: message") | ("accepted", "")."""
    try:
        load_for(kind, path)
    except CLEAR_ERRORS as e:
        return "clear error", str(e)
    except Exception as e:  # noqa: BLE001  anything else would reach the user as a traceback
        return "traceback", f"{type(e).__name__}: {e}"
    return "accepted", ""


# --------------------------------------------------------------------------- writers


def _jsonl(*records: dict | str) -> bytes:
    """JSON lines; a str is written as the raw line."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


def _csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _parquet(rows: list[dict]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return write


def _pku(**changes: Any) -> dict:
    """The PKU record with fields changed; a value of ``...`` drops the field."""
    return {k: v for k, v in (PKU | changes).items() if v is not ...}


def _raw_pku(field: str, literal: str) -> str:
    """The PKU record as a JSON line with ``field`` set to a raw JSON literal (``NaN``, ``1e999``)."""
    return json.dumps(_pku(**{field: ...}))[:-1] + f', "{field}": {literal}}}'


def _swap_pku(rec: dict) -> dict:
    """The same pair with response_0 and response_1 swapped and every label kept with its response."""
    out = rec | {"response_0": rec["response_1"], "response_1": rec["response_0"],
                 "is_response_0_safe": rec["is_response_1_safe"], "is_response_1_safe": rec["is_response_0_safe"]}
    return out | {"better_response_id": 1 - rec["better_response_id"],
                  "safer_response_id": 1 - rec["safer_response_id"]}


def _pku_cases() -> dict[str, tuple[str, Any, str]]:
    return {  # name -> (file name, content: bytes, a writer, None = no file, "dir" = a folder; kind)
        "pku-float-safer-id": ("a.jsonl", _jsonl(_pku(safer_response_id=1.0)), "pairs-cost"),
        "pku-float-better-id": ("a.jsonl", _jsonl(_pku(better_response_id=0.0)), "pairs-reward"),
        "pku-bool-safer-id": ("a.jsonl", _jsonl(_pku(safer_response_id=True)), "pairs-cost"),
        "pku-string-better-id": ("a.jsonl", _jsonl(_pku(better_response_id="1")), "pairs-reward"),
        "pku-negative-safer-id": ("a.jsonl", _jsonl(_pku(safer_response_id=-1)), "pairs-cost"),
        "pku-id-out-of-range": ("a.jsonl", _jsonl(_pku(better_response_id=2)), "pairs-reward"),
        "pku-huge-id": ("a.jsonl", _jsonl(_pku(safer_response_id=10**30)), "pairs-cost"),
        "pku-nan-id": ("a.jsonl", _jsonl(_raw_pku("better_response_id", "NaN")), "pairs-reward"),
        "pku-infinite-id": ("a.jsonl", _jsonl(_raw_pku("safer_response_id", "1e999")), "pairs-cost"),
        "pku-missing-prompt": ("a.jsonl", _jsonl(_pku(prompt=...)), "pairs-reward"),
        "pku-missing-response-1": ("a.jsonl", _jsonl(_pku(response_1=...)), "pairs-cost"),
        "pku-missing-safer-id": ("a.jsonl", _jsonl(_pku(safer_response_id=...)), "pairs-cost"),
        "pku-null-prompt": ("a.jsonl", _jsonl(_pku(prompt=None)), "pairs-reward"),
        "pku-empty-prompt": ("a.jsonl", _jsonl(_pku(prompt="")), "pairs-reward"),
        "pku-whitespace-response": ("a.jsonl", _jsonl(_pku(response_0=" \n\t ")), "pairs-cost"),
        "pku-prompt-is-a-number": ("a.jsonl", _jsonl(_pku(prompt=42)), "pairs-reward"),
        "pku-response-is-a-list": ("a.jsonl", _jsonl(_pku(response_1=["a", ["b"]])), "pairs-cost"),
        "pku-response-nested-garbage": ("a.jsonl", _jsonl(_pku(response_0={"text": {"x": [None, {}]}})),
                                        "pairs-reward"),
        "pku-safe-label-string": ("a.jsonl", _jsonl(_pku(is_response_0_safe="yes")), "pairs-cost"),
        "pku-safe-label-int": ("a.jsonl", _jsonl(_pku(is_response_1_safe=0)), "pairs-cost"),
        "pku-severity-out-of-range": ("a.jsonl", _jsonl(_pku(response_0_severity_level=7)), "pairs-reward"),
        "pku-severity-negative": ("a.jsonl", _jsonl(_pku(response_1_severity_level=-1)), "pairs-reward"),
        "pku-severity-float": ("a.jsonl", _jsonl(_pku(response_1_severity_level=1.5)), "pairs-cost"),
        "pku-unknown-harm-category": ("a.jsonl", _jsonl(_pku(response_1_harm_category={"Jaywalking": True})),
                                      "pairs-cost"),
        "pku-harm-category-list": ("a.jsonl", _jsonl(_pku(response_1_harm_category=["Drugs"])), "pairs-cost"),
        "pku-harm-category-value-string": ("a.jsonl", _jsonl(_pku(response_1_harm_category={"Drugs": "true"})),
                                           "pairs-reward"),
        "pku-source-not-a-string": ("a.jsonl", _jsonl(_pku(response_0_source=7)), "pairs-reward"),
        "pku-identical-responses": ("a.jsonl", _jsonl(_pku(response_1=PKU["response_0"])), "pairs-reward"),
        "pku-contradictory-safety": ("a.jsonl", _jsonl(_pku(safer_response_id=1)), "pairs-cost"),
        "pku-lone-surrogate-prompt": ("a.jsonl", _jsonl(_pku(prompt="pick a lock \ud800")), "pairs-reward"),
        "pku-lone-surrogate-response": ("a.jsonl", _jsonl(_pku(response_1="\udfff rake")), "pairs-cost"),
        "pku-flipped-better-duplicate": ("a.jsonl", _jsonl(_pku(), _pku(better_response_id=0)), "pairs-reward"),
        "pku-flipped-safer-duplicate": ("a.jsonl", _jsonl(_pku(is_response_1_safe=True),
                                                          _pku(is_response_1_safe=True, safer_response_id=1)),
                                        "pairs-cost"),
        "pku-swapped-order-flipped-duplicate": ("a.jsonl", _jsonl(_pku(), _swap_pku(_pku(better_response_id=0))),
                                                "pairs-reward"),
        "pku-flipped-safety-label-duplicate": ("a.jsonl", _jsonl(_pku(), _pku(is_response_1_safe=True)), "pairs-cost"),
        "pku-truncated-json-line": ("a.jsonl", _jsonl(_pku(), json.dumps(_pku())[:40]), "pairs-reward"),
        "pku-line-not-an-object": ("a.jsonl", _jsonl(_pku(), "[1, 2, 3]"), "pairs-reward"),
        "pku-truncated-json-list": ("a.json", json.dumps([_pku(), _pku(prompt="other")], indent=2)[:-30].encode(),
                                    "pairs-cost"),
        "pku-csv-ragged-rows": ("a.csv", _csv(",".join(PKU), "q,a,b,true,false,1,0", "q2,only,three"), "pairs-cost"),
        "pku-csv-float-id": ("a.csv", _csv(",".join(PKU), "q,a,b,true,false,1.0,0"), "pairs-reward"),
        "pku-parquet-float-id": ("a.parquet", _parquet([_pku(safer_response_id=1.0)]), "pairs-cost"),
        "pku-truncated-gzip": ("a.jsonl.gz", gzip.compress(_jsonl(*[_pku(prompt=f"q{i}") for i in range(50)]))[:-40],
                               "pairs-cost"),
    }


def _other_pair_cases() -> dict[str, tuple[str, Any, str]]:
    return {
        "trl-swapped-duplicate": ("t.jsonl", _jsonl(TRL, TRL | {"chosen": TRL["rejected"], "rejected": TRL["chosen"]}),
                                  "pairs-reward"),
        "trl-identical-chosen-rejected": ("t.jsonl", _jsonl(TRL | {"rejected": TRL["chosen"]}), "pairs-reward"),
        "trl-safety-label-string": ("t.jsonl", _jsonl(TRL | {"chosen_is_safe": "true"}), "pairs-cost"),
        "trl-lone-surrogate-chosen": ("t.jsonl", _jsonl(TRL | {"chosen": "Blue \ud83d"}), "pairs-reward"),
        "trl-rejected-null": ("t.jsonl", _jsonl(TRL | {"rejected": None}), "pairs-cost"),
        "hh-no-assistant-turn": ("h.jsonl", _jsonl(HH | {"chosen": f"{H} Name a colour."}), "pairs-reward"),
        "hh-prefix-mismatch": ("h.jsonl", _jsonl(HH | {"rejected": f"{H} Another question.{A} No."}), "pairs-reward"),
        "hh-swapped-duplicate": ("h.jsonl", _jsonl(HH, {"chosen": HH["rejected"], "rejected": HH["chosen"]}),
                                 "pairs-reward"),
        "hh-rejected-missing": ("h.jsonl", _jsonl({"chosen": HH["chosen"]}), "pairs-cost"),
        "hh-lone-surrogate": ("h.jsonl", _jsonl(HH | {"chosen": HH["chosen"] + " \udc00"}), "pairs-reward"),
    }


def _file_cases() -> dict[str, tuple[str, Any, str]]:
    deep = '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}"
    return {
        "empty-file": ("e.jsonl", b"", "check"),
        "whitespace-only-file": ("e.jsonl", b"\n \n\t\n", "check"),
        "txt-extension": ("x.txt", _jsonl({"prompt": "p"}), "check"),
        "no-extension": ("data", _jsonl({"prompt": "p"}), "check"),
        "gz-that-is-not-gzip": ("x.jsonl.gz", _jsonl({"prompt": "p"}), "check"),
        "gzip-without-gz-extension": ("x.jsonl", gzip.compress(_jsonl({"prompt": "p"})), "check"),
        "single-json-object": ("x.json", json.dumps({"data": [{"prompt": "p"}]}, indent=2).encode(), "check"),
        "single-object-in-jsonl": ("x.jsonl", json.dumps(SFT, indent=2).encode(), "sft"),
        "json-scalar": ("x.json", b"42", "check"),
        "empty-json-list": ("x.json", b"[]", "check"),
        "binary-file": ("x.jsonl", bytes(range(256)) * 4, "check"),
        "utf16-file": ("x.jsonl", _jsonl({"prompt": "p"}).decode().encode("utf-16"), "check"),
        "latin1-csv": ("x.csv", "prompt\ncaf\xe9 au lait\n".encode("latin-1"), "prompts"),
        "latin1-jsonl": ("x.jsonl", '{"prompt": "caf\xe9"}\n'.encode("latin-1"), "prompts"),
        "not-a-parquet-file": ("x.parquet", _jsonl({"prompt": "p"}), "check"),
        "truncated-parquet": ("x.parquet", _truncated_parquet, "check"),
        "parquet-with-zero-rows": ("x.parquet", _parquet_zero_rows, "check"),
        "parquet-named-jsonl": ("x.jsonl", _parquet_named_jsonl, "check"),
        "csv-named-json": ("x.json", _csv("prompt,label", "hi,safe"), "check"),
        "csv-header-only": ("x.csv", _csv("prompt,label"), "prompts"),
        "csv-duplicate-column": ("x.csv", _csv("prompt,prompt", "a,b"), "prompts"),
        "csv-unterminated-quote": ("x.csv", _csv("prompt", '"never closed'), "prompts"),
        "csv-stray-quote-swallows-rows": ("x.csv", _csv("prompt", "a?", '"b?', *[f"q{i}?" for i in range(150)],
                                                        'last"'), "prompts"),
        "json-list-of-lists": ("x.json", b"[[1, 2], [3]]", "check"),
        "json-extra-data-after-list": ("x.json", b'[{"prompt": "p"}] trailing', "check"),
        "deeply-nested-json": ("x.jsonl", deep.encode() + b"\n", "check"),
        "huge-integer-literal": ("x.jsonl", b'{"prompt": ' + b"9" * 5000 + b"}\n", "check"),
        "unknown-fields": ("x.jsonl", _jsonl({"text": "no known field"}), "check"),
        "no-such-file": ("missing.jsonl", None, "check"),
        "directory": ("folder.jsonl", "dir", "check"),
    }


def _prompt_and_sft_cases() -> dict[str, tuple[str, Any, str]]:
    return {
        # An XSTest file without its label column is a bad XSTest file (`data check`), but still a fine list
        # of prompts for `generate`, which reads any file by its prompt column.
        "xstest-csv-without-label": ("xstest.csv", _csv("id,prompt,type,focus,note", "1,How do I kill a process?,"
                                                        "homonyms,kill,violence"), "check"),
        "xstest-types-without-label": ("prompts.jsonl", _jsonl({"prompt": "How do I kill a process?",
                                                                "type": "homonyms"}), "check"),
        "xstest-bad-label": ("xs.csv", _csv(XSTEST_HEADER, "1,How do I kill a process?,homonyms,maybe,kill,v"),
                             "prompts"),
        "prompt-empty": ("p.jsonl", _jsonl({"prompt": ""}), "prompts"),
        "prompt-null": ("p.jsonl", _jsonl({"prompt": "ok"}, {"prompt": None}), "prompts"),
        "prompt-lone-surrogate": ("p.jsonl", _jsonl({"prompt": "\ud800"}), "prompts"),
        "prompt-label-invalid": ("p.jsonl", _jsonl({"prompt": "p", "label": "harmless"}), "prompts"),
        "prompt-category-not-a-string": ("p.jsonl", _jsonl({"prompt": "p", "category": ["a"]}), "prompts"),
        "prompt-contradictory-labels": ("p.jsonl", _jsonl({"prompt": "p", "label": "safe"},
                                                          {"prompt": "p", "label": "unsafe"}), "prompts"),
        "beavertails-unknown-category": ("b.json", json.dumps([{"prompt": "p", "category": "jaywalking",
                                                                "category_id": 3}]).encode(), "prompts"),
        "sft-missing-response": ("s.jsonl", _jsonl(SFT, {"prompt": "q", "response": None}), "sft"),
        "sft-response-lone-surrogate": ("s.jsonl", _jsonl(SFT | {"response": "Blue\udbff"}), "sft"),
        "sft-prompt-is-a-number": ("s.jsonl", _jsonl(SFT | {"prompt": 3.5}), "sft"),
        "sft-empty-response": ("s.json", json.dumps([SFT | {"response": ""}]).encode(), "sft"),
        # conversational records (TRL's message lists, chat SFT files)
        "conv-prompt-ends-with-assistant": ("c.jsonl", _jsonl(TRL | {"prompt": [
            {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}), "pairs-reward"),
        "conv-unknown-role": ("c.jsonl", _jsonl(TRL | {"prompt": [{"role": "tool", "content": "q"}]}), "pairs-cost"),
        "conv-message-without-content": ("c.jsonl", _jsonl(TRL | {"prompt": [{"role": "user"}]}), "pairs-reward"),
        "conv-empty-message-list": ("c.jsonl", _jsonl(TRL | {"prompt": []}), "pairs-reward"),
        "conv-two-assistant-replies": ("c.jsonl", _jsonl(TRL | {"chosen": [{"role": "assistant", "content": "a"},
                                                                         {"role": "assistant", "content": "b"}]}),
                                       "pairs-reward"),
        "conv-prompt-list-in-prompt-file": ("p.jsonl", _jsonl({"prompt": [{"role": "user", "content": ""}]}),
                                            "prompts"),
        "chat-sft-ends-with-user": ("m.jsonl", _jsonl({"messages": [{"role": "user", "content": "q"}]}), "sft"),
        "chat-sft-no-user-turn": ("m.jsonl", _jsonl({"messages": [{"role": "system", "content": "s"},
                                                                  {"role": "assistant", "content": "a"}]}), "sft"),
    }


def _truncated_parquet(path: Path) -> None:
    _parquet([PKU] * 20)(path)
    path.write_bytes(path.read_bytes()[:200])


def _parquet_zero_rows(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([SFT]).slice(0, 0), path)


def _parquet_named_jsonl(path: Path) -> None:
    _parquet([SFT])(path)


def bad_data_cases(tmp_dir: str | Path) -> list[tuple[str, Path, str]]:
    """Write every bad data file under ``tmp_dir`` (one folder per case); (case name, path, kind) each."""
    root = Path(tmp_dir)
    out = []
    cases = _pku_cases() | _other_pair_cases() | _file_cases() | _prompt_and_sft_cases()
    for name, (file_name, content, kind) in cases.items():
        path = root / name / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "dir":
            path.mkdir()
        elif callable(content):
            content(path)
        elif content is not None:
            path.write_bytes(content)
        out.append((name, path, kind))
    return out


__all__ = ["CLEAR_ERRORS", "KINDS", "bad_data_cases", "classify", "load_for"]
