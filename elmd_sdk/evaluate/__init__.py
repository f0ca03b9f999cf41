"""Evaluation of an ELMD chain (paper 4.4, 5.1, 5.3): generate for every sample, score, report, and ablate.

One module a job, each readable top to bottom:

* :mod:`~elmd_sdk.evaluate.settings`: :class:`EvalSettings`, how a run generates and scores;
* :mod:`~elmd_sdk.evaluate.run`: :func:`evaluate`, generate with a chain for every sample and score;
* :mod:`~elmd_sdk.evaluate.bundles`: the bundle under evaluation (resolve, identify, load its chain);
* :mod:`~elmd_sdk.evaluate.report`: the JSON report and its confusion-matrix picture, and reading it back;
* :mod:`~elmd_sdk.evaluate.ablations`: :func:`run_ablations`, the rows of Table 3;
* :mod:`~elmd_sdk.evaluate.statistics`: per-sample statistics, every metric recomputed on bootstrap resamples;
* :mod:`~elmd_sdk.evaluate.bootstrap`: :func:`add_bootstrap`, 95% intervals and paired differences in a report;
* :mod:`~elmd_sdk.evaluate.rescore`: :func:`rescore_report`, a report's stored generations scored again;
* :mod:`~elmd_sdk.evaluate.tables`: :func:`print_report`, a report as rich tables.
"""

from elmd_sdk.chains.input import sample_input  # the chain input of a sample, exported for evaluation scripts
from elmd_sdk.evaluate.ablations import (
    ABLATIONS,
    AblationRow,
    Variant,
    classify_variant,
    parse_variant,
    run_ablations,
)
from elmd_sdk.evaluate.bootstrap import add_bootstrap, check_comparable, check_same_samples, resample_indices
from elmd_sdk.evaluate.bundles import bundle_identity, calibrate, load_chain, load_retriever, resolve_bundle
from elmd_sdk.evaluate.report import ablation_report, eval_report, read_report, write_report
from elmd_sdk.evaluate.rescore import rescore_report
from elmd_sdk.evaluate.run import (
    EvalResult,
    Generation,
    evaluate,
    generate,
    generation_settings,
    score,
)
from elmd_sdk.evaluate.settings import EvalSettings
from elmd_sdk.evaluate.tables import print_report

__all__ = [
    "ABLATIONS",
    "AblationRow",
    "EvalResult",
    "EvalSettings",
    "Generation",
    "Variant",
    "ablation_report",
    "add_bootstrap",
    "bundle_identity",
    "calibrate",
    "check_comparable",
    "check_same_samples",
    "classify_variant",
    "eval_report",
    "evaluate",
    "generate",
    "generation_settings",
    "load_chain",
    "load_retriever",
    "parse_variant",
    "print_report",
    "read_report",
    "resample_indices",
    "rescore_report",
    "resolve_bundle",
    "run_ablations",
    "sample_input",
    "score",
    "write_report",
]
