"""``elmd-sdk bundle create``: an untuned bundle around any causal LM (:mod:`elmd_sdk.bundle.create`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from elmd_sdk.cli import generation_options, precision_options
from elmd_sdk.cli.output import Overwrite

app = typer.Typer(help="Make bundles that chat, serve, eval and calibrate take.")


@app.command("create")
def create(
    llm: Annotated[str, typer.Option("--llm", help="Causal LM: a model folder, a .gguf file or a name.")],
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to write.")],
    index: Annotated[
        Path | None,
        typer.Option("--index", help="Demonstration index (elmd-sdk index build), copied in with its ERM."),
    ] = None,
    language: Annotated[Literal["en", "zh"], typer.Option("--language", help="Prompt wording.")] = "en",
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="JSON file with the list of response emotions offered (default: the seven)."),
    ] = None,
    dtype: precision_options.Dtype = None,
    quantize: precision_options.Quantize = None,
    max_new_tokens: generation_options.MaxNewTokens = None,
    seed: generation_options.Seed = None,
    sample: generation_options.Sample = None,
    temperature: generation_options.Temperature = None,
    top_p: generation_options.TopP = None,
    overwrite: Overwrite = False,
) -> None:
    """Write an untuned bundle (no prefix, no projector, like the embedded default) around --llm; the decoding
    options become the bundle's defaults."""
    from elmd_sdk.bundle.create import create_bundle, read_label_file
    from elmd_sdk.data.labels import EMOTIONS

    manifest = create_bundle(
        out,
        llm,
        index=index,
        language=language,
        labels=read_label_file(labels) if labels is not None else EMOTIONS,
        dtype=dtype or "auto",
        quantize=quantize or "none",
        generation=generation_options.generation_overrides(
            max_new_tokens=max_new_tokens, seed=seed, sample=sample, temperature=temperature, top_p=top_p
        ),
        overwrite=overwrite,
    )
    retrieval = f"the index {index}" if index is not None else "no retrieval"
    typer.echo(f"wrote bundle '{manifest.name}' to {out}: {manifest.base_llm}, {retrieval}, labels {manifest.labels}")
