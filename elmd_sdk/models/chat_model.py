"""ELMDChatModel: a LangChain chat model over a transformers causal LM with video tokens E_v spliced into its input.

Messages are rendered with the tokenizer's chat template; each ``<video>`` placeholder in the text is replaced by
the video tokens ``E_v = projector(pool(encoder(frames)))`` (paper Eq. 5-9) in ``inputs_embeds``. Decoding uses
nucleus sampling with the paper's settings (top-p 0.7, temperature 0.95, section 4.3) unless greedy is asked for.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

import torch
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import AliasChoices, ConfigDict, Field, PrivateAttr, model_validator

from elmd_sdk.errors import ElmdError, InputError
from elmd_sdk.models.decoding import Sampling, decode_steps
from elmd_sdk.models.splice import VIDEO_PLACEHOLDER, splice_video_embeds, tokenize_pieces
from elmd_sdk.paths import DEFAULT_LLM_GGUF

__all__ = ["DEFAULT_MODEL_LABEL", "VIDEO_PLACEHOLDER", "ELMDChatModel"]

DEFAULT_MODEL_LABEL = f"{DEFAULT_LLM_GGUF} (embedded default)"  # how the default LLM is named to users

_CALL_OPTIONS = frozenset({"do_sample", "temperature", "top_p", "top_k", "max_new_tokens", "max_tokens", "seed"})
_ROLES = ((SystemMessage, "system"), (HumanMessage, "user"), (AIMessage, "assistant"))


@dataclass(frozen=True)
class _Settings:
    """Decoding settings of one call: the model's fields overridden by per-call keyword arguments."""

    sampling: Sampling
    max_new_tokens: int
    stop: tuple[str, ...]


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

    do_sample: bool = True
    """Nucleus sampling when true, greedy decoding when false."""
    temperature: float = Field(default=0.95, ge=0.0)
    """Sampling temperature (paper 4.3: 0.95); 0 means greedy."""
    top_p: float = Field(default=0.7, gt=0.0, le=1.0)
    """Nucleus probability mass (paper 4.3: 0.7)."""
    top_k: int = Field(default=0, ge=0)
    """Top-k cut before nucleus sampling; 0 turns it off (the paper samples by top-p alone)."""
    max_new_tokens: int = Field(default=256, gt=0, validation_alias=AliasChoices("max_new_tokens", "max_tokens"))
    """Most tokens generated per reply."""
    stop: list[str] | None = None
    """Stop strings: the reply ends before the first one and generation stops there."""
    seed: int | None = None
    """Seed for reproducible sampling; ``None`` draws from the global torch RNG."""
    frames: int = Field(default=8, ge=1)
    """Frames m sampled per video (paper 3.4)."""
    streaming: bool = False
    """When true, ``invoke`` also goes through the streaming path (LangChain convention)."""

    _load_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _generate_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

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
        chat = cls(
            model_name=_optional_str(llm),
            prefix_path=_optional_str(prefix),
            projector_path=_optional_str(projector),
            visual_encoder_name=_optional_str(visual_encoder),
            trust_remote_code=trust_remote_code,
            **settings,
        )
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
        settings = self._settings(stop, kwargs)
        self.ensure_loaded()
        prompt = self._prepare(messages)
        ids: list[int] = []
        for token in self._decode_steps(prompt, settings):
            ids.append(token)
            if settings.stop and _cut_at_stop(self._decode(ids), settings.stop)[1]:
                break
        text, stopped = _cut_at_stop(self._decode(ids), settings.stop)
        reason = self._finish_reason(ids, stopped, settings)
        message = AIMessage(
            content=text,
            usage_metadata=_usage(prompt.length, len(ids)),
            response_metadata={"finish_reason": reason, "model_name": self._model_label()},
        )
        return ChatResult(generations=[ChatGeneration(message=message, generation_info={"finish_reason": reason})])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        settings = self._settings(stop, kwargs)
        self.ensure_loaded()
        prompt = self._prepare(messages)
        steps = self._decode_steps(prompt, settings)
        ids: list[int] = []
        emitted = 0
        try:
            for token in steps:
                ids.append(token)
                text, stopped = _cut_at_stop(self._decode(ids), settings.stop)
                ready = len(text) if stopped else _stable_length(text, settings.stop, self._holds_whitespace())
                if ready > emitted:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=text[emitted:ready]))
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
            usage_metadata=_usage(prompt.length, len(ids)),
            response_metadata={"finish_reason": reason, "model_name": self._model_label()},
            chunk_position="last",
        )
        chunk = ChatGenerationChunk(message=last, generation_info={"finish_reason": reason})
        if run_manager and last.content:
            run_manager.on_llm_new_token(text[emitted:], chunk=chunk)
        yield chunk

    def _settings(self, stop: list[str] | None, kwargs: dict[str, Any]) -> _Settings:
        """This call's decoding settings; unknown keyword arguments are an error rather than silently ignored."""
        if unknown := sorted(set(kwargs) - _CALL_OPTIONS):
            raise ElmdError(f"unknown generation option(s) {unknown}; known: {sorted(_CALL_OPTIONS)}")
        max_new = int(kwargs.get("max_new_tokens", kwargs.get("max_tokens", self.max_new_tokens)))
        if max_new < 1:
            raise ElmdError(f"max_new_tokens must be at least 1, got {max_new}")
        temperature = float(kwargs.get("temperature", self.temperature))
        stops = stop if stop is not None else self.stop
        sampling = Sampling(
            do_sample=bool(kwargs.get("do_sample", self.do_sample)) and temperature > 0,
            temperature=temperature,
            top_p=float(kwargs.get("top_p", self.top_p)),
            top_k=int(kwargs.get("top_k", self.top_k)),
            seed=kwargs.get("seed", self.seed),
        )
        return _Settings(sampling=sampling, max_new_tokens=max_new, stop=tuple(s for s in stops or () if s))

    def _prepare(self, messages: Sequence[BaseMessage]) -> _Prompt:
        """Render the chat template, tokenize around placeholders and splice in each video's tokens."""
        turns, videos = split_conversation(messages)
        try:
            text = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        except Exception as error:  # no template, or a template refusing these roles (jinja2 raises its own types)
            raise ElmdError(f"cannot render the chat prompt with this tokenizer's chat template: {error}") from error
        pieces = tokenize_pieces(self.tokenizer, text)
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
        if "pooled" in block:
            pooled = torch.as_tensor(block["pooled"])  # (m + o, q)
        else:
            if self.visual_encoder is None:
                raise ElmdError("this chat model has no visual encoder; pass visual_encoder= to ELMDChatModel.load")
            from elmd_sdk.video import sample_frames, spatio_temporal_pool

            source = block.get("frames", block.get("path"))
            if source is None:
                raise InputError("a video block needs 'path', 'frames' or 'pooled'", field="video")
            frames = sample_frames(source, m=self.frames, start=block.get("start"), end=block.get("end"))
            pooled = spatio_temporal_pool(self.visual_encoder.encode(frames))  # (m + o, q)
        weight = next(self.projector.parameters())
        return self.projector(pooled.to(device=weight.device, dtype=weight.dtype))  # (m + o, hidden)

    def _decode_steps(self, prompt: _Prompt, settings: _Settings) -> Generator[int, None, None]:
        """New token ids of this prompt, one per ``next()``, decoded in the caller's thread."""
        return decode_steps(
            self.hf_model,
            prompt.attention_mask,
            input_ids=prompt.input_ids,
            inputs_embeds=prompt.inputs_embeds,
            sampling=settings.sampling,
            max_new_tokens=settings.max_new_tokens,
            eos_ids=self._eos_ids(),
            lock=self._generate_lock,
        )

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

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


