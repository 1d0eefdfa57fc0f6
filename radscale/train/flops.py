"""FLOPs per training sample, counted once with torch's FlopCounterMode on one forward+backward."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops_per_sample(task: nn.Module, inputs: dict) -> float:
    """Runs one fwd+bwd on `inputs` and restores the task's mutable state (centers, RNG) afterwards."""
    saved = task.extra_state()
    with FlopCounterMode(display=False) as counter:
        loss, _ = task(**inputs, progress=0.0)
        loss.backward()
    task.zero_grad(set_to_none=True)
    task.load_extra_state(saved)
    return counter.get_total_flops() / max(1, inputs["images"].shape[0])
