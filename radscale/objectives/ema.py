"""Exponential moving averages of weights: DINOv2's teacher and MI2's model EMA share the update."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


@torch.no_grad()
def ema_update_(ema: Iterable[nn.Parameter], current: Iterable[nn.Parameter], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * current, in place, one foreach kernel pair for all tensors."""
    ema = list(ema)
    torch._foreach_mul_(ema, decay)
    torch._foreach_add_(ema, [p.detach() for p in current], alpha=1.0 - decay)


def ema_decay(decay: float, updates: int, warmup: bool) -> float:
    """The decay of EMA update number `updates` (0-based): `decay`, or with warm-up min(decay, (1+t)/(10+t))."""
    return min(decay, (1.0 + updates) / (10.0 + updates)) if warmup else decay
