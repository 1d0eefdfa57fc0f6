"""Collective helpers for the loop (plain torch.distributed; identity in a single process)."""
from __future__ import annotations

import torch
import torch.distributed as dist

from radscale.objectives.distributed import control_group


def agree_max(flags: list[float], device: torch.device | None = None) -> list[float]:
    """Element-wise max of `flags` over all ranks: one small all-reduce per loop iteration. With a control
    group (objectives.distributed.set_control_group) it stays on the host: no GPU sync per iteration."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(flags)
    group = control_group()
    t = torch.tensor(flags, dtype=torch.float32, device=None if group is not None else device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return t.tolist()
