"""``elmd-sdk eval``: score a bundle on a JSONL test set (paper 4.4), or run Table 3's ablations (``--ablations``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from elmd_sdk.metrics.options import BleuTokens, RougeCounting, TextMetricOptions

if TYPE_CHECKING:
    from elmd_sdk.evaluate import AblationRow

_TEXT_METRICS = TextMetricOptions()  # the defaults of --zh-bleu-tokens and --zh-rouge-counting

_COLUMNS = (
    ("BLEU-2", "bleu_2"),
    ("BLEU-4", "bleu_4"),
    ("METEOR", "meteor"),
    ("ROUGE-1", "rouge_1"),
    ("ROUGE-L", "rouge_l"),
    ("emo acc", "emotion_accuracy"),
    ("emo F1", "emotion_macro_f1"),
)
# Table 3 prints BLEU-4, METEOR and ROUGE-L; the emotion scores are added (every metric is in the JSON).
_ABLATION_COLUMNS = tuple(c for c in _COLUMNS if c[1] not in ("bleu_2", "rouge_1"))


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _caption(metrics: dict[str, Any]) -> str:
    synonyms = "with WordNet synonyms" if metrics.get("meteor_synonyms") else "without synonyms (no offline WordNet)"
    return (
        f"x100, {metrics['count']} samples; tokens: {metrics['tokenization']}; BLEU on {metrics['bleu_tokens']}; "
        f"ROUGE-1 {metrics['rouge_counting']} counts; METEOR {synonyms}"
    )


def _print_scores(title: str, label: str, metrics: dict[str, Any]) -> None:
    """One evaluation's metrics as a rich table."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=_caption(metrics), box=box.SIMPLE_HEAD)
    table.add_column("model", no_wrap=True)
    for header, _ in _COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    table.add_row(label, *(_cell(metrics.get(key)) for _, key in _COLUMNS))
    console = Console()
    console.print(table)
    console.print(_reply_lines(metrics), highlight=False)


def _reply_lines(metrics: dict[str, Any]) -> str:
    """Reply checks, the emotion baselines and the utterance emotion, one line each (those that were scored)."""
    lines = [
        f"replies: distinct-1 {_cell(metrics.get('distinct_1'))}, distinct-2 {_cell(metrics.get('distinct_2'))}, "
        f"copy rate {_cell(metrics.get('copy_rate'))}%, template leaks {_cell(metrics.get('template_leak_rate'))}%"
    ]
    if baselines := metrics.get("emotion_baselines"):
        majority, demo = baselines["majority"], baselines["demonstration"]
        lines.append(
            f"emotion baselines on the same samples: majority ({majority['label']}) acc "
            f"{_cell(majority['emotion_accuracy'])} F1 {_cell(majority['emotion_macro_f1'])}; demonstration e' acc "
            f"{_cell(demo['emotion_accuracy'])} F1 {_cell(demo['emotion_macro_f1'])}"
        )
    if utterance := metrics.get("utterance_emotion"):
        lines.append(
            f"utterance emotion: acc {_cell(utterance['emotion_accuracy'])}, "
            f"weighted F1 {_cell(utterance['emotion_weighted_f1'])}"
        )
    return "\n".join(lines)


