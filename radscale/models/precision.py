"""The one bf16 rule for training and extraction.

bf16 means autocast: weights, optimizer state, the EMA teacher and the losses' softmaxes stay float32 and only
the matmuls/convolutions run in bf16. Casting the weights themselves (DeepSpeed's `bf16` mode) breaks both
tasks (their float32 crops meet bf16 conv weights) and would stall the EMA teacher: at DINOv2's momenta
(0.992 -> 1) an update of (1 - m) * w falls below half a bf16 ulp once 1 - m < 2**-9.
"""
from __future__ import annotations

import torch


def uses_bf16(precision: str, device: torch.device | str) -> bool:
    """bf16 autocast on a GPU only; on the CPU (no fast bf16 here) train and eval stay float32."""
    return precision == "bf16" and torch.device(device).type == "cuda"
