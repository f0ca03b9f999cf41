"""ELMDChatModel: a LangChain chat model over a transformers causal LM with video tokens E_v spliced into its input.

Messages are rendered with the tokenizer's chat template; each ``<video>`` placeholder in the text is replaced by
the video tokens ``E_v = projector(pool(encoder(frames)))`` (paper Eq. 5-9) in ``inputs_embeds``. Decoding uses
nucleus sampling with the paper's settings (top-p 0.7, temperature 0.95, section 4.3) unless greedy is asked for.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from os import PathLike
from typing import Any

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
from langchain_core.runnables import Runnable
from pydantic import AliasChoices, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from elmd_sdk.errors import ElmdError, input_error
from elmd_sdk.models.batching import BatchEngine
from elmd_sdk.models.call import (
    CallSettings,
    Decoding,
    Prompt,
    ReplyEnd,
    tokenize_prompt,
    usage_counts,
)
from elmd_sdk.models.closed_set import (
    EmotionChoice,
    copy_guard,
    emotion_probabilities,
    pick_emotion,
)
from elmd_sdk.models.decoding import Chooser, Context, PromptCache, decode_steps, extend, prefill
from elmd_sdk.models.generation import (
    GENERATION_SETTINGS,
    GenerationConfig,
    GenerationFields,
    requested_length,
)
from elmd_sdk.models.option_scoring import Gathered, OptionScores, score_lines, score_prompts
from elmd_sdk.models.precision import DtypeName, Quantization
from elmd_sdk.models.rendering import VIDEO_PLACEHOLDER, context_window, prompt_pieces
from elmd_sdk.models.structured_output import structured_output
from elmd_sdk.models.vocabulary import Vocabulary
from elmd_sdk.paths import DEFAULT_LLM_GGUF
from elmd_sdk.text_checks import check_text

__all__ = ["VIDEO_PLACEHOLDER", "ELMDChatModel"]

_CALL_OPTIONS = frozenset({*GENERATION_SETTINGS, "max_tokens", "emotion_choice", "avoid_copying"})


class ELMDChatModel(BaseChatModel, GenerationFields):
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
    dtype: DtypeName = "auto"
    """Weight dtype of the LLM: ``auto`` (the checkpoint's own; bfloat16 when quantized), ``float32``, ``bfloat16``,
    ``float16``."""
    quantize: Quantization = "none"
    """Weight-only quantization of the LLM's linear layers: ``none``, ``int8``, ``int4`` (CPU: torch's kernels in
    bfloat16; CUDA: bitsandbytes; :mod:`elmd_sdk.models.quantize`)."""

    hf_model: Any = Field(default=None, exclude=True, repr=False)
    """The loaded causal LM (``generate`` with ``input_ids`` or ``inputs_embeds``)."""
    tokenizer: Any = Field(default=None, exclude=True, repr=False)
    """The LLM's tokenizer, with a chat template."""
    projector: Any = Field(default=None, exclude=True, repr=False)
    """The loaded ``VideoProjector``: pooled features (m + o, q) -> video tokens (m + o, hidden)."""
    visual_encoder: Any = Field(default=None, exclude=True, repr=False)
    """The loaded visual encoder: frames (m, H, W, 3) -> features (m, o, q)."""

    # The decoding settings (do_sample, temperature, top_p, top_k, max_new_tokens, seed, repetition_penalty,
    # no_repeat_ngram_size, min_new_tokens, copy_guard_ngram) are GenerationFields': one name, range and default each.
    stop: list[str] | None = None
    """Stop strings: the reply ends before the first one and generation stops there."""
    frames: int = Field(default=8, ge=1)
    """Frames m sampled per video (m of paper 3.4, which gives no value; 8 is elmd-sdk's default)."""
    streaming: bool = False
    """When true, ``invoke`` also goes through the streaming path (LangChain convention)."""

    _load_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _generate_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _vocab: Vocabulary | None = PrivateAttr(default=None)
    _engine: BatchEngine | None = PrivateAttr(default=None)
    _prompt_cache: PromptCache | None = PrivateAttr(default=None)  # only used by the engine's thread
    _scoring: Gathered[Any, OptionScores] = PrivateAttr(default_factory=Gathered)  # callers scoring together

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
                    dtype=self.dtype,
                    quantize=self.quantize,
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
            "frames": self.frames,
            "dtype": self.dtype,  # the precision changes the replies: LangChain's cache keys on these
            "quantize": self.quantize,
            **self.generation_config().model_dump(),
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "elmd"
        model = kwargs.get("model")
        params["ls_model_name"] = model if isinstance(model, str) else self._model_label()
        params["ls_temperature"] = kwargs.get("temperature", self.temperature)
        params["ls_max_tokens"] = requested_length(kwargs) or self.max_new_tokens
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
        vocabulary = self._vocabulary()
        end = self._reply_end(run.settings, vocabulary)
        ids: list[int] = []
        text, ended = "", False
        for token in run.steps:
            ids.append(token)
            text, _, ended = end.step(vocabulary.decode(ids), len(ids))
            if ended:
                break
        reason = self._finish_reason(ids, ended, run.settings)
        text = text if ended else end.final(text, reason == "length")
        message = AIMessage(
            content=text,
            usage_metadata=usage_counts(run.prompt.length, len(ids)),
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
        settings, steps, vocabulary = run.settings, run.steps, self._vocabulary()
        # Usage is spread over the chunks (they add up to the whole call's): the prompt's tokens on the first chunk,
        # each chunk's new tokens on it, so a consumer that stops early still knows what it cost.
        reported = [0, 0]  # input tokens, output tokens already on a chunk

        def usage(output_tokens: int) -> UsageMetadata:
            new = usage_counts(run.prompt.length - reported[0], output_tokens - reported[1])
            reported[:] = [run.prompt.length, output_tokens]
            return new

        if run.emotion:  # closed-set emotion: known before the first response token, sent at once
            first = AIMessageChunk(content="", response_metadata=dict(run.emotion), usage_metadata=usage(0))
            yield ChatGenerationChunk(message=first)
        end = self._reply_end(settings, vocabulary)
        ids: list[int] = []
        text, emitted, ended = "", 0, False
        try:
            for token in steps:
                ids.append(token)
                text, ready, ended = end.step(vocabulary.decode(ids), len(ids))
                if ready > emitted:
                    message = AIMessageChunk(content=text[emitted:ready], usage_metadata=usage(len(ids)))
                    chunk = ChatGenerationChunk(message=message)
                    if run_manager:
                        run_manager.on_llm_new_token(text[emitted:ready], chunk=chunk)
                    yield chunk
                    emitted = ready
                if ended:
                    break
        finally:
            steps.close()
        reason = self._finish_reason(ids, ended, settings)
        text = text if ended else end.final(text, reason == "length")
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

    def _start(self, messages: Sequence[BaseMessage], settings: CallSettings) -> Decoding:
        """Run the prompt (in the batch engine's thread when there is one) and set up the decoding steps."""
        self.ensure_loaded()
        engine = self._engine
        begin = partial(self._begin, messages, settings)
        prompt, context, forced, emotion = begin() if engine is None else engine.run(begin)
        ngram, vocabulary = settings.generation.copy_guard_ngram, self._vocabulary()
        guard = copy_guard(self.tokenizer, settings.avoid, ngram) if settings.avoid else None
        chooser = Chooser(
            settings.sampling,
            context.attention_mask.device,
            max_new_tokens=settings.generation.max_new_tokens,
            eos_ids=vocabulary.eos_ids,
            processors=settings.processors(vocabulary, guard),
        )
        if engine is None:
            context = extend(self.hf_model, context, forced, self._generate_lock)
            steps = decode_steps(self.hf_model, context, chooser, self._generate_lock)
        else:
            steps = engine.decode(context, chooser, forced)  # the forced line runs in the batch's next step
        return Decoding(settings, prompt, steps, emotion)

    def _begin(
        self, messages: Sequence[BaseMessage], settings: CallSettings
    ) -> tuple[Prompt, Context, list[int], dict[str, Any]]:
        """Prefill the prompt; in closed-set mode score the labels and choose one. Returns the prompt, its context,
        the tokens to force before decoding (the rest of the chosen emotion line and the response key) and the
        emotion metadata."""
        prompt = self._prepare(messages)
        if (choice := settings.emotion_choice) is None:
            return prompt, self._prefill(prompt, []), [], {}
        lines = [self._vocabulary().encode(line) for line in choice.lines]
        context, scored = score_lines(self.hf_model, partial(self._prefill, prompt), lines, self._generate_lock)
        probabilities = emotion_probabilities(choice, scored.log_likelihoods)
        generator = settings.sampling.generator(context.attention_mask.device)
        draw = settings.sampling.do_sample and settings.generation.sample_emotion
        label = pick_emotion(choice, probabilities, draw, generator)
        forced = scored.rests[choice.labels.index(label)] + self._vocabulary().encode(choice.response_key)
        return prompt, context, forced, {"emotion": label, "emotion_scores": probabilities}

    def score_answers(self, prompts: Sequence[tuple[Sequence[BaseMessage], Sequence[str]]]) -> list[OptionScores]:
        """Each prompt's answer lines scored (:mod:`~elmd_sdk.models.option_scoring`; nothing decoded); in the batch
        engine's thread if there is one, together with the prompts other callers are waiting with there."""
        self.ensure_loaded()
        if self._engine is None:
            return self._score_all(list(prompts))
        return self._scoring.submit(self._engine, list(prompts), self._score_all)

    def _score_all(self, prompts: list[tuple[Sequence[BaseMessage], Sequence[str]]]) -> list[OptionScores]:
        encode, most = self._vocabulary().encode, self._engine.max_batch if self._engine else 8
        items = [(self._prepare(messages), [encode(line) for line in lines]) for messages, lines in prompts]
        cache = self._prompt_cache or PromptCache()
        return score_prompts(self.hf_model, items, self._prefill, cache, self._generate_lock, most)

    def _prefill(self, prompt: Prompt, forced: list[int], cache: PromptCache | None = None) -> Context:
        """The prompt followed by ``forced`` tokens, run in one pass (from ``cache``, else the model's prompt cache,
        when there is one)."""
        lock = self._generate_lock
        if prompt.input_ids is None:  # video tokens spliced in: embeddings, then the forced tokens
            context = prefill(self.hf_model, prompt.attention_mask, inputs_embeds=prompt.inputs_embeds, lock=lock)
            return extend(self.hf_model, context, forced, lock)
        extra = torch.tensor([forced], dtype=torch.long, device=prompt.input_ids.device)  # (1, n)
        ids = torch.cat([prompt.input_ids, extra], dim=1)  # (1, T + n)
        if (cache := cache or self._prompt_cache) is not None:
            return cache.prefill(self.hf_model, ids, lock)
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
        """Answers as ``schema``: a pydantic model or JSON schema with the fields ``emotion`` and ``response``
        (:func:`~elmd_sdk.models.structured_output.structured_output`: the emotion by closed-set decoding over the
        labels the schema allows, the response decoded after it, in ``language``'s answer format). ``include_raw``
        returns ``{"raw", "parsed", "parsing_error"}`` as LangChain's other chat models do."""
        if kwargs:
            raise ElmdError(f"unsupported with_structured_output option(s): {sorted(kwargs)}")
        return structured_output(self, schema, include_raw=include_raw, language=language)

    def _settings(self, stop: list[str] | None, kwargs: dict[str, Any]) -> CallSettings:
        """This call's decoding settings: the model's, overridden by the call's options (checked by
        :meth:`GenerationConfig.updated`; an :class:`InputError` names the option); unknown keyword arguments are an
        error rather than silently ignored. An option given as ``None`` keeps the model's setting, except
        ``seed=None``, which samples without a seed."""
        if unknown := sorted(set(kwargs) - _CALL_OPTIONS):
            raise ElmdError(f"unknown generation option(s) {unknown}; known: {sorted(_CALL_OPTIONS)}")
        given = {name: kwargs[name] for name in (*GENERATION_SETTINGS, "max_tokens") if name in kwargs}
        generation = self.generation_config().updated(given)
        stops = stop if stop is not None else self.stop
        choice = kwargs.get("emotion_choice")
        if choice is not None and not isinstance(choice, EmotionChoice):
            raise ElmdError(f"emotion_choice must be an EmotionChoice, got {type(choice).__name__}")
        avoid = kwargs.get("avoid_copying") or ()
        if isinstance(avoid, str) or not all(isinstance(text, str) for text in avoid):
            raise ElmdError("avoid_copying must be a list of strings")
        return CallSettings(
            generation=generation,
            stop=tuple(s for s in stops or () if s),
            emotion_choice=choice,
            avoid=tuple(check_text(text, f"avoid_copying[{i}]") for i, text in enumerate(avoid)),
        )

    def generation_config(self) -> GenerationConfig:
        """The model's decoding settings as one :class:`GenerationConfig`."""
        return GenerationConfig(**{name: getattr(self, name) for name in GENERATION_SETTINGS})

    def _prepare(self, messages: Sequence[BaseMessage]) -> Prompt:
        """Render the chat template, tokenize around placeholders and splice in each video's tokens."""
        return tokenize_prompt(self.tokenizer, self.hf_model.get_input_embeddings(), messages, self._video_tokens)

    def _video_tokens(self, block: dict[str, Any]) -> torch.Tensor:
        """E_v of one video block: projector(pool(encoder(frames))), shape (m + o, hidden)."""
        from elmd_sdk.video.tokens import block_tokens

        return block_tokens(self.projector, self.visual_encoder, block, frames=self.frames)  # (m + o, hidden)

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

    def _vocabulary(self) -> Vocabulary:
        """The loaded tokenizer's :class:`Vocabulary` (made once per tokenizer)."""
        self.ensure_loaded()
        if self._vocab is None or self._vocab.tokenizer is not self.tokenizer:
            self._vocab = Vocabulary(self.hf_model, self.tokenizer)
        return self._vocab

    def max_token_chars(self) -> int:
        """The most characters one token of the LLM's tokenizer stands for (:attr:`Vocabulary.max_token_chars`): a
        text of c characters takes at least c / this many tokens."""
        return self._vocabulary().max_token_chars

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` with the LLM's own tokenizer (LangChain's default would fetch GPT-2's from a hub);
        ``get_num_tokens`` and ``trim_messages`` count with it."""
        return self._vocabulary().encode(check_text(text, "text"))

    def _reply_end(self, settings: CallSettings, vocabulary: Vocabulary) -> ReplyEnd:
        return ReplyEnd(settings.stop, settings.generation.soft_max_new_tokens, vocabulary.holds_whitespace)

    def _finish_reason(self, ids: list[int], stopped: bool, settings: CallSettings) -> str:
        eos_ids = self._vocabulary().eos_ids
        if not stopped and len(ids) >= settings.generation.max_new_tokens and ids[-1] not in eos_ids:
            return "length"
        return "stop"

    def _model_label(self) -> str:
        """The LLM's name for tracing and caching: the configured name, a given model's own, or the default's."""
        if self.model_name:
            return self.model_name
        if self.hf_model is not None and (name := getattr(self.hf_model, "name_or_path", "")):
            return str(name)
        return DEFAULT_LLM_GGUF


def _optional_str(value: str | PathLike[str] | None) -> str | None:
    return None if value is None else str(value)
