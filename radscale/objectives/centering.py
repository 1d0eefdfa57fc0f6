"""Turning teacher logits into targets: EMA centering, Sinkhorn-Knopp, and the teacher temperature schedule.

Both keep the teacher from collapsing (DINO, Caron et al. 2021 §3.1; DINOv2, Oquab et al. 2023 §4 uses
Sinkhorn-Knopp from SwAV, Caron et al. 2020, Alg. 1).

Timing of EMA centering (pinned by tests): at step t the teacher targets use the center c_t, and the batch of
step t only enters c_{t+1} = m * c_t + (1 - m) * mean(batch_t). DINOv2 gets the same order by deferring its
asynchronous all-reduce to the next step. Here :meth:`EMACenter.teacher_probs` never changes state and
:meth:`EMACenter.update` must be called after it; the pure functions do the same with the state passed in/out.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from radscale.objectives.distributed import all_reduce_max, all_reduce_sum

__all__ = [
    "EMACenter",
    "centered_teacher_probs",
    "sinkhorn_knopp",
    "teacher_temperature",
    "updated_center",
]


def centered_teacher_probs(teacher_logits: Tensor, center: Tensor, teacher_temp: float) -> Tensor:
    """softmax((logits - center) / tau_t) over the last dim, in at least float32, without gradient."""
    with torch.no_grad():
        x = teacher_logits.to(torch.promote_types(teacher_logits.dtype, torch.float32))
        return F.softmax((x - center) / teacher_temp, dim=-1)


def updated_center(center: Tensor, teacher_logits: Tensor, momentum: float) -> Tensor:
    """c <- m * c + (1 - m) * mean of ``teacher_logits`` rows over *all ranks* (sum and count all-reduced).

    ``teacher_logits`` is [..., K]; every leading index is one row of the mean. Counts are reduced too, so
    ranks with different numbers of rows still give the exact global mean (DINOv2's iBOT center averages
    per-rank token means instead; the two agree when every rank holds the same number of tokens).
    """
    with torch.no_grad():
        rows = teacher_logits.detach().to(center.dtype).reshape(-1, teacher_logits.shape[-1])
        packed = torch.cat([rows.sum(dim=0), rows.new_full((1,), float(rows.shape[0]))])  # no host copy
        packed = all_reduce_sum(packed)  # one collective for sum and count
        batch_mean = packed[:-1] / packed[-1].clamp(min=1.0)
        return center * momentum + batch_mean * (1.0 - momentum)


class EMACenter:
    """DINO "centering" state: one float32 center vector of size K, updated by EMA of teacher logits.

    Use per step:  ``probs = c.teacher_probs(logits, tau_t)``  then  ``c.update(logits)``.
    """

    def __init__(self, dim: int, momentum: float = 0.9, device: Optional[torch.device] = None) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"EMACenter: momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        self.center = torch.zeros(dim, dtype=torch.float32, device=device)

    def teacher_probs(self, teacher_logits: Tensor, teacher_temp: float) -> Tensor:
        """Targets for this step from the current center; does not change the center."""
        self._follow(teacher_logits)
        return centered_teacher_probs(teacher_logits, self.center, teacher_temp)

    def update(self, teacher_logits: Tensor) -> None:
        """Fold this step's teacher logits into the center; takes effect from the next ``teacher_probs``."""
        self._follow(teacher_logits)
        self.center = updated_center(self.center, teacher_logits, self.momentum)

    def _follow(self, logits: Tensor) -> None:
        # Not an nn.Module: task.to(cuda) and the DeepSpeed engine never move this buffer, so it follows the logits.
        if self.center.device != logits.device:
            self.center = self.center.to(logits.device)

    def state_dict(self) -> dict[str, Tensor | float]:
        return {"center": self.center.clone(), "momentum": self.momentum}

    def load_state_dict(self, state: dict[str, Tensor | float]) -> None:
        center = state["center"]
        if not isinstance(center, Tensor) or center.shape != self.center.shape:
            raise ValueError(f"EMACenter.load_state_dict: 'center' must have shape {tuple(self.center.shape)}")
        self.center = center.to(device=self.center.device, dtype=torch.float32).clone()
        self.momentum = float(state["momentum"])


