"""One evaluation run: generate with a chain for every sample, and score the generations (paper 4.4).

:func:`evaluate` runs any chain (a Runnable taking the chain input dict and returning an
:class:`~elmd_sdk.answer.result.ELMDResult`) over samples (:func:`generate`) and scores them (:func:`score`):
BLEU-2/4, METEOR, ROUGE-1/L and the response-emotion accuracy and macro-F1 with
:func:`~elmd_sdk.metrics.score_generations`, plus what a chatbot builder checks in replies. Every generation is
kept next to its reference, so a report can be read like the paper's case study (Figure 5).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import Runnable

from elmd_sdk.answer.result import ELMDResult
from elmd_sdk.chains.input import sample_input
from elmd_sdk.data.labels import EMOTIONS
from elmd_sdk.data.records import Sample
from elmd_sdk.errors import InputError
from elmd_sdk.metrics import score_generations, tokenize
from elmd_sdk.metrics.calibration import reliability
from elmd_sdk.metrics.conversation import reply_rates
from elmd_sdk.metrics.emotion import emotion_baselines, emotion_scores
from elmd_sdk.metrics.options import TextMetricOptions
from elmd_sdk.metrics.reply import COPY_COVERAGE, copy_rate, distinct_n, template_leak_rate
from elmd_sdk.progress import make_progress
from elmd_sdk.sharding import is_main_process, shard_map

ChainRunnable = Runnable[dict[str, Any], ELMDResult]


@dataclass(frozen=True)
class Generation:
    """One sample's generation next to its reference (the case-study view of a report)."""

    dialogue_id: str
    speaker: str  # who said the utterance u
    utterance: str
    reference: str  # the gold response r
    reference_emotion: str | None
    response: str  # the generated response
    emotion: str | None  # the predicted response emotion (None: the model gave none the parser could read)
    demonstration: dict[str, Any] | None  # the retrieved demonstration R: response r', utterance u', emotions, score
    emotion_scores: dict[str, float] | None = None  # closed-set probability of each label
    utterance_emotion: str | None = None  # the emotion recognised in u (neighbour vote)
    reference_utterance_emotion: str | None = None  # u's gold emotion
    utterance_emotion_scores: dict[str, float] | None = None  # the neighbour vote's share of each label


@dataclass
class EvalResult:
    """Scores and generations of one chain over one set of samples."""

    metrics: dict[str, Any]  # score_generations' dict: values (x100) and how each was computed
    generations: list[Generation]
    generation_settings: dict[str, Any]  # the chat model's effective decoding settings, where it exposes them


def _demonstration(result: ELMDResult) -> dict[str, Any] | None:
    document = result.demonstration
    if document is None:
        return None
    return {"response": document.page_content, **document.metadata}


def generate(
    chain: ChainRunnable,
    samples: Sequence[Sample],
    *,
    batch_size: int = 1,
    on_advance: Callable[[int], None] | None = None,
) -> list[Generation]:
    """Run ``chain`` on every sample (``batch_size`` at a time through ``chain.batch``); results in sample order.

    With ``batch_size`` > 1 and a chat model that can batch (:meth:`ELMDChatModel.batched`), the concurrent samples
    are decoded together, ``batch_size`` sequences per forward pass (the same replies as one at a time, greedy or
    seeded: tested for the server, which uses the same engine).

    ``on_advance(n)`` is called after each batch with the number of samples done in it (for progress bars).
    A sample the chain refuses raises :class:`InputError` naming the sample's position and dialogue.
    """
    chat = getattr(chain, "chat_model", None)
    batched = getattr(chat, "batched", None) if batch_size > 1 else None
    with batched(batch_size) if batched is not None else contextlib.nullcontext():
        return _generate(chain, samples, batch_size, on_advance)