def _role(message: BaseMessage) -> str:
    """Chat-template role of a message: system, user or assistant (or a ChatMessage's own role)."""
    if isinstance(message, ChatMessage):
        return message.role
    for kind, role in _ROLES:
        if isinstance(message, kind):
            return role
    raise InputError(f"unsupported message type {message.type!r}; use system, human and ai messages", field="messages")


def split_conversation(messages: Sequence[BaseMessage]) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """Chat-template turns (with placeholders resolved) and the video blocks, in placeholder order."""
    turns: list[dict[str, str]] = []
    videos: list[dict[str, Any]] = []
    own_videos: list[int] = []
    for message in messages:
        texts: list[str] = []
        count = 0
        for block in [message.content] if isinstance(message.content, str) else message.content:
            if isinstance(block, str):
                texts.append(block)
            elif block.get("type") == "text":
                texts.append(block["text"])
            elif block.get("type") == "video":
                videos.append(block)
                count += 1
            else:
                raise InputError(f"unsupported content block type {block.get('type')!r}", field="content")
        turns.append({"role": _role(message), "content": "".join(texts)})
        own_videos.append(count)
    placeholders = sum(turn["content"].count(VIDEO_PLACEHOLDER) for turn in turns)
    if not videos:
        for turn in turns:
            turn["content"] = turn["content"].replace(VIDEO_PLACEHOLDER, "")
    elif placeholders == 0:
        for turn, count in zip(turns, own_videos, strict=True):
            turn["content"] = (VIDEO_PLACEHOLDER + "\n") * count + turn["content"]
    elif placeholders != len(videos):
        raise InputError(
            f"{placeholders} '{VIDEO_PLACEHOLDER}' placeholder(s) in the text but {len(videos)} video block(s)",
            field="content",
        )
    return turns, videos


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
