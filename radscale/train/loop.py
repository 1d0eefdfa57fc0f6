"""The budgeted training loop: short on purpose, with every distributed decision made collectively.

Each iteration every rank (1) waits a bounded time for a batch, (2) joins one all-reduce of flags —
rank 0's "budget spent" / "report now" / "checkpoint now" and each rank's "no batch yet" — and (3) steps only
when all ranks hold a batch. So every rank runs the same number of steps and reports the same number of times
(`ray.train.report` is a barrier), and the stop lands within half a step of the budget even during a stall.

An external "end now" (`end_requested`, read by rank 0 only: the sweep's cost guard or a user's stop file) joins
the same all-reduce, so the loop ends on every rank at once with a final checkpoint and `ended_early = 1`.
The budget clock is paused while a report or checkpoint is written: that time is storage I/O, whose length
depends on where checkpoints go, not training.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from radscale.train.budget import BudgetClock
from radscale.train.prefetch import BatchStream

Agree = Callable[[list[float]], list[float]]          # element-wise max over ranks
StepFn = Callable[[Any, float], dict]                   # (batch, progress) -> {"samples": int, ...metrics}
ReportFn = Callable[[dict, bool], None]                 # (metrics, with_checkpoint)


@dataclass(frozen=True)
class LoopSettings:
    batch_wait_s: float = 0.25
    report_every_s: float = 2.0
    checkpoint_every_s: float = 0.0
    subset_size: int = 0
    flops_per_sample: float = 0.0
    peak_flops: float = 0.0         # FLOP/s of all the trial's devices (hardware.peak_tflops x workers); 0: no MFU


class DeviceQueue:
    """Paces the host against a device that runs its kernels asynchronously (CUDA); no-ops elsewhere.

    A step only queues work. Waiting for *all* of it every step would idle the GPU while the host prepares the
    next step; waiting for none lets the host run several steps ahead, and the budget clock would then stop
    late by that queue. `step_launched` waits for the step before the one just queued: the GPU always has a
    step in hand and the clock lags it by at most one step.
    """

    def __init__(self, device: torch.device | None):
        self.cuda = device is not None and device.type == "cuda"
        self.device = device
        self._previous = None

    def step_launched(self) -> None:
        if self.cuda:
            event = torch.cuda.Event()
            event.record()
            if self._previous is not None:
                self._previous.synchronize()
            self._previous = event

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self._previous = None


def run_budgeted_loop(*, stream: BatchStream, clock: BudgetClock, step: StepFn, agree: Agree,
                      report: ReportFn, settings: LoopSettings, is_chief: bool,
                      wall: Callable[[], float] = time.monotonic, first_step_samples: int = 0,
                      end_requested: Callable[[], bool] | None = None,
                      device: DeviceQueue | None = None) -> dict:
    """Runs until rank 0 says the budget is spent or an end was requested; returns the final metrics (already
    reported). `end_requested` is read every iteration, so it must be cheap (poll storage elsewhere).

    Invariant (tested): |train_s - budget| <= max_step_s + batch_wait_s — the stop is decided before a step
    from the running step-time estimate, and a wait for data is bounded (a loaded machine may wake it late).

    The step-time estimate starts from the loop's own first step, timed with the device synced: the caller's
    warm-up step carries one-off costs (allocation, autotuning, compilation) and, seeding the midpoint rule, ended
    runs up to half of it early. `first_step_samples` (the batch size: exact) seeds the sample estimate.

    `device` paces the host against an asynchronous device (see `DeviceQueue`): steps do not synchronise
    (their metrics stay device tensors until a report), the host runs at most one step ahead, and the loop
    syncs fully before every clock read that is reported and around every step in the last three.
    """
    state = clock.state
    device = device or DeviceQueue(None)
    batch = None
    step_s = 0.0                       # EMA of step duration, for the midpoint stop rule (0: none timed yet)
    step_samples = first_step_samples
    max_step_s = 0.0
    last_report = last_ckpt = wall()
    last_metrics: dict = {"max_step_s": 0.0}    # a resumed run may stop before its first step
    while True:
        if batch is None:
            t = wall()
            batch = stream.get(timeout=settings.batch_wait_s)
            state.stall_s += wall() - t
        now = wall()
        flags = [0.0, 0.0, 0.0, 0.0 if batch is not None else 1.0]
        if is_chief:
            # flags[0]: 1 = budget spent, 2 = end requested before it was (only rank 0 sets it, so max = its value)
            if clock.should_stop(step_s, step_samples, step_samples * settings.flops_per_sample):
                flags[0] = 1.0
            elif end_requested is not None and end_requested():
                flags[0] = 2.0
            flags[1] = float(now - last_report >= settings.report_every_s)
            flags[2] = float(settings.checkpoint_every_s > 0 and now - last_ckpt >= settings.checkpoint_every_s)
        stop, do_report, do_ckpt, not_ready = agree(flags)
        if stop:
            ended_early = stop >= 2.0
            break
        if do_report or do_ckpt:
            device.sync()
            clock.sync()
            report(_metrics(clock, last_metrics, settings), bool(do_ckpt))
            clock.start()                  # resume from the synced elapsed time: the report is not training
            last_report = wall()
            if do_ckpt:
                last_ckpt = last_report
        if not_ready:
            continue
        # The first step and those within three of the end (the host is up to one ahead) are timed truly: drain
        # what is queued (budget time, but no step's), then wait for this step's kernels.
        timed = step_s == 0 or clock.should_stop(6 * step_s, 6 * step_samples,
                                                 6 * step_samples * settings.flops_per_sample)
        if timed:
            device.sync()
        t = wall()
        out = step(batch, clock.progress())
        batch = None
        if timed:
            device.sync()
        else:
            device.step_launched()
        dt = wall() - t
        step_s = dt if step_s == 0 else 0.7 * step_s + 0.3 * dt
        max_step_s = max(max_step_s, dt)
        step_samples = int(out.pop("samples"))
        state.samples += step_samples
        state.steps += 1
        state.flops += step_samples * settings.flops_per_sample
        last_metrics = dict(out, max_step_s=max_step_s)
    device.sync()
    clock.sync()
    final = _metrics(clock, last_metrics, settings)
    final["ended_early"] = int(ended_early)   # 1: budget not spent; the trial resumes from this checkpoint
    report(final, True)
    return final


def _metrics(clock: BudgetClock, step_metrics: dict, settings: LoopSettings) -> dict:
    s = clock.state
    m = {k: float(v) for k, v in step_metrics.items()}    # device tensors of the last step: one sync per report
    m.update(steps=s.steps, samples_seen=s.samples, train_s=s.elapsed_s, stall_s=s.stall_s,
             startup_s=s.startup_s, progress=clock.progress(s.elapsed_s), budget_used=clock.used(s.elapsed_s),
             budget_deviation=clock.deviation(), restarts=s.restarts,
             images_per_s=(s.samples - s.warmup_samples) / s.elapsed_s if s.elapsed_s > 0 else 0.0)
    if settings.subset_size:
        m["epochs"] = s.samples / settings.subset_size
    if settings.flops_per_sample and s.elapsed_s > 0:
        m["flops_per_sample"] = settings.flops_per_sample
        m["achieved_tflops"] = s.flops / s.elapsed_s / 1e12
        if settings.peak_flops:
            m["mfu"] = s.flops / s.elapsed_s / settings.peak_flops
    return m
