"""The terminal conversation behind ``elmd-sdk chat``: reads turns, streams replies with their emotion, keeps history.

Commands: ``/video PATH`` (attach a clip to the next turn), ``/background TEXT``, ``/emotion LABEL`` (force the reply
emotion; ``/emotion auto`` lets the model choose again), ``/reset``, ``/help``, ``/exit``. Each reply is shown as
``bot (sad 0.62): ...``: the response emotion and its probability among the labels.
Ctrl-C during a reply stops that reply and keeps the session; Ctrl-D (end of input) or ``/exit`` ends it. Any
error in a turn (a bad video, an input too long for the model) is printed as one line and the session goes on.

The chain may still be loading (a ``Future``): the prompt is shown at once and the first thing that needs the model
waits for it. Heavy imports happen only there, so the prompt appears before torch and LangChain are loaded.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from elmd_sdk.errors import ElmdError

if TYPE_CHECKING:
    from elmd_sdk.answer.result import ELMDResult
    from elmd_sdk.bundle import BundleManifest
    from elmd_sdk.chains.chain import ELMDChain

HELP = """commands:
  /video PATH        attach a video clip to your next turn
  /background TEXT   set the dialogue background (empty: clear it)
  /emotion LABEL     force the emotion of the next replies (/emotion auto: the model chooses again)
  /reset             forget the conversation so far
  /help              show this help
  /exit              quit (or Ctrl-D); Ctrl-C stops a reply that is being written"""

PROMPT = "you> "
BOT = "bot"


class ChatREPL:
    """One terminal conversation with an :class:`ELMDChain` (input and output are injectable for tests)."""

    def __init__(
        self,
        chain: ELMDChain | Future[ELMDChain],
        *,
        background: str | None = None,
        video: str | Path | None = None,
        read_line: Callable[[str], str] = input,
        out: TextIO | None = None,
    ) -> None:
        self._chain = chain
        self.background = background
        self.history: list[dict[str, str]] = []
        self.pending_video: str | None = None
        self.emotion: str | None = None  # forced reply emotion (/emotion), None: the model chooses
        self.read_line = read_line
        self.out = out if out is not None else sys.stdout
        if video is not None:
            self.attach_video(str(video))

    @property
    def chain(self) -> ELMDChain:
        """The chain, once loaded (waits for a background load, saying so when it has to)."""
        if isinstance(self._chain, Future):
            if not self._chain.done():
                self.say("(loading the model; the first run also prepares it once...)")
            self._chain = self._chain.result()
        return self._chain

    @property
    def names(self) -> tuple[str, str]:
        """The user's and the assistant's speaker names in the chain's prompt language."""
        from elmd_sdk.answer.wording import wording

        words = wording(self.chain.language)
        return words.user_name, words.assistant_name

    def say(self, text: str = "", end: str = "\n") -> None:
        """Write to the terminal at once."""
        self.out.write(text + end)
        self.out.flush()

    def run(self) -> None:
        """Read and answer turns until ``/exit`` or end of input."""
        while True:
            try:
                line = self.read_line(PROMPT)
            except EOFError:
                self.say()
                self.say("bye")
                return
            except KeyboardInterrupt:
                self.say()
                self.say("(Ctrl-D or /exit quits)")
                continue
            if not self.handle(line):
                self.say("bye")
                return

    def handle(self, line: str) -> bool:
        """Act on one input line; False means the session should end."""
        text = line.strip()
        if not text:
            return True
        if not text.startswith("/"):
            self.reply(text)
            return True
        command, _, argument = text.partition(" ")
        argument = argument.strip()
        if command in ("/exit", "/quit"):
            return False
        if command == "/help":
            self.say(HELP)
        elif command == "/reset":
            self.history.clear()
            self.pending_video = None
            kept = f" (background kept: {self.background})" if self.background else ""
            self.say(f"conversation reset{kept}")
        elif command == "/background":
            self.background = argument or None
            self.say(f"background set: {argument}" if argument else "background cleared")
        elif command == "/emotion":
            self.set_emotion(argument)
        elif command == "/video":
            if argument:
                self.attach_video(argument)
            else:
                self.say("usage: /video PATH")
        else:
            self.say(f"unknown command {command}; /help lists the commands")
        return True

    def set_emotion(self, argument: str) -> None:
        """``/emotion LABEL`` forces the reply emotion, ``/emotion auto`` hands the choice back to the model."""
        labels = ", ".join(self.chain.labels)
        if argument in ("", "auto"):
            self.emotion = None
            self.say("the model chooses the reply emotion" if argument else f"usage: /emotion LABEL|auto ({labels})")
        elif argument in self.chain.labels:
            self.emotion = argument
            self.say(f"replies will be {argument} (/emotion auto to undo)")
        else:
            self.say(f"error: unknown emotion {argument!r}; choose one of: {labels}, or auto")

    def attach_video(self, path: str) -> None:
        """Check a clip and attach it to the next turn (or say why it is not used)."""
        from elmd_sdk.video.frames import sample_frames

        path = str(Path(path.strip().strip("'\"")).expanduser())
        try:
            sample_frames(path, m=1)
        except ElmdError as error:
            self.say(f"error: {_one_line(error)}")
            return
        if not self.chain.video_enabled:
            reason = (
                "video is switched off" if not self.chain.use_video else "this bundle has no trained video projector"
            )
            self.say(f"note: {reason}, so the clip is ignored; your next turn runs without video")
            return
        self.pending_video = path
        self.say(f"video attached to your next turn: {path}")

    def reply(self, utterance: str) -> None:
        """Stream the reply to one user turn; on success the turn and the reply join the history."""
        try:
            user_name, assistant_name = self.names  # waits for the model if it is still loading
        except KeyboardInterrupt:
            self.say("[stopped]")
            return
        request: dict[str, Any] = {
            "utterance": utterance,
            "history": list(self.history),
            "background": self.background,
            "video": self.pending_video,
            "speaker": user_name,
        }
        if self.emotion is not None:
            request["emotion"] = self.emotion
        response: list[str] = []
        started = False
        stream = self.chain.stream(request)
        try:
            for chunk in stream:
                if not started:
                    self.say(f"{BOT}{_emotion_label(chunk)}: ", end="")
                    started = True
                if chunk.response:
                    response.append(chunk.response)
                    self.say(chunk.response, end="")
        except KeyboardInterrupt:
            self.say(" [stopped]" if started else "[stopped]")
            return
        except ElmdError as error:
            self.say(("\n" if started else "") + f"error: {_one_line(error)}")
            return
        except Exception as error:  # a client must not crash on one bad turn
            self.say(("\n" if started else "") + f"error: {type(error).__name__}: {_one_line(error)}")
            return
        finally:
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[attr-defined]
        self.say("" if response else "(no reply)")
        self.pending_video = None
        self.history.append({"speaker": user_name, "text": utterance})
        self.history.append({"speaker": assistant_name, "text": "".join(response)})


def describe(manifest: BundleManifest) -> str:
    """One status line saying what the bundle holds, read from its manifest (before the model has loaded)."""
    from elmd_sdk.paths import DEFAULT_MODEL_LABEL

    model = manifest.base_llm or DEFAULT_MODEL_LABEL
    retrieval = "on" if manifest.index_dir is not None else "off"
    video = "on" if manifest.projector_dir is not None else "off (no trained projector)"
    return f"bundle '{manifest.name}': {model}, {len(manifest.labels)} emotions, retrieval {retrieval}, video {video}"


def _emotion_label(result: ELMDResult) -> str:
    """ " (sad 0.62)" with the emotion's probability, " (sad)" without scores (free mode), "" without an emotion."""
    if result.emotion is None:
        return ""
    scores = result.emotion_scores or {}
    probability = f" {scores[result.emotion]:.2f}" if result.emotion in scores else ""
    return f" ({result.emotion}{probability})"


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
