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

import math
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core._api import LangChainBetaWarning
from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableLambda, RunnableSerializable
from langchain_core.runnables.config import ensure_config, patch_config
from langchain_core.tools import BaseTool
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from elmd_sdk.bundle import BundleManifest
from elmd_sdk.chains.parser import AnswerReader, ELMDResult
from elmd_sdk.chains.prompt import (
    VIDEO_PLACEHOLDER,
    DemonstrationForm,
    attach_video,
    build_prompt,
    emotion_choice,
    format_history,
    prompt_variables,
    wording,
)
from elmd_sdk.data.labels import EMOTIONS, check_emotions, check_log_prior
from elmd_sdk.data.records import Turn, VideoRef
from elmd_sdk.errors import ElmdError, InputError, input_error
from elmd_sdk.models.generation import requested_length
from elmd_sdk.paths import default_bundle_path
from elmd_sdk.retrievers.retriever import emotion_vote
from elmd_sdk.text_checks import check_text

if TYPE_CHECKING:
    from elmd_sdk.models.chat_model import ELMDChatModel

CONTENT_FREE = ("N/A", "[MASK]")  # content-free utterances of contextual calibration (Zhao et al., 2021)


class HistoryMessage(BaseModel):
    """An earlier turn in the OpenAI chat format."""

    role: Literal["user", "assistant"] = Field(description="user (the other person) or assistant (this bot).")
    content: str = Field(description="What was said.")


class HistoryTurn(BaseModel):
    """One earlier turn of the dialogue."""

    speaker: str = Field(description="Who said it.")
    text: str = Field(description="What was said.")
    emotion: str | None = Field(default=None, description="Its emotion label, if known (not used in the prompt).")


class ELMDInput(BaseModel):
    """What one ELMD turn takes (the chain also accepts a bare string as the utterance)."""

    utterance: str = Field(description="What the other person just said (u).")
    history: list[str | HistoryTurn | HistoryMessage] = Field(
        default_factory=list,
        description="Earlier turns, oldest first: strings (alternating, the last one being the assistant's), "
        "{speaker, text} objects or OpenAI-style {role, content} messages.",
    )
    background: str | None = Field(default=None, description="Background of the dialogue (B), e.g. a scene summary.")
    video: str | None = Field(
        default=None, description="Path of a video clip of the speaker (used when the bundle has a trained projector)."
    )
    speaker: str | None = Field(default=None, description="Name of the utterance's speaker (default: User).")
    emotion: str | None = Field(default=None, description="Force the response emotion (one of the bundle's labels).")
    allowed_emotions: list[str] | None = Field(
        default=None, description="Choose the response emotion only among these labels."
    )


