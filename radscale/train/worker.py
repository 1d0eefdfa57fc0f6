"""One trial's worker: build the task and DeepSpeed engine, restore, warm up, run the budgeted loop.

Everything Ray-specific reaches this function through `runtime` (rank, collectives, the batch stream, report),
so the same code runs in-process in unit tests and inside a Ray Train worker.

After a failure the worker group restarts from the last checkpoint and the budget clock continues from the
elapsed time saved in it: training done after that checkpoint was lost with the failed workers and is *not*
counted (the final weights saw exactly `train_s` of training). The wall time from that checkpoint to the
restarted worker (lost work + failure detection + restart) is recorded as `recovery_s`; time spent writing
reports and checkpoints (clock paused) as `io_s`. Both are carried across restarts in the checkpoint's trial.json.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import torch
from torch import nn

from radscale.config.specs import JobSpec
from radscale.config.trial import TrialSpec
from radscale.errors import RadscaleError
from radscale.models.davit import DaViTEncoder
from radscale.models.precision import uses_bf16
from radscale.models.vit import ViTEncoder
from radscale.objectives.build import build_task
from radscale.train.budget import BudgetClock, BudgetState
from radscale.train.checkpoint import load_checkpoint, save_checkpoint
from radscale.train.engine import apply_schedules, build_engine, clip_gradients
from radscale.train.flops import count_flops_per_sample
from radscale.train.loop import DeviceQueue, LoopSettings, run_budgeted_loop
from radscale.train.prefetch import BatchStream


class Runtime(Protocol):
    rank: int
    world_size: int
    device: torch.device
    saves_checkpoints: bool     # False: reports carry no checkpoint (a benchmark; nothing to resume from)

    def agree(self, flags: list[float]) -> list[float]: ...
    def epoch_batches(self, epoch: int) -> Iterable[dict[str, Any]]: ...
    def report(self, metrics: dict, checkpoint_dir: str | None) -> None: ...
    def restore_dir(self) -> str | None: ...


def _pin(batch: dict) -> dict:
    """Page-locked copies of the batch's host arrays, made in the prefetch thread, so that the step's
    non-blocking copies are DMA transfers overlapping compute. Ray Train's `iter_torch_batches` already hands
    over device tensors on a GPU worker; those pass through."""
    out = dict(batch)
    for k in ("image", "tokens", "labels"):
        if k in out:
            t = torch.as_tensor(out[k])
            out[k] = t.pin_memory() if t.device.type == "cpu" else t
    return out


def _inputs(task_objective: str, batch: dict, device: torch.device) -> dict:
    images = torch.as_tensor(batch["image"]).to(device, non_blocking=True)
    if task_objective == "dinov2":
        return {"images": images}
    return {"images": images, "tokens": torch.as_tensor(batch["tokens"]).to(device, non_blocking=True).long(),
            "labels": torch.as_tensor(batch["labels"]).to(device, non_blocking=True)}


def train_step(engine, task: nn.Module, optimizer, train, objective: str, inputs: dict, progress: float) -> dict:
    """One optimisation step. Nothing in it reads a device value back (tests/unit/test_host_reads.py): the
    metrics stay device tensors, which the loop converts when it reports."""
    sched = apply_schedules(optimizer, train, objective, progress)
    loss, metrics = engine(**inputs, progress=progress)
    engine.backward(loss)
    clip_gradients(task, train)
    engine.step()
    momentum = task.after_step(progress)
    out = dict(metrics)
    out.update(sched)
    out["teacher_momentum" if objective == "dinov2" else "model_ema_decay"] = momentum
    return out


def compile_encoders(task: nn.Module, mode: str = "default", backend: str = "inductor") -> int:
    """Regional torch.compile, in place, of every image encoder's repeated blocks (ViT blocks, DaViT stages) in
    the encoders the task runs forward (`task.forward_encoders()`: DINOv2's student and teacher; not MI2's model
    EMA, which is only averaged into), else in the whole module; returns the number of compiled blocks.

    The tasks call `forward_features`, not `forward`, so compiling the encoder module itself would never run.
    `nn.Module.compile` keeps parameters and state_dict keys (a `torch.compile(m)` wrapper would prefix them
    with `_orig_mod.` and break checkpoint loading), and identical blocks share one compiled graph.
    """
    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        raise RadscaleError(f"train.compile_backend: unknown backend {backend!r}; e.g. inductor, eager, aot_eager")
    blocks: list[nn.Module] = []
    roots = task.forward_encoders() if hasattr(task, "forward_encoders") else [task]
    for m in (m for root in roots for m in root.modules()):
        if isinstance(m, ViTEncoder):
            blocks += list(m.vit.blocks)
        elif isinstance(m, DaViTEncoder):
            blocks += list(m.davit.stages)
    if not blocks:
        raise RadscaleError(f"train.compile: {type(task).__name__} has no ViT or DaViT image encoder to compile")
    options = {"mode": mode} if backend == "inductor" else {}     # modes are inductor's
    for b in blocks:
        b.compile(backend=backend, **options)
    return len(blocks)


def _carried(restore: str | None, t_start_unix: float) -> dict:
    """io_s / recovery_s of earlier attempts, plus this restart's recovery interval (unless the checkpoint was
    the final one of a run that ended cleanly, e.g. stopped by the cost guard and resumed later)."""
    prev = {}
    if restore and (Path(restore) / "trial.json").exists():
        prev = json.loads((Path(restore) / "trial.json").read_text())
    out = {"io_s": float(prev.get("io_s", 0.0)), "recovery_s": float(prev.get("recovery_s", 0.0))}
    if prev.get("saved_unix") and not prev.get("clean_end"):
        out["recovery_s"] += max(0.0, t_start_unix - float(prev["saved_unix"]))
    return out


def train_trial(job: JobSpec, trial: TrialSpec, subset_size: int, runtime: Runtime,
                end_requested: Callable[[], bool] | None = None) -> dict:
    """Train one trial for its budget (resuming from `runtime.restore_dir()` if any) and return the final
    metrics. `end_requested` (rank 0 only) ends the loop early and collectively; see `run_budgeted_loop`."""
    t_start = time.monotonic()
    t_start_unix = time.time()
    objective = trial.encoder.objective
    train = job.train
    seed = trial.seed + train.seed_offset
    task = build_task(trial.encoder, train, seed, rank=runtime.rank).to(runtime.device)
    cuda = runtime.device.type == "cuda"
    stream = BatchStream(runtime.epoch_batches, maxsize=max(1, train.prefetch_batches),
                         prepare=_pin if cuda else None)
    device = DeviceQueue(runtime.device)
    try:
        first = None
        while first is None:                  # the first batch is startup, not budget
            first = stream.get(timeout=1.0)
        inputs = _inputs(objective, first, runtime.device)
        flops = count_flops_per_sample(task, inputs) if runtime.device.type != "meta" else 0.0
        if train.compile:     # after the FLOP count (eager); compiling happens in the warm-up step below
            compile_encoders(task, train.compile_mode, train.compile_backend)
        engine, optimizer = build_engine(task, train, objective, runtime.world_size, job.hardware.use_gpu,
                                         bf16=uses_bf16(train.precision, runtime.device))
        state = BudgetState()
        restore = runtime.restore_dir()
        if restore:
            state = load_checkpoint(restore, engine, task)
            state.restarts += 1
        clock = BudgetClock(job.budget, state, devices=runtime.world_size)
        carried = _carried(restore, t_start_unix)
        meta = {"trial_id": trial.trial_id, "encoder": trial.encoder.name, "objective": objective,
                "size": trial.size, "seed": trial.seed}

        def step(batch: dict, progress: float) -> dict:
            out = train_step(engine, task, optimizer, train, objective, _inputs(objective, batch, runtime.device),
                             progress)
            out["samples"] = int(batch["image"].shape[0]) * runtime.world_size
            return out

        # Warm-up step on the first batch: compile/allocation costs land in startup_s, not in the budget.
        warm = step(first, clock.progress())
        device.sync()                         # compilation and allocation are done before the clock starts
        warm_samples = warm.pop("samples")
        state.samples += warm_samples
        state.warmup_samples += warm_samples
        state.steps += 1
        state.startup_s += time.monotonic() - t_start
        clock.start()

        def report(metrics: dict, with_checkpoint: bool) -> None:
            t_io = time.monotonic()
            metrics.update(carried)
            if not with_checkpoint or not runtime.saves_checkpoints:
                runtime.report(metrics, None)
            else:
                with tempfile.TemporaryDirectory(prefix="radscale-ckpt-") as tmp:
                    # "ended_early" is only in the final metrics: a resume from it is not a failure recovery.
                    save_checkpoint(tmp, engine, task, clock.state,
                                    {**meta, **carried, "saved_unix": time.time(),
                                     "clean_end": "ended_early" in metrics}, runtime.rank == 0)
                    runtime.report(metrics, tmp)
            carried["io_s"] += time.monotonic() - t_io

        settings = LoopSettings(batch_wait_s=train.batch_wait_s, report_every_s=train.report_every_s,
                                checkpoint_every_s=train.checkpoint_every_s, subset_size=subset_size,
                                flops_per_sample=flops,
                                peak_flops=job.hardware.peak_tflops * 1e12 * runtime.world_size)
        return run_budgeted_loop(stream=stream, clock=clock, step=step, agree=runtime.agree, report=report,
                                 settings=settings, is_chief=runtime.rank == 0, device=device,
                                 first_step_samples=warm_samples,
                                 end_requested=end_requested if runtime.rank == 0 else None)
    finally:
        stream.close()
