"""``ELMDChain``: retrieval of a demonstration R, the six-part prompt, the multimodal chat model and the parser.

One turn (paper Figure 3 / 4): the Emotional Retrieval Module finds the demonstration response r' for the
utterance u; the prompt combines I, B, H, u, E_v and R; the chat model answers with the response emotion
then the response; the parser returns an :class:`~elmd_sdk.chains.parser.ELMDResult`.

The chain is a LangChain ``RunnableSerializable``: ``invoke``, ``batch``, ``stream`` (response text as it is
generated, the emotion on the first chunk), ``ainvoke``/``astream``, composition with ``|`` and
``as_tool()``. History that does not fit the model's context (with room left for the reply) is dropped
from the oldest turn, whole turns at a time, measured with the model's own tokenizer and chat template.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from elmd_sdk.chains.parser import ELMDResult, StreamingAnswerParser, with_demonstration
from elmd_sdk.chains.prompt import (
    VIDEO_PLACEHOLDER,
    attach_video,
    build_prompt,
    prompt_variables,
    render_answer,
    wording,
)
from langchain_core._api import LangChainBetaWarning
from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableLambda, RunnableSerializable
from langchain_core.runnables.config import patch_config
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from elmd_sdk.bundle import BundleManifest
from elmd_sdk.data.labels import EMOTIONS
from elmd_sdk.data.records import Turn, VideoRef
from elmd_sdk.errors import InputError

_DEFAULT_BUNDLE = "default_bundle"
_HUGE = 10**7  # tokenizers report "no limit" as a huge model_max_length


class HistoryTurn(BaseModel):
    """One earlier turn of the dialogue."""

    speaker: str = Field(description="Who said it.")
    text: str = Field(description="What was said.")
    emotion: str | None = Field(default=None, description="Its emotion label, if known (not used in the prompt).")


class ELMDInput(BaseModel):
    """What one ELMD turn takes (the chain also accepts a bare string as the utterance)."""

    utterance: str = Field(description="What the other person just said (u).")
    history: list[str | HistoryTurn] = Field(
        default_factory=list,
        description="Earlier turns, oldest first: strings (alternating, the last one being the assistant's) or "
        "{speaker, text} objects.",
    )
    background: str | None = Field(default=None, description="Background of the dialogue (B), e.g. a scene summary.")
    video: str | None = Field(
        default=None, description="Path of a video clip of the speaker (used when the bundle has a trained projector)."
    )
    speaker: str | None = Field(default=None, description="Name of the utterance's speaker (default: User).")


class _Turn(BaseModel):
    """A checked input: everything the prompt needs for one turn."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    utterance: Turn
    history: list[Turn]
    background: str | None
    video: VideoRef | None


