"""ELMDChatModel: a LangChain chat model over a transformers causal LM with video tokens E_v spliced into its input.

Messages are rendered with the tokenizer's chat template; each ``<video>`` placeholder in the text is replaced by
the video tokens ``E_v = projector(pool(encoder(frames)))`` (paper Eq. 5-9) in ``inputs_embeds``. Decoding uses
nucleus sampling with the paper's settings (top-p 0.7, temperature 0.95, section 4.3) unless greedy is asked for.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from os import PathLike
from typing import Any, cast

import torch
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from transformers import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
)

from elmd_sdk.errors import ElmdError, InputError, input_error
from elmd_sdk.models.batching import BatchEngine
from elmd_sdk.models.closed_set import (
    COPY_GUARD_NGRAM,
    EmotionChoice,
    copy_guard,
    emotion_probabilities,
    pick_emotion,
)
from elmd_sdk.models.decoding import (
    Chooser,
    Context,
    PromptCache,
    Sampling,
    common_length,
    decode_steps,
    extend,
    prefill,
    score_continuations,
)
from elmd_sdk.models.generation import (
    DECODING_OPTIONS,
    CopyGuardNgram,
    DoSample,
    MaxNewTokens,
    MinNewTokens,
    NoRepeatNgramSize,
    RepetitionPenalty,
    Seed,
    Temperature,
    TopK,
    TopP,
    check_decoding,
    requested_length,
)
from elmd_sdk.models.rendering import VIDEO_PLACEHOLDER, context_window, prompt_pieces
from elmd_sdk.models.splice import splice_video_embeds
from elmd_sdk.paths import DEFAULT_LLM_GGUF
from elmd_sdk.text_checks import check_text

__all__ = ["VIDEO_PLACEHOLDER", "ELMDChatModel"]

_CALL_OPTIONS = frozenset({*DECODING_OPTIONS, "max_tokens", "emotion_choice", "avoid_copying"})


class _SuppressAtBegin(SuppressTokensAtBeginLogitsProcessor):
    """transformers' processor, skipped after the first token: it builds a vocabulary-sized mask on every call (7% of
    a busy server's engine time, measured with py-spy)."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] != self.begin_index:
            return scores
        return super().__call__(input_ids, scores)


@dataclass(frozen=True)
class _Settings:
    """Decoding settings of one call: the model's fields overridden by per-call keyword arguments."""

    sampling: Sampling
    max_new_tokens: int
    stop: tuple[str, ...]
    emotion_choice: EmotionChoice | None = None  # closed-set emotion: score, choose and force the emotion line
    avoid: tuple[str, ...] = ()  # texts whose n-grams the reply may not reproduce (copy guard)
    copy_guard_ngram: int = COPY_GUARD_NGRAM
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    min_new_tokens: int = 0

    def processors(
        self, eos_ids: list[int], guard: NoBadWordsLogitsProcessor | None, line_breaks: Callable[[], list[int]]
    ) -> LogitsProcessorList:
        """The logits processors of this call: in closed-set mode a response of at least one token that starts on
        the response key's line (``line_breaks()``: the ids of tokens holding a line break), repetition rules, the
        copy guard."""
        processors = LogitsProcessorList()
        if self.emotion_choice is not None:
            processors.append(_SuppressAtBegin(line_breaks(), 0))
        least = max(self.min_new_tokens, 1 if self.emotion_choice is not None else 0)  # closed set: never empty
        if least > 0:
            processors.append(MinNewTokensLengthLogitsProcessor(0, least, eos_ids))
        if self.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if self.no_repeat_ngram_size > 0:
            processors.append(NoRepeatNGramLogitsProcessor(self.no_repeat_ngram_size))
        if guard is not None:
            processors.append(guard)
        return processors


@dataclass(frozen=True)
class _Decoding:
    """One call after the prompt was run: its settings, prompt, decoding steps and the closed-set emotion (if any)."""

    settings: _Settings
    prompt: _Prompt
    steps: Generator[int, None, None]
    emotion: dict[str, Any]  # {"emotion": label, "emotion_scores": {label: p}} in closed-set mode, else empty


