"""Turn the model's answer ("Emotion: <label>" then "Response: <text>") into
:class:`~elmd_sdk.answer.result.ELMDResult` chunks.

Generations slip: other cases, synonyms ("joy" for happy), Chinese labels and colons, markdown, a
missing emotion line, a bracketed label, extra turns the model invents after its reply. The parser
accepts all of these and never raises: what it cannot read as an emotion becomes ``emotion=None``,
and without any answer key the whole text is the response.

One incremental state machine (:class:`StreamingAnswerParser`) serves both ``parse`` and streaming, so
a streamed answer concatenates to exactly what ``parse`` returns for the full text. It waits only
while the text seen so far could still turn into an answer key, then streams the response, holding
back just the tail that could still become a stop marker, a closing quote or trailing space.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from langchain_core.messages import BaseMessage

from elmd_sdk.answer.result import ELMDResult, add_usage
from elmd_sdk.data.labels import EMOTIONS
from elmd_sdk.errors import ElmdError

# Words accepted for each of the seven labels (lower case), English and Chinese.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "happy": (
        "happy", "happiness", "joy", "joyful", "joyous", "glad", "cheerful", "delighted", "pleased", "excited",
        "excitement", "amused", "thrilled", "grateful", "gratitude", "relief", "relieved", "proud", "pride",
        "enthusiastic", "enthusiasm", "love", "content", "开心", "高兴", "快乐", "喜悦", "愉快", "兴奋", "幸福", "欣喜",
    ),
    "surprise": (
        "surprise", "surprised", "surprising", "amazed", "amazement", "astonished", "astonishment", "shock",
        "shocked", "unexpected", "startled", "disbelief", "惊讶", "惊喜", "吃惊", "震惊", "意外", "诧异",
    ),
    "sad": (
        "sad", "sadness", "unhappy", "sorrow", "sorrowful", "upset", "depressed", "grief", "melancholy",
        "disappointed", "disappointment", "heartbroken", "regret", "lonely", "loneliness", "sympathy",
        "伤心", "悲伤", "难过", "悲哀", "忧伤", "沮丧", "失落", "失望",
    ),
    "disgust": (
        "disgust", "disgusted", "disgusting", "revulsion", "revolted", "repulsed", "gross", "distaste", "contempt",
        "厌恶", "恶心", "讨厌", "反感", "嫌弃",
    ),
    "anger": (
        "anger", "angry", "mad", "annoyed", "annoyance", "furious", "fury", "irritated", "irritation", "rage",
        "frustrated", "frustration", "outrage", "outraged", "resentment", "生气", "愤怒", "气愤", "恼火", "发火",
    ),
    "fear": (
        "fear", "fearful", "afraid", "scared", "frightened", "terrified", "anxious", "anxiety", "worried", "worry",
        "nervous", "panic", "concern", "concerned", "害怕", "恐惧", "担心", "惊恐", "紧张", "焦虑",
    ),
    "neutral": ("neutral", "neutrality", "calm", "no emotion", "indifferent", "中性", "中立", "平静", "平和"),
}  # fmt: skip

_LEAD = r"[\s>*_#`\-]*"  # markdown decoration a line may start with
_EMOTION_KEYS = (
    "the response emotion", "response emotion", "predicted emotion", "emotion label", "the emotion", "emotion",
    "回复情感", "情感", "情绪",
)  # fmt: skip
_RESPONSE_KEYS = ("the response", "response", "the reply", "reply", "answer", "回复", "回答")
_STOP_KEYS = (
    "user", "human", "assistant", "system", "emotion", "response", "reply", "utterance", "current utterance",
    "background", "dialogue history", "history", "reference reply", "reference", "note", "notes", "nb", "p.s",
    "ps", "explanation", "example", "用户", "助手", "情感", "情绪", "回复", "背景", "历史对话", "当前话语", "参考回复",
    "参考", "注", "注意", "说明",
)  # fmt: skip
_EMOTION_LINE = re.compile(
    rf"{_LEAD}(?:{'|'.join(_EMOTION_KEYS)})(?:\*\*|__)?[ \t]*(?:[:：=]|-(?=\s))(?:\*\*|__)?[ \t]*", re.IGNORECASE
)
_RESPONSE_LINE = re.compile(rf"{_LEAD}(?:{'|'.join(_RESPONSE_KEYS)})(?:\*\*|__)?[ \t]*[:：](?:\*\*|__)?", re.IGNORECASE)
_RESPONSE_INLINE = re.compile(
    rf"(?:^|[\s,;，；|.。]){_LEAD}(?:{'|'.join(_RESPONSE_KEYS)})(?:\*\*|__)?[ \t]*[:：](?:\*\*|__)?", re.IGNORECASE
)
_BRACKETED = re.compile(rf"{_LEAD}[\[(（【<]\s*([^\])）】>\n]{{1,24}}?)\s*[\])）】>][ \t]*[:：\-]?", re.IGNORECASE)
_LABEL_COLON = re.compile(rf"{_LEAD}([A-Za-z\u4e00-\u9fff][A-Za-z\u4e00-\u9fff ]{{0,19}}?)[ \t]*[:：]", re.IGNORECASE)
_STOP_LINE = re.compile(
    rf"\n[ \t]*[>*_#`\-]*[ \t]*(?:{'|'.join(_STOP_KEYS)})(?:\*\*|__)?[ \t]*[:：(（]|\n[ \t]*###", re.IGNORECASE
)
_STOP_TOKEN = re.compile(r"<\||</s>|\[/?INST\]")
# A line that starts a turn of any named speaker ("Joey:", "Speaker 2:", "小明："), or a bracketed note line.
_SPEAKER_LINE = re.compile(
    r"\n[ \t]*[>*_#`\-]*[ \t]*(?:[A-Z][\w.'\- ]{0,24}?|[\u4e00-\u9fff]{1,8})[ \t]*(?:\*\*|__)?[:：]|\n[ \t]*[(（\[【]"
)
_SPEAKER_PARTIAL = re.compile(
    r"[ \t]*[>*_#`\-]*[ \t]*(?:[A-Z][\w.'\- ]{0,24}|[\u4e00-\u9fff]{1,8})?[ \t]*(?:\*\*|__|\*|_)?"
)
# A note the model appends on the reply's own line: "(No copying)", "(Note: ...)", " Note: ...", " P.S. ...".
_NOTE_INLINE = re.compile(
    r"[ \t]*[(（\[]\s*(?:no copy|not copied|not to be copied|note|nb[ \t]*[:：)）]|reference|example|"
    r"this (?:response|reply)|the (?:response|reply)|response|reply|emotion|注|参考)|"
    r"(?<=\S)[ \t]+(?:note|nb|p\.?s\.?)[ \t]*[:：]",
    re.IGNORECASE,
)
_NOTE_OPENERS = ("note", "nb", "p.s.", "ps")
# A speaker tag the model puts before its reply ("(Rachel) ...", "Rachel: ..."), and what may still become one.
_SPEAKER_TAG = re.compile(r"(?:[(（]\s*[A-Z][\w .\-]{0,24}?\s*[)）]|[A-Z][\w.\-]{0,24}[:：])[ \t]*")
_SPEAKER_TAG_PARTIAL = re.compile(r"[(（]\s*[A-Z][\w .\-]{0,24}|[A-Z][\w.\-]{0,24}")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")  # a reply is one paragraph: what follows a blank line is another text
_DECORATION = re.compile(r"^[\s>*_#`\-]+")
_QUOTES = {'"': '"', "“": "”", "「": "」", "『": "』"}
_VALUE_STRIP = " \t\r\n*_`'\"“”「」『』[]()（）【】<>.,;:!?。，；：！？-"
_WORD = re.compile(r"[a-z]+")

_KEY_CANDIDATES = tuple(
    key.replace(" ", "") + sep for key in (*_EMOTION_KEYS, *_RESPONSE_KEYS) for sep in (":", "：", "=", "-")
)
_RESPONSE_CANDIDATES = tuple(key.replace(" ", "") + colon for key in _RESPONSE_KEYS for colon in (":", "："))
_STOP_CANDIDATES = (*(key.replace(" ", "") for key in _STOP_KEYS), "###")
_LABEL_WORDS = tuple(word for words in SYNONYMS.values() for word in words)


def match_label(value: str, labels: Sequence[str] = EMOTIONS, *, exact: bool = False) -> str | None:
    """The label of ``labels`` that ``value`` names (the label itself, a synonym, a Chinese name), else None.

    With ``exact=False`` the first such word in a longer value counts too ("shock, surprise" -> surprise,
    "a mix of sadness and hope" -> sad).
    """
    v = value.strip(_VALUE_STRIP).lower().replace("**", "").strip(_VALUE_STRIP)
    if not v:
        return None
    by_lower = {label.lower(): label for label in labels}
    candidates = [v]
    if not exact:
        words = _WORD.findall(v)[:12]
        pairs = [f"{a} {b}" for a, b in itertools.pairwise(words)]
        candidates += [phrase for pair in itertools.zip_longest(pairs, words) for phrase in pair if phrase]
        found = [(v.find(word), word) for word in _LABEL_WORDS if not word.isascii() and word in v]
        candidates += [word for _, word in sorted(found)]
    for candidate in candidates:
        if candidate in by_lower:
            return by_lower[candidate]
        for canonical, synonyms in SYNONYMS.items():
            if candidate in synonyms:
                if canonical in labels:
                    return canonical
                for label in labels:
                    if label.lower() in synonyms:
                        return label
    return None


def _squash(text: str) -> str:
    """Lower case, with leading markdown and all spaces, ``*`` and ``_`` removed: the form prefix checks compare."""
    return re.sub(r"[\s*_]", "", _DECORATION.sub("", text)).lower()


def _could_become(partial: str, candidates: Sequence[str]) -> bool:
    """Whether the unfinished line ``partial`` may still grow into one of ``candidates`` (squashed forms)."""
    squashed = _squash(partial)
    return any(candidate.startswith(squashed) for candidate in candidates)


@dataclass(frozen=True)
class _Header:
    """Where the answer's header ends: the emotion it named, where the response starts, the rest of its line."""

    emotion: str | None
    body_start: int
    remainder: str = ""


