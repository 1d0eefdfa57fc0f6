"""Collective helpers for the loop (plain torch.distributed; identity in a single process)."""
from __future__ import annotations

import torch
import torch.distributed as dist


def agree_max(flags: list[float], device: torch.device | None = None) -> list[float]:
    """Element-wise max of `flags` over all ranks: one small all-reduce per loop iteration."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(flags)
    t = torch.tensor(flags, dtype=torch.float32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()
