"""The budgeted loop against a simulated asynchronous device (a GPU's kernel queue), with a fake clock.

Steps return at once while their work queues on the device; the host blocks only when the queue is `depth`
steps deep. The loop must still spend the budget to within half a step, count queued work as training time, keep the
host at most one step ahead, and synchronise fully only at reports, around its first step and near the end (a full
sync every step would idle a GPU once per step).
"""
import pytest
import torch

from radscale.config.specs import BudgetSpec
from radscale.train.budget import BudgetClock, BudgetState
from radscale.train.loop import LoopSettings, run_budgeted_loop


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


class AsyncDevice:
    def __init__(self, clock, step_s, host_s, depth):
        self.clock, self.step_s, self.host_s, self.depth = clock, step_s, host_s, depth
        self.done_at = clock.t          # when the queued work will have finished
        self.syncs = 0
        self.fence = True

    def launch(self):
        self.done_at = max(self.done_at, self.clock.t) + self.step_s
        self.clock.t += self.host_s
        self.clock.t = max(self.clock.t, self.done_at - self.depth * self.step_s)   # queue full: the host waits

    def step_launched(self):            # waits for the step before the last one queued
        if self.fence:
            self.clock.t = max(self.clock.t, self.done_at - self.step_s)

    def sync(self):
        self.syncs += 1
        self.clock.t = max(self.clock.t, self.done_at)


def _run(budget, dev, clock, report_every=1e9):
    c = BudgetClock(BudgetSpec(value=budget), BudgetState(), clock=clock)
    c.start()
    reports = []

    def step(batch, progress):
        dev.launch()
        return {"samples": 8, "loss": torch.tensor(2.5)}

    class Stream:
        def get(self, timeout):
            return {}

    final = run_budgeted_loop(stream=Stream(), clock=c, step=step, agree=list,
                              report=lambda m, ck: reports.append(m),
                              settings=LoopSettings(report_every_s=report_every), is_chief=True, wall=clock,
                              first_step_samples=8, device=dev)
    return final, reports


@pytest.mark.parametrize("step_s, depth", [(0.5, 3), (0.11, 8), (1.3, 1)])
def test_queued_work_is_budget_time_and_the_stop_lands_within_half_a_step(step_s, depth):
    clock = Clock()
    dev = AsyncDevice(clock, step_s, host_s=0.01, depth=depth)
    final, _ = _run(30.0, dev, clock)
    assert dev.done_at <= clock.t + 1e-9                        # nothing was still queued when the clock stopped
    assert abs(final["train_s"] - 30.0) <= step_s / 2 + 1e-9
    assert final["max_step_s"] == pytest.approx(step_s)         # the drain near the end is no step
    assert final["steps"] == round(final["train_s"] / step_s)
    assert dev.syncs <= 8                       # the first step (timed), near the end, the final read: not per step
    assert isinstance(final["loss"], float) and final["loss"] == 2.5


def test_without_the_one_step_fence_the_host_runs_ahead_and_the_stop_lands_late():
    # The hazard the fence removes: the host queues `depth` steps ahead, so the clock near the end reads early.
    clock = Clock()
    dev = AsyncDevice(clock, 0.5, host_s=0.01, depth=6)
    dev.fence = False
    final, _ = _run(30.0, dev, clock)
    assert final["train_s"] - 30.0 > 1.0


def test_reports_sync_so_their_clock_reads_include_queued_work():
    clock = Clock()
    dev = AsyncDevice(clock, 0.5, host_s=0.01, depth=4)
    final, reports = _run(20.0, dev, clock, report_every=5.0)
    periodic = reports[:-1]
    assert 3 <= len(periodic) <= 4 and dev.syncs >= len(periodic)
    for m in periodic:                   # each report's train_s is whole steps of device time (0.5 s each)
        assert m["train_s"] == pytest.approx(round(m["train_s"] / 0.5) * 0.5, abs=0.011 * 4)
        assert m["steps"] * 0.5 == pytest.approx(m["train_s"], abs=0.011 * 4)
    assert abs(final["train_s"] - 20.0) <= 0.25 + 1e-9


def test_batch_stream_prepares_batches_in_its_thread_and_pin_passes_device_tensors_through():
    import threading

    from radscale.train.prefetch import BatchStream
    from radscale.train.worker import _pin

    seen = []

    def prepare(b):
        seen.append(threading.current_thread().name)
        return {**b, "prepared": True}

    stream = BatchStream(lambda epoch: iter([{"i": epoch}]), maxsize=2, prepare=prepare)
    try:
        got = [stream.get(timeout=5.0) for _ in range(3)]
    finally:
        stream.close()
    assert [g["i"] for g in got] == [0, 1, 2] and all(g["prepared"] for g in got)
    assert set(seen) == {"radscale-batches"}
    on_device = torch.empty(2, 3, device="meta")          # as Ray Train hands batches over on a GPU worker
    assert _pin({"image": on_device, "other": 1})["image"] is on_device
