"""Progress-driven schedule shapes the objectives use (teacher momentum and temperature): pure functions of
budget progress in [0, 1]; train/schedules.py builds the trainer's schedules on them (objectives sit below train)."""
from __future__ import annotations

import math


def cosine(progress: float, start: float, end: float) -> float:
    p = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p))
