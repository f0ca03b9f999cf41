"""Evaluation of an ELMD chain (paper 4.4, 5.1, 5.3): generate for every sample, score, report, and ablate.

One module a job, each readable top to bottom:

* :mod:`~elmd_sdk.evaluate.settings`: :class:`EvalSettings`, how a run generates and scores;
* :mod:`~elmd_sdk.evaluate.run`: :func:`evaluate`, generate with a chain for every sample and score;
* :mod:`~elmd_sdk.evaluate.bundles`: the bundle under evaluation (resolve, identify, load its chain);
* :mod:`~elmd_sdk.evaluate.report`: the JSON report and its confusion-matrix picture;
* :mod:`~elmd_sdk.evaluate.ablations`: :func:`run_ablations`, the rows of Table 3.
"""

from elmd_sdk.evaluate.ablations import (
    ABLATIONS,
    AblationRow,
    Variant,
    classify_variant,
    parse_variant,
    run_ablations,
)
from elmd_sdk.evaluate.bundles import bundle_identity, load_chain, load_retriever, resolve_bundle
from elmd_sdk.evaluate.report import ablation_report, eval_report, write_report
from elmd_sdk.evaluate.run import (
    EvalResult,
    Generation,
    evaluate,
    generate,
    generation_settings,
    sample_input,
    score,
)
from elmd_sdk.evaluate.settings import EvalSettings

__all__ = [
    "ABLATIONS",
    "AblationRow",
    "EvalResult",
    "EvalSettings",
    "Generation",
    "Variant",
    "ablation_report",
    "bundle_identity",
    "classify_variant",
    "eval_report",
    "evaluate",
    "generate",
    "generation_settings",
    "load_chain",
    "load_retriever",
    "parse_variant",
    "resolve_bundle",
    "run_ablations",
    "sample_input",
    "score",
    "write_report",
]