def _generate(
    chain: ChainRunnable, samples: Sequence[Sample], batch_size: int, on_advance: Callable[[int], None] | None
) -> list[Generation]:
    generations: list[Generation] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        inputs = [sample_input(sample) for sample in chunk]
        try:
            if len(inputs) == 1:
                results = [chain.invoke(inputs[0])]
            else:
                results = chain.batch(inputs, config={"max_concurrency": batch_size})
        except InputError as error:
            where = f"samples {start + 1}-{start + len(chunk)}" if len(chunk) > 1 else f"sample {start + 1}"
            raise InputError(f"{where} (dialogue {chunk[0].dialogue_id}): {error}") from error
        for sample, result in zip(chunk, results, strict=True):
            if not isinstance(result, ELMDResult):
                raise TypeError(f"the chain returned {type(result).__name__}, expected ELMDResult")
            generations.append(
                Generation(
                    dialogue_id=sample.dialogue_id,
                    speaker=sample.utterance.speaker,
                    utterance=sample.utterance.text,
                    reference=sample.response.text,
                    reference_emotion=sample.response.emotion,
                    response=result.response.strip(),
                    emotion=result.emotion,
                    demonstration=_demonstration(result),
                    emotion_scores=result.emotion_scores,
                    utterance_emotion=result.utterance_emotion,
                    reference_utterance_emotion=sample.utterance.emotion,
                    utterance_emotion_scores=result.utterance_emotion_scores,
                )
            )
        if on_advance is not None:
            on_advance(len(chunk))
    return generations


def reply_tokens(generations: Sequence[Generation], language: str) -> tuple[list[list[str]], list[list[str] | None]]:
    """The metric tokens of each reply and of its demonstration's r' (None without one): what the reply checks
    (distinct-n, copy rate) count."""
    replies = [tokenize(g.response, language) for g in generations]
    demonstrations = [tokenize(g.demonstration["response"], language) if g.demonstration else None for g in generations]
    return replies, demonstrations


def score(
    generations: Sequence[Generation],
    language: str,
    labels: Sequence[str] = EMOTIONS,
    *,
    meteor_synonyms: bool = True,
    text_metrics: TextMetricOptions | None = None,
) -> dict[str, Any]:
    """The paper's metrics (x100) of the generations against their references, with their metadata, plus what a
    chatbot builder checks (:mod:`elmd_sdk.metrics.reply`): distinct-1/2, copy rate, template-leak rate.

    Emotion scores compare the predicted response emotion with the reference's, next to two baselines on the same
    samples (majority class, the demonstration's e'); they are None when some reference has no emotion label.
    The utterance emotion is scored (accuracy, weighted F1) where the chain recognised one for every sample. The
    single-turn rates of :func:`~elmd_sdk.metrics.conversation.reply_rates` (echo, mid-sentence endings, asides,
    contradictions of the user's gold emotion) and the reliability diagrams with ECE of the response emotion's and
    the utterance emotion's probabilities (where every sample has them) come with them.
    ``text_metrics`` picks Chinese BLEU's tokens and ROUGE-1's counting (None: ChatGLM2's, the defaults).
    """
    hyps = [g.response for g in generations]
    refs = [g.reference for g in generations]
    gold = [g.reference_emotion for g in generations]
    labelled = all(e is not None for e in gold)
    metrics = score_generations(
        hyps,
        refs,
        language,
        [g.emotion for g in generations] if labelled else None,
        [e for e in gold if e is not None] if labelled else None,
        labels,
        meteor_synonyms=meteor_synonyms,
        text_metrics=text_metrics,
    )
    tokens, demonstrations = reply_tokens(generations, language)
    metrics.update(
        labels=list(labels),
        distinct_1=distinct_n(tokens, 1),
        distinct_2=distinct_n(tokens, 2),
        copy_rate=copy_rate(tokens, demonstrations),
        copy_coverage=COPY_COVERAGE,
        template_leak_rate=template_leak_rate(hyps),
        emotion_baselines=None,
        utterance_emotion=None,
        reliability=None,
        **reply_rates(
            hyps,
            [g.utterance for g in generations],
            [g.emotion for g in generations],
            [g.reference_utterance_emotion for g in generations],
            language,
        ),
    )
    if labelled:
        demo_emotions = [(g.demonstration or {}).get("response_emotion") for g in generations]
        metrics["emotion_baselines"] = emotion_baselines([e for e in gold if e is not None], demo_emotions, labels)
    utterance_gold = [g.reference_utterance_emotion for g in generations]
    if all(g.utterance_emotion is not None for g in generations) and all(e in labels for e in utterance_gold):
        recognised = emotion_scores([g.utterance_emotion for g in generations], utterance_gold, labels)  # type: ignore[arg-type]
        metrics["utterance_emotion"] = {key: recognised[key] for key in ("emotion_accuracy", "emotion_weighted_f1")}
    metrics["reliability"] = _reliability(generations) or None
    return metrics


