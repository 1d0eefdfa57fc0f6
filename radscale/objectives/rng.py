"""Saving and restoring a task's torch.Generator across checkpoints.

A generator's state is device-specific (CPU: a 5,056-byte Mersenne Twister state; CUDA: a 16-byte Philox seed
and offset), so the device is saved with the state and the generator is rebuilt there on load.
"""
from __future__ import annotations

import torch


def generator_state(gen: torch.Generator | None) -> dict | None:
    if gen is None:
        return None
    return {"device": str(gen.device), "state": gen.get_state()}


def restore_generator(saved: dict | torch.Tensor | None, seed: int) -> torch.Generator | None:
    """None -> None (the task seeds a fresh generator on first use). A bare tensor is a state saved before
    the device was recorded, which only CPU generators could produce reliably."""
    if saved is None:
        return None
    if isinstance(saved, torch.Tensor):
        saved = {"device": "cpu", "state": saved}
    gen = torch.Generator(device=torch.device(saved["device"])).manual_seed(seed)
    gen.set_state(saved["state"])
    return gen
