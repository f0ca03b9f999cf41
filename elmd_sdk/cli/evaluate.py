"""``elmd-sdk eval``: score a bundle on a JSONL test set (paper 4.4), or run Table 3's ablations (``--ablations``);
bootstrap intervals of the metrics (``--bootstrap``), paired differences from another report (``--compare``), and the
same for a report already written (``--rescore``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from elmd_sdk.cli import generation_options, precision_options
from elmd_sdk.metrics.options import BleuTokens, RougeCounting, TextMetricOptions

if TYPE_CHECKING:
    from elmd_sdk.evaluate import EvalSettings

_TEXT_METRICS = TextMetricOptions()  # the defaults of --zh-bleu-tokens and --zh-rouge-counting


def command(
    out: Annotated[Path, typer.Option("--out", help="Report JSON to write (metrics, settings, every generation).")],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Test samples (native JSONL, elmd-sdk data prepare); not with --rescore."),
    ] = None,
    bundle: Annotated[
        str | None, typer.Option("--bundle", help="Bundle folder; 'default' or omitted = the embedded default.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Evaluate only the first N samples.")] = None,
    max_new_tokens: generation_options.MaxNewTokens = None,
    seed: generation_options.Seed = 0,  # every sample seeded: a run reproducible sample by sample
    sample: generation_options.Sample = None,
    temperature: generation_options.Temperature = None,
    top_p: generation_options.TopP = None,
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
        str | None,
        typer.Option(
            "--rows",
            help="With --ablations: comma-separated subset, e.g. full,wo_erm; base and base_wo_erm add the bundle's "
            "base LLM untuned (no trained prefix or projector) with and without retrieval.",
        ),
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="torch device (default: CPU).")] = None,
    dtype: precision_options.Dtype = None,
    quantize: precision_options.Quantize = None,
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
    emotion_calibration: Annotated[
        bool,
        typer.Option(
            "--emotion-calibration/--no-emotion-calibration",
            help="Closed set: divide the label probabilities by the model's prior: the bundle's validation prior "
            "where it has one, else the prior for content-free inputs (contextual calibration).",
        ),
    ] = True,
    calibrate_on: Annotated[
        Path | None,
        typer.Option(
            "--calibrate-on",
            help="JSONL samples (e.g. a validation set) to fit each evaluated chain's emotion prior on, prompted as "
            "that chain prompts (batch calibration): every row, trained or not, calibrated the same way.",
        ),
    ] = None,
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
    bootstrap: Annotated[
        int,
        typer.Option(
            "--bootstrap",
            min=0,
            help="Resamples N for a 95% percentile interval of every metric (0: none). Paired: resample r draws the "
            "samples in row r of numpy.random.default_rng(SEED).integers(0, n, size=(N, n)), which depends only on "
            "the seed, the number of samples n and N, so runs on the same data and --limit resample the same samples.",
        ),
    ] = 0,
    bootstrap_seed: Annotated[int, typer.Option("--bootstrap-seed", help="Seed of the bootstrap resamples.")] = 0,
    compare: Annotated[
        Path | None,
        typer.Option(
            "--compare",
            help="With --bootstrap: the report of another evaluation of the same samples (data, --limit); adds this "
            "run minus it for every metric, with its interval on the same resamples.",
        ),
    ] = None,
    rescore: Annotated[
        Path | None,
        typer.Option(
            "--rescore",
            help="Score the generations stored in this report again with its own settings (no generation, no "
            "bundle), with --bootstrap/--compare if given, and write the result to --out.",
        ),
    ] = None,
) -> None:
    """Generate a response for every test sample and score BLEU-2/4, METEOR, ROUGE-1/L and emotion accuracy/F1."""
    from elmd_sdk.errors import InputError
    from elmd_sdk.evaluate import (
        EvalSettings,
        add_bootstrap,
        print_report,
        read_report,
        rescore_report,
        write_report,
    )
    from elmd_sdk.io import check_writable
    from elmd_sdk.sharding import is_main_process

    if compare is not None and not bootstrap:
        raise InputError("needs --bootstrap N (the differences' intervals come from the resamples)", field="--compare")
    if compare is not None and ablations:
        raise InputError("applies to one evaluation; Table 3's rows are compared with its full row", field="--compare")
    base = read_report(compare) if compare is not None else None
    if rescore is not None:
        given = {"--data": data, "--bundle": bundle, "--limit": limit, "--ablations": ablations or None}
        if clash := [name for name, value in given.items() if value is not None]:
            raise InputError(
                "re-reads the report's generations and settings: drop " + ", ".join(clash), field="--rescore"
            )
        check_writable(out)
        report = read_report(rescore)
        for line in rescore_report(report, rescore):
            typer.echo(f"warning: {rescore}: re-scored {line}", err=True)
    elif data is None:
        raise InputError("give the test samples (or --rescore REPORT)", field="--data")
    else:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        if not ablations and (variant or rows):
            field = "--variant" if variant else "--rows"
            raise InputError("--variant and --rows only apply with --ablations", field=field)
        settings = EvalSettings(
            generation=generation_options.generation_overrides(
                max_new_tokens=max_new_tokens, seed=seed, sample=sample, temperature=temperature, top_p=top_p
            ),
            batch_size=batch_size,
            limit=limit,
            meteor_synonyms=meteor_synonyms,
            device=device,
            dtype=dtype,
            quantize=quantize,
            emotion_mode=emotion_mode,  # type: ignore[arg-type]  # checked by validate()
            emotion_calibration=emotion_calibration,
            calibrate_on=None if calibrate_on is None else str(calibrate_on),
            demonstration_form=demonstration,  # type: ignore[arg-type]  # checked by validate()
            text_metrics=TextMetricOptions(zh_bleu_tokens=zh_bleu_tokens, zh_rouge_counting=zh_rouge_counting),
        )
        settings.validate()
        check_writable(out)
        report = _generate_and_score(data, settings, bundle, ablations, variant or [], rows, base, compare)
        if not is_main_process():  # under accelerate launch the processes share the samples; the main one writes
            return
        if bootstrap:
            write_report(out, report)  # the generations are kept even if the bootstrap refuses the base report
    if bootstrap:
        add_bootstrap(
            report, resamples=bootstrap, seed=bootstrap_seed, file=rescore or out, base=base, base_file=compare
        )
    written = write_report(out, report)
    print_report(report)
    typer.echo(f"report written to {out}" + "".join(f", {path}" for path in written[1:]))


def _generate_and_score(
    data: Path,
    settings: EvalSettings,
    bundle: str | None,
    ablations: bool,
    variant: list[str],
    rows: str | None,
    base: dict[str, Any] | None,
    base_file: Path | None,
) -> dict[str, Any]:
    """The report of an evaluation (of Table 3's rows with ``ablations``): generate for every sample and score.
    A ``base`` report to compare with must hold the same samples: checked before anything is generated."""
    from elmd_sdk.data import read_jsonl
    from elmd_sdk.errors import InputError
    from elmd_sdk.evaluate import (
        ablation_report,
        bundle_identity,
        calibrate,
        check_same_samples,
        classify_variant,
        eval_report,
        evaluate,
        load_chain,
        parse_variant,
        resolve_bundle,
        run_ablations,
    )

    variants = [classify_variant(*parse_variant(text)) for text in variant]
    bundle_dir = resolve_bundle(bundle)
    identity = bundle_identity(bundle_dir)
    all_samples = read_jsonl(data)
    samples = all_samples[: settings.limit] if settings.limit is not None else all_samples
    if not samples:
        raise InputError("no samples", file=data)
    if base is not None and base_file is not None:
        fields = [
            {"dialogue_id": s.dialogue_id, "utterance": s.utterance.text, "reference": s.response.text} for s in samples
        ]
        check_same_samples(fields, base, base_file)
    if ablations:
        wanted = [r.strip() for r in rows.split(",") if r.strip()] if rows else None
        results = run_ablations(bundle_dir, samples, variants, settings, rows=wanted)
        return ablation_report(
            results,
            settings=settings,
            data=data,
            samples_total=len(all_samples),
            samples_used=len(samples),
            bundle=identity,
            variants=variants,
        )
    result = evaluate(
        calibrate(load_chain(bundle_dir, settings), settings),
        samples,
        batch_size=settings.batch_size,
        meteor_synonyms=settings.meteor_synonyms,
        text_metrics=settings.text_metrics,
        description="generating",
    )
    return eval_report(result, settings=settings, data=data, samples_total=len(all_samples), bundle=identity)