@dataclass(frozen=True)
class _Prompt:
    """A tokenized prompt: ``input_ids`` without a video, ``inputs_embeds`` with video tokens spliced in."""

    attention_mask: torch.Tensor  # (1, T)
    input_ids: torch.Tensor | None = None  # (1, T)
    inputs_embeds: torch.Tensor | None = None  # (1, T, hidden)

    @property
    def length(self) -> int:
        """Number of input positions, video tokens included."""
        return int(self.attention_mask.shape[1])


class ELMDChatModel(BaseChatModel):
    """Chat model over a transformers causal LM that accepts a video per prompt as spliced tokens E_v (paper 3.4).

    Build it with :meth:`load` (everything loaded at once) or from parameters (``ELMDChatModel(model_name=path)``; the
    LLM, prefix, projector and encoder are then loaded on first use). Already loaded parts can be passed as
    ``hf_model``/``tokenizer``/``projector``/``visual_encoder``; they are never serialised.

    Video input: a ``HumanMessage`` whose content list holds text blocks and one video block per video:
    ``{"type": "video", "path": str, "start": float | None, "end": float | None}`` (a video file or a folder of
    images), ``{"type": "video", "frames": array (n, H, W, 3) or list of images}`` (sampled to ``frames`` frames),
    or ``{"type": "video", "pooled": tensor (m + o, q)}`` (precomputed Eq. 8 features, only the projector runs).
    The k-th video replaces the k-th :data:`VIDEO_PLACEHOLDER` across the messages; with no placeholder at all, each
    video goes at the start of its own message; placeholders without a video are dropped.

    Decoding: nucleus sampling (``top_p`` 0.7, ``temperature`` 0.95, no top-k) by default; ``do_sample=False`` or
    ``temperature=0`` decodes greedily. ``stop`` strings cut the reply at the first one and end generation;
    ``seed`` makes sampling reproducible without touching the global RNG. All of these, plus ``max_new_tokens``
    (alias ``max_tokens``), can be overridden per call: ``chat.invoke(messages, seed=1, max_new_tokens=32)``.

    Closed-set emotion (the ELMD chain's default): the call option ``emotion_choice=EmotionChoice(...)`` scores every
    label's answer line after the prompt in one batched pass over its KV cache, picks the label (greedy: the most
    likely; sampling: drawn from the label probabilities; or the forced one), forces that line and the response key,
    and decodes the response; the reply's ``response_metadata`` (the first chunk's, when streaming) carries
    ``emotion`` and ``emotion_scores``. ``avoid_copying=[texts]`` bans every ``copy_guard_ngram``-token n-gram of the
    texts from the reply; ``repetition_penalty``, ``no_repeat_ngram_size`` and ``min_new_tokens`` work as in
    ``generate`` (the first two over the reply's own tokens). ``with_structured_output`` answers an
    ``{emotion, response}`` schema this way; ``get_num_tokens`` counts with the LLM's own tokenizer.

    Threads: decoding runs token by token in the thread that calls ``invoke`` or pulls the next ``stream`` chunk
    (no background thread), so Ctrl-C stops it at once and a stream that is no longer iterated, or is closed,
    computes nothing more. Forward passes of concurrent calls on one instance are serialised step by step, so
    ``batch`` equals separate ``invoke`` calls.
    """

    model_config = ConfigDict(protected_namespaces=())

    model_name: str | None = Field(default=None, validation_alias=AliasChoices("model_name", "model"))
    """LLM checkpoint path or name for ``load_llm``; ``None`` is the embedded SmolLM2-135M-Instruct."""
    prefix_path: str | None = Field(default=None, validation_alias=AliasChoices("prefix_path", "prefix"))
    """Trained p-tuning v2 prefix applied to the LLM (paper 3.5)."""
    projector_path: str | None = None
    """Trained video projector (Eq. 9); needed for video input."""
    visual_encoder_name: str | None = None
    """Visual encoder path or name for ``load_visual_encoder``; ``None`` is the offline default."""
    trust_remote_code: bool = False
    """Let a checkpoint run its own Python code (off unless you opt in)."""
    allow_pickle_weights: bool = False
    """Read pickle-format ``.bin`` weights (with ``weights_only=True``) when a checkpoint has no safetensors."""
    device: str | None = None
    """Device for the LLM (``load_llm`` decides when ``None``)."""
    dtype: str | None = None
    """Weight dtype name for the LLM, e.g. ``"bfloat16"`` (``load_llm`` decides when ``None``)."""

    hf_model: Any = Field(default=None, exclude=True, repr=False)
    """The loaded causal LM (``generate`` with ``input_ids`` or ``inputs_embeds``)."""
    tokenizer: Any = Field(default=None, exclude=True, repr=False)
    """The LLM's tokenizer, with a chat template."""
    projector: Any = Field(default=None, exclude=True, repr=False)
    """The loaded ``VideoProjector``: pooled features (m + o, q) -> video tokens (m + o, hidden)."""
    visual_encoder: Any = Field(default=None, exclude=True, repr=False)
    """The loaded visual encoder: frames (m, H, W, 3) -> features (m, o, q)."""

    # The decoding settings' types carry their ranges (elmd_sdk.models.generation): per-call options and a bundle's
    # generation settings are checked against the same ones.
    do_sample: DoSample = True
    """Nucleus sampling when true, greedy decoding when false."""
    temperature: Temperature = 0.95
    """Sampling temperature (paper 4.3: 0.95), at least 0; 0 means greedy."""
    top_p: TopP = 0.7
    """Nucleus probability mass (paper 4.3: 0.7), in (0, 1]."""
    top_k: TopK = 0
    """Top-k cut before nucleus sampling; 0 turns it off (the paper samples by top-p alone)."""
    max_new_tokens: MaxNewTokens = Field(default=256, validation_alias=AliasChoices("max_new_tokens", "max_tokens"))
    """Most tokens generated per reply (at least 1)."""
    stop: list[str] | None = None
    """Stop strings: the reply ends before the first one and generation stops there."""
    seed: Seed | None = None
    """Seed for reproducible sampling, 0 to 2**64 - 1 (what torch takes); ``None`` draws from the global torch RNG."""
    frames: int = Field(default=8, ge=1)
    """Frames m sampled per video (m of paper 3.4, which gives no value; 8 is elmd-sdk's default)."""
    streaming: bool = False
    """When true, ``invoke`` also goes through the streaming path (LangChain convention)."""
    repetition_penalty: RepetitionPenalty = 1.0
    """Penalty on tokens the reply already holds (transformers' ``repetition_penalty``; 1.0 is none). Unlike
    ``generate`` it looks at the reply's own tokens only, not at the prompt's."""
    no_repeat_ngram_size: NoRepeatNgramSize = 0
    """The reply never repeats one of its own n-grams of this many tokens (0: off), as in ``generate``."""
    min_new_tokens: MinNewTokens = 0
    """End-of-sequence is not allowed before this many new tokens (closed-set mode: at least 1 response token)."""
    copy_guard_ngram: CopyGuardNgram = COPY_GUARD_NGRAM
    """Token n-grams of the ``avoid_copying`` texts the reply may not reproduce."""

    _load_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _generate_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _line_breaks: list[int] | None = PrivateAttr(default=None)
    _max_token_chars: int | None = PrivateAttr(default=None)
    _engine: BatchEngine | None = PrivateAttr(default=None)
    _prompt_cache: PromptCache | None = PrivateAttr(default=None)  # only used by the engine's thread

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown_params(cls, values: Any) -> Any:
        """Warn about, then drop, parameters this local model does not use (API keys, timeouts, typos); refuse a
        field given under two of its names."""
        if not isinstance(values, dict):
            return values
        known = set(cls.model_fields)
        for field in cls.model_fields.values():
            if isinstance(field.validation_alias, AliasChoices):
                names = [choice for choice in field.validation_alias.choices if isinstance(choice, str)]
                if len(given := [name for name in names if name in values]) > 1:
                    raise ElmdError(f"pass only one of {' / '.join(given)}: they name the same setting")
                known.update(names)
        unknown = sorted(set(values) - known)
        if unknown:
            warnings.warn(f"ELMDChatModel ignores unknown parameter(s): {', '.join(unknown)}", stacklevel=4)
        return {key: value for key, value in values.items() if key in known}

    @model_validator(mode="after")
    def _check_parts(self) -> ELMDChatModel:
        """A loaded model needs its tokenizer."""
        if (self.hf_model is None) != (self.tokenizer is None):
            raise ElmdError("pass hf_model and tokenizer together (or neither, to load them from 'model_name')")
        return self

    @classmethod
    def load(
        cls,
        llm: str | PathLike[str] | None = None,
        *,
        prefix: str | PathLike[str] | None = None,
        projector: str | PathLike[str] | None = None,
        visual_encoder: str | PathLike[str] | None = None,
        trust_remote_code: bool = False,
        **settings: Any,
    ) -> ELMDChatModel:
        """Load the LLM (``None``: the embedded default), optional prefix, projector and visual encoder now.

        ``settings`` are the model's other fields (``do_sample``, ``max_new_tokens``, ``stop``, ``seed``, ...).
        """
        try:
            chat = cls(
                model_name=_optional_str(llm),
                prefix_path=_optional_str(prefix),
                projector_path=_optional_str(projector),
                visual_encoder_name=_optional_str(visual_encoder),
                trust_remote_code=trust_remote_code,
                **settings,
            )
        except ValidationError as error:
            raise input_error(error) from None
        chat.ensure_loaded()
        return chat

    def ensure_loaded(self) -> None:
        """Load whatever parts are named but not loaded yet (thread-safe; a no-op once loaded)."""
        with self._load_lock:
            if self.hf_model is None:
                from elmd_sdk.models.llm import load_llm

                self.hf_model, self.tokenizer = load_llm(
                    self.model_name,
                    self.prefix_path,
                    trust_remote_code=self.trust_remote_code,
                    dtype=_torch_dtype(self.dtype),
                    device=self.device,
                    allow_pickle_weights=self.allow_pickle_weights,
                )
            if self.visual_encoder is None and (self.visual_encoder_name is not None or self.projector_path):
                from elmd_sdk.video import load_visual_encoder

                self.visual_encoder = load_visual_encoder(self.visual_encoder_name)
            if self.projector is None and self.projector_path is not None:
                from elmd_sdk.models.llm import llm_fingerprint
                from elmd_sdk.video import VideoProjector

                self.projector = VideoProjector.load(
                    self.projector_path, encoder=self.visual_encoder.fingerprint(), llm=llm_fingerprint(self.hf_model)
                ).to(self.hf_model.get_input_embeddings().weight.device)

    @property
    def _llm_type(self) -> str:
        return "elmd-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self._model_label(),
            "prefix": self.prefix_path,
            "projector": self.projector_path,
            "visual_encoder": self.visual_encoder_name,
            "do_sample": self.do_sample,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
            "frames": self.frames,
            "repetition_penalty": self.repetition_penalty,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "elmd"
        model = kwargs.get("model")
        params["ls_model_name"] = model if isinstance(model, str) else self._model_label()
        params["ls_temperature"] = kwargs.get("temperature", self.temperature)
        params["ls_max_tokens"] = kwargs.get("max_new_tokens", kwargs.get("max_tokens", self.max_new_tokens))
        if stop := stop if stop is not None else self.stop:
            params["ls_stop"] = stop
        return params

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        run = self._start(messages, self._settings(stop, kwargs))
        ids: list[int] = []
        for token in run.steps:
            ids.append(token)
            if run.settings.stop and _cut_at_stop(self._decode(ids), run.settings.stop)[1]:
                break
        text, stopped = _cut_at_stop(self._decode(ids), run.settings.stop)
        reason = self._finish_reason(ids, stopped, run.settings)
        message = AIMessage(
            content=text,
            usage_metadata=_usage(run.prompt.length, len(ids)),
            response_metadata={"finish_reason": reason, "model_name": self._model_label(), **run.emotion},
        )
        return ChatResult(generations=[ChatGeneration(message=message, generation_info={"finish_reason": reason})])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        run = self._start(messages, self._settings(stop, kwargs))
        settings, steps = run.settings, run.steps
        # Usage is spread over the chunks (they add up to the whole call's): the prompt's tokens on the first chunk,
        # each chunk's new tokens on it, so a consumer that stops early still knows what it cost.
        reported = [0, 0]  # input tokens, output tokens already on a chunk

        def usage(output_tokens: int) -> UsageMetadata:
            new = _usage(run.prompt.length - reported[0], output_tokens - reported[1])
            reported[:] = [run.prompt.length, output_tokens]
            return new

        if run.emotion:  # closed-set emotion: known before the first response token, sent at once
            first = AIMessageChunk(content="", response_metadata=dict(run.emotion), usage_metadata=usage(0))
            yield ChatGenerationChunk(message=first)
        ids: list[int] = []
        emitted = 0
        try:
            for token in steps:
                ids.append(token)
                text, stopped = _cut_at_stop(self._decode(ids), settings.stop)
                ready = len(text) if stopped else _stable_length(text, settings.stop, self._holds_whitespace())
                if ready > emitted:
                    message = AIMessageChunk(content=text[emitted:ready], usage_metadata=usage(len(ids)))
                    chunk = ChatGenerationChunk(message=message)
                    if run_manager:
                        run_manager.on_llm_new_token(text[emitted:ready], chunk=chunk)
                    yield chunk
                    emitted = ready
                if stopped:
                    break
        finally:
            steps.close()
        text, stopped = _cut_at_stop(self._decode(ids), settings.stop)
        reason = self._finish_reason(ids, stopped, settings)
        last = AIMessageChunk(
            content=text[emitted:],
            usage_metadata=usage(len(ids)),
            response_metadata={"finish_reason": reason, "model_name": self._model_label()},
            chunk_position="last",
        )
        chunk = ChatGenerationChunk(message=last, generation_info={"finish_reason": reason})
        if run_manager and last.content:
            run_manager.on_llm_new_token(text[emitted:], chunk=chunk)
        yield chunk

    def _start(self, messages: Sequence[BaseMessage], settings: _Settings) -> _Decoding:
        """Run the prompt (in the batch engine's thread when there is one) and set up the decoding steps."""
        self.ensure_loaded()
        engine = self._engine
        begin = partial(self._begin, messages, settings)
        prompt, context, forced, emotion = begin() if engine is None else engine.run(begin)
        guard = copy_guard(self.tokenizer, settings.avoid, settings.copy_guard_ngram) if settings.avoid else None
        chooser = Chooser(
            settings.sampling,
            context.attention_mask.device,
            max_new_tokens=settings.max_new_tokens,
            eos_ids=self._eos_ids(),
            processors=settings.processors(self._eos_ids(), guard, self._line_break_ids),
        )
        if engine is None:
            context = extend(self.hf_model, context, forced, self._generate_lock)
            steps = decode_steps(self.hf_model, context, chooser, self._generate_lock)
        else:
            steps = engine.decode(context, chooser, forced)  # the forced line runs in the batch's next step
        return _Decoding(settings, prompt, steps, emotion)

    def _begin(
        self, messages: Sequence[BaseMessage], settings: _Settings
    ) -> tuple[_Prompt, Context, list[int], dict[str, Any]]:
        """Prefill the prompt; in closed-set mode score the labels and choose one. Returns the prompt, its context,
        the tokens to force before decoding (the rest of the chosen emotion line and the response key) and the
        emotion metadata."""
        prompt = self._prepare(messages)
        if (choice := settings.emotion_choice) is None:
            return prompt, self._prefill(prompt, []), [], {}
        lines = [self._encode(line) for line in choice.lines]
        # The lines' shared start ("Emotion:") is forced whatever the label: it runs with the prompt, and only the
        # rest is scored (its log-likelihood is the same for every label, so the label probabilities do not change).
        shared = min(common_length(*lines), min(len(line) for line in lines) - 1)
        context = self._prefill(prompt, lines[0][:shared])
        rests = [line[shared:] for line in lines]
        scores = score_continuations(self.hf_model, context, rests, self._generate_lock)  # (L,)
        probabilities = emotion_probabilities(choice, scores)
        generator = settings.sampling.generator(context.attention_mask.device)
        label = pick_emotion(choice, probabilities, settings.sampling.do_sample, generator)
        forced = rests[choice.labels.index(label)] + self._encode(choice.response_key)
        return prompt, context, forced, {"emotion": label, "emotion_scores": probabilities}

    def _prefill(self, prompt: _Prompt, forced: list[int]) -> Context:
        """The prompt followed by ``forced`` tokens, run in one pass (from the prompt cache when there is one)."""
        lock = self._generate_lock
        if prompt.input_ids is None:  # video tokens spliced in: embeddings, then the forced tokens
            context = prefill(self.hf_model, prompt.attention_mask, inputs_embeds=prompt.inputs_embeds, lock=lock)
            return extend(self.hf_model, context, forced, lock)
        extra = torch.tensor([forced], dtype=torch.long, device=prompt.input_ids.device)  # (1, n)
        ids = torch.cat([prompt.input_ids, extra], dim=1)  # (1, T + n)
        if self._prompt_cache is not None:
            return self._prompt_cache.prefill(self.hf_model, ids, lock)
        return prefill(self.hf_model, torch.ones_like(ids), input_ids=ids, lock=lock)

    @contextmanager
    def batched(self, max_batch: int = 8) -> Iterator[BatchEngine]:
        """Within this block, concurrent calls (from several threads) are decoded together, ``max_batch`` sequences
        per forward pass, by one engine thread that also runs every prompt (:mod:`elmd_sdk.models.batching`); more
        calls wait for a place. Each call keeps its own sampling, seed and stopping. Prompts also reuse the KV cache
        of the beginning they share with the previous prompt (:class:`~elmd_sdk.models.decoding.PromptCache`; the
        same logits up to floating-point rounding). A server uses this."""
        self.ensure_loaded()
        if self._engine is not None:
            raise ElmdError("this chat model is already in a batched() block (one server per chat model)")
        engine = BatchEngine(self.hf_model, max_batch=max_batch)
        self._engine, self._prompt_cache = engine, PromptCache()
        try:
            yield engine
        finally:
            self._engine, self._prompt_cache = None, None
            engine.close()

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Not supported: this model answers with an emotion and a response and does not call tools."""
        raise NotImplementedError(
            "ELMDChatModel does not call tools. For an {emotion, response} answer use "
            "with_structured_output(schema); to give the whole ELMD pipeline to an agent use ELMDChain.as_tool()"
        )

    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, language: str = "en", **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        """Answers as ``schema``: a pydantic model or JSON schema with the fields ``emotion`` and ``response``.

        The emotion comes from closed-set decoding over the labels the schema allows (a ``Literal``, an ``Enum`` or a
        JSON ``enum``; the seven paper labels when it names none), the response is decoded after it, in the answer
        format of ``language``'s prompt. Other schemas are refused: this model does not write free-form JSON.
        ``include_raw`` returns ``{"raw", "parsed", "parsing_error"}`` as LangChain's other chat models do.
        """
        from elmd_sdk.chains.parser import StreamingAnswerParser
        from elmd_sdk.chains.prompt import emotion_choice

        if kwargs:
            raise ElmdError(f"unsupported with_structured_output option(s): {sorted(kwargs)}")
        labels = _schema_labels(schema)
        choice = emotion_choice(labels, language)

        def answer(value: LanguageModelInput) -> Any:
            message = self.invoke(value, emotion_choice=choice)
            emotion = message.response_metadata["emotion"]
            parser = StreamingAnswerParser(labels, emotion=emotion)
            response = "".join(chunk.response for chunk in [*parser.feed(str(message.text)), *parser.finish()])
            data = {"emotion": emotion, "response": response}
            parsed = cast(type[BaseModel], schema).model_validate(data) if isinstance(schema, type) else data
            return {"raw": message, "parsed": parsed, "parsing_error": None} if include_raw else parsed

        return RunnableLambda(answer, name="elmd_structured_output")

    def _settings(self, stop: list[str] | None, kwargs: dict[str, Any]) -> _Settings:
        """This call's decoding settings: the model's, overridden by the call's options, which are checked against the
        types of the model's own fields (:mod:`elmd_sdk.models.generation`; an :class:`InputError` names the option);
        unknown keyword arguments are an error rather than silently ignored. An option given as ``None`` keeps the
        model's setting, except ``seed=None``, which samples without a seed."""
        if unknown := sorted(set(kwargs) - _CALL_OPTIONS):
            raise ElmdError(f"unknown generation option(s) {unknown}; known: {sorted(_CALL_OPTIONS)}")
        given = {name: kwargs[name] for name in DECODING_OPTIONS if name in kwargs}
        given["max_new_tokens"] = requested_length(kwargs)
        options = {**{name: getattr(self, name) for name in DECODING_OPTIONS}, **check_decoding(given)}
        if "seed" in given:
            options["seed"] = given["seed"]
        stops = stop if stop is not None else self.stop
        sampling = Sampling(
            do_sample=options["do_sample"] and options["temperature"] > 0,
            temperature=options["temperature"],
            top_p=options["top_p"],
            top_k=options["top_k"],
            seed=options["seed"],
        )
        choice = kwargs.get("emotion_choice")
        if choice is not None and not isinstance(choice, EmotionChoice):
            raise ElmdError(f"emotion_choice must be an EmotionChoice, got {type(choice).__name__}")
        avoid = kwargs.get("avoid_copying") or ()
        if isinstance(avoid, str) or not all(isinstance(text, str) for text in avoid):
            raise ElmdError("avoid_copying must be a list of strings")
        return _Settings(
            sampling=sampling,
            max_new_tokens=options["max_new_tokens"],
            stop=tuple(s for s in stops or () if s),
            emotion_choice=choice,
            avoid=tuple(check_text(text, f"avoid_copying[{i}]") for i, text in enumerate(avoid)),
            copy_guard_ngram=options["copy_guard_ngram"],
            repetition_penalty=options["repetition_penalty"],
            no_repeat_ngram_size=options["no_repeat_ngram_size"],
            min_new_tokens=options["min_new_tokens"],
        )

    def _prepare(self, messages: Sequence[BaseMessage]) -> _Prompt:
        """Render the chat template, tokenize around placeholders and splice in each video's tokens."""
        pieces, videos = prompt_pieces(self.tokenizer, messages)
        embed_tokens = self.hf_model.get_input_embeddings()
        device = embed_tokens.weight.device
        if not videos:
            ids = torch.tensor([pieces[0]], dtype=torch.long, device=device)  # (1, T)
            return _Prompt(attention_mask=torch.ones_like(ids), input_ids=ids)
        with torch.no_grad():
            spliced = splice_video_embeds(embed_tokens, pieces, [self._video_tokens(video) for video in videos])
        return _Prompt(attention_mask=spliced.attention_mask, inputs_embeds=spliced.inputs_embeds)

    def _video_tokens(self, block: dict[str, Any]) -> torch.Tensor:
        """E_v of one video block: projector(pool(encoder(frames))), shape (m + o, hidden)."""
        if self.projector is None:
            raise ElmdError(
                "this chat model has no video projector; load one with "
                "ELMDChatModel.load(..., projector=PATH) or drop the video from the message"
            )
        from elmd_sdk.video.tokens import video_tokens

        source = block.get("frames", block.get("path"))
        if "pooled" not in block:
            if self.visual_encoder is None:
                raise ElmdError("this chat model has no visual encoder; pass visual_encoder= to ELMDChatModel.load")
            if source is None:
                raise InputError("a video block needs 'path', 'frames' or 'pooled'", field="video")
        return video_tokens(
            self.projector,
            self.visual_encoder,
            source,
            pooled=block.get("pooled"),
            frames=self.frames,
            start=block.get("start"),
            end=block.get("end"),
        )  # (m + o, hidden)

    def count_prompt_tokens(self, messages: Sequence[BaseMessage], *, with_video: bool = True) -> int:
        """Positions the prompt of ``messages`` takes, as :meth:`invoke` renders it: its tokens plus, per video,
        the :meth:`video_token_count` rows of E_v (left out with ``with_video=False``)."""
        self.ensure_loaded()
        pieces, _ = prompt_pieces(self.tokenizer, messages)
        videos = len(pieces) - 1
        return sum(len(piece) for piece in pieces) + (self.video_token_count() * videos if with_video else 0)

    def video_token_count(self) -> int:
        """Rows of E_v one clip takes: m + o (Eq. 8) for the loaded visual encoder (o = 0 without one)."""
        return self.frames + int(getattr(self.visual_encoder, "o", 0))

    def context_window(self) -> int | None:
        """Most positions the LLM takes (its config's length, else the tokenizer's), None when neither says."""
        self.ensure_loaded()
        return context_window(self.hf_model, self.tokenizer)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _line_break_ids(self) -> list[int]:
        """Ids of the tokens whose text holds a line break (computed once per tokenizer)."""
        if self._line_breaks is None:
            vocabulary = range(len(self.tokenizer))
            self._line_breaks = [i for i in vocabulary if "\n" in self.tokenizer.decode([i], skip_special_tokens=True)]
        return self._line_breaks

    def max_token_chars(self) -> int:
        """The most characters one token of the LLM's tokenizer stands for: its longest vocabulary entry as the
        tokenizer spells it (byte-level BPE spells each byte as one character, SentencePiece a space as one, so the
        spelling is never shorter than the text), hence a text of c characters takes at least c / this many tokens
        (for tokenizers whose normalizer does not join characters, as the causal LMs' do not). Computed once per
        tokenizer."""
        self.ensure_loaded()
        if self._max_token_chars is None:
            self._max_token_chars = max((len(token) for token in self.tokenizer.get_vocab()), default=1)
        return self._max_token_chars

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` with the LLM's own tokenizer (LangChain's default would fetch GPT-2's from a hub);
        ``get_num_tokens`` and ``trim_messages`` count with it."""
        self.ensure_loaded()
        return self._encode(check_text(text, "text"))

    def _eos_ids(self) -> list[int]:
        """End-of-reply ids: the model's generation-config EOS plus the tokenizer's (often the end-of-turn token)."""
        configured = getattr(getattr(self.hf_model, "generation_config", None), "eos_token_id", None)
        ids = list(configured) if isinstance(configured, list | tuple) else [configured]
        ids.append(self.tokenizer.eos_token_id)
        unique = list(dict.fromkeys(i for i in ids if i is not None))
        if not unique:
            raise ElmdError("neither the model's generation config nor the tokenizer defines an end-of-sequence token")
        return unique

    def _finish_reason(self, ids: list[int], stopped: bool, settings: _Settings) -> str:
        if not stopped and len(ids) >= settings.max_new_tokens and ids[-1] not in self._eos_ids():
            return "length"
        return "stop"

    def _holds_whitespace(self) -> bool:
        """Tokenizers that clean up spaces before punctuation may still drop a trailing space: hold it back."""
        return bool(getattr(self.tokenizer, "clean_up_tokenization_spaces", False))

    def _model_label(self) -> str:
        """The LLM's name for tracing and caching: the configured name, a given model's own, or the default's."""
        if self.model_name:
            return self.model_name
        if self.hf_model is not None and (name := getattr(self.hf_model, "name_or_path", "")):
            return str(name)
        return DEFAULT_LLM_GGUF


def _schema_labels(schema: dict[str, Any] | type) -> tuple[str, ...]:
    """The emotion labels an {emotion, response} schema allows; ElmdError for any other schema."""
    from elmd_sdk.data.labels import EMOTIONS

    if isinstance(schema, type) and issubclass(schema, BaseModel):
        properties = schema.model_json_schema().get("properties", {})
    elif isinstance(schema, dict):
        properties = schema.get("properties", {})
    else:
        raise ElmdError(f"with_structured_output takes a pydantic model or a JSON schema, got {schema!r}")
    if set(properties) != {"emotion", "response"}:
        raise ElmdError(
            f"ELMDChatModel answers only the {{emotion, response}} schema, got fields {sorted(properties)}; "
            "it does not write free-form JSON"
        )
    emotion = properties["emotion"]
    enum = emotion.get("enum") or ([emotion["const"]] if "const" in emotion else None)
    if enum is None and "$ref" not in emotion:
        return EMOTIONS
    if enum is None:  # an Enum class: its definition holds the values
        definitions = schema.model_json_schema().get("$defs", {}) if isinstance(schema, type) else {}
        enum = definitions.get(emotion["$ref"].rsplit("/", 1)[-1], {}).get("enum")
    if not enum or not all(isinstance(label, str) for label in enum):
        raise ElmdError("the schema's emotion field must be a string, or an enumeration of label strings")
    return tuple(enum)


def _optional_str(value: str | PathLike[str] | None) -> str | None:
    return None if value is None else str(value)


def _torch_dtype(name: str | None) -> torch.dtype | None:
    """``"bfloat16"`` -> ``torch.bfloat16``; an unknown name is a clear error."""
    if name is None:
        return None
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise InputError(f"not a torch dtype: {name!r}", field="dtype")
    return dtype


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """The text before the earliest stop string, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def _stable_length(text: str, stop: Sequence[str], hold_whitespace: bool) -> int:
    """How much of a partial decode can be streamed now without ever having to be taken back.

    Held back: an incomplete UTF-8 character (decoded as U+FFFD), optionally trailing whitespace, and an ending
    that may be the start of a stop string.
    """
    end = len(text.rstrip("\ufffd"))
    if hold_whitespace:
        end = len(text[:end].rstrip())
    head = text[:end]
    held = max((k for s in stop for k in range(1, len(s)) if head.endswith(s[:k])), default=0)
    return end - held


def _usage(input_tokens: int, output_tokens: int) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens
    )
