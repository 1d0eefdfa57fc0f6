"""An in-process runtime for the worker: the CPU twin of the Ray Train worker (tests, debugging)."""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist

from radscale.train.distributed import agree_max


def init_single_process_group(backend: str = "gloo") -> None:
    """DeepSpeed wants torch.distributed; a 1-rank group on loopback is the cheapest real one (gloo for CPU
    tensors; NCCL for CUDA ones, whose ZeRO collectives gloo does not all implement)."""
    if dist.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", LOCAL_SIZE="1")
    dist.init_process_group(backend, rank=0, world_size=1)


class LocalRuntime:
    rank = 0
    world_size = 1

    def __init__(self, make_epoch: Callable[[int], Iterable[dict[str, Any]]], checkpoint_root: str | Path,
                 restore: str | None = None, device: torch.device | str = "cpu", saves_checkpoints: bool = True):
        self.device = torch.device(device)
        self.saves_checkpoints = saves_checkpoints
        init_single_process_group("nccl" if self.device.type == "cuda" else "gloo")   # as the Ray Train worker
        self._make_epoch = make_epoch
        self.root = Path(checkpoint_root)
        self._restore = restore
        self.reports: list[tuple[dict, str | None]] = []

    def agree(self, flags: list[float]) -> list[float]:
        return agree_max(flags)

    def epoch_batches(self, epoch: int) -> Iterable[dict[str, Any]]:
        return self._make_epoch(epoch)

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        kept = None
        if checkpoint_dir:
            kept = str(self.root / f"checkpoint_{len(self.reports):04d}")
            shutil.copytree(checkpoint_dir, kept)
        self.reports.append((dict(metrics), kept))

    def restore_dir(self) -> str | None:
        return self._restore
