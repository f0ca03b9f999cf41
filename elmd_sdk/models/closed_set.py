"""Closed-set emotion decoding and the copy guard: what the chat model does around free decoding of the response.

Closed set: after the prompt, every label's answer line (e.g. "Emotion: sad", as the prompt asks for it and REP
trains it, Eq. 10) is scored by its log-likelihood in one batched pass over the prompt's KV cache; the softmax of
those scores over the allowed labels is p(e | prompt). Greedy decoding takes the argmax, sampling draws from it,
a forced emotion is taken as is; the chosen line and the response key are then forced and the response decoded
after them. The reply therefore always names a label and never depends on the model following the format.

Contextual calibration (Zhao et al., 2021): a small model prefers some labels whatever the input. With a log-prior
per label (the mean log-probability of each label for content-free inputs), the scores are divided by that prior
before the softmax, so the choice reflects the input rather than the model's bias. Batch calibration (Zhou et al.,
ICLR 2024) estimates the prior from real inputs instead: the log of each label's mean probability over a set of
prompts such as a validation set (:func:`batch_log_prior`). A trained prefix learns the training labels' prior,
which content-free inputs exaggerate; the prior it shows on real prompts is what calibration has to remove.

Copy guard: the response may not reproduce any n-gram (default n = 4 tokens, about three words) of the given
texts, i.e. the demonstration's r' (a text of 2 to n - 1 tokens is banned whole), written with either apostrophe;
transformers' ``NoBadWordsLogitsProcessor`` bans the last token of every such n-gram whose first tokens were just
generated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import NoBadWordsLogitsProcessor

from elmd_sdk.answer.wording import render_answer, wording
from elmd_sdk.data.labels import PRIOR_FLOOR, check_emotions, check_log_prior
from elmd_sdk.errors import InputError
from elmd_sdk.models.generation import COPY_GUARD_NGRAM


@dataclass(frozen=True)
class EmotionChoice:
    """How the response emotion is chosen from a closed label set (a call option of ``ELMDChatModel``)."""

    labels: tuple[str, ...]  # every label, in the bundle's order: the keys of the reported probabilities
    lines: tuple[str, ...]  # each label's answer line, e.g. "Emotion: sad": what is scored, then forced
    response_key: str  # forced after the chosen line, e.g. "\nResponse:"; the response is decoded after it
    allowed: tuple[str, ...] | None = None  # choose only among these (None: all labels)
    force: str | None = None  # take this label whatever the scores say
    log_prior: tuple[float, ...] | None = None  # per label, subtracted from the scores (contextual calibration)
    evidence: tuple[float, ...] | None = None  # per label, added to llm_weight x the LLM's log-probabilities (fusion)
    llm_weight: float = 1.0  # weight of the LLM's calibrated log-probabilities when evidence is given
    choice_bias: tuple[float, ...] | None = None  # per label, added to the log-probabilities when choosing (not to
    # the reported probabilities): a decision rule for macro-F1 rather than accuracy (fusion)
    choice_min_ratio: float = 0.0  # choose only among labels at least this fraction as probable as the most probable

    def __post_init__(self) -> None:
        if not self.labels or len(self.labels) != len(self.lines):
            raise ValueError("an emotion choice needs one answer line per label, at least one label")
        if self.log_prior is not None:
            check_log_prior(self.log_prior, len(self.labels))
        if self.evidence is not None and (
            len(self.evidence) != len(self.labels) or not all(math.isfinite(v) for v in self.evidence)
        ):
            raise ValueError("an emotion choice's evidence needs one finite value per label")
        if self.choice_bias is not None and (
            len(self.choice_bias) != len(self.labels) or not all(math.isfinite(v) for v in self.choice_bias)
        ):
            raise ValueError("an emotion choice's choice_bias needs one finite value per label")
        if not 0.0 <= self.choice_min_ratio < 1.0:
            raise ValueError(f"choice_min_ratio must be in [0, 1), got {self.choice_min_ratio}")
        if not (math.isfinite(self.llm_weight) and self.llm_weight > 0):
            raise ValueError(f"llm_weight must be a positive number, got {self.llm_weight}")
        check_emotions(self.labels, self.force, self.allowed)

    @property
    def candidates(self) -> tuple[str, ...]:
        """The labels the choice is made among."""
        return self.allowed if self.allowed is not None else self.labels


def emotion_choice(labels: Sequence[str], language: str = "en") -> EmotionChoice:
    """The answer format as a closed set for :class:`~elmd_sdk.models.chat_model.ELMDChatModel`: every label's answer
    line (:func:`~elmd_sdk.answer.wording.render_answer`), and the response key forced after the chosen one."""
    words = wording(language)
    return EmotionChoice(
        labels=tuple(labels),
        lines=tuple(render_answer(label, None, language) for label in labels),
        response_key=f"\n{words.response_key}{words.colon.rstrip()}",
    )


def emotion_probabilities(choice: EmotionChoice, log_likelihoods: torch.Tensor) -> dict[str, float]:
    """Softmax of the answer lines' log-likelihoods (L,), minus the log-prior when calibrated, over the allowed
    labels; 0 for the others. With ``evidence`` (fusion), the softmax of ``llm_weight`` x those log-probabilities
    plus the evidence. Sums to 1."""
    allowed = torch.tensor([label in choice.candidates for label in choice.labels])
    scores = log_likelihoods.float().cpu()
    if choice.log_prior is not None:
        scores = scores - torch.tensor(choice.log_prior)
    scores = scores.masked_fill(~allowed, float("-inf"))
    if choice.evidence is not None:
        scores = choice.llm_weight * torch.log_softmax(scores, dim=-1) + torch.tensor(choice.evidence)  # (L,)
    probs = torch.softmax(scores, dim=-1)
    return {label: float(p) for label, p in zip(choice.labels, probs, strict=True)}


def batch_log_prior(log_likelihoods: torch.Tensor) -> tuple[float, ...]:
    """Batch calibration's log-prior (Zhou et al., 2024): log of the mean over n prompts of p(e | prompt), the
    softmax of each prompt's answer-line log-likelihoods ``(n, L)``; one value per label."""
    if log_likelihoods.ndim != 2 or not len(log_likelihoods):
        raise ValueError(f"expected scores of shape (n >= 1, labels), got {tuple(log_likelihoods.shape)}")
    probs = torch.softmax(log_likelihoods.double(), dim=-1)  # (n, L)
    mean = probs.mean(dim=0).clamp(min=PRIOR_FLOOR, max=1.0)  # (L,): finite log-probabilities even at the extremes
    return tuple(float(v) for v in mean.log())


