"""One entry point from a corpus file in any supported format to samples (``elmd-sdk data prepare``)."""

from __future__ import annotations

from pathlib import Path

from elmd_sdk.data.background import Backgrounds, read_backgrounds
from elmd_sdk.data.build import BuildResult, build_samples, cap_history
from elmd_sdk.data.cped import load_cped
from elmd_sdk.data.jsonl import iter_jsonl
from elmd_sdk.data.labels import builtin_label_map, read_label_map
from elmd_sdk.data.m3ed import DEFAULT_TICKS_PER_SECOND, load_m3ed
from elmd_sdk.data.meld import load_meld
from elmd_sdk.errors import InputError

FORMATS: tuple[str, ...] = ("m3ed", "meld", "cped", "jsonl")
"""Input formats: M3ED/MMED annotation.json, MELD CSV, CPED CSV, native JSONL."""


def prepare_corpus(
    fmt: str,
    path: str | Path,
    *,
    labels: str | Path | None = None,
    drop_unmapped: bool = False,
    video_root: str | Path | None = None,
    max_history: int | None = None,
    ticks_per_second: float = DEFAULT_TICKS_PER_SECOND,
    encoding: str = "utf-8",
    background: str | Path | None = None,
) -> BuildResult:
    """Load ``path`` in format ``fmt`` and build its samples.

    ``labels`` is a mapping file replacing the corpus's shipped one; ``ticks_per_second`` is M3ED's
    sub-second unit; ``encoding`` is the input's text encoding; ``background`` is a JSON file mapping dialogue
    ids or shows to the background B of their samples (:mod:`~elmd_sdk.data.background`). ``jsonl`` input is
    validated and only has its history capped and its backgrounds set: label and video options do not apply to
    it. A corpus that yields no sample is an InputError naming the file.
    """
    backgrounds = read_backgrounds(background) if background is not None else None
    result = _prepare(
        fmt, path, labels, drop_unmapped, video_root, max_history, ticks_per_second, encoding, backgrounds
    )
    if not result.samples:
        dropped = ", ".join(f"{label!r}: {n}" for label, n in result.dropped_labels.most_common())
        raise InputError(
            "yields no samples (a sample needs an utterance followed by another speaker's labelled reply"
            + (f"; dropped unmapped labels {dropped}" if dropped else "")
            + ")",
            file=path,
        )
    return result


def _prepare(
    fmt: str,
    path: str | Path,
    labels: str | Path | None,
    drop_unmapped: bool,
    video_root: str | Path | None,
    max_history: int | None,
    ticks_per_second: float,
    encoding: str,
    backgrounds: Backgrounds | None,
) -> BuildResult:
    if fmt == "jsonl":
        for option, value in (("--labels", labels), ("--drop-unmapped", drop_unmapped), ("--video-root", video_root)):
            if value:
                raise InputError(
                    "does not apply to --format jsonl (its samples already use the seven labels)", field=option
                )
        samples = [cap_history(sample, max_history) for sample in iter_jsonl(path, encoding)]
        if backgrounds is not None:
            backgrounds.check_keys(sample.dialogue_id for sample in samples)
            samples = [backgrounds.apply(sample) for sample in samples]
        return BuildResult(samples)
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}", field="--format")
    label_map = read_label_map(labels) if labels is not None else builtin_label_map(fmt)
    if fmt == "m3ed":
        dialogues = load_m3ed(path, video_root=video_root, ticks_per_second=ticks_per_second, encoding=encoding)
    elif fmt == "meld":
        dialogues = load_meld(path, video_root=video_root, encoding=encoding)
    else:
        if video_root is not None:
            raise InputError("CPED ships no videos to refer to", field="--video-root")
        dialogues = load_cped(path, encoding=encoding)
    if backgrounds is not None:
        backgrounds.check_keys((d.dialogue_id for d in dialogues), (d.show for d in dialogues))
    return build_samples(
        dialogues, label_map, drop_unmapped=drop_unmapped, max_history=max_history, backgrounds=backgrounds
    )
