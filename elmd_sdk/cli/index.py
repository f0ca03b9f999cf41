"""``elmd-sdk index build``: embed a corpus' utterances and save the (u', r') FAISS index folder."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from elmd_sdk.cli.output import Overwrite
from elmd_sdk.retrievers.index_manifest import IndexConfig

app = typer.Typer(help="Build FAISS indexes of (u', r') demonstration pairs for the EmotionalRetriever.")


class IndexKind(StrEnum):
    """FAISS index types: exact for small corpora, approximate for large ones."""

    flat = "flat"
    hnsw = "hnsw"
    ivf = "ivf"


DEFAULT_KIND = IndexKind(IndexConfig.index_type)


@app.command("build")
def build(
    data: Annotated[
        Path, typer.Option("--data", help="Corpus JSONL (elmd-sdk data prepare); each (u, r) is an entry.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Index folder to write.")],
    erm: Annotated[
        Path | None, typer.Option("--erm", help="Trained ERM folder (elmd-sdk train erm) to embed with.")
    ] = None,
    encoder: Annotated[
        str | None,
        typer.Option(
            "--encoder",
            help="Plain sentence-transformers model name or path instead of --erm (the baseline); "
            "'default' = the bundled all-MiniLM-L6-v2.",
        ),
    ] = None,
    index_type: Annotated[IndexKind, typer.Option("--index-type", help="flat (exact), hnsw or ivf.")] = DEFAULT_KIND,
    nlist: Annotated[
        int | None, typer.Option("--nlist", min=1, help="IVF lists (default 4*sqrt(n)).")
    ] = IndexConfig.nlist,
    nprobe: Annotated[
        int, typer.Option("--nprobe", min=1, help="IVF lists searched per query (default).")
    ] = IndexConfig.nprobe,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Encoding batch size.")] = 64,
    overwrite: Overwrite = False,
) -> None:
    """Embed every utterance u' of --data with the ERM (or a plain encoder) and write the index to --out.

    Under accelerate launch (several GPUs or processes) the processes share the embedding; one index is written.
    """
    import torch

    from elmd_sdk.data import read_jsonl
    from elmd_sdk.errors import InputError
    from elmd_sdk.io import check_output_folder
    from elmd_sdk.retrievers import EncoderSource, build_index
    from elmd_sdk.retrievers.encoder import ERMEncoder
    from elmd_sdk.retrievers.index_manifest import MANIFEST_FILE
    from elmd_sdk.sharding import is_main_process, process_device

    check_output_folder(out, MANIFEST_FILE, overwrite=overwrite)
    if (erm is None) == (encoder is None):
        raise InputError("give exactly one of --erm DIR (trained ERM) or --encoder NAME_OR_PATH (plain baseline)")
    samples = read_jsonl(data)
    device = process_device("cuda" if torch.cuda.is_available() else None)  # under accelerate launch: its GPU
    if erm is not None:
        enc = ERMEncoder.load(erm, device)
        source = EncoderSource(kind="erm", path=str(erm))
    else:
        name = None if encoder == "default" else encoder
        enc = ERMEncoder.plain(name, device)
        source = EncoderSource(kind="plain", path=name)
    loaded = build_index(
        enc,
        samples,
        out,
        index_type.value,
        source=source,
        nlist=nlist,
        nprobe=nprobe,
        batch_size=batch_size,
        show_progress=True,
    )
    manifest = loaded.manifest
    if is_main_process():
        typer.echo(f"wrote {manifest.index_type} index of {manifest.count} entries (dim {manifest.dim}) to {out}")