def decision_weights(
    probabilities: torch.Tensor, choice_bias: torch.Tensor | None, min_ratio: float = 0.0
) -> torch.Tensor:
    """What a label is chosen by, for probabilities ``(..., L)``: each probability times ``exp(choice_bias)``
    ``(L,)``, and 0 for the labels less than ``min_ratio`` times as probable as the most probable one (unnormalised,
    ``(..., L)``)."""
    kept = probabilities >= min_ratio * probabilities.max(dim=-1, keepdim=True).values
    weights = torch.where(kept, probabilities, 0.0)
    return weights if choice_bias is None else weights * choice_bias.exp()


def pick_emotion(
    choice: EmotionChoice, probabilities: dict[str, float], do_sample: bool, generator: torch.Generator | None
) -> str:
    """The forced label, else the most probable one (greedy) or one drawn from ``probabilities`` (sampling); with a
    ``choice_bias``, from the probabilities times ``exp(bias)``, renormalised; with a ``choice_min_ratio``, among the
    labels at least that fraction as probable as the most probable one."""
    if choice.force is not None:
        return choice.force
    probs = torch.tensor([probabilities[label] for label in choice.labels], dtype=torch.float64)  # (L,)
    bias = None if choice.choice_bias is None else torch.tensor(choice.choice_bias, dtype=torch.float64)
    probs = decision_weights(probs, bias, choice.choice_min_ratio)
    probs = probs / probs.sum()
    if do_sample:
        return choice.labels[int(torch.multinomial(probs, 1, generator=generator))]
    return choice.labels[int(probs.argmax())]


def copy_guard(tokenizer: Any, texts: Sequence[str], n: int = COPY_GUARD_NGRAM) -> NoBadWordsLogitsProcessor | None:
    """A logits processor banning every token n-gram of ``texts`` (None when they have none).

    Each text is tokenized as it starts a line and as it continues one (with a leading space), since a reply may
    reproduce either form.
    """
    if n < 1:
        raise InputError(f"must be at least 1, got {n}", field="copy_guard_ngram")
    ngrams: set[tuple[int, ...]] = set()
    for text in texts:
        for variant in {text.strip(), text.strip().replace("\u2019", "'"), text.strip().replace("'", "\u2019")}:
            for form in (variant, " " + variant):
                ids = tokenizer(form, add_special_tokens=False)["input_ids"]
                size = min(n, len(ids))
                ngrams.update(tuple(ids[i : i + size]) for i in range(len(ids) - size + 1) if size > 1)
    if not ngrams:
        return None
    return NoBadWordsLogitsProcessor([list(g) for g in sorted(ngrams)])
