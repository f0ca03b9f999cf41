"""The mean of per-pair scores on the paper's x100 scale: BLEU, METEOR and ROUGE are each the mean of one score per
(generation, reference) pair. One definition serves a report's value and every bootstrap resample of it
(:mod:`elmd_sdk.evaluate.statistics`): the sum runs left to right, as Python's ``sum``, so the resample that holds
every pair once in order gives exactly the report's value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


def mean_rows_x100(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mean x100 of each row of ``scores`` (rows, pairs) -> (rows,), summed left to right."""
    import numpy as np  # the metrics package stays cheap to import (the command line reads its defaults)

    return 100.0 * np.cumsum(scores, axis=-1)[..., -1] / scores.shape[-1]


def mean_x100(scores: Sequence[float]) -> float:
    """Mean x100 of per-pair scores (at least one)."""
    import numpy as np

    return float(mean_rows_x100(np.asarray(scores, dtype=np.float64)[None])[0])
