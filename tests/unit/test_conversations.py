"""Multi-turn prompts: HH-RLHF transcripts and TRL conversational records load as chat messages, are rendered
through the chat template, truncated by whole turns, and written back as message lists."""

from __future__ import annotations

import copy
import json
import pickle
import re

import pytest

from saferlhf.data.formatting import encode_example, encode_prompt, format_prompt
from saferlhf.data.loaders import load_hh_rlhf, load_preference_pairs, load_prompts, load_sft_records
from saferlhf.data.schema import (Conversation, PreferencePair, SFTRecord, as_prompt, hh_prompt, prompt_json,
                                  split_hh_transcripts, user_text)
from saferlhf.data.validate import DataValidationError
from saferlhf.models import train_tokenizer

H, A = "\n\nHuman:", "\n\nAssistant:"
MESSAGES = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"}]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([f"question {i} about bread and the answer {j}" for i in range(30) for j in range(4)], 300)


def test_hh_multi_turn_prompt_is_a_conversation_whose_string_is_the_transcript():
    prompt, good, bad = split_hh_transcripts(f"{H} q1{A} a1{H} q2{A} good", f"{H} q1{A} a1{H} q2{A} bad")
    assert isinstance(prompt, Conversation) and list(prompt.messages) == MESSAGES
    assert prompt == "Human: q1\n\nAssistant: a1\n\nHuman: q2" and (good, bad) == ("good", "bad")
    assert user_text(prompt) == "q2" and user_text("plain") == "plain"
    single = hh_prompt(f"{H} only one?")
    assert single == "only one?" and not isinstance(single, Conversation)
    repeated = hh_prompt(f"{H} q1{A} a1{A} a1 again{H} q2")  # one speaker twice in a row: one message
    assert [m["content"] for m in repeated.messages] == ["q1", "a1\n\na1 again", "q2"]
    odd = hh_prompt(f"preamble{H} q1{A} a1{H} q2")  # does not read as turns: the transcript text, as before
    assert not isinstance(odd, Conversation) and odd.startswith("preamble")


def test_conversation_survives_pickle_copy_and_json():
    c = Conversation(MESSAGES)
    for again in (pickle.loads(pickle.dumps(c)), copy.deepcopy(c)):
        assert isinstance(again, Conversation) and again == c and again.messages == c.messages
    assert prompt_json(c) == MESSAGES and prompt_json("p") == "p"
    assert as_prompt(MESSAGES) == c and as_prompt([{"role": "user", "content": "x"}]) == "x"
    assert PreferencePair(c, "g", "b").to_dict()["prompt"] == MESSAGES
    assert SFTRecord(c, "r").to_dict() == {"prompt": MESSAGES, "response": "r"}
    with pytest.raises(ValueError, match="end with a user message"):
        Conversation(MESSAGES[:2])
    with pytest.raises(ValueError, match="unknown message role 'tool'"):
        Conversation([{"role": "tool", "content": "x"}, MESSAGES[0]])


def test_conversation_is_rendered_by_the_chat_template(tokenizer):
    c = Conversation(MESSAGES)
    assert format_prompt(tokenizer, c) == tokenizer.apply_chat_template(MESSAGES, tokenize=False,
                                                                        add_generation_prompt=True)
    # the reference format: "BEGINNING OF CONVERSATION: USER: q1 ASSISTANT:a1</s>USER: q2 ASSISTANT:"
    assert format_prompt(tokenizer, c) == "BEGINNING OF CONVERSATION: USER: q1 ASSISTANT:a1</s>USER: q2 ASSISTANT:"
    ids, n = encode_example(tokenizer, c, "the answer", 512)
    assert tokenizer.decode(ids[:n]) == format_prompt(tokenizer, c)
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(
        MESSAGES + [{"role": "assistant", "content": "the answer"}], tokenize=False)


