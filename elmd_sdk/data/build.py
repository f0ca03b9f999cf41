"""From annotated sentences to samples: label mapping, merging a speaker's sentences, (u, r, H) pairs.

Every corpus loader produces :class:`~elmd_sdk.data.records.Dialogue` objects of raw
:class:`~elmd_sdk.data.records.Sentence` rows; this module is
the one place that turns them into :class:`~elmd_sdk.data.records.Sample` records (paper section 4.1).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from elmd_sdk.data.background import Backgrounds
from elmd_sdk.data.labels import LabelMap
from elmd_sdk.data.records import Dialogue, Sample, Sentence, Turn, VideoRef

_UNSPACED_SCRIPT = re.compile(
    "[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff]"
)
"""Characters of scripts written without spaces between words: CJK punctuation, kana, Han, full-width forms."""


@dataclass
class BuildResult:
    """Samples built from a corpus, with what was dropped along the way (for the user's report)."""

    samples: list[Sample]
    dropped_labels: Counter[str] = field(default_factory=Counter)
    skipped_pairs: int = 0


def predominant_emotion(emotions: Sequence[str | None]) -> str | None:
    """The most frequent emotion among a turn's sentences (None entries ignored).

    Tie rule: among the emotions tied for most frequent, the one the speaker expressed last wins,
    since the turn's closing sentence is what the next speaker responds to. None if nothing is labelled.
    """
    counts = Counter(e for e in emotions if e is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(e for e in reversed(emotions) if e is not None and counts[e] == top)


def _merge_videos(videos: list[VideoRef | None]) -> VideoRef | None:
    """One clip for a merged turn: the span of its sentences in a shared clip, else the last sentence's clip."""
    first, last = videos[0], videos[-1]
    if first is None or last is None or any(v is None or v.path != last.path for v in videos):
        return last
    return VideoRef(last.path, first.start, last.end)


def join_sentences(texts: Sequence[str]) -> str:
    """One text from consecutive sentences: a space between two, none where the break touches Chinese or Japanese
    script on either side (``你好`` + ``欢迎光临`` -> ``你好欢迎光临``; ``Hi.`` + ``Ross!`` -> ``Hi. Ross!``)."""
    joined = texts[0] if texts else ""
    for text in texts[1:]:
        unspaced = _UNSPACED_SCRIPT.match(joined[-1:]) or _UNSPACED_SCRIPT.match(text[:1])
        joined += text if unspaced else f" {text}"
    return joined


def merge_turns(
    sentences: Iterable[Sentence], emotions: Iterable[str | None], *, joiner: str | None = None
) -> list[tuple[Turn, VideoRef | None]]:
    """Merge runs of consecutive sentences by one speaker into single turns.

    A merged turn's text joins the sentences with ``joiner`` (None: :func:`join_sentences`), its emotion is their
    :func:`predominant_emotion`, and its video is :func:`_merge_videos` of theirs.
    """
    merged: list[tuple[Turn, VideoRef | None]] = []
    for speaker, run in itertools.groupby(zip(sentences, emotions, strict=True), key=lambda pair: pair[0].speaker):
        group = list(run)
        texts = [s.text for s, _ in group]
        text = join_sentences(texts) if joiner is None else joiner.join(texts)
        emotion = predominant_emotion([e for _, e in group])
        merged.append((Turn(speaker, text, emotion), _merge_videos([s.video for s, _ in group])))
    return merged


def build_samples(
    dialogues: Iterable[Dialogue],
    labels: LabelMap,
    *,
    drop_unmapped: bool = False,
    max_history: int | None = None,
    joiner: str | None = None,
    backgrounds: Backgrounds | None = None,
) -> BuildResult:
    """Map labels onto the seven, merge each speaker's consecutive sentences, and emit one sample per turn pair.

    Every merged turn u_i followed by a turn r = u_{i+1} (by another speaker, as merging guarantees)
    yields Sample(u=u_i, r=u_{i+1}, history = the turns before u_i, the last ``max_history`` of them
    if set), with u_i's video and the dialogue's background B from ``backgrounds`` (by dialogue id, else by
    show). An unmapped label is an InputError unless ``drop_unmapped``: then the sentence stays in the dialogue
    without a label, and pairs whose u or r ends up unlabelled are skipped.
    """
    if max_history is not None and max_history < 0:
        raise ValueError("max_history must be >= 0 or None")
    result = BuildResult(samples=[])
    for dialogue in dialogues:
        emotions = []
        for s in dialogue.sentences:
            emotion = labels.resolve(
                s.label, drop_unmapped=drop_unmapped, file=s.file, line=s.line, field=s.label_field
            )
            if emotion is None:
                result.dropped_labels[s.label] += 1
            emotions.append(emotion)
        turns = merge_turns(dialogue.sentences, emotions, joiner=joiner)
        background = backgrounds.lookup(dialogue.dialogue_id, dialogue.show) if backgrounds is not None else None
        for i in range(len(turns) - 1):
            (utterance, video), (response, _) = turns[i], turns[i + 1]
            if utterance.emotion is None or response.emotion is None:
                result.skipped_pairs += 1
                continue
            first = 0 if max_history is None else max(0, i - max_history)
            history = [turn for turn, _ in turns[first:i]]
            result.samples.append(Sample(dialogue.dialogue_id, utterance, response, history, background, video))
    return result


def cap_history(sample: Sample, max_history: int | None) -> Sample:
    """The sample with only its last ``max_history`` history turns (unchanged if None)."""
    if max_history is None or len(sample.history) <= max_history:
        return sample
    return dataclasses.replace(sample, history=sample.history[len(sample.history) - max_history :])