def sinkhorn_knopp(
    teacher_logits: Tensor,
    teacher_temp: float,
    n_iterations: int = 3,
    n_masked: Optional[Tensor] = None,
) -> Tensor:
    """Sinkhorn-Knopp teacher targets over the *global* batch (all ranks), in float32 (float64 input stays).

    Starting from Q = exp(logits / tau_t) over the B samples of all ranks, alternately rescale prototype
    totals (columns) to 1/K and sample totals (rows) to 1/B, ``n_iterations`` times, then scale rows by B.
    Guarantee: every returned row sums to 1 (the last step is the row step); each prototype's total mass over
    the global batch approaches B/K as iterations grow (approximately after DINOv2's 3).

    Args:
        teacher_logits: [N, K] teacher head outputs on this rank.
        teacher_temp: tau_t.
        n_iterations: Sinkhorn iterations (DINOv2: 3).
        n_masked: number of real rows on this rank when ``teacher_logits`` is a padded buffer (iBOT masked
            tokens); rows from ``n_masked`` on are ignored and returned as zeros. Default: all N rows.

    Returns:
        [N, K] assignment (float32, or float64 for float64 input), no gradient.
    """
    if teacher_logits.dim() != 2:
        raise ValueError(f"sinkhorn_knopp: expected [N, K] logits, got {tuple(teacher_logits.shape)}")
    if n_iterations < 1:
        raise ValueError(f"sinkhorn_knopp: n_iterations must be >= 1, got {n_iterations}")
    with torch.no_grad():
        x = teacher_logits.detach().to(torch.promote_types(teacher_logits.dtype, torch.float32))
        n_rows, k = x.shape
        valid = torch.arange(n_rows, device=x.device) < (n_rows if n_masked is None else n_masked.to(x.device))
        x = x.masked_fill(~valid.unsqueeze(-1), float("-inf"))
        # Scaling a prototype column by a constant is undone exactly by the first column normalisation, so
        # subtracting each prototype's global max changes nothing but keeps exp() finite for small tau_t.
        shift = all_reduce_max(x.max(dim=0, keepdim=True).values.clamp(min=-1e30))
        q = torch.exp((x - shift) / teacher_temp)  # padded rows -> exactly 0
        n_samples = all_reduce_sum(valid.sum().float().reshape(1))  # B over all ranks
        tiny = torch.finfo(q.dtype).tiny  # guards 0/0 only when a rank (or all) holds no real rows
        q = q / all_reduce_sum(q.sum().reshape(1)).clamp(min=tiny)
        for _ in range(n_iterations):
            # Prototype totals to 1/K over the global batch, then each sample's total to 1/B.
            q = q / (all_reduce_sum(q.sum(dim=0, keepdim=True)) * k).clamp(min=tiny)
            q = q / (q.sum(dim=1, keepdim=True) * n_samples).clamp(min=tiny)
        return q * n_samples


def teacher_temperature(
    progress: float,
    start: float = 0.04,
    end: float = 0.07,
    warmup_fraction: float = 0.3,
) -> float:
    """Teacher temperature at training ``progress`` in [0, 1] (fraction of the budget spent).

    Linear warm-up from ``start`` to ``end`` over the first ``warmup_fraction`` of the budget, then constant:
    DINOv2's default (0.04 -> 0.07 over 30 of 100 epochs), expressed in budget progress because a time-budgeted
    trial does not know its number of steps in advance. Progress above 1 (the step that crosses the budget)
    is clamped.
    """
    if math.isnan(progress) or progress < 0.0:
        raise ValueError(f"teacher_temperature: progress must be >= 0, got {progress}")
    if not 0.0 <= warmup_fraction <= 1.0:
        raise ValueError(f"teacher_temperature: warmup_fraction must be in [0, 1], got {warmup_fraction}")
    if progress >= warmup_fraction:
        return end
    return start + (end - start) * progress / warmup_fraction
