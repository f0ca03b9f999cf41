"""One call of :class:`~elmd_sdk.models.chat_model.ELMDChatModel`: its settings (the model's, overridden by the
call's options) and the logits processors they make, its tokenized prompt (video tokens spliced in), its decoding
steps, and the rules that cut the reply at a stop string and decide what a stream may send yet."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from langchain_core.messages import BaseMessage
from langchain_core.messages.ai import UsageMetadata
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
)

from elmd_sdk.models.closed_set import EmotionChoice
from elmd_sdk.models.decoding import Sampling
from elmd_sdk.models.generation import GenerationConfig
from elmd_sdk.models.rendering import prompt_pieces
from elmd_sdk.models.splice import splice_video_embeds
from elmd_sdk.models.vocabulary import CHINESE_END, CLOSING, WESTERN_END, Vocabulary


class SuppressAtBegin(SuppressTokensAtBeginLogitsProcessor):
    """transformers' processor, skipped after the first token: it builds a vocabulary-sized mask on every call (7% of
    a busy server's engine time, measured with py-spy)."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] != self.begin_index:
            return scores
        return super().__call__(input_ids, scores)


class SentenceEndPush(LogitsProcessor):
    """Past ``start`` new tokens, the probability of each of the ``ends`` tokens grows by ``factor`` per token (k
    tokens past ``start``: ``k * log(factor)`` added to their scores), so their order among themselves is kept.

    Not transformers' ``ExponentialDecayLengthPenalty``: it adds ``|score| * (factor**k - 1)``, which lifts the least
    likely end tokens most (with SmolLM2 a "。" at -20 overtakes a "." at +8 once ``factor**k`` passes 3.3), and
    turns a score of -1e4 into the largest one.
    """

    def __init__(self, start: int, factor: float, ends: list[int]) -> None:
        self.start, self.log_factor, self.ends = start, math.log(factor), torch.tensor(ends, dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        past = input_ids.shape[-1] - self.start  # input_ids: (1, n) the reply's tokens so far
        if past <= 0:
            return scores
        pushed = scores.clone()  # (1, vocab)
        pushed[:, self.ends.to(scores.device)] += past * self.log_factor
        return pushed  # type: ignore[return-value]


@dataclass(frozen=True)
class CallSettings:
    """Decoding settings of one call: the model's fields overridden by per-call keyword arguments."""

    generation: GenerationConfig
    stop: tuple[str, ...]
    emotion_choice: EmotionChoice | None = None  # closed-set emotion: score, choose and force the emotion line
    avoid: tuple[str, ...] = ()  # texts whose n-grams the reply may not reproduce (copy guard)

    @property
    def sampling(self) -> Sampling:
        config = self.generation
        return Sampling(
            do_sample=config.do_sample and config.temperature > 0,
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            seed=config.seed,
        )

    def processors(self, vocabulary: Vocabulary, guard: NoBadWordsLogitsProcessor | None) -> LogitsProcessorList:
        """The logits processors of this call: in closed-set mode a response of at least one token that starts on
        the response key's line, repetition rules, no parentheses, the push to a sentence end past the soft limit,
        the copy guard."""
        config, closed = self.generation, self.emotion_choice is not None
        processors = LogitsProcessorList()
        if closed:
            processors.append(SuppressAtBegin(vocabulary.line_break_ids, 0))
        least = max(config.min_new_tokens, 1 if closed else 0)  # closed set: never an empty response
        if least > 0:
            processors.append(MinNewTokensLengthLogitsProcessor(0, least, vocabulary.eos_ids))
        if config.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
        if config.no_repeat_ngram_size > 0:
            processors.append(NoRepeatNGramLogitsProcessor(config.no_repeat_ngram_size))
        if config.no_parentheses:
            processors.append(SuppressTokensLogitsProcessor(vocabulary.parenthesis_ids))
        if config.soft_max_new_tokens is not None and config.sentence_end_push > 1.0 and vocabulary.sentence_end_ids:
            end_ids = vocabulary.sentence_end_ids
            processors.append(SentenceEndPush(config.soft_max_new_tokens, config.sentence_end_push, end_ids))
        if guard is not None:
            processors.append(guard)
        return processors


@dataclass(frozen=True)
class Decoding:
    """One call after the prompt was run: its settings, prompt, decoding steps and the closed-set emotion (if any)."""

    settings: CallSettings
    prompt: Prompt
    steps: Generator[int, None, None]
    emotion: dict[str, Any]  # {"emotion": label, "emotion_scores": {label: p}} in closed-set mode, else empty


@dataclass(frozen=True)
class Prompt:
    """A tokenized prompt: ``input_ids`` without a video, ``inputs_embeds`` with video tokens spliced in."""

    attention_mask: torch.Tensor  # (1, T)
    input_ids: torch.Tensor | None = None  # (1, T)
    inputs_embeds: torch.Tensor | None = None  # (1, T, hidden)

    @property
    def length(self) -> int:
        """Number of input positions, video tokens included."""
        return int(self.attention_mask.shape[1])


def tokenize_prompt(
    tokenizer: Any,
    embed_tokens: torch.nn.Embedding,
    messages: Sequence[BaseMessage],
    video_tokens: Callable[[dict[str, Any]], torch.Tensor],
) -> Prompt:
    """Render the chat template, tokenize around video placeholders and splice in each video block's tokens
    (``video_tokens(block)``: E_v, shape (m + o, hidden))."""
    pieces, videos = prompt_pieces(tokenizer, messages)
    device = embed_tokens.weight.device
    if not videos:
        ids = torch.tensor([pieces[0]], dtype=torch.long, device=device)  # (1, T)
        return Prompt(attention_mask=torch.ones_like(ids), input_ids=ids)
    with torch.no_grad():
        spliced = splice_video_embeds(embed_tokens, pieces, [video_tokens(video) for video in videos])
    return Prompt(attention_mask=spliced.attention_mask, inputs_embeds=spliced.inputs_embeds)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """The text before the earliest stop string, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def stable_length(text: str, stop: Sequence[str], hold_whitespace: bool) -> int:
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


def usage_counts(input_tokens: int, output_tokens: int) -> UsageMetadata:
    """LangChain's token counts of a call or of one stream chunk."""
    return UsageMetadata(
        input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens
    )


_SENTENCE_END = re.compile(rf"{WESTERN_END}{CLOSING}(?=\s|$)|{CHINESE_END}{CLOSING}")
"""A sentence end: its punctuation and closing quotes or brackets; a Western one then needs a space or the end of the
text (so the point of "3.5" is none), a Chinese one does not."""


def last_sentence_end(text: str) -> int:
    """The position just past the last sentence end of ``text`` (0 when it has none)."""
    ends = [match.end() for match in _SENTENCE_END.finditer(text)]
    return ends[-1] if ends else 0


class ReplyEnd:
    """Where a reply ends and what of it a stream may send yet, token by token: at the first stop string; past
    ``soft`` new tokens (the soft limit) at the first sentence end, the text after the last one held back meanwhile;
    a reply that reaches the hard limit without one then ends at its last complete sentence (nothing sent is taken
    back). The same rule for ``invoke`` and ``stream``."""

    def __init__(self, stop: Sequence[str], soft: int | None, hold_whitespace: bool) -> None:
        self._stop, self._soft, self._hold = stop, soft, hold_whitespace
        self.sent = 0  # characters a stream may have sent

    def step(self, decoded: str, new_tokens: int) -> tuple[str, int, bool]:
        """The reply's text after ``new_tokens`` tokens decoded as ``decoded``, how much of it may go out, and
        whether the reply has ended."""
        text, stopped = cut_at_stop(decoded, self._stop)
        if stopped:
            return text, len(text), True
        ready = stable_length(text, self._stop, self._hold)
        if self._soft is not None and new_tokens >= self._soft:
            if (end := last_sentence_end(text)) > self.sent:
                return text[:end], end, True
            ready = self.sent
        self.sent = max(self.sent, ready)
        return text, ready, False

    def final(self, text: str, at_limit: bool) -> str:
        """The reply's last ``text`` (from :meth:`step`) once decoding stopped without a rule ending it: cut at its
        last complete sentence when it reached the hard limit (``at_limit``) and a soft limit is set (whole when it
        holds no sentence end; never shorter than what a stream sent)."""
        end = last_sentence_end(text)
        if not at_limit or self._soft is None or end == 0:
            return text
        return text[: max(self.sent, end)]
