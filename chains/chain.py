"""``ELMDChain``: retrieval of a demonstration R, the six-part prompt, the multimodal chat model and the parser.

One turn (paper Figure 3 / 4): the Emotional Retrieval Module finds the demonstration response r' for the
utterance u; the prompt combines I, B, H, u, E_v and R; the chat model answers with the response emotion
then the response; the parser returns an :class:`~elmd_sdk.answer.result.ELMDResult`.

The chain is a LangChain ``RunnableSerializable``: ``invoke``, ``batch``, ``stream`` (response text as it is
generated, the emotion on the first chunk), ``ainvoke``/``astream``, composition with ``|`` and
``as_tool()``. History that does not fit the model's context (with room left for the reply) is dropped
from the oldest turn, whole turns at a time, measured with the model's own tokenizer and chat template.

This module is the Runnable; its jobs live beside it: input checking (:mod:`~elmd_sdk.chains.input`), history
fitting (:mod:`~elmd_sdk.chains.context`), the calibration prior (:mod:`~elmd_sdk.chains.calibration`) and the
reply's parts around the model call (:mod:`~elmd_sdk.chains.reply`).
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from os import PathLike
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import ensure_config, patch_config, run_in_executor
from langchain_core.tools import BaseTool
from pydantic import (
    BaseModel,
    ConfigDict,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from elmd_sdk.answer.result import ELMDResult
from elmd_sdk.answer.wording import wording
from elmd_sdk.bundle import MANIFEST_FILE, BundleManifest
from elmd_sdk.chains.calibration import CONTENT_FREE, fitted_log_prior, label_log_probs, mean_log_prior
from elmd_sdk.chains.context import context_window, count_tokens, fit_history, own_model, reply_room
from elmd_sdk.chains.input import ELMDInput, HistoryMessage, HistoryTurn, ParsedInput, merge_inputs, parse_input
from elmd_sdk.chains.prompt import VIDEO_PLACEHOLDER, attach_video, build_prompt, prompt_variables
from elmd_sdk.chains.reply import EmotionEvidence, ReplyChunks, Retrieved, added, call_options, narrowed
from elmd_sdk.chains.settings import CHAIN_SETTINGS, ChainFields, check_chain_settings
from elmd_sdk.chains.tool import chain_tool
from elmd_sdk.data.labels import EMOTIONS, check_emotions, check_log_prior
from elmd_sdk.data.records import Turn
from elmd_sdk.errors import ElmdError, InputError, input_error
from elmd_sdk.models.closed_set import emotion_choice
from elmd_sdk.models.generation import requested_length
from elmd_sdk.paths import default_bundle_path


class ELMDChain(RunnableSerializable[dict[str, Any] | str, ELMDResult], ChainFields):
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
    emotion_log_prior: tuple[float, ...] | None = None
    """The model's measured log-prior of each label, in ``labels`` order: a trained bundle's validation prior
    (``bundle.json``), or :meth:`fit_emotion_prior` on inputs like the ones to come (batch calibration)."""
    # The conversation settings (emotion_mode, allowed_emotions, copy_guard, copy_guard_own_replies, emotion_vote_k,
    # utterance_calibration, emotion_calibration, demonstration_form, demonstration_min_score, demonstration_min_topic,
    # max_history_turns, emotion_source, emotion_fusion) are ChainFields' (chains/settings.py): a bundle's "chain"
    # block sets them.

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
        if self.emotion_source == "fused" and self.emotion_fusion is None:
            raise InputError(
                "emotion_source 'fused' needs emotion_fusion (elmd-sdk calibrate fits it)", field="emotion_fusion"
            )
        if self.demonstration_min_topic is not None and not (
            self.retriever is None or hasattr(self.retriever, "topic_similarities")
        ):
            raise InputError(
                f"needs a retriever with topic_similarities (EmotionalRetriever), got {type(self.retriever).__name__}",
                field="demonstration_min_topic",
            )
        if self.emotion_fusion is not None and (unknown := sorted(set(self.emotion_fusion.bias) - set(self.labels))):
            raise InputError(f"bias for unknown label(s) {unknown}", field="emotion_fusion.bias")
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
        use_trained: bool = True,
        dtype: str | None = None,
        quantize: str | None = None,
        **overrides: Any,
    ) -> ELMDChain:
        """Load a bundle folder (``bundle.json`` + ERM, index, projector, prefix) into a ready chain.

        ``use_trained=False`` loads the base LLM without the bundle's trained prefix and projector (same prompt,
        retrieval and decoding, no fitted prior or emotion fusion): the untuned baseline a trained bundle is compared
        with.

        The base LLM, the visual encoder and the prefix length are checked against the manifest
        (:class:`~elmd_sdk.errors.MismatchError` names the field that disagrees). ``overrides`` replace the bundle's
        conversation settings (:class:`~elmd_sdk.chains.settings.ChainFields`: ``emotion_mode``, ``copy_guard``,
        ...) and decoding settings (:class:`~elmd_sdk.models.generation.GenerationConfig`: ``max_new_tokens``,
        ``seed``, ``do_sample``, ...). ``dtype`` and ``quantize`` override the precision the bundle's LLM loads in
        (:mod:`elmd_sdk.models.precision`; ``None``: the bundle's own).
        """
        from elmd_sdk.bundle.load import load_components

        given = {name: value for name, value in overrides.items() if name in CHAIN_SETTINGS}
        generation = {name: value for name, value in overrides.items() if name not in CHAIN_SETTINGS}
        try:
            parts = load_components(
                bundle,
                use_retrieval=use_retrieval,
                use_video=use_video,
                k=k,
                device=device,
                use_trained=use_trained,
                dtype=dtype,
                quantize=quantize,
                **generation,
            )
            manifest = parts.manifest
            settings = check_chain_settings(manifest.chain, file=parts.paths.root / MANIFEST_FILE)
            if not use_trained:  # fitted for the trained model's probabilities
                settings = {**settings, "emotion_source": "llm", "emotion_fusion": None}
            return cls(
                chat_model=parts.chat_model,
                retriever=parts.retriever,
                language=manifest.language,
                labels=tuple(manifest.labels),
                use_retrieval=use_retrieval,
                use_video=use_video,
                manifest=manifest,
                emotion_log_prior=manifest.label_log_prior() if use_trained else None,
                **{**settings, **given},
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
        """A tool for agents (:func:`~elmd_sdk.chains.tool.chain_tool`): takes the :class:`ELMDInput` fields and
        returns ``{"emotion", "emotion_scores", "response", "utterance_emotion"}``."""
        return chain_tool(self, args_schema, name=name, description=description, arg_types=arg_types)

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

    def emotion_scores(self, input: Mapping[str, Any] | str, config: RunnableConfig | None = None) -> ELMDResult:
        """The turn's emotions as :meth:`invoke` gives them (``emotion_scores``, ``emotion``, the utterance emotion),
        without the reply: nothing is decoded (:func:`~elmd_sdk.chains.emotions.reply_emotions`)."""
        from elmd_sdk.chains.emotions import reply_emotions

        return reply_emotions(self, input, config)

    # invoke goes through the streaming path: it stops generating where the reply ends, and equals the stream.
    def _invoke(
        self,
        input: dict[str, Any] | str,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> ELMDResult:
        return added(list(self._transform(iter([input]), run_manager, config, **kwargs)))

    async def _ainvoke(
        self,
        input: dict[str, Any] | str,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> ELMDResult:
        async def single() -> AsyncIterator[dict[str, Any] | str]:
            yield input

        return added([chunk async for chunk in self._atransform(single(), run_manager, config, **kwargs)])

    def _transform(
        self,
        inputs: Iterator[dict[str, Any] | str],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Iterator[ELMDResult]:
        turn = parse_input(merge_inputs(inputs), self.language, self.labels)
        child = patch_config(config, callbacks=run_manager.get_child())
        found = self._retrieve(turn, child)
        messages, history = self._fitted_prompt(turn, found.demonstration, requested_length(kwargs))
        chunks = self._reply_chunks(turn, found, history)
        pieces = self.chat_model.stream(messages, child, **call_options(chunks.options, kwargs))
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
        turn = parse_input(merge_inputs(iter(items)), self.language, self.labels)
        child = patch_config(config, callbacks=run_manager.get_child())
        found = await self._aretrieve(turn, child)
        messages, history = self._fitted_prompt(turn, found.demonstration, requested_length(kwargs))
        chunks = self._reply_chunks(turn, found, history)
        pieces = self.chat_model.astream(messages, child, **call_options(chunks.options, kwargs))
        try:
            async for chunk in chunks.aread(pieces):
                yield chunk
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]

    def _retrieve(self, turn: ParsedInput, config: RunnableConfig) -> Retrieved:
        if not (self.use_retrieval and self.retriever is not None):
            return Retrieved()
        documents = self.retriever.invoke(turn.utterance.text, config, k=self.emotion_vote_k)
        return self._found(turn.utterance.text, documents)

    async def _aretrieve(self, turn: ParsedInput, config: RunnableConfig) -> Retrieved:
        if not (self.use_retrieval and self.retriever is not None):
            return Retrieved()
        documents = await self.retriever.ainvoke(turn.utterance.text, config, k=self.emotion_vote_k)
        if self.demonstration_min_topic is None:
            return self._found(turn.utterance.text, documents)
        return await run_in_executor(config, self._found, turn.utterance.text, documents)  # encodes: off the loop

    def _found(self, query: str, documents: list[Document]) -> Retrieved:
        """The retrieved documents as R and the votes, under the demonstration settings."""
        topics = None
        if self.demonstration_min_topic is not None and documents:
            utterances = [str(document.metadata.get("utterance", "")) for document in documents]
            topics = self.retriever.topic_similarities(query, utterances)  # type: ignore[union-attr]
        return Retrieved.of(
            documents,
            self.labels,
            self.demonstration_min_score,
            topics,
            self.demonstration_min_topic,
            self.utterance_calibration,
        )

    def fit_emotion_prior(self, inputs: Iterable[Mapping[str, Any] | str]) -> tuple[float, ...]:
        """Batch calibration (Zhou et al., 2024): the log of each label's mean probability over ``inputs`` (e.g. a
        validation set), each prompted as its reply would be (history, retrieval, video), before any calibration.
        Use it as this chain's prior: ``chain.model_copy(update={"emotion_log_prior": prior})``."""
        return self.fit_prior_from([self.emotion_evidence(item) for item in inputs])

    @staticmethod
    def fit_prior_from(evidence: Iterable[EmotionEvidence]) -> tuple[float, ...]:
        """:meth:`fit_emotion_prior` from inputs' :meth:`emotion_evidence` already gathered."""
        return fitted_log_prior([item.llm_log_probs for item in evidence])

    def emotion_evidence(self, input: Mapping[str, Any] | str) -> EmotionEvidence:
        """What the response emotion of one input rests on, without decoding a reply: the LLM's uncalibrated label
        log-probabilities for the prompt as its reply would be made (history, retrieval, video) and the
        neighbours' two votes (what calibration and fusion are fitted on)."""
        turn = parse_input(input, self.language, self.labels)
        found = self._retrieve(turn, {"callbacks": []})  # internal calls: not part of a caller's run
        return EmotionEvidence(
            llm_log_probs=self._label_log_probs(turn, found.demonstration),
            utterance_vote=found.utterance_emotion_scores,
            response_vote=found.response_emotion_scores,
            demonstration_emotion=None
            if found.demonstration is None
            else found.demonstration.metadata.get("response_emotion"),
        )

    def _label_log_probs(self, turn: ParsedInput, demonstration: Document | None) -> list[float]:
        messages = self._fitted_prompt(turn, demonstration)[0]
        return label_log_probs(self.chat_model, messages, self.labels, self.language)

    def _emotion_log_prior(self) -> tuple[float, ...] | None:
        """The prior calibration divides by: ``emotion_log_prior``, else the mean log-probability of each label for
        content-free utterances (computed once); None when calibration is off."""
        if not self.emotion_calibration:
            return None
        if self.emotion_log_prior is not None:
            return self.emotion_log_prior
        if self._log_prior is None:
            turns = [parse_input(text, self.language, self.labels) for text in CONTENT_FREE]
            self._log_prior = mean_log_prior([self._label_log_probs(turn, None) for turn in turns])
        return self._log_prior

    def _reply_chunks(self, turn: ParsedInput, found: Retrieved, history: Sequence[Turn]) -> ReplyChunks:
        """The parser of this turn's reply, with the chat model's call options (stops, emotion choice, copy guard
        over r', u and the assistant's own replies in ``history``, the history the prompt holds)."""
        words = wording(self.language)
        options: dict[str, Any] = {
            "stop": sorted({f"\n{words.user_name}{words.colon.strip()}", f"\n{words.user_name}:"})
        }
        ours = own_model(self.chat_model) is not None
        allowed = narrowed(self.allowed_emotions, turn.allowed_emotions)
        closed = self.emotion_mode == "closed" or turn.emotion is not None or allowed is not None
        if closed and not ours:
            raise ElmdError(
                "closed-set emotion decoding (the default, and what 'emotion' and 'allowed_emotions' need) scores the "
                f"labels with an ELMDChatModel; this chain's chat model is a {type(self.chat_model).__name__}: "
                "build the chain with emotion_mode='free'"
            )
        if closed:
            choice = replace(
                emotion_choice(self.labels, self.language),
                allowed=allowed,
                force=turn.emotion,
                log_prior=self._emotion_log_prior(),
            )
            if self.emotion_source == "fused" and (fusion := self.emotion_fusion) is not None:
                choice = fusion.applied(choice, found.utterance_emotion_scores, found.response_emotion_scores)
            options["emotion_choice"] = choice
        if self.copy_guard and ours:
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
        return ReplyChunks(self.labels, closed, extras, options)

    # -- prompt and context fitting ----------------------------------------------------------------------------

    def _fitted_prompt(
        self, turn: ParsedInput, demonstration: Document | None, reply_tokens: int | None = None
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

        window = context_window(self.chat_model, self.context_window)
        reply = reply_room(self.chat_model, reply_tokens)
        return fit_history(
            render,
            turn.history
            if self.max_history_turns is None
            else turn.history[len(turn.history) - self.max_history_turns :],
            self.chat_model,
            window=window,
            reply=reply,
            with_video=video is not None,
            language=self.language,
        )

    def count_tokens(self, messages: Sequence[BaseMessage], with_video: bool = False) -> int:
        """Prompt length in tokens, as the chat model will see it (with ``with_video``, video tokens E_v included)."""
        return count_tokens(self.chat_model, messages, with_video)


__all__ = [
    "VIDEO_PLACEHOLDER",
    "ELMDChain",
    "ELMDInput",
    "HistoryMessage",
    "HistoryTurn",
    "default_bundle_path",
    "parse_input",
]