def test_long_conversation_loses_its_oldest_exchanges_first(tokenizer):
    turns = []
    for i in range(6):
        turns += [{"role": "user", "content": f"question {i} about bread"},
                  {"role": "assistant", "content": f"the answer {i} " * 6}]
    c = Conversation(turns + [{"role": "user", "content": "question 9 about bread"}])
    full = encode_prompt(tokenizer, c)
    ids = encode_prompt(tokenizer, c, max_prompt_length=len(full) // 2)
    text = tokenizer.decode(ids)
    assert len(ids) <= len(full) // 2
    assert text.startswith("BEGINNING OF CONVERSATION: USER: question") and text.endswith("question 9 about bread ASSISTANT:")
    assert "question 0" not in text and "question 5 about bread" in text  # whole exchanges dropped, oldest first
    # only the last user message left, and it is too long: its end is kept, the frame stays
    huge = Conversation(turns[:2] + [{"role": "user", "content": "bread " * 80 + "final question 7"}])
    budget = len(encode_prompt(tokenizer, "final question 7")) + 4
    ids = encode_prompt(tokenizer, huge, max_prompt_length=budget)
    text = tokenizer.decode(ids)
    assert len(ids) <= budget and text.startswith("BEGINNING OF CONVERSATION: USER:") and "final question 7" in text
    assert "question 0" not in text


def test_hh_rlhf_file_loads_multi_turn_prompts_as_conversations(tmp_path):
    path = tmp_path / "hh.jsonl"
    path.write_text(json.dumps({"chosen": f"{H} q1{A} a1{H} q2{A} good", "rejected": f"{H} q1{A} a1{H} q2{A} bad"})
                    + "\n")
    (pair,) = load_hh_rlhf(path)
    assert isinstance(pair.prompt, Conversation) and list(pair.prompt.messages) == MESSAGES
    (sft,) = load_sft_records(path)
    assert isinstance(sft.prompt, Conversation) and sft.response == "good"


def test_trl_conversational_records_load_and_round_trip(tmp_path):
    path = tmp_path / "conv.jsonl"
    rows = [{"prompt": MESSAGES, "chosen": [{"role": "assistant", "content": "good"}],
             "rejected": [{"role": "assistant", "content": "bad"}]},
            {"prompt": [{"role": "user", "content": "single"}], "chosen": "yes", "rejected": "no"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second = load_preference_pairs(path)
    assert isinstance(first.prompt, Conversation) and (first.chosen, first.rejected) == ("good", "bad")
    assert second.prompt == "single" and not isinstance(second.prompt, Conversation)
    again = tmp_path / "again.jsonl"
    again.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in (first, second)))
    assert [(p.prompt.messages if isinstance(p.prompt, Conversation) else p.prompt) for p in load_preference_pairs(again)] \
        == [first.prompt.messages, "single"]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": MESSAGES}) + "\n")
    (rec,) = load_prompts(prompts)
    assert isinstance(rec.prompt, Conversation)


def test_chat_sft_records_load(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": MESSAGES + [{"role": "assistant", "content": "a2"}]}) + "\n"
                    + json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
                    + "\n")
    first, second = load_sft_records(path)
    assert isinstance(first.prompt, Conversation) and first.prompt.messages == tuple(MESSAGES) and first.response == "a2"
    assert (second.prompt, second.response) == ("q", "a")


@pytest.mark.parametrize("row,where", [
    ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "chosen": "x",
      "rejected": "y"}, "prompt: the last message must be the user's, got a assistant message"),
    ({"prompt": [{"role": "bot", "content": "q"}], "chosen": "x", "rejected": "y"}, "prompt[0].role: expected one of"),
    ({"prompt": [{"role": "user", "content": ""}], "chosen": "x", "rejected": "y"}, "prompt[0].content: empty"),
    ({"prompt": [{"role": "user"}], "chosen": "x", "rejected": "y"}, "prompt[0]: expected a message"),
    ({"prompt": [], "chosen": "x", "rejected": "y"}, "prompt: expected a string or a non-empty list of messages"),
    ({"prompt": "q", "chosen": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}],
      "rejected": "y"}, "chosen: expected one assistant message, got a list of 2"),
    ({"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "y"},
     "chosen: the last message must be the assistant's"),
    ({"prompt": "q", "chosen": [{"role": "assistant", "content": "same"}], "rejected": "same"},
     "rejected: identical to chosen"),
])
def test_bad_conversational_records_name_file_line_and_field(tmp_path, row, where):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "ok", "chosen": "a", "rejected": "b"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataValidationError, match=re.escape(f"bad.jsonl:2: {where}")):
        load_preference_pairs(path)


def test_bad_chat_sft_record(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "system", "content": "s"},
                                             {"role": "assistant", "content": "a"}]}) + "\n")
    with pytest.raises(DataValidationError, match="chat.jsonl:1: messages: expected a user message before the last"):
        load_sft_records(path)
