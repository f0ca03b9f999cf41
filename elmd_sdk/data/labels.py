"""The paper's seven emotion labels and the user-editable mapping of each corpus's labels onto them.

A mapping is a JSON object ``{"corpus label": "one of EMOTIONS" | null}``; the shipped ones are
``labels_m3ed.json`` (also MMED), ``labels_meld.json`` and ``labels_cped.json`` next to this module.
Corpus labels match case-insensitively, ignoring surrounding spaces. A ``null`` target marks a label
that has no counterpart among the seven: it is treated like an unknown label (an error unless dropped).

CPED's 13 labels onto the seven (``labels_cped.json``):
positive emotions all go to ``happy``, the only positive label of the seven (``grateful``, ``relaxed``,
``positive-other``); ``astonished`` -> ``surprise``; ``depress`` -> ``sad``; ``worried`` -> ``fear``
(anxiety about what may happen); ``negative-other`` -> null, because it could be any of sad, disgust,
anger or fear and picking one would inject label noise. Drop it (``--drop-unmapped``) or map it yourself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from elmd_sdk.errors import InputError
from elmd_sdk.io import is_json_number, read_json

EMOTIONS: tuple[str, ...] = ("happy", "surprise", "sad", "disgust", "anger", "fear", "neutral")
"""The paper's seven emotion labels, in the paper's order; every sample carries one of these."""


def check_emotions(labels: Sequence[str], force: Any, allowed: Any) -> None:
    """:class:`InputError` naming ``emotion`` or ``allowed_emotions`` when they are not among ``labels``."""
    known = ", ".join(labels)
    if allowed is not None:
        if isinstance(allowed, str) or not isinstance(allowed, Sequence) or not allowed:
            raise InputError(f"must be a non-empty list of labels among: {known}", field="allowed_emotions")
        if bad := [label for label in allowed if label not in labels]:
            raise InputError(f"unknown label {bad[0]!r}; allowed labels: {known}", field="allowed_emotions")
    if force is not None:
        if force not in labels:
            raise InputError(f"unknown label {force!r}; allowed labels: {known}", field="emotion")
        if allowed is not None and force not in allowed:
            raise InputError(f"{force!r} is not among allowed_emotions {list(allowed)}", field="emotion")


PRIOR_FLOOR = 1e-300
"""The smallest label probability batch calibration records (it clamps the mean probabilities to it)."""
MIN_LOG_PRIOR = -1000.0
"""The lowest log-prior value accepted: below every recorded one (log 1e-300 is about -690.8), and high enough that
the calibrated scores (log-likelihood minus log-prior, in float32) and their softmax stay finite."""


def check_log_prior(values: Sequence[Any], count: int, *, file: str | Path | None = None) -> tuple[float, ...]:
    """A per-label log-prior (``emotion_log_prior``: one value per label, ``count`` labels) as floats, or an
    :class:`InputError` naming the field: each value must be a log-probability in [-1000, 0]."""
    field = "emotion_log_prior"
    if len(values) != count:
        raise InputError(f"needs one value per label ({count}), got {len(values)}", file=file, field=field)
    for value in values:
        if not (is_json_number(value) and MIN_LOG_PRIOR <= value <= 0):
            problem = f"must hold log-probabilities between {MIN_LOG_PRIOR:g} and 0, got {value!r}"
            raise InputError(problem, file=file, field=field)
    return tuple(float(value) for value in values)


CORPORA: tuple[str, ...] = ("m3ed", "meld", "cped")
"""Corpora with a shipped label mapping (MMED uses M3ED's)."""


def normalize_label(label: str) -> str:
    """The form corpus labels are matched in: stripped and lower-cased (M3ED writes ``Happy``)."""
    return label.strip().lower()


@dataclass(frozen=True)
class LabelMap:
    """A corpus's emotion labels mapped onto :data:`EMOTIONS` (None: deliberately left unmapped)."""

    mapping: dict[str, str | None]
    source: str

    @property
    def allowed(self) -> list[str]:
        """The corpus labels that map onto one of the seven, in the mapping's order."""
        return [label for label, target in self.mapping.items() if target is not None]

    def resolve(
        self, label: str, *, drop_unmapped: bool, file: str | None = None, line: int | None = None, field: str
    ) -> str | None:
        """The seven-label emotion for ``label``; None if it is unmapped and ``drop_unmapped``, else InputError."""
        key = normalize_label(label)
        target = self.mapping.get(key)
        if target is not None or drop_unmapped:
            return target
        what = "has no counterpart among the seven emotions" if key in self.mapping else "is not a known label"
        raise InputError(
            f"emotion {label!r} {what} (labels from {self.source}); allowed: {', '.join(self.allowed)}; "
            "map it in a --labels file or pass --drop-unmapped",
            file=file,
            line=line,
            field=field,
        )


def label_map_from_dict(obj: object, *, source: str) -> LabelMap:
    """Validate a parsed mapping object (keys: corpus labels, values: one of the seven or null)."""
    if not isinstance(obj, dict) or not obj:
        raise InputError("a label mapping must be a non-empty JSON object {corpus label: emotion}", file=source)
    mapping: dict[str, str | None] = {}
    for label, target in obj.items():
        if target is not None and target not in EMOTIONS:
            raise InputError(
                f"target {target!r} is not one of the seven emotions ({', '.join(EMOTIONS)}) or null",
                file=source,
                field=label,
            )
        mapping[normalize_label(label)] = target
    return LabelMap(mapping, source)


def builtin_label_map(corpus: str) -> LabelMap:
    """The shipped mapping for ``corpus`` (one of :data:`CORPORA`)."""
    if corpus not in CORPORA:
        raise InputError(f"no shipped label mapping for {corpus!r}; known: {', '.join(CORPORA)}", field="corpus")
    name = f"labels_{corpus}.json"
    text = resources.files("elmd_sdk.data").joinpath(name).read_text(encoding="utf-8")
    return label_map_from_dict(json.loads(text), source=name)


def read_label_map(path: str | Path) -> LabelMap:
    """A user's mapping file (same format as the shipped ``labels_*.json``)."""
    return label_map_from_dict(read_json(path), source=str(path))
