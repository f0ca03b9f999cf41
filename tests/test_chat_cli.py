"""``elmd-sdk chat``: the REPL's commands and error handling, then the real client driven through a terminal."""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chain_fakes import tiny_llm

from elmd_sdk.chains import ELMDChain, ELMDResult
from elmd_sdk.cli.chat_repl import ChatREPL
from elmd_sdk.data import EMOTIONS
from elmd_sdk.errors import InputError


class ScriptedChain:
    """Stands in for an ELMDChain: records requests, replies "Hello there." as happy, or fails as scripted."""

    language = "en"
    labels = EMOTIONS
    use_video = True
    use_retrieval = True
    manifest = None

    def __init__(self, video_enabled: bool = False, fail: BaseException | None = None) -> None:
        self.video_enabled = video_enabled
        self.fail = fail
        self.requests: list[dict[str, Any]] = []

    def stream(self, request: dict[str, Any]) -> Iterator[ELMDResult]:
        self.requests.append(request)
        emotion = request.get("emotion") or "happy"
        yield ELMDResult(emotion, "", emotion_scores={**dict.fromkeys(EMOTIONS, 0.05), emotion: 0.7})
        yield ELMDResult("happy", "Hello ")
        if self.fail is not None:
            raise self.fail
        yield ELMDResult("happy", "there.")


