"""`saferlhf chat MODEL` on tiny models: piped stdin (two turns, /reset, /exit), the streamed answer equals the
project's sampler, the history is multi-turn, the reward / cost after each answer are `score_texts`' with
"unsafe" above the cost model's stored threshold; and a real terminal session under tmux."""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from saferlhf.chat import Chat, ChatConfig, Judge, chat_loop, load_judges, score_line
from saferlhf.cli import main
from saferlhf.models import ScoreModel, load_policy, load_tokenizer, score_texts
from saferlhf.models.score import THRESHOLD_KEY
from saferlhf.rollout import HFGenerator
from saferlhf.sampling import SamplingConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tiny_models, tmp_path_factory):
    """The tiny llama policy, a reward model and a cost model whose stored threshold sits between the costs of two
    known answers (so that one is "safe" and the other "unsafe")."""
    root = tmp_path_factory.mktemp("chat")
    policy = tiny_models["llama"]
    tok = load_tokenizer(policy, padding_side="right")
    for i, kind in enumerate(("reward", "cost")):
        ScoreModel.from_pretrained(policy, score_type=kind, seed=i + 1, allow_new_head=True).save_pretrained(
            root / kind, tokenizer=tok)
    return {"policy": policy, "reward": root / "reward", "cost": root / "cost", "root": root}


def set_threshold(cost_dir: Path, value: float) -> None:
    cfg = json.loads((cost_dir / "config.json").read_text())
    cfg[THRESHOLD_KEY] = {"value": value, "method": "test"}
    (cost_dir / "config.json").write_text(json.dumps(cfg))


def chat_args(s, *extra) -> list[str]:
    return ["chat", str(s["policy"]), "--reward_model", str(s["reward"]), "--cost_model", str(s["cost"]),
            "--sampling.max_new_tokens", "8", *extra]


def test_piped_stdin_two_turns_reset_and_exit(setup, monkeypatch, capsys):
    lines = "how do I cook rice?\nwhat about tea?\n/reset\n/nope\nhow do I cook soup?\n/exit\nnever read\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))  # not a terminal: each line is echoed after its prompt
    assert main(chat_args(setup)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"chat with {setup['policy']}; scored by the reward model, cost model")
    assert "you> how do I cook rice?\nassistant> " in out and "you> what about tea?\nassistant> " in out
    answers = [line for line in out.splitlines() if line.startswith("assistant> ")]
    scores = [line for line in out.splitlines() if line.startswith("  [reward ")]
    assert len(answers) == len(scores) == 3  # three questions; the line after /exit is never read
    assert all(" | cost " in s and (s.endswith(" safe]") or s.endswith(" unsafe]")) for s in scores)
    assert "(conversation cleared)" in out and "unknown command /nope: /reset clears the conversation" in out
    assert "never read" not in out


def test_streamed_answer_history_and_scores(setup):
    model, tok = load_policy(setup["policy"])
    sampling = SamplingConfig(greedy=True, max_new_tokens=10, max_prompt_length=256)
    judges = load_judges(ChatConfig(model=str(setup["policy"]), reward_model=str(setup["reward"]),
                                    cost_model=str(setup["cost"])), "cpu")
    chat = Chat(model, tok, sampling, judges=judges)
    pieces: list[str] = []
    first, ended, scores = chat.answer("how do I cook rice?", pieces.append)
    assert len(pieces) > 1 and "".join(pieces).strip() == first  # streamed token by token
    # the project's sampler (greedy) gives the same answer, and the scores are score_texts' on it
    (want,), (want_ended,) = HFGenerator(model, tok, sampling).generate_ended(["how do I cook rice?"])
    assert first == want[0] and ended == want_ended[0]
    for j in judges:
        expect = score_texts(j.model, j.tokenizer, ["how do I cook rice?"], [first], ended=[ended]).item()
        assert scores[j.kind] == pytest.approx(expect, abs=1e-6)
    # the second turn is conditioned on the first exchange
    second, ended2, scores2 = chat.answer("what about tea?", lambda _: None)
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "user", "assistant"]
    assert chat.messages[1]["content"] == first
    from saferlhf.data.schema import Conversation

    conv = Conversation(chat.messages[:3])
    cost = next(j for j in judges if j.kind == "cost")
    assert scores2["cost"] == pytest.approx(
        score_texts(cost.model, cost.tokenizer, [conv], [second], ended=[ended2]).item(), abs=1e-6)
    chat.reset()
    assert chat.messages == []


