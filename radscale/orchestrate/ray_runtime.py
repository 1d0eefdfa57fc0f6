"""The Ray Train side of a worker: the `Runtime` that `radscale.train.worker.train_trial` needs."""
from __future__ import annotations

import os
from typing import Any, Iterable

import ray.train
import torch

from radscale.train.distributed import agree_max


class RayTrainRuntime:
    def __init__(self, batch_size: int, prefetch_batches: int, seed: int):
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        local = ctx.get_local_rank()
        self.device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self._shard = ray.train.get_dataset_shard("train")
        self._batch_size = batch_size
        self._prefetch = prefetch_batches
        self._seed = seed
        self._restore_ctx = None

    def agree(self, flags: list[float]) -> list[float]:
        # gloo on CPU, NCCL on GPU: the tensor must live where the backend expects it.
        return agree_max(flags, self.device if self.device.type == "cuda" else None)

    def epoch_batches(self, epoch: int) -> Iterable[dict[str, Any]]:
        return self._shard.iter_torch_batches(batch_size=self._batch_size, drop_last=True,
                                              prefetch_batches=self._prefetch,
                                              local_shuffle_buffer_size=4 * self._batch_size,
                                              local_shuffle_seed=self._seed * 100003 + epoch)

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)

    def restore_dir(self) -> str | None:
        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        self._restore_ctx = ckpt.as_directory()
        return self._restore_ctx.__enter__()


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point: rebuild the specs from plain dicts and run the trial."""
    from radscale.config.specs import EncoderSpec, JobSpec
    from radscale.config.trial import TrialSpec
    from radscale.train.worker import train_trial

    if config.get("cpu_threads"):
        torch.set_num_threads(int(config["cpu_threads"]))
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    job = JobSpec.model_validate(config["job"])
    t = config["trial"]
    trial = TrialSpec(t["sweep"], EncoderSpec.model_validate(t["encoder"]), t["size"], t["seed"])
    runtime = RayTrainRuntime(job.train.batch_size, job.train.prefetch_batches, trial.seed)
    train_trial(job, trial, config["subset_size"], runtime)