class ELMDChain(RunnableSerializable[dict[str, Any] | str, ELMDResult]):
    """The ELMD response generator as a LangChain Runnable: ``{"utterance", "history", "background", "video"}`` in,
    :class:`ELMDResult` (emotion, response, demonstration) out.

    Build it with :meth:`from_bundle` or :meth:`default`, or from parts (any ``BaseChatModel`` and retriever).
    ``use_retrieval=False`` and ``use_video=False`` are the paper's "w/o ERM" and "w/o V" ablations.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chat_model: BaseChatModel
    """The (multimodal) chat model; an ``ELMDChatModel`` for video, prefix and token-exact context fitting."""
    retriever: BaseRetriever | None = None
    """Source of the demonstration R (``EmotionalRetriever``); its first document's page_content is r'."""
    language: str = "en"
    """Prompt wording: "en" or "zh"."""
    labels: tuple[str, ...] = EMOTIONS
    """Response-emotion labels offered in the prompt and accepted by the parser."""
    use_retrieval: bool = True
    """Include the retrieved demonstration R (off: the "w/o ERM" ablation)."""
    use_video: bool = True
    """Include the video tokens E_v when a video is given (off: the "w/o V" ablation)."""
    context_window: int | None = None
    """Token limit of prompt plus reply; None reads it from the chat model's LLM (no fitting if unknown)."""
    manifest: BundleManifest | None = None
    """The bundle this chain was loaded from, if any."""

    _prompt: ChatPromptTemplate | None = PrivateAttr(default=None)
    _warned_video: bool = PrivateAttr(default=False)

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        wording(value)  # ValueError naming the supported languages
        return value

    @classmethod
    def from_bundle(
        cls,
        bundle: str | PathLike[str],
        *,
        use_retrieval: bool = True,
        use_video: bool = True,
        k: int = 1,
        device: str | None = None,
        **generation: Any,
    ) -> ELMDChain:
        """Load a bundle folder (``bundle.json`` + ERM, index, projector, prefix) into a ready chain.

        The base LLM, the visual encoder and the prefix length are checked against the manifest
        (:class:`~elmd_sdk.errors.MismatchError` names the field that disagrees). ``generation`` overrides
        the bundle's decoding defaults (``max_new_tokens``, ``seed``, ``do_sample``, ``temperature``, ...).
        """
        from elmd_sdk.chains.loading import load_parts

        parts = load_parts(bundle, use_retrieval=use_retrieval, use_video=use_video, k=k, device=device, **generation)
        return cls(
            chat_model=parts.chat_model,
            retriever=parts.retriever,
            language=parts.manifest.language,
            labels=tuple(parts.manifest.labels),
            use_retrieval=use_retrieval,
            use_video=use_video,
            manifest=parts.manifest,
        )

    @classmethod
    def default(cls, **kwargs: Any) -> ELMDChain:
        """The embedded default bundle: SmolLM2-135M-Instruct with an ERM over the English demonstration corpus."""
        return cls.from_bundle(default_bundle_path(), **kwargs)

    # -- Runnable interface ------------------------------------------------------------------------------------

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        """The input dictionary's schema (used by ``as_tool`` and LangServe)."""
        return ELMDInput

    @property
    def OutputType(self) -> type[ELMDResult]:
        """The output type."""
        return ELMDResult

    def invoke(self, input: dict[str, Any] | str, config: RunnableConfig | None = None, **kwargs: Any) -> ELMDResult:
        """Answer one turn: ``{"utterance": ..., "history": [...], "background": ..., "video": path}``."""
        return self._call_with_config(self._invoke, input, config, **kwargs)

    async def ainvoke(
        self, input: dict[str, Any] | str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ELMDResult:
        """Async :meth:`invoke` (retriever and chat model called through their async APIs)."""
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    def stream(
        self, input: dict[str, Any] | str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[ELMDResult]:
        """Yield :class:`ELMDResult` chunks as the reply is generated: the first carries the emotion (and the
        demonstration), the following ones pieces of response text; they add up to ``invoke``'s result."""
        yield from self.transform(iter([input]), config, **kwargs)

    def transform(
        self, input: Iterator[dict[str, Any] | str], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[ELMDResult]:
        """Streaming from a stream of inputs (they are merged first), as in a composed chain."""
        yield from self._transform_stream_with_config(input, self._transform, config, **kwargs)

    async def astream(
        self, input: dict[str, Any] | str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[ELMDResult]:
        """Async :meth:`stream`."""

        async def single() -> AsyncIterator[dict[str, Any] | str]:
            yield input

        async for chunk in self.atransform(single(), config, **kwargs):
            yield chunk

    async def atransform(
        self, input: AsyncIterator[dict[str, Any] | str], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[ELMDResult]:
        """Async :meth:`transform`."""
        async for chunk in self._atransform_stream_with_config(input, self._atransform, config, **kwargs):
            yield chunk

    def as_tool(
        self,
        args_schema: type[BaseModel] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        arg_types: dict[str, type] | None = None,
    ) -> BaseTool:
        """A tool for agents: takes :class:`ELMDInput` fields, returns the answer as "Emotion: ...\\nResponse: ..."."""
        as_text = RunnableLambda(self._answer_text, name="elmd_answer_text")
        with warnings.catch_warnings():  # as_tool is marked beta by LangChain
            warnings.simplefilter("ignore", LangChainBetaWarning)
            return (self | as_text).as_tool(
                args_schema=args_schema or ELMDInput,
                name=name or "emotional_reply",
                description=description
                or "Write an empathetic reply to what a person just said, with the emotion the reply should carry. "
                "Give the utterance, optionally earlier turns, a background and a video path.",
                arg_types=arg_types,
            )

    # -- properties --------------------------------------------------------------------------------------------

    @property
    def video_enabled(self) -> bool:
        """Whether a given video reaches the model (a trained projector is loaded and ``use_video`` is on)."""
        return self.use_video and getattr(self.chat_model, "projector", None) is not None

    @property
    def prompt(self) -> ChatPromptTemplate:
        """The six-part prompt template in this chain's language and labels."""
        if self._prompt is None:
            self._prompt = build_prompt(self.language, self.labels)
        return self._prompt

    # -- one turn ----------------------------------------------------------------------------------------------

    def build_messages(
        self, input: Mapping[str, Any] | str, demonstration: Document | None = None
    ) -> list[BaseMessage]:
        """The chat messages for one input (history fitted to the context), without calling the model."""
        return self._messages(parse_input(input, self.language), demonstration)

    def _invoke(
        self,
        input: dict[str, Any] | str,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> ELMDResult:
        turn = parse_input(input, self.language)
        child = patch_config(config, callbacks=run_manager.get_child())
        demonstration = self._retrieve(turn, child)
        messages = self._messages(turn, demonstration)
        message = self.chat_model.invoke(messages, child, stop=self._stops(), **kwargs)
        return self._parse(str(message.text), demonstration)

    async def _ainvoke(
        self,
        input: dict[str, Any] | str,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> ELMDResult:
        turn = parse_input(input, self.language)
        child = patch_config(config, callbacks=run_manager.get_child())
        demonstration = await self._aretrieve(turn, child)
        messages = self._messages(turn, demonstration)
        message = await self.chat_model.ainvoke(messages, child, stop=self._stops(), **kwargs)
        return self._parse(str(message.text), demonstration)

    def _transform(
        self,
        inputs: Iterator[dict[str, Any] | str],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Iterator[ELMDResult]:
        turn = parse_input(_merge_inputs(inputs), self.language)
        child = patch_config(config, callbacks=run_manager.get_child())
        demonstration = self._retrieve(turn, child)
        messages = self._messages(turn, demonstration)
        chunks = _ReplyChunks(self.labels, demonstration)
        pieces = self.chat_model.stream(messages, child, stop=self._stops(), **kwargs)
        try:
            for piece in pieces:
                yield from chunks.feed(str(piece.text))
                if chunks.done:
                    break
            yield from chunks.finish()
        finally:
            pieces.close()  # type: ignore[attr-defined]  # stops generation when the consumer stops early

    async def _atransform(
        self,
        inputs: AsyncIterator[dict[str, Any] | str],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AsyncIterator[ELMDResult]:
        items = [item async for item in inputs]
        turn = parse_input(_merge_inputs(iter(items)), self.language)
        child = patch_config(config, callbacks=run_manager.get_child())
        demonstration = await self._aretrieve(turn, child)
        messages = self._messages(turn, demonstration)
        chunks = _ReplyChunks(self.labels, demonstration)
        pieces = self.chat_model.astream(messages, child, stop=self._stops(), **kwargs)
        try:
            async for piece in pieces:
                for chunk in chunks.feed(str(piece.text)):
                    yield chunk
                if chunks.done:
                    break
            for chunk in chunks.finish():
                yield chunk
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]

    def _retrieve(self, turn: _Turn, config: RunnableConfig) -> Document | None:
        if not (self.use_retrieval and self.retriever is not None):
            return None
        documents = self.retriever.invoke(turn.utterance.text, config)
        return documents[0] if documents else None

    async def _aretrieve(self, turn: _Turn, config: RunnableConfig) -> Document | None:
        if not (self.use_retrieval and self.retriever is not None):
            return None
        documents = await self.retriever.ainvoke(turn.utterance.text, config)
        return documents[0] if documents else None

    def _parse(self, text: str, demonstration: Document | None) -> ELMDResult:
        machine = StreamingAnswerParser(self.labels)
        result = ELMDResult(None, "")
        for chunk in [*machine.feed(text), *machine.finish()]:
            result = result + chunk
        return with_demonstration(result, demonstration)

    def _stops(self) -> list[str]:
        """Stop strings: the model starting an invented next turn (the parser also cuts there)."""
        words = wording(self.language)
        return sorted({f"\n{words.user_name}{words.colon.strip()}", f"\n{words.user_name}:"})

    def _answer_text(self, result: ELMDResult) -> str:
        """The result in the answer format (without the emotion line when the model gave none)."""
        if result.emotion is not None:
            return render_answer(result.emotion, result.response, self.language)
        words = wording(self.language)
        return f"{words.response_key}{words.colon}{result.response}"

    # -- prompt and context fitting ----------------------------------------------------------------------------

    def _messages(self, turn: _Turn, demonstration: Document | None) -> list[BaseMessage]:
        """Prompt messages with as much of the newest history as fits the context window."""
        video = turn.video
        if video is not None and not self.video_enabled:
            if self.use_video and not self._warned_video:
                warnings.warn(
                    "this chain's chat model has no trained video projector: the video is ignored "
                    "(the without-video path is used)",
                    stacklevel=3,
                )
                self._warned_video = True
            video = None

        def render(history: Sequence[Turn]) -> list[BaseMessage]:
            variables = prompt_variables(
                turn.utterance,
                history,
                turn.background,
                video=video is not None,
                demonstration=demonstration,
                language=self.language,
            )
            messages = self.prompt.format_messages(**variables)
            return attach_video(messages, video) if video is not None else messages

        budget = self._prompt_budget()
        history = turn.history
        if budget is None:
            return render(history)

        def newest(n: int) -> list[BaseMessage]:
            return render(history[len(history) - n :])

        if self.count_tokens(newest(len(history)), video is not None) <= budget:
            return newest(len(history))
        bare = self.count_tokens(render([]), video is not None)
        if bare > budget:
            raise InputError(
                f"too long for the model: the prompt without history needs {bare} tokens, but only {budget} fit "
                f"(context {self._context_window()} minus {self._max_new_tokens()} for the reply)",
                field="utterance",
            )
        # Largest number of newest turns that fits (the token count grows with every turn kept).
        lo, hi = 0, len(history) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.count_tokens(newest(mid), video is not None) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return newest(lo)

    def count_tokens(self, messages: Sequence[BaseMessage], with_video: bool = False) -> int:
        """Prompt length in tokens, as the chat model will see it (video tokens E_v included)."""
        tokenizer = getattr(self.chat_model, "tokenizer", None)
        if tokenizer is None or not hasattr(tokenizer, "apply_chat_template"):
            return self.chat_model.get_num_tokens_from_messages(list(messages))
        from elmd_sdk.models.splice import tokenize_pieces

        turns = [{"role": _role(m), "content": str(m.text)} for m in messages]
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        pieces = tokenize_pieces(tokenizer, text)
        count = sum(len(piece) for piece in pieces)
        if with_video:
            count += self._video_token_count() * (len(pieces) - 1)
        return count

    def _video_token_count(self) -> int:
        """Length m + o of E_v for the loaded visual encoder (Eq. 8)."""
        encoder = getattr(self.chat_model, "visual_encoder", None)
        frames = int(getattr(self.chat_model, "frames", 8))
        return frames + int(getattr(encoder, "o", 0))

    def _context_window(self) -> int | None:
        if self.context_window is not None:
            return self.context_window
        model = getattr(self.chat_model, "hf_model", None)
        if model is not None:
            config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
            for name in ("max_position_embeddings", "seq_length", "n_positions"):
                value = getattr(config, name, None)
                if isinstance(value, int) and 0 < value < _HUGE:
                    return value
        tokenizer = getattr(self.chat_model, "tokenizer", None)
        limit = getattr(tokenizer, "model_max_length", None)
        return limit if isinstance(limit, int) and 0 < limit < _HUGE else None

    def _max_new_tokens(self) -> int:
        value = getattr(self.chat_model, "max_new_tokens", None) or getattr(self.chat_model, "max_tokens", None)
        return int(value) if isinstance(value, int) else 0

    def _prompt_budget(self) -> int | None:
        window = self._context_window()
        return None if window is None else window - self._max_new_tokens()


class _ReplyChunks:
    """Streamed reply text -> result chunks (:class:`StreamingAnswerParser`); the first carries the demonstration."""

    def __init__(self, labels: Sequence[str], demonstration: Document | None) -> None:
        self._parser = StreamingAnswerParser(labels)
        self._demonstration = demonstration
        self._first = True

    @property
    def done(self) -> bool:
        """Whether the response has ended (nothing more to feed)."""
        return self._parser.done

    def feed(self, text: str) -> list[ELMDResult]:
        """The chunks that ``text`` makes certain."""
        return self._first_tagged(self._parser.feed(text))

    def finish(self) -> list[ELMDResult]:
        """The remaining chunks at the end of generation."""
        return self._first_tagged(self._parser.finish())

    def _first_tagged(self, chunks: list[ELMDResult]) -> list[ELMDResult]:
        if chunks and self._first:
            self._first = False
            return [with_demonstration(chunks[0], self._demonstration), *chunks[1:]]
        return chunks


def default_bundle_path() -> Path:
    """Folder of the embedded default bundle (shipped inside the ``elmd_sdk.chains`` package)."""
    return Path(__file__).resolve().parent / _DEFAULT_BUNDLE


def parse_input(value: Mapping[str, Any] | str | ELMDInput, language: str = "en") -> _Turn:
    """Check and normalise one chain input; :class:`InputError` names the bad field."""
    words = wording(language)
    if isinstance(value, ELMDInput):
        value = value.model_dump()
    if isinstance(value, str):
        value = {"utterance": value}
    if not isinstance(value, Mapping):
        raise InputError(f"expected a dict with 'utterance' (or a string), got {type(value).__name__}", field="input")
    unknown = sorted(set(value) - set(ELMDInput.model_fields))
    if unknown:
        raise InputError(f"unknown key (known: {', '.join(ELMDInput.model_fields)})", field=unknown[0])
    text = value.get("utterance")
    if not isinstance(text, str) or not text.strip():
        raise InputError("must be a non-empty string", field="utterance")
    speaker = value.get("speaker") or words.user_name
    if not isinstance(speaker, str):
        raise InputError("must be a string", field="speaker")
    background = value.get("background")
    if background is not None and not isinstance(background, str):
        raise InputError("must be a string or None", field="background")
    raw_history = value.get("history") or []
    if isinstance(raw_history, str) or not isinstance(raw_history, Sequence):
        raise InputError("must be a list of strings or {speaker, text} objects", field="history")
    history = [
        _history_turn(item, i, len(raw_history), speaker, words.assistant_name) for i, item in enumerate(raw_history)
    ]
    return _Turn(
        utterance=Turn(speaker=speaker, text=text.strip()),
        history=history,
        background=background.strip() if background and background.strip() else None,
        video=_video_ref(value.get("video")),
    )


def _history_turn(item: Any, index: int, count: int, user: str, assistant: str) -> Turn:
    """One history entry as a Turn; bare strings alternate speakers, the newest being the assistant's."""
    field = f"history[{index}]"
    if isinstance(item, Turn):
        return item
    if isinstance(item, HistoryTurn):
        item = item.model_dump()
    if isinstance(item, str):
        return Turn(speaker=assistant if (count - 1 - index) % 2 == 0 else user, text=item)
    if isinstance(item, Mapping):
        speaker, text = item.get("speaker"), item.get("text")
        if not isinstance(text, str):
            raise InputError("needs a string 'text'", field=field)
        if not isinstance(speaker, str) or not speaker:
            raise InputError("needs a non-empty string 'speaker'", field=field)
        emotion = item.get("emotion")
        return Turn(speaker=speaker, text=text, emotion=emotion if isinstance(emotion, str) else None)
    raise InputError(f"must be a string or a {{speaker, text}} object, got {type(item).__name__}", field=field)


def _video_ref(value: Any) -> VideoRef | None:
    """A video given as a path, a VideoRef or ``{"path", "start", "end"}``."""
    if value is None or value == "":
        return None
    if isinstance(value, VideoRef):
        return value
    if isinstance(value, str | PathLike):
        return VideoRef(path=str(value))
    if isinstance(value, Mapping) and isinstance(value.get("path"), str | PathLike):
        start, end = value.get("start"), value.get("end")
        for name, bound in (("start", start), ("end", end)):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int | float)):
                raise InputError("must be a number of seconds or None", field=f"video.{name}")
        return VideoRef(path=str(value["path"]), start=start, end=end)
    raise InputError("must be a path, a VideoRef or {path, start, end}", field="video")


def _merge_inputs(inputs: Iterator[Any]) -> Any:
    """One input from a stream of input chunks (added when they support it, else the last one wins)."""
    merged: Any = None
    for item in inputs:
        if merged is None:
            merged = item
            continue
        try:
            merged = merged + item
        except TypeError:
            merged = item
    if merged is None:
        raise InputError("no input given", field="input")
    return merged


def _role(message: BaseMessage) -> str:
    """Chat-template role of a prompt message."""
    return {"system": "system", "human": "user", "ai": "assistant"}.get(message.type, message.type)


__all__ = ["VIDEO_PLACEHOLDER", "ELMDChain", "ELMDInput", "HistoryTurn", "default_bundle_path", "parse_input"]
