"""How an evaluation run generates and scores: decoding overrides, the run's shape and the metric choices."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from elmd_sdk.errors import InputError
from elmd_sdk.metrics.options import TextMetricOptions


@dataclass(frozen=True)
class EvalSettings:
    """How generations are made: decoding overrides (None keeps the bundle's default) and the run's shape."""

    max_new_tokens: int | None = None  # reply length limit; None = the bundle's default
    seed: int | None = 0  # seeds each sample's sampling, so a run is reproducible sample by sample
    do_sample: bool | None = None  # True: nucleus sampling (paper 4.3), False: greedy; None = the bundle's default
    batch_size: int = 1  # samples sent to ``chain.batch`` at once (generation itself is serialised per model)
    limit: int | None = None  # evaluate only the first ``limit`` samples of the data (file order)
    meteor_synonyms: bool = True  # METEOR with WordNet synonyms where an offline WordNet is installed
    device: str | None = None  # torch device of the LLM; None = where transformers loads
    emotion_mode: Literal["closed", "free"] = "closed"  # closed-set emotion decoding, or the model writes it (paper)
    emotion_calibration: bool = True  # closed set: divide by the model's label prior (see calibrate_on)
    calibrate_on: str | None = None  # JSONL samples each row's prior is fitted on (batch calibration); None: the
    # bundle's validation prior where it has one, else content-free inputs (contextual calibration)
    demonstration_form: Literal["exchange", "paper"] = "exchange"  # R as an example exchange, or the paper's r'
    text_metrics: TextMetricOptions = field(default_factory=TextMetricOptions)  # Chinese BLEU tokens, ROUGE counting

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first impossible setting."""
        for name in ("max_new_tokens", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"must be at least 1, got {value}", field=name)
        if self.batch_size < 1:
            raise InputError(f"must be at least 1, got {self.batch_size}", field="batch_size")
        if self.emotion_mode not in ("closed", "free"):
            raise InputError(f"must be closed or free, got {self.emotion_mode!r}", field="emotion_mode")
        if self.demonstration_form not in ("exchange", "paper"):
            raise InputError(f"must be exchange or paper, got {self.demonstration_form!r}", field="demonstration_form")
        self.text_metrics.validate()

    def generation(self) -> dict[str, Any]:
        """The decoding overrides passed to ``ELMDChain.from_bundle`` (unset ones left out)."""
        values = {"max_new_tokens": self.max_new_tokens, "seed": self.seed, "do_sample": self.do_sample}
        return {key: value for key, value in values.items() if value is not None}