def _run(chain: Any, lines: list[str], **kwargs: Any) -> tuple[str, ChatREPL]:
    """Feed ``lines`` to a REPL (then end of input); returns everything it printed."""
    out = io.StringIO()
    feed = iter(lines)

    def read_line(prompt: str) -> str:
        out.write(prompt)
        item = next(feed, None)
        if item is None:
            raise EOFError
        if item == "^C":
            raise KeyboardInterrupt
        return item

    repl = ChatREPL(chain, read_line=read_line, out=out, **kwargs)
    repl.run()
    return out.getvalue(), repl


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 s video clip made for the tests."""
    from moviepy import ColorClip

    path = tmp_path_factory.mktemp("video") / "smile.mp4"
    ColorClip((64, 48), color=(250, 200, 40), duration=1).with_fps(8).write_videofile(str(path), logger=None)
    return path


def test_turns_stream_with_emotion_and_build_history() -> None:
    chain = ScriptedChain()
    text, repl = _run(chain, ["I got the job!", "", "Thanks!"], background="At home.")
    assert text.count("bot (happy 0.70): Hello there.\n") == 2
    assert chain.requests[0]["history"] == [] and chain.requests[0]["background"] == "At home."
    assert chain.requests[1]["history"] == [
        {"speaker": "User", "text": "I got the job!"},
        {"speaker": "Assistant", "text": "Hello there."},
    ]
    assert len(repl.history) == 4 and text.endswith("bye\n")


def test_commands() -> None:
    chain = ScriptedChain()
    lines = ["hi", "/background On a train.", "/help", "/reset", "hey", "/background", "/nope", "/video", "/exit", "x"]
    text, repl = _run(chain, lines)
    assert "background set: On a train." in text and "/video PATH" in text
    assert "conversation reset (background kept: On a train.)" in text
    assert chain.requests[1]["history"] == [] and chain.requests[1]["background"] == "On a train."
    assert "background cleared" in text and repl.background is None
    assert "unknown command /nope" in text and "usage: /video PATH" in text
    assert len(chain.requests) == 2 and text.endswith("bye\n")  # nothing read after /exit


def test_video_commands(clip: Path) -> None:
    text, _ = _run(ScriptedChain(video_enabled=False), [f"/video {clip}", "hi"])
    assert "no trained video projector, so the clip is ignored" in text
    chain = ScriptedChain(video_enabled=True)
    text, _ = _run(chain, [f"/video {clip}", "look", "again"])
    assert f"video attached to your next turn: {clip}" in text
    assert chain.requests[0]["video"] == str(clip) and chain.requests[1]["video"] is None
    text, _ = _run(chain, ["/video /no/such/clip.mp4", "still here"])
    assert re.search(r"error: /no/such/clip\.mp4: file not found\n", text)
    assert "bot (happy 0.70): Hello there." in text


def test_emotion_command_forces_the_reply_emotion() -> None:
    chain = ScriptedChain()
    text, _ = _run(chain, ["/emotion sad", "hi", "/emotion joy", "again", "/emotion auto", "last", "/emotion"])
    assert "replies will be sad (/emotion auto to undo)" in text
    assert "bot (sad 0.70): Hello there." in text
    assert "error: unknown emotion 'joy'; choose one of: happy, surprise, sad, disgust, anger, fear, neutral" in text
    assert [r.get("emotion") for r in chain.requests] == ["sad", "sad", None]
    assert "the model chooses the reply emotion" in text and "usage: /emotion LABEL|auto" in text


def test_ctrl_c_stops_a_reply_and_keeps_the_session() -> None:
    chain = ScriptedChain(fail=KeyboardInterrupt())
    text, repl = _run(chain, ["tell me a long story", "^C", "bye"])
    assert "bot (happy 0.70): Hello  [stopped]\n" in text
    assert "(Ctrl-D or /exit quits)" in text
    assert repl.history == [] and len(chain.requests) == 2


def test_errors_are_one_line_and_the_session_goes_on() -> None:
    text, _ = _run(ScriptedChain(fail=InputError("boom\nsecond line", field="video")), ["a", "b"])
    assert text.count("error: field 'video': boom\n") == 2 and "second line" not in text
    text, _ = _run(ScriptedChain(fail=RuntimeError("odd")), ["a"])
    assert "error: RuntimeError: odd\n" in text


def test_over_long_input_with_a_real_chain() -> None:
    from elmd_sdk.models.chat_model import ELMDChatModel

    model, tokenizer = tiny_llm()
    chat = ELMDChatModel(hf_model=model, tokenizer=tokenizer, do_sample=False, max_new_tokens=4)
    chain = ELMDChain(chat_model=chat, context_window=900)
    text, repl = _run(chain, ["word " * 1000, "short"])
    assert re.search(r"error: field 'utterance': too long for the model: .* tokens, but only 896 fit", text)
    assert [turn["text"] for turn in repl.history][:1] == ["short"]


# -- the real client in a pseudo-terminal, on the embedded default bundle ------------------------------------------

PROMPT = "you> "
REPLY = r"bot \((\w+) (0\.\d\d|1\.00)\): "


def _spawn(elmd_home: str, *args: str) -> Any:
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "ELMD_SDK_HOME": elmd_home, "HF_HUB_OFFLINE": "1", "TERM": "dumb", "COLUMNS": "200"}
    exe = str(Path(sys.executable).parent / "elmd-sdk")
    child = pexpect.spawn(exe, ["chat", *args], env=env, encoding="utf-8", timeout=600, dimensions=(40, 200))
    child.expect_exact(PROMPT)  # loading done (the first run also converts the LLM once)
    return child


def _turn(child: Any, text: str) -> tuple[str | None, str]:
    """Send a user turn; returns the shown emotion and the streamed reply."""
    child.sendline(text)
    child.expect(REPLY, timeout=300)
    emotion = child.match.group(1)
    assert 0 <= float(child.match.group(2)) <= 1
    child.expect_exact(PROMPT, timeout=300)
    return emotion, child.before.strip()


def test_chat_session_in_a_terminal(elmd_home: str, clip: Path) -> None:
    child = _spawn(elmd_home, "--max-new-tokens", "24", "--seed", "0")
    assert "retrieval on, video off (no trained projector)" in child.before
    emotion, reply = _turn(child, "I just got accepted into the art school I dreamed of!")
    assert emotion in EMOTIONS  # closed-set decoding: every reply names a label
    assert reply
    child.sendline("/background Two old friends meet at a train station.")
    child.expect_exact("background set: Two old friends meet at a train station.")
    child.expect_exact(PROMPT)
    emotion, reply = _turn(child, "I was so nervous before the interview, but it went well.")
    assert emotion in EMOTIONS
    child.sendline("/emotion fear")
    child.expect_exact("replies will be fear")
    child.expect_exact(PROMPT)
    emotion, reply = _turn(child, "I have an exam tomorrow.")
    assert emotion == "fear" and reply
    child.sendline("/emotion auto")
    child.expect_exact("the model chooses the reply emotion")
    child.expect_exact(PROMPT)
    child.sendline(f"/video {clip}")
    child.expect_exact("no trained video projector, so the clip is ignored")
    child.expect_exact(PROMPT)
    child.sendline("/video /no/such/clip.mp4")
    child.expect(r"error: /no/such/clip\.mp4: file not found")
    child.expect_exact(PROMPT)
    child.sendline("/reset")
    child.expect_exact("conversation reset")
    child.expect_exact(PROMPT)
    _turn(child, "Do you remember me?")
    child.sendintr()  # Ctrl-C at the prompt keeps the session
    child.expect_exact("(Ctrl-D or /exit quits)")
    child.sendline("/exit")
    child.expect_exact("bye")
    child.expect(pytest.importorskip("pexpect").EOF)
    child.close()
    assert child.exitstatus == 0


def test_chat_ctrl_c_during_a_reply_and_ctrl_d(elmd_home: str, clip: Path) -> None:
    child = _spawn(elmd_home, "--max-new-tokens", "200", "--seed", "1", "--video", str(clip), "--background", "A cafe.")
    assert "no trained video projector" in child.before
    child.sendline("Tell me a long story about your childhood, with many details.")
    child.expect(REPLY, timeout=300)
    child.sendintr()  # Ctrl-C while the reply is being written
    index = child.expect([r"\[stopped\]", PROMPT], timeout=300)
    if index == 0:
        child.expect_exact(PROMPT)
    _turn(child, "Sorry, go on.")  # the session goes on
    child.sendeof()  # Ctrl-D
    child.expect_exact("bye")
    child.expect(pytest.importorskip("pexpect").EOF)
    child.close()
    assert child.exitstatus == 0
