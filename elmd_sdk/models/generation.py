"""The decoding settings, defined once: :class:`GenerationConfig` holds every setting with its one name, its allowed
values and its one default. :class:`~elmd_sdk.models.chat_model.ELMDChatModel` takes these as its fields (it inherits
:class:`GenerationFields`), a call overrides them (``chat.invoke(..., temperature=0.5)``, also what
``ELMDChain.invoke`` passes on), a bundle's ``generation`` block records some of them, ``elmd-sdk eval`` and the CLI
options (:mod:`elmd_sdk.cli.generation_options`) override them, and the server maps its request fields onto them: all
checked by :func:`check_generation`, so a value is refused everywhere with the same message. Numbers are strict:
``true`` is not 1, ``"5"`` is not 5, and a float must be finite.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from elmd_sdk.errors import InputError, input_error

SEED_MAX = 2**64 - 1
"""The largest seed: ``torch.Generator.manual_seed`` takes the integers 0 to 2**64 - 1."""

COPY_GUARD_NGRAM = 4
"""Tokens per n-gram a reply may not copy from the demonstration r' (and the assistant's own earlier replies): short
enough that no sentence survives, long enough to allow common pairs."""

DoSample = Annotated[bool, Field(strict=True)]
Temperature = Annotated[float, Field(ge=0.0, allow_inf_nan=False, strict=True)]
TopP = Annotated[float, Field(gt=0.0, le=1.0, strict=True)]
TopK = Annotated[int, Field(ge=0, strict=True)]
MaxNewTokens = Annotated[int, Field(gt=0, strict=True)]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX, strict=True)]
RepetitionPenalty = Annotated[float, Field(gt=0.0, allow_inf_nan=False, strict=True)]
NoRepeatNgramSize = Annotated[int, Field(ge=0, strict=True)]
MinNewTokens = Annotated[int, Field(ge=0, strict=True)]
CopyGuardNgram = Annotated[int, Field(ge=1, strict=True)]
SoftMaxNewTokens = Annotated[int, Field(ge=1, strict=True)]
SentenceEndPush = Annotated[float, Field(ge=1.0, allow_inf_nan=False, strict=True)]


class GenerationFields(BaseModel):
    """Every decoding setting with its allowed values and default (the fields :class:`GenerationConfig` and the chat
    model share)."""

    do_sample: DoSample = True
    """Nucleus sampling when true, greedy decoding when false."""
    temperature: Temperature = 0.95
    """Sampling temperature (paper 4.3: 0.95), at least 0; 0 means greedy."""
    top_p: TopP = 0.7
    """Nucleus probability mass (paper 4.3: 0.7), in (0, 1]."""
    top_k: TopK = 0
    """Top-k cut before nucleus sampling; 0 turns it off (the paper samples by top-p alone)."""
    max_new_tokens: MaxNewTokens = Field(default=256, validation_alias=AliasChoices("max_new_tokens", "max_tokens"))
    """Most tokens generated per reply (at least 1); ``max_tokens`` (LangChain's and OpenAI's name) is an alias."""
    seed: Seed | None = None
    """Seed for reproducible sampling, 0 to 2**64 - 1 (what torch takes); ``None`` draws from the global torch RNG."""
    repetition_penalty: RepetitionPenalty = 1.0
    """Penalty on tokens the reply already holds (transformers' ``repetition_penalty``; 1.0 is none). Unlike
    ``generate`` it looks at the reply's own tokens only, not at the prompt's."""
    no_repeat_ngram_size: NoRepeatNgramSize = 0
    """The reply never repeats one of its own n-grams of this many tokens (0: off), as in ``generate``."""
    min_new_tokens: MinNewTokens = 0
    """End-of-sequence is not allowed before this many new tokens (closed-set mode: at least 1 response token)."""
    copy_guard_ngram: CopyGuardNgram = COPY_GUARD_NGRAM
    """Token n-grams of the ``avoid_copying`` texts the reply may not reproduce."""
    soft_max_new_tokens: SoftMaxNewTokens | None = None
    """The soft limit: past this many new tokens the reply ends at the first sentence end (a stream holds back the
    text after the last one meanwhile), and a reply that reaches ``max_new_tokens`` ends at its last complete
    sentence (what a stream already sent stays: set it well below ``max_new_tokens``). None: the hard limit alone,
    which may cut a sentence."""
    sentence_end_push: SentenceEndPush = 1.0
    """Past the soft limit, the probability of each token that ends a sentence grows by this factor per new token
    (:class:`~elmd_sdk.models.call.SentenceEndPush`), so a run-on reply still comes to a sentence end before
    ``max_new_tokens``; 1.0 is off, and so is any value without ``soft_max_new_tokens``."""
    no_parentheses: DoSample = False
    """The reply never opens a parenthesis: no meta-asides such as "(smiles)" or "(Note: ...)"."""
    sample_emotion: DoSample = True
    """Closed-set mode with sampling: the emotion is drawn from its probabilities; false: it is the most probable one
    (after the bundle's decision rule) while the reply's words are still sampled, so sampling varies the wording, not
    the judgment an app acts on."""


class GenerationConfig(GenerationFields):
    """One call's complete decoding settings (immutable). ``updated(overrides)`` checks and applies overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def updated(self, overrides: Mapping[str, Any]) -> GenerationConfig:
        """This config with ``overrides`` applied (checked by :func:`check_generation`; a ``None`` keeps the
        setting, except ``seed``, where ``None`` means sampling without a seed)."""
        checked = check_generation(overrides)
        if "seed" in overrides and overrides["seed"] is None:
            checked["seed"] = None
        return self.model_copy(update=checked)


GENERATION_SETTINGS: tuple[str, ...] = tuple(GenerationFields.model_fields)
"""The names of the decoding settings, in one order (also the keys a bundle's ``generation`` may hold)."""


def check_generation(
    values: Mapping[str, Any], *, file: str | Path | None = None, field: str | None = None
) -> dict[str, Any]:
    """``values`` without the ``None`` ones, once each names a setting of :data:`GENERATION_SETTINGS` (or
    ``max_tokens``, read as ``max_new_tokens``) within its range; else an :class:`InputError` naming ``file`` and the
    setting (or ``field``, the object holding the settings, with the setting named in the message)."""
    given = dict(values)
    if (alias := given.pop("max_tokens", None)) is not None:
        if given.get("max_new_tokens") is not None:
            raise InputError("pass only one of max_new_tokens / max_tokens: they name the same setting", field=field)
        given["max_new_tokens"] = alias
    for key in given:
        if key not in GENERATION_SETTINGS:
            problem = f"unknown setting (known: {', '.join(GENERATION_SETTINGS)})"
            raise InputError(f"{key}: {problem}" if field else problem, file=file, field=field or key)
    given = {key: value for key, value in given.items() if value is not None}
    try:
        GenerationConfig.model_validate(given)
    except ValidationError as error:
        bad = input_error(error)
        problem = f"{bad.field}: {bad.problem}" if field else bad.problem
        raise InputError(problem, file=file, field=field or bad.field) from None
    return given


def requested_length(options: Mapping[str, Any]) -> int | None:
    """The reply length call ``options`` ask for (``max_new_tokens``, else its alias ``max_tokens``), checked; None
    when they ask for none."""
    length = {key: options.get(key) for key in ("max_new_tokens", "max_tokens") if key in options}
    return check_generation(length).get("max_new_tokens")
