"""Samples + retrieved demonstrations -> token-level training examples, rendered exactly as inference renders them.

The prompt is the chain's six-part template (:func:`elmd_sdk.chains.prompt.build_prompt`) filled by
``prompt_variables``, with the clip attached by ``attach_video``, and rendered into token pieces around the
``<video>`` placeholder by :func:`elmd_sdk.models.rendering.prompt_pieces`, as the chat model renders it.
The target is ``render_answer``: the emotion line for REP (Eq. 10), emotion and response plus the end-of-sequence
token for EERG (Eq. 11). A trained bundle therefore sees at inference the very token ids it was trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate

from elmd_sdk.answer.wording import LANGUAGES, render_answer
from elmd_sdk.chains.prompt import attach_video, build_prompt, prompt_variables
from elmd_sdk.data.labels import EMOTIONS
from elmd_sdk.data.records import Sample, VideoRef
from elmd_sdk.errors import InputError
from elmd_sdk.models.rendering import prompt_pieces


@dataclass(frozen=True)
class PromptConfig:
    """How samples become prompts: wording language, label set, whether E_v is included, length limit."""

    language: str = "en"  # "en" or "zh" (ChatGLM2, as in the paper)
    labels: tuple[str, ...] = EMOTIONS  # response emotions the prompt offers; every target must be one of them
    use_video: bool = True  # False: the "w/o V" ablation, no placeholder and no E_v
    max_length: int | None = None  # most positions (text + video tokens + target); oldest history turns go first
    max_prompt_tokens: int | None = None  # most prompt text tokens (answer excluded); oldest history turns go first

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first impossible setting."""
        if self.language not in LANGUAGES:
            raise InputError(f"must be one of {', '.join(LANGUAGES)}, got {self.language!r}", field="language")
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise InputError("must be a non-empty list without repeats", field="labels")
        if unknown := [label for label in self.labels if label not in EMOTIONS]:
            raise InputError(f"unknown emotion {unknown[0]!r}; choose among {', '.join(EMOTIONS)}", field="labels")
        if self.max_length is not None and self.max_length < 2:
            raise InputError("must be at least 2", field="max_length")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise InputError("must be at least 1", field="max_prompt_tokens")


@dataclass(frozen=True)
class Example:
    """One sample as the LLM sees it: prompt token pieces around ``<video>``, the clip, and the answer tokens."""

    pieces: tuple[tuple[int, ...], ...]  # 2 pieces when the clip's E_v goes between them, else 1
    video: VideoRef | None  # the clip whose E_v is spliced in (None: text only)
    target: tuple[int, ...]  # answer token ids; the loss covers exactly these
    label: int  # index of the response emotion in PromptConfig.labels

    def length(self, video_tokens: int) -> int:
        """Positions the example occupies with ``video_tokens`` (m + o) rows of E_v."""
        return sum(len(p) for p in self.pieces) + (video_tokens if self.video is not None else 0) + len(self.target)


def retrieve_demonstrations(retriever: Any, samples: Sequence[Sample]) -> list[Document | None]:
    """Part R for each sample: the response r' of the most similar indexed utterance from ANOTHER dialogue.

    ``retriever`` is an :class:`~elmd_sdk.retrievers.EmotionalRetriever`; queries are the utterances u, embedded in
    one batch, and the sample's own dialogue is excluded so the target response never leaks into its prompt.
    """
    if not samples:
        return []
    vectors = retriever.encoder.encode([s.utterance.text for s in samples])  # (n, dim)
    found: list[Document | None] = []
    for sample, vector in zip(samples, vectors, strict=True):
        docs = retriever.search_by_vector(vector, k=1, exclude_dialogue_ids=[sample.dialogue_id])
        found.append(docs[0] if docs else None)
    return found


def prompt_messages(
    template: ChatPromptTemplate, sample: Sample, demonstration: Document | None, use_video: bool, language: str
) -> list[BaseMessage]:
    """The chain's messages for ``sample``: system part I, human parts B, H, u, E_v (placeholder + clip) and R."""
    video = use_video and sample.video is not None
    variables = prompt_variables(
        sample.utterance,
        sample.history,
        sample.background,
        video=video,
        demonstration=demonstration,
        language=language,
    )
    messages = template.invoke(variables).to_messages()
    return attach_video(messages, sample.video) if video and sample.video is not None else messages


def answer_ids(tokenizer: Any, emotion: str, response: str | None, language: str) -> list[int]:
    """Target token ids: ``render_answer(emotion)`` (REP), or emotion and response then end-of-sequence (EERG)."""
    ids = list(tokenizer(render_answer(emotion, response, language), add_special_tokens=False)["input_ids"])
    if response is not None and tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))  # teaches the reply to end where inference stops generating
    return ids


def label_candidates(tokenizer: Any, config: PromptConfig) -> list[list[int]]:
    """The REP answer of every label, in label order: the closed set the emotion is chosen from in evaluation."""
    return [answer_ids(tokenizer, label, None, config.language) for label in config.labels]


def build_examples(
    samples: Sequence[Sample],
    demonstrations: Sequence[Document | None],
    tokenizer: Any,
    config: PromptConfig,
    *,
    with_response: bool,
    video_tokens: int,
) -> list[Example]:
    """One :class:`Example` per sample; ``with_response`` selects the EERG target, else REP's emotion line.

    When an example would exceed ``config.max_length`` positions or its prompt ``config.max_prompt_tokens`` text
    tokens, history turns are dropped oldest first (as the chain does at inference); one still too long without
    history is an InputError naming the sample.
    """
    config.validate()
    template = build_prompt(config.language, config.labels)
    label_index = {label: i for i, label in enumerate(config.labels)}
    examples: list[Example] = []
    for number, (sample, demonstration) in enumerate(zip(samples, demonstrations, strict=True), start=1):
        emotion = sample.response.emotion
        if emotion not in label_index:
            raise InputError(
                f"sample {number} (dialogue {sample.dialogue_id!r}): emotion {emotion!r} is not in the label set "
                f"({', '.join(config.labels)})",
                field="response.emotion",
            )
        target = tuple(answer_ids(tokenizer, emotion, sample.response.text if with_response else None, config.language))
        history = list(sample.history)
        while True:
            current = dataclasses.replace(sample, history=history)
            messages = prompt_messages(template, current, demonstration, config.use_video, config.language)
            pieces = tuple(tuple(p) for p in prompt_pieces(tokenizer, messages)[0])
            example = Example(pieces, sample.video if len(pieces) == 2 else None, target, label_index[emotion])
            too_long = config.max_length is not None and example.length(video_tokens) > config.max_length
            prompt_tokens = sum(len(p) for p in pieces)
            too_wordy = config.max_prompt_tokens is not None and prompt_tokens > config.max_prompt_tokens
            if not (too_long or too_wordy):
                break
            if not history:
                needs, limit, name = (
                    (example.length(video_tokens), config.max_length, "max_length")
                    if too_long
                    else (prompt_tokens, config.max_prompt_tokens, "max_prompt_tokens")
                )
                raise InputError(
                    f"sample {number} (dialogue {sample.dialogue_id!r}) needs {needs} "
                    f"{'positions' if too_long else 'prompt tokens'} without any history; {name} is {limit}",
                    field=name,
                )
            history = history[1:]
        examples.append(example)
    return examples
