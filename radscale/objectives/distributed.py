"""Collectives the losses use so that one formula is correct on 1 or N ranks.

Every helper is the identity (or a copy) when torch.distributed is not initialised or the world has one rank,
so the same loss code runs in unit tests, on a laptop and under Ray Train / DeepSpeed.

Gathers concatenate along dim 0 in rank order. Ranks may hold different numbers of rows (e.g. a last, shorter
batch): sizes are exchanged first and rows are padded to the largest, then trimmed, because a plain
``all_gather`` with mismatched shapes fails or hangs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "all_gather_no_grad",
    "all_gather_with_grad",
    "all_reduce_max",
    "all_reduce_sum",
    "gathered_sizes",
    "is_distributed",
    "rank",
    "set_control_group",
    "world_size",
]

# A gloo group over the same ranks for host-side metadata (row counts, the loop's flags). On NCCL, exchanging a
# host int means a device tensor and a `.item()`: a GPU sync per gather. Set by the Ray Train runtime on GPUs.
_CONTROL: "dist.ProcessGroup | None" = None


def set_control_group(group: "dist.ProcessGroup | None") -> None:
    """Use `group` (a gloo group over all ranks) for host-side metadata; None = the default group."""
    global _CONTROL
    _CONTROL = group


def control_group() -> "dist.ProcessGroup | None":
    return _CONTROL


def is_distributed() -> bool:
    """True when a process group is up and has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gathered_sizes(x: Tensor) -> list[int]:
    """First-dimension size of ``x`` on every rank, as host ints (one tiny collective; host-only with a control
    group, so no device sync); ``[len(x)]`` when not distributed."""
    if not is_distributed():
        return [x.shape[0]]
    device = "cpu" if _CONTROL is not None else x.device
    local = torch.tensor([x.shape[0]], device=device, dtype=torch.long)
    sizes = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(sizes, local, group=_CONTROL)
    return [int(s.item()) for s in sizes]


def _pad_rows(x: Tensor, n_rows: int) -> Tensor:
    if x.shape[0] == n_rows:
        return x
    pad = [0, 0] * (x.dim() - 1) + [0, n_rows - x.shape[0]]
    return F.pad(x, pad)


def all_gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0 (rank order); no gradient flows back.

    Use for labels, keys and counts that travel with gathered features.
    """
    if not is_distributed():
        return x.detach()
    sizes = gathered_sizes(x)
    padded = _pad_rows(x.detach().contiguous(), max(sizes))
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([o[:n] for o, n in zip(out, sizes)], dim=0)


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0 (rank order), differentiably.

    Backward sums the gradient that every rank computes for this rank's rows (torch's autograd all_gather
    reduce-scatters). When each rank evaluates the same global loss, the local gradient is therefore
    ``world_size * dL/dx``; data-parallel gradient averaging (DDP, DeepSpeed) divides that factor back out,
    so parameters receive exactly the gradient of the single-process loss on the concatenated batch.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    sizes = gathered_sizes(x)
    parts = all_gather(_pad_rows(x, max(sizes)))
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum of ``x`` over ranks without gradient; ``x`` itself is left untouched (returned when single-rank)."""
    if not is_distributed():
        return x.detach()
    out = x.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_max(x: Tensor) -> Tensor:
    """Element-wise maximum of ``x`` over ranks without gradient; ``x`` is left untouched."""
    if not is_distributed():
        return x.detach()
    out = x.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out
