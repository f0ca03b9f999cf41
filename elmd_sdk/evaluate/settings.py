"""How an evaluation run generates and scores: decoding overrides, the run's shape and the metric choices."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from elmd_sdk.errors import InputError
from elmd_sdk.metrics.options import TextMetricOptions
from elmd_sdk.models.generation import check_generation
from elmd_sdk.models.precision import check_precision


@dataclass(frozen=True)
class EvalSettings:
    """How generations are made: decoding overrides (None keeps the bundle's default) and the run's shape."""

    generation: dict[str, Any] = field(default_factory=lambda: {"seed": 0})  # GenerationConfig overrides of the
    # bundle's decoding (elmd_sdk.models.generation); the seed seeds each sample, so a run is reproducible sample by
    # sample, and ``{"seed": None}`` samples unseeded
    batch_size: int = 1  # samples sent to ``chain.batch`` at once (generation itself is serialised per model)
    limit: int | None = None  # evaluate only the first ``limit`` samples of the data (file order)
    meteor_synonyms: bool = True  # METEOR with WordNet synonyms where an offline WordNet is installed
    device: str | None = None  # torch device of the LLM; None = where transformers loads
    dtype: str | None = None  # weight dtype of the bundle's LLM (elmd_sdk.models.precision); None = the bundle's
    quantize: str | None = None  # weight-only quantization of the bundle's LLM; None = the bundle's
    emotion_mode: Literal["closed", "free"] = "closed"  # closed-set emotion decoding, or the model writes it (paper)
    emotion_calibration: bool = True  # closed set: divide by the model's label prior (see calibrate_on)
    calibrate_on: str | None = None  # JSONL samples each row's prior is fitted on (batch calibration); None: the
    # bundle's validation prior where it has one, else content-free inputs (contextual calibration)
    demonstration_form: Literal["exchange", "paper"] = "exchange"  # R as an example exchange, or the paper's r'
    text_metrics: TextMetricOptions = field(default_factory=TextMetricOptions)  # Chinese BLEU tokens, ROUGE counting

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first impossible setting."""
        check_generation(self.generation, field="generation")
        check_precision(self.dtype or "auto", self.quantize or "none")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"must be at least 1, got {self.limit}", field="limit")
        if self.batch_size < 1:
            raise InputError(f"must be at least 1, got {self.batch_size}", field="batch_size")
        if self.emotion_mode not in ("closed", "free"):
            raise InputError(f"must be closed or free, got {self.emotion_mode!r}", field="emotion_mode")
        if self.demonstration_form not in ("exchange", "paper"):
            raise InputError(f"must be exchange or paper, got {self.demonstration_form!r}", field="demonstration_form")
        self.text_metrics.validate()
