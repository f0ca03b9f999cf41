"""Decoding settings and their allowed values, defined once: :class:`~elmd_sdk.models.chat_model.ELMDChatModel`'s
fields, its per-call options (``chat.invoke(..., temperature=0.5)``, also what ``ELMDChain.invoke`` passes on), the
``generation`` a bundle records and ``from_bundle``'s overrides are all checked against these types, so a value is
refused everywhere with the same message. Numbers are strict: ``true`` is not 1, ``"5"`` is not 5, and a float must
be finite.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from elmd_sdk.errors import InputError, input_error

SEED_MAX = 2**64 - 1
"""The largest seed: ``torch.Generator.manual_seed`` takes the integers 0 to 2**64 - 1."""

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


class DecodingOptions(BaseModel):
    """Every decoding setting with its allowed values; ``None`` is a setting not given."""

    model_config = ConfigDict(extra="forbid")

    do_sample: DoSample | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    max_new_tokens: MaxNewTokens | None = None
    seed: Seed | None = None
    repetition_penalty: RepetitionPenalty | None = None
    no_repeat_ngram_size: NoRepeatNgramSize | None = None
    min_new_tokens: MinNewTokens | None = None
    copy_guard_ngram: CopyGuardNgram | None = None


DECODING_OPTIONS: tuple[str, ...] = tuple(DecodingOptions.model_fields)


def check_decoding(
    values: Mapping[str, Any],
    names: Iterable[str] = DECODING_OPTIONS,
    *,
    file: str | Path | None = None,
    field: str | None = None,
) -> dict[str, Any]:
    """``values`` without the ``None`` ones, once each is one of ``names`` and within its range; else an
    :class:`InputError` naming ``file`` and the setting (or ``field``, the object holding the settings, with the
    setting named in the message)."""
    known = tuple(names)
    for key in values:
        if key not in known:
            problem = f"unknown setting (known: {', '.join(known)})"
            raise InputError(f"{key}: {problem}" if field else problem, file=file, field=field or key)
    try:
        DecodingOptions.model_validate(values)
    except ValidationError as error:
        bad = input_error(error)
        problem = f"{bad.field}: {bad.problem}" if field else bad.problem
        raise InputError(problem, file=file, field=field or bad.field) from None
    return {key: value for key, value in values.items() if value is not None}


def requested_length(options: Mapping[str, Any]) -> int | None:
    """The reply length call ``options`` ask for: ``max_new_tokens``, else ``max_tokens`` (LangChain's name of the
    same setting), checked; None when they ask for none."""
    value = options.get("max_new_tokens")
    if value is None:
        value = options.get("max_tokens")
    return None if value is None else check_decoding({"max_new_tokens": value})["max_new_tokens"]
