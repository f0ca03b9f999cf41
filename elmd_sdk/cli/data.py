"""``elmd-sdk data``: turn a corpus into native JSONL samples and split them by dialogue."""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from elmd_sdk.cli.output import Overwrite

if TYPE_CHECKING:
    from elmd_sdk.data import Sample

app = typer.Typer(help="Prepare corpora into native JSONL samples and split them by dialogue.", no_args_is_help=True)


class Format(StrEnum):
    """Input formats of ``data prepare``."""

    m3ed = "m3ed"
    meld = "meld"
    cped = "cped"
    jsonl = "jsonl"


def _emotion_table(title: str, columns: list[tuple[str, list[Sample], str]]) -> None:
    """Print a rich table of counts per emotion; each column is (header, samples, 'utterance' or 'response')."""
    from rich.console import Console
    from rich.table import Table

    from elmd_sdk.data import EMOTIONS

    table = Table(title=title)
    table.add_column("emotion")
    for header, _, role in columns:
        table.add_column(f"{header} ({role})", justify="right")
    counts = [Counter(getattr(s, role).emotion for s in samples) for _, samples, role in columns]
    for emotion in EMOTIONS:
        table.add_row(emotion, *(str(c[emotion]) for c in counts))
    table.add_section()
    table.add_row("dialogues", *(str(len({s.dialogue_id for s in samples})) for _, samples, _ in columns))
    table.add_row("samples", *(str(len(samples)) for _, samples, _ in columns))
    Console().print(table)


@app.command()
def prepare(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="Corpus file: annotation.json, CSV or JSONL.")],
    fmt: Annotated[Format, typer.Option("--format", help="Input format.")],
    out: Annotated[Path, typer.Option("--out", help="Output native JSONL file (written atomically).")],
    labels: Annotated[
        Path | None, typer.Option("--labels", help="JSON mapping {corpus label: seven-label emotion or null}.")
    ] = None,
    drop_unmapped: Annotated[
        bool, typer.Option("--drop-unmapped", help="Drop labels the mapping lacks instead of stopping.")
    ] = False,
    video_root: Annotated[Path | None, typer.Option("--video-root", help="Folder of the videos (m3ed, meld).")] = None,
    max_history: Annotated[
        int | None, typer.Option("--max-history", min=0, help="Keep at most N history turns (default: all).")
    ] = None,
    fps: Annotated[
        float, typer.Option("--fps", min=1.0, help="m3ed: units per second of HH:MM:SS:xx's last field (frames).")
    ] = 25.0,
    encoding: Annotated[str, typer.Option("--encoding", help="Text encoding of the input file.")] = "utf-8",
    background: Annotated[
        Path | None,
        typer.Option(
            "--background",
            help="JSON mapping {dialogue id or show: background text} for each sample's background B "
            "(shows: M3ED's show key, CPED's TV_ID; a dialogue's own entry wins).",
        ),
    ] = None,
) -> None:
    """Convert a corpus into native JSONL samples (u, r, history), merging each speaker's sentences."""
    from elmd_sdk.data import prepare_corpus, write_jsonl
    from elmd_sdk.errors import InputError
    from elmd_sdk.io import check_writable

    if out.resolve() == input_path.resolve():
        raise InputError("is the input file: it would be overwritten; choose another --out", file=out, field="--out")
    check_writable(out)

    result = prepare_corpus(
        fmt.value,
        input_path,
        labels=labels,
        drop_unmapped=drop_unmapped,
        video_root=video_root,
        max_history=max_history,
        ticks_per_second=fps,
        encoding=encoding,
        background=background,
    )
    write_jsonl(out, result.samples)
    _emotion_table(str(out), [("u", result.samples, "utterance"), ("r", result.samples, "response")])
    if result.dropped_labels:
        dropped = ", ".join(f"{label!r}: {n}" for label, n in result.dropped_labels.most_common())
        typer.echo(f"dropped unmapped labels ({dropped}); skipped {result.skipped_pairs} unlabelled (u, r) pairs")


@app.command()
def split(
    input_path: Annotated[Path, typer.Argument(metavar="IN", help="Native JSONL samples.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for train.jsonl, valid.jsonl, test.jsonl.")],
    ratios: Annotated[str, typer.Option("--ratios", help="train:valid:test weights by sample count.")] = "8:1:1",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the dialogue shuffle.")] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Split samples by dialogue (no dialogue in two splits), deterministically for a given seed; --out gets
    train.jsonl, valid.jsonl, test.jsonl and split.json (ratios, seed, counts)."""
    from elmd_sdk.data import parse_ratios, read_jsonl, split_samples, write_splits
    from elmd_sdk.data.split import MANIFEST_FILE
    from elmd_sdk.io import check_output_folder

    check_output_folder(out, MANIFEST_FILE, overwrite=overwrite)
    weights = parse_ratios(ratios)
    splits = split_samples(read_jsonl(input_path), weights, seed)
    write_splits(out, splits, weights, seed)
    _emotion_table(f"{out} (ratios {ratios}, seed {seed})", [(n, s, "response") for n, s in splits.items()])