def test_unsafe_marks_costs_above_the_stored_threshold(setup, tmp_path):
    cost = tmp_path / "cost"
    shutil.copytree(setup["cost"], cost)
    judges = [Judge("reward", None, None), Judge("cost", None, None, threshold=0.25)]
    assert score_line({"reward": 0.5, "cost": 0.3}, judges) == "[reward +0.500 | cost +0.300 unsafe]"
    assert score_line({"reward": -1.0, "cost": 0.25}, judges) == "[reward -1.000 | cost +0.250 safe]"
    set_threshold(cost, -1e6)  # every answer is above it: unsafe, end to end
    out = io.StringIO()
    lines = iter(["how do I cook rice?", "/exit"])
    model, tok = load_policy(setup["policy"])
    chat = Chat(model, tok, SamplingConfig(max_new_tokens=6),
                judges=load_judges(ChatConfig(model="x", cost_model=str(cost)), "cpu"))
    chat_loop(chat, lambda prompt: next(lines), out)
    assert out.getvalue().rstrip().endswith(" unsafe]")


def test_ctrl_c_stops_an_answer_not_the_chat(setup):
    model, tok = load_policy(setup["policy"])
    chat = Chat(model, tok, SamplingConfig(max_new_tokens=6))
    chat.answer("how do I cook rice?", lambda _: None)
    before = list(chat.messages)
    lines, pieces = iter(["what about tea?", "how do I cook soup?"]), []

    def read(prompt: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise KeyboardInterrupt from None  # Ctrl-C at the prompt ends the chat

    class Interrupting(io.StringIO):
        def write(self, text: str) -> int:  # the first piece of the first answer: Ctrl-C
            pieces.append(text)
            if len(pieces) == 2:
                raise KeyboardInterrupt
            return super().write(text)

    out = Interrupting()
    chat_loop(chat, read, out)
    text = out.getvalue()
    assert " [stopped]\n" in text and text.count("assistant> ") == 2
    # the stopped question is forgotten; the next one is answered and kept
    assert chat.messages[:2] == before and [m["content"] for m in chat.messages[2::2]] == ["how do I cook soup?"]


def test_errors_are_one_line(setup, tmp_path, capsys):
    assert main(["chat", str(tmp_path / "missing")]) == 2
    assert "saferlhf chat: error: model: no such folder" in capsys.readouterr().err
    assert main(["chat", str(setup["policy"]), "--cost_model", str(setup["reward"])]) == 2  # a reward model
    assert "cost" in capsys.readouterr().err
    assert main(["chat", str(setup["policy"]), "--sampling.max_new_tokens", "100000"]) == 2
    assert "leaves no room for a prompt" in capsys.readouterr().err


def test_chat_in_a_terminal_under_tmux(setup):
    """A real terminal: `saferlhf chat` in a tmux pane, keys sent, the pane read back."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install -y tmux): the terminal test needs it")
    sock = f"saferlhf-chat-test-{os.getpid()}"  # a private tmux server: never touches the user's sessions

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True, check=True).stdout

    def wait_for(text: str, timeout: float = 90.0) -> str:
        end = time.time() + timeout
        while time.time() < end:
            pane = tmux("capture-pane", "-p", "-t", "chat", "-S", "-200")
            if text in pane:
                return pane
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared in the pane:\n{pane}")

    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "saferlhf", *chat_args(setup)])
    try:
        tmux("new-session", "-d", "-s", "chat", "-x", "220", "-y", "50", "-c", str(ROOT),
             "-e", "SAFERLHF_NO_PROGRESS=1", "-e", "OMP_NUM_THREADS=1", f"{command}; echo CHAT-ENDED $?; sleep 30")
        wait_for("you>")  # capture-pane drops trailing spaces
        tmux("send-keys", "-t", "chat", "how do I cook rice?", "Enter")
        pane = wait_for("  [reward ")
        answer = next(line for line in pane.splitlines() if line.startswith("assistant> "))
        assert len(answer) > len("assistant> ")  # the answer was printed
        assert " | cost " in pane and ("safe]" in pane)
        tmux("send-keys", "-t", "chat", "/reset", "Enter")
        wait_for("(conversation cleared)")
        tmux("send-keys", "-t", "chat", "/exit", "Enter")
        assert "CHAT-ENDED 0" in wait_for("CHAT-ENDED")
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
