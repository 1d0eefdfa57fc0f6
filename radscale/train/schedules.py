"""Schedules as pure functions of budget progress in [0, 1] (the step count of a timed trial is unknown)."""
from __future__ import annotations

from radscale.objectives.progress import cosine

__all__ = ["cosine", "warmup_cosine"]


def warmup_cosine(progress: float, peak: float, warmup: float, final: float) -> float:
    """Linear warm-up to `peak` over the first `warmup` fraction, then cosine to `final`."""
    p = min(max(progress, 0.0), 1.0)
    if warmup > 0 and p < warmup:
        return peak * p / warmup
    return cosine((p - warmup) / (1.0 - warmup) if warmup < 1 else 1.0, peak, final)