class StreamingAnswerParser:
    """Incremental parser of one answer: ``feed`` text pieces, then ``finish``; both return result chunks.

    The first chunk carries the emotion (as soon as the header is read); later chunks carry response text.
    ``done`` turns True once the response has ended (a stop marker such as an invented next turn), so the
    caller may stop generating.
    """

    def __init__(self, labels: Sequence[str] = EMOTIONS, *, emotion: str | None = None) -> None:
        """``emotion`` set: the answer's header is already known (closed-set decoding) and every piece fed is
        response text, which is only cut where it ends."""
        self.labels = tuple(labels)
        self._text = ""
        self._header: _Header | None = None if emotion is None else _Header(emotion, 0)
        self._emitted = ""
        self._quote: str | None = None  # the closing quote to drop, once an opening one was dropped
        self.done = False

    @property
    def emotion(self) -> str | None:
        """The emotion read from the header (None before the header is complete or when it names none)."""
        return self._header.emotion if self._header is not None else None

    def feed(self, piece: str) -> list[ELMDResult]:
        """Add generated text; returns the chunks that are now certain."""
        if self.done or not piece:
            return []
        self._text += piece
        return self._advance(final=False)

    def finish(self) -> list[ELMDResult]:
        """End of generation: returns the remaining chunks (at least one chunk overall is always produced)."""
        if self.done and self._header is not None:
            return []
        chunks = self._advance(final=True)
        self.done = True
        return chunks

    def _advance(self, final: bool) -> list[ELMDResult]:
        chunks: list[ELMDResult] = []
        if self._header is None:
            self._header = self._decide(final)
            if self._header is None:
                return chunks
            chunks.append(ELMDResult(self._header.emotion, ""))
        body = self._text[self._header.body_start :]
        cut = _stop_position(body)
        if cut is not None:
            body, self.done, final = body[:cut], True, True
        visible = self._visible(body, final)
        if visible.startswith(self._emitted) and len(visible) > len(self._emitted):
            chunks.append(ELMDResult(self._header.emotion, visible[len(self._emitted) :]))
            self._emitted = visible
        return chunks

    def _visible(self, body: str, final: bool) -> str:
        """The part of ``body`` that belongs to the final response for sure (all of it when ``final``)."""
        if not final:
            body = body[: _unsettled_tail(body)]
        text = body.lstrip()
        if tag := _SPEAKER_TAG.match(text):
            text = text[tag.end() :]
        elif not final and _SPEAKER_TAG_PARTIAL.fullmatch(text):
            return ""
        if self._quote is None and text[:1] in _QUOTES:
            self._quote = _QUOTES[text[0]]
        if self._quote is not None:
            text = text[1:]
        if final:
            text = text.rstrip()
            if self._quote is not None and text.endswith(self._quote):
                text = text[: -len(self._quote)].rstrip()
            if not text and not self._emitted and self._header is not None and self._header.remainder:
                text = self._header.remainder
            return text
        bracket = text.rfind("<")
        if bracket != -1 and len(text) - bracket < 12 and not re.search(r"[\s>]", text[bracket:]):
            text = text[:bracket]
        text = text.rstrip()
        if self._quote is not None:
            text = text.rstrip(self._quote).rstrip()
        return text

    def _decide(self, final: bool) -> _Header | None:
        """Read the header (emotion line, response key, bracketed label...) or None while it may still change."""
        text = self._text
        start = len(text) - len(text.lstrip())
        if start == len(text):
            return _Header(None, start) if final else None
        newline = text.find("\n", start)
        end = newline if newline != -1 else len(text)
        complete = newline != -1 or final
        line = text[start:end]

        match = _RESPONSE_LINE.match(line)
        if match:
            return None if _tentative(line, match.end(), complete) else _Header(None, start + match.end())
        match = _EMOTION_LINE.match(line)
        if match:
            rest = line[match.end() :]
            inline = _RESPONSE_INLINE.search(rest)
            if inline and _tentative(rest, inline.end(), complete):
                return None
            if inline:
                return _Header(match_label(rest[: inline.start()], self.labels), start + match.end() + inline.end())
            if not complete:
                return None
            emotion = match_label(rest, self.labels)
            return self._after_label_line(end, emotion, _label_remainder(rest), final)
        if not complete and _could_become(line, _KEY_CANDIDATES):
            return None
        match = _BRACKETED.match(line)
        if match and not complete and match.end() == len(line):
            return None
        if match:
            emotion = match_label(match.group(1), self.labels, exact=True)
            if emotion is not None:
                return _Header(emotion, start + match.end())
        elif not complete and re.match(rf"{_LEAD}[\[(（【<][^\n]{{0,24}}$", line):
            return None
        match = _LABEL_COLON.match(line)
        if match:
            emotion = match_label(match.group(1), self.labels, exact=True)
            if emotion is not None:
                return _Header(emotion, start + match.end())
        if complete:
            emotion = match_label(line, self.labels, exact=True)
            if emotion is not None:
                return self._after_label_line(end, emotion, "", final)
        elif _could_be_label(line):
            return None
        return _Header(None, start)

    def _after_label_line(self, end: int, emotion: str | None, remainder: str, final: bool) -> _Header | None:
        """Header ending with an emotion line: the response starts on the next non-blank line (after its key)."""
        text = self._text
        start = end
        while start < len(text) and text[start].isspace():
            start += 1
        if start == len(text):
            return _Header(emotion, start, remainder) if final else None
        newline = text.find("\n", start)
        line = text[start : newline if newline != -1 else len(text)]
        match = _RESPONSE_LINE.match(line)
        if match and _tentative(line, match.end(), newline != -1 or final):
            return None
        if match:
            return _Header(emotion, start + match.end(), remainder)
        if newline == -1 and not final and _could_become(line, _RESPONSE_CANDIDATES):
            return None
        return _Header(emotion, start, remainder)