class _Turn(BaseModel):
    """A checked input: everything the prompt needs for one turn."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    utterance: Turn
    history: list[Turn]
    background: str | None
    video: VideoRef | None
    emotion: str | None = None
    allowed_emotions: tuple[str, ...] | None = None


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
    emotion_mode: Literal["closed", "free"] = "closed"
    """closed: the emotion is chosen among the labels by the likelihood of their answer lines, then forced, and the
    result carries every label's probability (needs an ``ELMDChatModel``); free: the model writes the emotion line
    itself and the parser reads it (the paper's decoding)."""
    allowed_emotions: tuple[str, ...] | None = None
    """Restrict every reply's emotion to these labels (an input's ``allowed_emotions`` narrows it further, never
    widens it: a chain that never answers in anger stays so whatever its input asks)."""
    copy_guard: bool = True
    """Forbid the reply from reproducing any token n-gram of the demonstration's r' or of the utterance u (small
    models otherwise repeat one of them; ``ELMDChatModel`` only; n is its ``copy_guard_ngram``, 4 by default)."""
    copy_guard_own_replies: bool = True
    """With ``copy_guard``: also forbid the n-grams of the assistant's own earlier replies in the history the prompt
    holds, so that a conversation does not repeat itself from the third turn on (``benchmarks/conversation.py``)."""
    emotion_vote_k: int = Field(default=10, ge=1)
    """Nearest indexed utterances whose emotions vote, weighted by similarity, for the utterance emotion."""
    emotion_calibration: bool = True
    """Closed set: divide the label probabilities by the model's prior, so the choice follows the input, not the
    model's bias: ``emotion_log_prior`` when set, else the prior for content-free inputs ("N/A", "[MASK]";
    contextual calibration), computed once per chain."""
    emotion_log_prior: tuple[float, ...] | None = None
    """The model's measured log-prior of each label, in ``labels`` order: a trained bundle's validation prior
    (``bundle.json``), or :meth:`fit_emotion_prior` on inputs like the ones to come (batch calibration)."""
    demonstration_form: DemonstrationForm = "exchange"
    """How R enters the prompt: ``exchange`` (u' with the special instruction answered with e' and r') or ``paper``
    (r' with the special instruction only, paper 3.3); the README gives the measured reason for the default."""

    _prompt: ChatPromptTemplate | None = PrivateAttr(default=None)
    _log_prior: tuple[float, ...] | None = PrivateAttr(default=None)
    _warned_video: bool = PrivateAttr(default=False)

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        wording(value)  # ValueError naming the supported languages
        return value

    @model_validator(mode="after")
    def _known_emotions(self) -> ELMDChain:
        check_emotions(self.labels, None, self.allowed_emotions)
        if self.emotion_log_prior is not None:
            check_log_prior(self.emotion_log_prior, len(self.labels))
        return self

    @classmethod
    def from_bundle(
        cls,
        bundle: str | PathLike[str],
        *,
        use_retrieval: bool = True,
        use_video: bool = True,
        k: int = 1,
        device: str | None = None,
        emotion_mode: Literal["closed", "free"] = "closed",
        allowed_emotions: Sequence[str] | None = None,
        copy_guard: bool = True,
        demonstration_form: DemonstrationForm = "exchange",
        use_trained: bool = True,
        **generation: Any,
    ) -> ELMDChain:
        """Load a bundle folder (``bundle.json`` + ERM, index, projector, prefix) into a ready chain.

        ``use_trained=False`` loads the base LLM without the bundle's trained prefix and projector (same prompt,
        retrieval and decoding): the untuned baseline a trained bundle is compared with.

        The base LLM, the visual encoder and the prefix length are checked against the manifest
        (:class:`~elmd_sdk.errors.MismatchError` names the field that disagrees). ``generation`` overrides
        the bundle's decoding defaults (``max_new_tokens``, ``seed``, ``do_sample``, ``temperature``, ...).
        """
        from elmd_sdk.bundle.load import load_components

        try:
            parts = load_components(
                bundle,
                use_retrieval=use_retrieval,
                use_video=use_video,
                k=k,
                device=device,
                use_trained=use_trained,
                **generation,
            )
            return cls(
                chat_model=parts.chat_model,
                retriever=parts.retriever,
                language=parts.manifest.language,
                labels=tuple(parts.manifest.labels),
                use_retrieval=use_retrieval,
                use_video=use_video,
                manifest=parts.manifest,
                emotion_mode=emotion_mode,
                allowed_emotions=None if allowed_emotions is None else tuple(allowed_emotions),
                copy_guard=copy_guard,
                demonstration_form=demonstration_form,
                emotion_log_prior=parts.manifest.label_log_prior() if use_trained else None,
            )
        except ValidationError as error:
            raise input_error(error) from None

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
        """A tool for agents: takes the :class:`ELMDInput` fields (``video`` only when the bundle can use a clip;
        unknown arguments are refused) and returns ``{"emotion", "emotion_scores", "response", "utterance_emotion"}``.
        """
        as_data = RunnableLambda(_tool_output, name="elmd_tool_output")
        labels = ", ".join(self.labels)
        with warnings.catch_warnings():  # as_tool is marked beta by LangChain
            warnings.simplefilter("ignore", LangChainBetaWarning)
            return (self | as_data).as_tool(
                args_schema=args_schema or self._tool_schema(),
                name=name or "emotional_reply",
                description=description
                or "Write an empathetic reply to what a person just said, with the emotion the reply should carry "
                f"(one of: {labels}). Give the utterance, optionally earlier turns and a background; 'emotion' forces "
                "the reply's emotion, 'allowed_emotions' restricts it. Returns the emotion, the probability of each "
                "label, the response and the emotion recognised in the utterance.",
                arg_types=arg_types,
            )

    def _tool_schema(self) -> type[BaseModel]:
        """:class:`ELMDInput` without ``video`` when no clip can be used, refusing unknown arguments."""
        fields: dict[str, Any] = {
            name: (info.annotation, info)
            for name, info in ELMDInput.model_fields.items()
            if name != "video" or self.video_enabled
        }
        return create_model("EmotionalReplyInput", __config__=ConfigDict(extra="forbid"), **fields)

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
        return self._fitted_prompt(parse_input(input, self.language, self.labels), demonstration)[0]

    def prepare(
        self, input: Mapping[str, Any] | str, config: RunnableConfig | None = None
    ) -> tuple[list[BaseMessage], dict[str, Any]]:
        """What one turn sends to the chat model, without calling it: the prompt messages (history fitted to the
        context, retrieval done) and the call's keyword options (stop strings, the closed-set emotion choice, the
        copy guard's texts)."""
        turn = parse_input(input, self.language, self.labels)
        found = self._retrieve(turn, ensure_config(config))
        messages, history = self._fitted_prompt(turn, found.demonstration)
        return messages, self._reply_chunks(turn, found, history).options

    # invoke goes through the streaming path: it stops generating where the reply ends, and equals the stream.
    def _invoke(
        self,
        input: dict[str, Any] | str,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> ELMDResult:
        return _added(list(self._transform(iter([input]), run_manager, config, **kwargs)))

    async def _ainvoke(
        self,
        input: dict[str, Any] | str,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> ELMDResult:
        async def single() -> AsyncIterator[dict[str, Any] | str]:
            yield input

        return _added([chunk async for chunk in self._atransform(single(), run_manager, config, **kwargs)])

    def _transform(
        self,
        inputs: Iterator[dict[str, Any] | str],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Iterator[ELMDResult]:
        turn = parse_input(_merge_inputs(inputs), self.language, self.labels)
        child = patch_config(config, callbacks=run_manager.get_child())
        found = self._retrieve(turn, child)
        messages, history = self._fitted_prompt(turn, found.demonstration, requested_length(kwargs))
        chunks = self._reply_chunks(turn, found, history)
        pieces = self.chat_model.stream(messages, child, **_call_options(chunks.options, kwargs))
        try:
            yield from chunks.read(pieces)
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
        turn = parse_input(_merge_inputs(iter(items)), self.language, self.labels)
        child = patch_config(config, callbacks=run_manager.get_child())
        found = await self._aretrieve(turn, child)
        messages, history = self._fitted_prompt(turn, found.demonstration, requested_length(kwargs))
        chunks = self._reply_chunks(turn, found, history)
        pieces = self.chat_model.astream(messages, child, **_call_options(chunks.options, kwargs))
        try:
            async for chunk in chunks.aread(pieces):
                yield chunk
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]

    def _retrieve(self, turn: _Turn, config: RunnableConfig) -> _Retrieved:
        if not (self.use_retrieval and self.retriever is not None):
            return _Retrieved()
        return _Retrieved.of(self.retriever.invoke(turn.utterance.text, config, k=self.emotion_vote_k), self.labels)

    async def _aretrieve(self, turn: _Turn, config: RunnableConfig) -> _Retrieved:
        if not (self.use_retrieval and self.retriever is not None):
            return _Retrieved()
        documents = await self.retriever.ainvoke(turn.utterance.text, config, k=self.emotion_vote_k)
        return _Retrieved.of(documents, self.labels)

    def fit_emotion_prior(self, inputs: Iterable[Mapping[str, Any] | str]) -> tuple[float, ...]:
        """Batch calibration (Zhou et al., 2024): the log of each label's mean probability over ``inputs`` (e.g. a
        validation set), each prompted as its reply would be (history, retrieval, video), before any calibration.
        Use it as this chain's prior: ``chain.model_copy(update={"emotion_log_prior": prior})``."""
        import torch

        from elmd_sdk.models.closed_set import batch_log_prior

        quiet: RunnableConfig = {"callbacks": []}  # internal calls: not part of a caller's run
        rows = []
        for item in inputs:
            turn = parse_input(item, self.language, self.labels)
            rows.append(self._label_log_probs(turn, self._retrieve(turn, quiet).demonstration))
        if not rows:
            raise InputError("no inputs to fit the emotion prior on", field="inputs")
        return batch_log_prior(torch.tensor(rows))  # log-probabilities are log-likelihoods up to a constant

    def _label_log_probs(self, turn: _Turn, demonstration: Document | None) -> list[float]:
        """log p(e | prompt) of every label, uncalibrated, for one turn."""
        if _own_model(self.chat_model) is None:
            raise ElmdError("emotion calibration scores the labels with an ELMDChatModel")
        choice = emotion_choice(self.labels, self.language)
        quiet: RunnableConfig = {"callbacks": []}  # internal calls: not part of a caller's run
        messages = self._fitted_prompt(turn, demonstration)[0]
        message = self.chat_model.invoke(messages, quiet, emotion_choice=choice, max_new_tokens=1)
        probabilities = message.response_metadata["emotion_scores"]
        return [math.log(max(probabilities[label], 1e-45)) for label in self.labels]  # float32 floor

    def _emotion_log_prior(self) -> tuple[float, ...] | None:
        """The prior calibration divides by: ``emotion_log_prior``, else the mean log-probability of each label for
        content-free utterances (computed once); None when calibration is off."""
        if not self.emotion_calibration:
            return None
        if self.emotion_log_prior is not None:
            return self.emotion_log_prior
        if self._log_prior is None:
            logs = [self._label_log_probs(parse_input(text, self.language, self.labels), None) for text in CONTENT_FREE]
            self._log_prior = tuple(sum(values) / len(values) for values in zip(*logs, strict=True))
        return self._log_prior

    def _reply_chunks(self, turn: _Turn, found: _Retrieved, history: Sequence[Turn]) -> _ReplyChunks:
        """The parser of this turn's reply, with the chat model's call options (stops, emotion choice, copy guard
        over r', u and the assistant's own replies in ``history``, the history the prompt holds)."""
        words = wording(self.language)
        options: dict[str, Any] = {
            "stop": sorted({f"\n{words.user_name}{words.colon.strip()}", f"\n{words.user_name}:"})
        }
        own_model = _own_model(self.chat_model) is not None
        allowed = _narrowed(self.allowed_emotions, turn.allowed_emotions)
        closed = self.emotion_mode == "closed" or turn.emotion is not None or allowed is not None
        if closed and not own_model:
            raise ElmdError(
                "closed-set emotion decoding (the default, and what 'emotion' and 'allowed_emotions' need) scores the "
                f"labels with an ELMDChatModel; this chain's chat model is a {type(self.chat_model).__name__}: "
                "build the chain with emotion_mode='free'"
            )
        if closed:
            options["emotion_choice"] = replace(
                emotion_choice(self.labels, self.language),
                allowed=allowed,
                force=turn.emotion,
                log_prior=self._emotion_log_prior(),
            )
        if self.copy_guard and own_model:
            demonstration = [found.demonstration.page_content] if found.demonstration is not None else []
            own = [t.text for t in history if t.speaker == words.assistant_name] if self.copy_guard_own_replies else []
            options["avoid_copying"] = [*demonstration, turn.utterance.text, *own]
        extras = ELMDResult(
            None,
            "",
            demonstration=found.demonstration,
            utterance_emotion=found.utterance_emotion,
            utterance_emotion_scores=found.utterance_emotion_scores,
        )
        return _ReplyChunks(self.labels, closed, extras, options)

    # -- prompt and context fitting ----------------------------------------------------------------------------

    def _fitted_prompt(
        self, turn: _Turn, demonstration: Document | None, reply_tokens: int | None = None
    ) -> tuple[list[BaseMessage], Sequence[Turn]]:
        """Prompt messages with as much of the newest history as fits the context window beside a reply of
        ``reply_tokens`` (None: the chat model's limit), and that history."""
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
                demonstration_form=self.demonstration_form,
            )
            messages = self.prompt.format_messages(**variables)
            return attach_video(messages, video) if video is not None else messages

        reply = self._reply_room(reply_tokens)
        window = self._context_window()
        budget = None if window is None else window - reply
        history = turn.history
        if budget is None:
            return render(history), history

        def newest(n: int) -> list[BaseMessage]:
            return render(history[len(history) - n :])

        bare = self.count_tokens(render([]), video is not None)
        if bare > budget:
            raise InputError(
                f"too long for the model: the prompt without history needs {bare} tokens, but only {budget} fit "
                f"(context {window} minus {reply} for the reply)",
                field="utterance",
            )

        def fits(n: int) -> bool:
            return self.count_tokens(newest(n), video is not None) <= budget

        # The exact answer: the largest number of newest turns whose whole prompt fits (its token count grows with
        # every turn kept), searched from the estimate, so only prompts about the size of the context are tokenized.
        guess, most = self._history_estimate(history, budget - bare)
        kept = _largest_fitting(fits, guess, most)
        return newest(kept), history[len(history) - kept :]

    def _history_estimate(self, history: Sequence[Turn], room: int) -> tuple[int, int]:
        """How many of the newest history turns fit in ``room`` tokens beside the prompt without history, before
        the exact count: ``(guess, most)``. ``most`` is a bound from characters alone (a turn's line of c characters
        takes at least c / :meth:`~elmd_sdk.models.chat_model.ELMDChatModel.max_token_chars` tokens; no bound for
        another chat model); ``guess`` adds up the turns' lines tokenized one at a time, from the newest, and stops
        at the first that no longer fits, so neither ever tokenizes more than the context can hold."""
        own = _own_model(self.chat_model)
        per_token = own.max_token_chars() if own is not None else None
        guess: int | None = None
        chars = tokens = 0
        for n, turn in enumerate(reversed(history)):
            line = format_history([turn], self.language) + "\n"
            chars += len(line)
            if per_token is not None and -(-chars // per_token) > room:
                return (n if guess is None else guess), n
            if guess is None:
                tokens += self.chat_model.get_num_tokens(line)
                if tokens > room:
                    guess = n
                    if per_token is None:
                        break
        return (len(history) if guess is None else guess), len(history)

    def count_tokens(self, messages: Sequence[BaseMessage], with_video: bool = False) -> int:
        """Prompt length in tokens, as the chat model will see it (with ``with_video``, video tokens E_v included)."""
        if (own := _own_model(self.chat_model)) is not None:
            return own.count_prompt_tokens(messages, with_video=with_video)
        return self.chat_model.get_num_tokens_from_messages(list(messages))

    def _context_window(self) -> int | None:
        if self.context_window is not None:
            return self.context_window
        own = _own_model(self.chat_model)
        return own.context_window() if own is not None else None

    def _reply_room(self, asked: int | None) -> int:
        """Positions kept free for the reply: what the call asked for, else the chat model's limit when it states
        one."""
        if asked is not None:
            return asked
        value = getattr(self.chat_model, "max_new_tokens", None) or getattr(self.chat_model, "max_tokens", None)
        return int(value) if isinstance(value, int) else 0


@dataclass(frozen=True)
class _Retrieved:
    """What retrieval gave one turn: the demonstration R (the nearest entry) and the utterance-emotion vote."""

    demonstration: Document | None = None
    utterance_emotion: str | None = None
    utterance_emotion_scores: dict[str, float] | None = None

    @classmethod
    def of(cls, documents: Sequence[Document], labels: Sequence[str]) -> _Retrieved:

        scores = emotion_vote(documents, labels)
        return cls(
            demonstration=documents[0] if documents else None,
            utterance_emotion=None if scores is None else max(scores, key=scores.__getitem__),
            utterance_emotion_scores=scores,
        )


class _ReplyChunks(AnswerReader):
    """The chain's :class:`AnswerReader`: its first chunk also carries the demonstration and the utterance emotion;
    closed mode requires the emotion the chat model chose."""

    def __init__(self, labels: Sequence[str], closed: bool, extras: ELMDResult, options: dict[str, Any]) -> None:
        super().__init__(labels, closed=closed)
        self.options = options  # keyword arguments of the chat model call
        self._extras: ELMDResult | None = extras  # added to the first chunk that goes out

    def feed(self, piece: str | BaseMessage) -> list[ELMDResult]:
        return self._tagged(super().feed(piece))

    def finish(self) -> list[ELMDResult]:
        return self._tagged(super().finish())

    def _tagged(self, chunks: list[ELMDResult]) -> list[ELMDResult]:
        if chunks and self._extras is not None:
            chunks, self._extras = [chunks[0] + self._extras, *chunks[1:]], None
        return chunks


def _largest_fitting(fits: Callable[[int], bool], guess: int, most: int) -> int:
    """The largest n in [0, most] for which ``fits(n)`` holds, where ``fits`` holds up to some n and fails beyond it
    (``fits(0)`` is taken to hold): galloping from ``guess`` (steps 1, 2, 4, ...) until the answer is bracketed, then
    bisecting, so a close guess costs two or three calls."""
    guess = min(guess, most)
    if guess == 0 or fits(guess):
        low, high, step = guess, most, 1  # low fits; nothing above high does
        while low < high:
            probe = min(low + step, high)
            if not fits(probe):
                high = probe - 1
                break
            low, step = probe, step * 2
    else:
        high, step = guess - 1, 1
        while True:
            probe = max(high - step + 1, 0)
            if probe == 0 or fits(probe):
                low = probe
                break
            high, step = probe - 1, step * 2
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _narrowed(chain_wide: tuple[str, ...] | None, given: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The labels a reply may take: the input's ``allowed_emotions`` that the chain allows (either set alone when
    the other is None); an :class:`InputError` when they share none."""
    if chain_wide is None or given is None:
        return chain_wide if given is None else given
    kept = tuple(label for label in given if label in chain_wide)
    if not kept:
        raise InputError(f"none of {list(given)} is among this chain's {list(chain_wide)}", field="allowed_emotions")
    return kept


def _own_model(chat_model: BaseChatModel) -> ELMDChatModel | None:
    """The chat model as an :class:`ELMDChatModel` (which scores labels, counts video tokens and knows its context
    window), or None for another LangChain chat model."""
    from elmd_sdk.models.chat_model import ELMDChatModel

    return chat_model if isinstance(chat_model, ELMDChatModel) else None


def _call_options(options: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The chat model call's options: the chain's, then the caller's (``stop`` strings are added to the chain's)."""
    merged = {**options, **kwargs}
    if "stop" in kwargs:
        extra = [kwargs["stop"]] if isinstance(kwargs["stop"], str) else list(kwargs["stop"] or [])
        merged["stop"] = [*options.get("stop", []), *extra]
    return merged


def _added(chunks: Sequence[ELMDResult]) -> ELMDResult:
    result = ELMDResult(None, "")
    for chunk in chunks:
        result = result + chunk
    return result


def _tool_output(result: ELMDResult) -> dict[str, Any]:
    """What the agent tool returns: the reply as data."""
    return {
        "emotion": result.emotion,
        "emotion_scores": result.emotion_scores,
        "response": result.response,
        "utterance_emotion": result.utterance_emotion,
    }


def parse_input(
    value: Mapping[str, Any] | str | ELMDInput, language: str = "en", labels: Sequence[str] = EMOTIONS
) -> _Turn:
    """Check and normalise one chain input; :class:`InputError` names the bad field (``emotion`` and
    ``allowed_emotions`` must be among ``labels``)."""
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
    check_text(text, "utterance")
    speaker = value.get("speaker") or words.user_name
    if not isinstance(speaker, str):
        raise InputError("must be a string", field="speaker")
    check_text(speaker, "speaker")
    background = value.get("background")
    if background is not None and not isinstance(background, str):
        raise InputError("must be a string or None", field="background")
    if background is not None:
        check_text(background, "background")
    raw_history = value.get("history") or []
    if isinstance(raw_history, str) or not isinstance(raw_history, Sequence):
        raise InputError("must be a list of strings or {speaker, text} objects", field="history")
    history = [
        _history_turn(item, i, len(raw_history), speaker, words.assistant_name) for i, item in enumerate(raw_history)
    ]
    emotion, allowed = value.get("emotion"), value.get("allowed_emotions")
    check_emotions(labels, emotion, allowed)
    return _Turn(
        utterance=Turn(speaker=speaker, text=text.strip()),
        history=history,
        background=background.strip() if background and background.strip() else None,
        video=_video_ref(value.get("video")),
        emotion=emotion,
        allowed_emotions=None if allowed is None else tuple(allowed),
    )


def _history_turn(item: Any, index: int, count: int, user: str, assistant: str) -> Turn:
    """One history entry as a Turn; bare strings alternate speakers, the newest being the assistant's."""
    field = f"history[{index}]"
    if isinstance(item, Turn | HistoryTurn):
        item = {"speaker": item.speaker, "text": item.text, "emotion": item.emotion}
    if isinstance(item, str):
        return Turn(speaker=assistant if (count - 1 - index) % 2 == 0 else user, text=check_text(item, field))
    if isinstance(item, HistoryMessage):
        item = item.model_dump()
    if isinstance(item, Mapping) and "role" in item:
        role, content = item.get("role"), item.get("content")
        if role not in ("user", "assistant"):
            raise InputError(f"role must be 'user' or 'assistant', got {role!r}", field=field)
        if not isinstance(content, str):
            raise InputError("needs a string 'content'", field=field)
        return Turn(speaker=user if role == "user" else assistant, text=check_text(content, f"{field}.content"))
    if isinstance(item, Mapping):
        speaker, text = item.get("speaker"), item.get("text")
        if not isinstance(text, str):
            raise InputError("needs a string 'text'", field=field)
        if not isinstance(speaker, str) or not speaker:
            raise InputError("needs a non-empty string 'speaker'", field=field)
        emotion = item.get("emotion")
        return Turn(
            speaker=check_text(speaker, f"{field}.speaker"),
            text=check_text(text, f"{field}.text"),
            emotion=emotion if isinstance(emotion, str) else None,
        )
    raise InputError(
        f"must be a string, a {{speaker, text}} or a {{role, content}} object, got {type(item).__name__}", field=field
    )


def _video_ref(value: Any) -> VideoRef | None:
    """A video given as a path, a VideoRef or ``{"path", "start", "end"}``: an existing file or folder of frames and
    a forward, non-negative time range, checked whether or not the bundle can use a clip."""
    if value is None or value == "":
        return None
    if isinstance(value, VideoRef):
        video = value
    elif isinstance(value, str | PathLike):
        video = VideoRef(path=str(value))
    elif isinstance(value, Mapping) and isinstance(value.get("path"), str | PathLike):
        start, end = value.get("start"), value.get("end")
        for name, bound in (("start", start), ("end", end)):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int | float)):
                raise InputError("must be a number of seconds or None", field=f"video.{name}")
        video = VideoRef(path=str(value["path"]), start=start, end=end)
    else:
        raise InputError("must be a path, a VideoRef or {path, start, end}", field="video")
    if not Path(video.path).expanduser().exists():
        raise InputError("file not found", file=video.path, field="video")
    for name, bound in (("start", video.start), ("end", video.end)):
        if bound is not None and not 0 <= bound < float("inf"):
            raise InputError(f"must be a finite, non-negative number of seconds, got {bound}", field=f"video.{name}")
    if video.start is not None and video.end is not None and video.end <= video.start:
        raise InputError(f"end {video.end} s must come after start {video.start} s", field="video.end")
    return video


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


__all__ = [
    "VIDEO_PLACEHOLDER",
    "ELMDChain",
    "ELMDInput",
    "HistoryMessage",
    "HistoryTurn",
    "default_bundle_path",
    "parse_input",
]
