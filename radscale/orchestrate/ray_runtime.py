"""The Ray Train side of a worker: the `Runtime` that `radscale.train.worker.train_trial` needs, and the
watcher that turns the sweep's stop file into rank 0's "end now"."""
from __future__ import annotations

import os
import threading
from typing import Any, Iterable

import ray.train
import torch

from radscale.objectives.distributed import set_control_group
from radscale.train.distributed import agree_max


class RayTrainRuntime:
    saves_checkpoints = True

    def __init__(self, batch_size: int, prefetch_batches: int, seed: int):
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        local = ctx.get_local_rank()
        self.device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            if self.world_size > 1:        # every rank builds it (a collective), before any other collective
                import torch.distributed as dist

                set_control_group(dist.new_group(backend="gloo"))
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


class StopWatcher:
    """Polls the stop file from a daemon thread, so the loop reads a flag instead of touching storage (an S3 HEAD
    per iteration would stall training). Runs on rank 0 only; the loop's all-reduce tells the other ranks."""

    def __init__(self, uri: str, every_s: float):
        from radscale.orchestrate.cost import StopSignal

        self._signal = StopSignal(uri)
        self._set = threading.Event()
        self._closed = threading.Event()
        self._every_s = every_s
        threading.Thread(target=self._run, name="radscale-stop-watch", daemon=True).start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                stopped = self._signal.reason() is not None
            except Exception:           # noqa: BLE001 -- any storage hiccup (OSError, pyarrow's errors): poll
                stopped = False         # again; the thread must outlive it, or this trial could not be stopped
            if stopped:
                self._set.set()
                return
            self._closed.wait(self._every_s)

    def __call__(self) -> bool:
        return self._set.is_set()

    def close(self) -> None:
        self._closed.set()


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
    watcher = StopWatcher(config["stop_file"], config.get("stop_poll_s", 2.0)) \
        if runtime.rank == 0 and config.get("stop_file") else None
    try:
        train_trial(job, trial, config["subset_size"], runtime, end_requested=watcher)
    finally:
        if watcher is not None:
            watcher.close()