def _reliability(generations: Sequence[Generation]) -> dict[str, Any]:
    """The reliability diagrams (with ECE) of the response emotion's and the utterance emotion's probabilities, where
    every sample has them and a gold label."""
    diagrams = {}
    if all(g.emotion_scores and g.reference_emotion for g in generations):
        diagrams["emotion_scores"] = reliability(
            [g.emotion_scores or {} for g in generations], [g.reference_emotion or "" for g in generations]
        )
    if all(g.utterance_emotion_scores and g.reference_utterance_emotion for g in generations):
        diagrams["utterance_emotion_scores"] = reliability(
            [g.utterance_emotion_scores or {} for g in generations],
            [g.reference_utterance_emotion or "" for g in generations],
        )
    return diagrams


def generation_settings(chain: Any) -> dict[str, Any]:
    """The effective decoding settings of the chain's chat model (empty for a chain without one), and the measured
    emotion prior the chain calibrates with, if any."""
    chat = getattr(chain, "chat_model", None)
    config = getattr(chat, "generation_config", None)  # an ELMDChatModel's; another chat model reports none
    settings: dict[str, Any] = config().model_dump() if config is not None else {}
    prior = getattr(chain, "emotion_log_prior", None)  # a measured prior (bundle's validation, or calibrate_on)
    if prior is not None and getattr(chain, "emotion_calibration", False):
        settings["emotion_log_prior"] = dict(zip(chain.labels, prior, strict=True))
    return settings


def evaluate(
    chain: ChainRunnable,
    samples: Sequence[Sample],
    *,
    language: str | None = None,
    labels: Sequence[str] | None = None,
    batch_size: int = 1,
    meteor_synonyms: bool = True,
    text_metrics: TextMetricOptions | None = None,
    description: str = "eval",
    show_progress: bool | None = None,
) -> EvalResult:
    """Generate with ``chain`` for every sample and score the generations (paper 4.4).

    ``language`` and ``labels`` default to the chain's own (``ELMDChain.language``/``labels``), else English
    and the seven emotions. ``show_progress=None`` shows the rich bar only on a terminal. Under ``accelerate launch``
    the processes share the samples (:func:`~elmd_sdk.sharding.shard_map`) and each gets every generation.
    """
    if not samples:
        raise InputError("no samples to evaluate")
    language = language or str(getattr(chain, "language", "en"))
    labels = labels or tuple(getattr(chain, "labels", EMOTIONS))
    disable = None if show_progress is None else not show_progress
    with make_progress(disable=disable if is_main_process() else True) as progress:

        def run(part: list[Sample]) -> list[Generation]:  # under accelerate launch: this process's share
            task = progress.add_task(description, total=len(part), info="")
            return generate(chain, part, batch_size=batch_size, on_advance=lambda n: progress.advance(task, n))

        generations = shard_map(run, samples)
    metrics = score(generations, language, labels, meteor_synonyms=meteor_synonyms, text_metrics=text_metrics)
    return EvalResult(metrics=metrics, generations=generations, generation_settings=generation_settings(chain))
