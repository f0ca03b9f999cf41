"""Learning-rate schedules the ERM, REP and EERG trainers share, as a pure function of the step.

Being a function of ``(step, total)`` alone, a schedule needs no state in a checkpoint: a resumed run
sets the same learning rate at every step as an uninterrupted one.
"""

from __future__ import annotations

LR_SCHEDULES = ("linear", "constant")  # "linear": decay to 0 over the run (transformers Trainer default)


def lr_factor(step: int, total: int, schedule: str) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based) of ``total``."""
    return 1.0 if schedule == "constant" else max(0.0, 1.0 - step / max(total, 1))