def _print_ablations(title: str, rows: list[AblationRow]) -> None:
    """Table 3 as a rich table (rows without inputs say "not provided"), then each row's source and caveat."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    scored = next((row.result.metrics for row in rows if row.result is not None), None)
    table = Table(title=title, caption=_caption(scored) if scored else None, box=box.SIMPLE_HEAD)
    table.add_column("model", no_wrap=True)
    for header, _ in _ABLATION_COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for row in rows:
        metrics = row.result.metrics if row.result is not None else {}
        table.add_row(row.label, *(_cell(metrics.get(key)) for _, key in _ABLATION_COLUMNS), row.status)
    console = Console()
    console.print(table)
    for row in rows:
        detail = "; ".join(part for part in (row.source, row.note) if part)
        console.print(f"{row.label}: {detail}", highlight=False)


def command(
    data: Annotated[Path, typer.Option("--data", help="Test samples (native JSONL, elmd-sdk data prepare).")],
    out: Annotated[Path, typer.Option("--out", help="Report JSON to write (metrics, settings, every generation).")],
    bundle: Annotated[
        str | None, typer.Option("--bundle", help="Bundle folder; 'default' or omitted = the embedded default.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Evaluate only the first N samples.")] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", min=1, help="Reply length limit (default: the bundle's).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed, applied to every sample.")] = 0,
    greedy: Annotated[
        bool | None,
        typer.Option("--greedy/--sample", help="Greedy decoding or nucleus sampling (default: the bundle's)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Samples handed to the chain's batch() at once.")
    ] = 1,
    meteor_synonyms: Annotated[
        bool,
        typer.Option("--meteor-synonyms/--no-meteor-synonyms", help="METEOR with WordNet synonyms where installed."),
    ] = True,
    ablations: Annotated[
        bool, typer.Option("--ablations", help="Table 3: full, w/o ERM, w/o ERT, w/o SSC, w/o V, w/o REP.")
    ] = False,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            help="With --ablations: ROW=DIR for rows needing other trained parts: wo_ert=DIR and wo_ssc=DIR "
            "(an index built with that ERM variant, or a whole bundle), wo_rep=BUNDLE (EERG not started from "
            "REP); wo_erm=BUNDLE / wo_v=BUNDLE replace the inference-time switches by bundles trained that way.",
        ),
    ] = None,
    rows: Annotated[
        str | None, typer.Option("--rows", help="With --ablations: comma-separated subset, e.g. full,wo_erm.")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="torch device (default: CPU).")] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="torch CPU threads (1 is fastest on a busy shared machine)."),
    ] = None,
    emotion_mode: Annotated[
        str,
        typer.Option(
            "--emotion-mode",
            help="closed: the emotion is the most likely label (closed-set decoding); free: the model writes it.",
        ),
    ] = "closed",
    demonstration: Annotated[
        str,
        typer.Option(
            "--demonstration",
            help="exchange: R as an example exchange (u', e', r'); paper: r' with its special instruction only.",
        ),
    ] = "exchange",
    zh_bleu_tokens: Annotated[
        BleuTokens,
        typer.Option(
            "--zh-bleu-tokens",
            help="Chinese BLEU on chars (every character, as ChatGLM2's evaluation) or jieba words.",
        ),
    ] = _TEXT_METRICS.zh_bleu_tokens,
    zh_rouge_counting: Annotated[
        RougeCounting,
        typer.Option(
            "--zh-rouge-counting",
            help="Chinese ROUGE-1 counts each distinct word once (unique: rouge-chinese's default, as ChatGLM2's "
            "evaluation) or with its multiplicity, clipped (clipped: Lin 2004).",
        ),
    ] = _TEXT_METRICS.zh_rouge_counting,
) -> None:
    """Generate a response for every test sample and score BLEU-2/4, METEOR, ROUGE-1/L and emotion accuracy/F1."""
    from elmd_sdk.data import read_jsonl
    from elmd_sdk.errors import InputError
    from elmd_sdk.evaluate import (
        EvalSettings,
        ablation_report,
        bundle_identity,
        classify_variant,
        eval_report,
        evaluate,
        load_chain,
        parse_variant,
        resolve_bundle,
        run_ablations,
        write_report,
    )
    from elmd_sdk.io import check_writable

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if not ablations and (variant or rows):
        raise InputError("--variant and --rows only apply with --ablations", field="--variant" if variant else "--rows")
    settings = EvalSettings(
        max_new_tokens=max_new_tokens,
        seed=seed,
        do_sample=None if greedy is None else not greedy,
        batch_size=batch_size,
        limit=limit,
        meteor_synonyms=meteor_synonyms,
        device=device,
        emotion_mode=emotion_mode,  # type: ignore[arg-type]  # checked by validate()
        demonstration_form=demonstration,  # type: ignore[arg-type]  # checked by validate()
        text_metrics=TextMetricOptions(zh_bleu_tokens=zh_bleu_tokens, zh_rouge_counting=zh_rouge_counting),
    )
    settings.validate()
    check_writable(out)
    variants = [classify_variant(*parse_variant(text)) for text in variant or []]
    bundle_dir = resolve_bundle(bundle)
    identity = bundle_identity(bundle_dir)
    all_samples = read_jsonl(data)
    samples = all_samples[:limit] if limit is not None else all_samples
    if not samples:
        raise InputError("no samples", file=data)
    if ablations:
        wanted = [r.strip() for r in rows.split(",") if r.strip()] if rows else None
        results = run_ablations(bundle_dir, samples, variants, settings, rows=wanted)
        report = ablation_report(
            results,
            settings=settings,
            data=data,
            samples_total=len(all_samples),
            samples_used=len(samples),
            bundle=identity,
            variants=variants,
        )
        written = write_report(out, report)
        _print_ablations(f"Ablations (Table 3) of {identity['name']} on {data.name}", results)
    else:
        chain = load_chain(bundle_dir, settings)
        result = evaluate(
            chain,
            samples,
            batch_size=batch_size,
            meteor_synonyms=meteor_synonyms,
            text_metrics=settings.text_metrics,
            description="generating",
        )
        report = eval_report(result, settings=settings, data=data, samples_total=len(all_samples), bundle=identity)
        written = write_report(out, report)
        _print_scores(f"{identity['name']} on {data.name}", identity["name"], result.metrics)
    typer.echo(f"report written to {out}" + "".join(f", {path}" for path in written[1:]))