def _tentative(line: str, key_end: int, complete: bool) -> bool:
    """Whether a key match ending at ``key_end`` may still grow (its closing ``**`` not yet generated)."""
    return not complete and line[key_end:] in ("", "*", "_")


def _could_be_label(partial: str) -> bool:
    """Whether an unfinished first line may still become a bare label ("happy") or a label key ("Happy:")."""
    core = _DECORATION.sub("", partial).strip(_VALUE_STRIP).lower().replace("**", "").strip(_VALUE_STRIP)
    return len(partial) <= 32 and any(word.startswith(core) for word in _LABEL_WORDS)


def _label_remainder(value: str) -> str:
    """Text after the label word on an emotion line ("happy. Great news!" -> "Great news!"), used as a fallback."""
    stripped = value.strip()
    match = re.match(r"[*_`\[(（【<\"']*[A-Za-z\u4e00-\u9fff]+[*_`\])）】>\"']*[\s.,;:!?。，；：！？\-—–|]+", stripped)
    return stripped[match.end() :].strip() if match else ""


def _stop_position(body: str) -> int | None:
    """Where the response ends: the first invented next turn, answer key, note, blank line or special token."""
    patterns = (_STOP_LINE, _STOP_TOKEN, _SPEAKER_LINE, _NOTE_INLINE, _BLANK_LINE)
    positions = [m.start() for m in (pattern.search(body) for pattern in patterns) if m is not None]
    return min(positions) if positions else None


def _unsettled_tail(text: str) -> int:
    """Where the part of an unfinished response that may still turn into a stop (a note, a turn) begins."""
    cut = len(text)
    newline = text.rfind("\n")
    if newline != -1:
        line = text[newline + 1 :]
        if _could_become(line, _STOP_CANDIDATES) or _SPEAKER_PARTIAL.fullmatch(line) or line.strip()[:1] in "(（[【":
            cut = newline
    opening = max(text.rfind(bracket) for bracket in "(（[")
    if opening != -1 and len(text) - opening < 40 and not re.search(r"[)）\]]", text[opening:]):
        cut = min(cut, opening)
    word = re.search(r"[ \t]+(\S*)$", text)
    if word and any(opener.startswith(word.group(1).lower()) for opener in _NOTE_OPENERS):
        cut = min(cut, word.start())
    return cut


class AnswerReader:
    """Chat model output (strings, messages or stream chunks) -> :class:`ELMDResult` chunks, fed piece by piece.

    The emotion comes from the first piece's metadata when the chat model chose it (closed-set decoding by
    :class:`~elmd_sdk.models.chat_model.ELMDChatModel`: ``emotion`` and ``emotion_scores``), else it is parsed from
    the text (free mode); the response is cut where it ends. Token counts (``usage_metadata``) ride on the next
    chunk that goes out; the last chunk carries the finish reason (the chat model's, or ``"stop"`` when the reply
    ended before generation did). ``closed=True`` requires the chosen emotion, ``False`` ignores it.
    """

    def __init__(self, labels: Sequence[str] = EMOTIONS, *, closed: bool | None = None) -> None:
        self._labels = labels
        self._closed = closed
        self._parser: StreamingAnswerParser | None = None
        self._usage: dict[str, int] | None = None  # token counts not yet on a chunk
        self._finish_reason: str | None = None

    @property
    def done(self) -> bool:
        """Whether the response has ended (nothing more to feed)."""
        return self._parser is not None and self._parser.done

    def feed(self, piece: str | BaseMessage) -> list[ELMDResult]:
        """The chunks that this piece makes certain."""
        text = _piece_text(piece)
        metadata = piece.response_metadata if isinstance(piece, BaseMessage) else {}
        if isinstance(piece, BaseMessage):
            self._take_usage(piece, metadata)
        if self._parser is not None:
            return self._with_usage(self._parser.feed(text))
        chosen = metadata.get("emotion") if self._closed is not False else None
        if chosen is None and self._closed:
            raise ElmdError("the chat model returned no closed-set emotion (its first chunk has no 'emotion')")
        self._parser = StreamingAnswerParser(self._labels, emotion=chosen)
        if chosen is None:
            return self._with_usage(self._parser.feed(text))
        head = ELMDResult(chosen, "", emotion_scores=dict(metadata.get("emotion_scores") or {}) or None)
        return self._with_usage([head, *self._parser.feed(text)])

    def read(self, pieces: Iterator[str | BaseMessage]) -> Iterator[ELMDResult]:
        """Feed ``pieces`` until the response ends (the rest is not pulled), then finish."""
        for piece in pieces:
            yield from self.feed(piece)
            if self.done:
                break
        yield from self.finish()

    async def aread(self, pieces: AsyncIterator[str | BaseMessage]) -> AsyncIterator[ELMDResult]:
        """Async :meth:`read`."""
        async for piece in pieces:
            for chunk in self.feed(piece):
                yield chunk
            if self.done:
                break
        for chunk in self.finish():
            yield chunk

    def finish(self) -> list[ELMDResult]:
        """The remaining chunks at the end of generation; the last carries the finish reason and unsent usage."""
        if self._parser is None:
            raise ElmdError("the chat model returned nothing")
        chunks = self._with_usage(self._parser.finish())
        end = ELMDResult(None, "", usage=self._usage, finish_reason=self._finish_reason or "stop")
        self._usage = None
        return [*chunks[:-1], chunks[-1] + end] if chunks else [end]

    def _take_usage(self, message: BaseMessage, metadata: Mapping[str, Any]) -> None:
        usage = getattr(message, "usage_metadata", None)
        if usage:
            counts = {key: int(usage[key]) for key in ("input_tokens", "output_tokens", "total_tokens")}
            self._usage = add_usage(self._usage, counts)
        reason = metadata.get("finish_reason")
        if reason is not None and not self.done:
            self._finish_reason = str(reason)

    def _with_usage(self, chunks: list[ELMDResult]) -> list[ELMDResult]:
        if chunks and self._usage is not None:
            chunks = [replace(chunks[0], usage=add_usage(chunks[0].usage, self._usage)), *chunks[1:]]
            self._usage = None
        return chunks


def _piece_text(piece: str | BaseMessage | Any) -> str:
    """Text of a streamed piece: a string or a message (chunk)."""
    if isinstance(piece, BaseMessage):
        return str(piece.text)
    return str(piece)
