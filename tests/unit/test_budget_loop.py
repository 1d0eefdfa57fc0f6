"""The equal budget with a fake clock: progress, the midpoint stop rule, restarts, collective decisions."""
import itertools

import pytest

from radscale.config.specs import BudgetSpec
from radscale.train.budget import BudgetClock, BudgetState
from radscale.train.loop import LoopSettings, run_budgeted_loop
from radscale.train.schedules import cosine, warmup_cosine


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class FakeStream:
    """Yields a batch every call; `gaps` maps call index -> None (a stall of `stall_s`)."""
    def __init__(self, clock, stall_at=(), stall_s=0.0):
        self.clock, self.calls, self.stall_at, self.stall_s = clock, 0, set(stall_at), stall_s

    def get(self, timeout):
        self.calls += 1
        if self.calls in self.stall_at:
            self.clock.t += min(timeout, self.stall_s)
            return None
        return {"x": self.calls}


def _run(budget, step_s, clock, stream=None, state=None, agree=None, chief=True, report_every=1e9):
    c = BudgetClock(BudgetSpec(value=budget), state or BudgetState(), clock=clock)
    c.start()
    reports = []

    def step(batch, progress):
        clock.t += step_s
        return {"samples": 8, "loss": 1.0}

    final = run_budgeted_loop(stream=stream or FakeStream(clock), clock=c, step=step,
                              agree=agree or (lambda f: list(f)), report=lambda m, ck: reports.append((m, ck)),
                              settings=LoopSettings(report_every_s=report_every, subset_size=80), is_chief=chief,
                              wall=clock, first_step_samples=8)
    return c, final, reports


def test_progress_and_stop_rule_bound_deviation_by_half_a_step():
    for step_s in (0.3, 0.7, 1.3):
        clock = FakeClock()
        c, final, reports = _run(10.0, step_s, clock)
        assert abs(final["train_s"] - 10.0) <= step_s / 2 + 1e-9
        assert final["max_step_s"] == pytest.approx(step_s)
        assert final["budget_deviation"] == pytest.approx(final["train_s"] / 10.0 - 1)
        assert final["steps"] == round(final["train_s"] / step_s)
        assert final["epochs"] == pytest.approx(final["samples_seen"] / 80)
        assert reports[-1][1] is True                      # the final report carries the checkpoint


def test_stalls_count_and_the_stop_lands_during_a_stall():
    clock = FakeClock()
    stream = FakeStream(clock, stall_at=range(5, 1000), stall_s=0.25)
    c, final, _ = _run(3.0, 0.5, clock, stream)
    assert final["stall_s"] > 0
    # Data stopped arriving after 4 steps (2 s): the loop still ends once the budget is spent.
    assert final["train_s"] == pytest.approx(3.0, abs=0.25 + 1e-9)


def test_restart_continues_the_clock():
    clock = FakeClock()
    c1, f1, _ = _run(10.0, 1.0, clock)
    half = BudgetState(elapsed_s=6.0, samples=48, steps=6)
    c2, f2, _ = _run(10.0, 1.0, clock, state=half)
    assert f2["steps"] - 6 == 4 and f2["train_s"] == pytest.approx(10.0)
    assert f2["samples_seen"] == 48 + 4 * 8


def test_non_chief_follows_the_collective_decision():
    """Rank 1 never decides: it stops exactly when the all-reduced flag (rank 0's) says so."""
    clock = FakeClock()
    decisions = itertools.chain([[0, 0, 0, 0]] * 5, itertools.repeat([1, 0, 0, 0]))
    c, final, _ = _run(1e9, 1.0, clock, agree=lambda f: next(decisions), chief=False)
    assert final["steps"] == 5


def test_no_step_until_every_rank_has_a_batch():
    clock = FakeClock()
    flags = itertools.chain([[0, 0, 0, 1]] * 3, [[0, 0, 0, 0]] * 2, itertools.repeat([1, 0, 0, 0]))
    c, final, _ = _run(1e9, 1.0, clock, agree=lambda f: next(flags), chief=False)
    assert final["steps"] == 2


def test_reports_are_collective_and_periodic():
    clock = FakeClock()
    c, final, reports = _run(10.0, 1.0, clock, report_every=3.0)
    assert 2 <= len(reports) - 1 <= 4 and all(not ck for _, ck in reports[:-1])


@pytest.mark.parametrize("mode,value,expect", [("samples", 80, 1.0), ("gpu_hours", 2 / 3600, 0.5)])
def test_other_budget_units(mode, value, expect):
    clock = FakeClock()
    c = BudgetClock(BudgetSpec(mode=mode, value=value), BudgetState(samples=80), clock=clock)
    c.start()
    clock.t += 1.0
    assert c.progress() == pytest.approx(expect)


def test_schedules():
    assert cosine(0, 0.992, 1.0) == pytest.approx(0.992) and cosine(1, 0.992, 1.0) == pytest.approx(1.0)
    assert warmup_cosine(0.05, 1.0, 0.1, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(0.1, 1.0, 0.1, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(1.0, 1.0, 0.1, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(1.7, 1.0, 0.1, 0.1) == pytest.approx(0.1)     # the step crossing the budget


def test_stop_invariant_with_spiky_steps():
    """Step times vary 10x (a shared machine): the stop still lands within one step of the budget."""
    import random

    rnd = random.Random(0)
    for trial in range(20):
        clock = FakeClock()
        c = BudgetClock(BudgetSpec(value=5.0), BudgetState(), clock=clock)
        c.start()

        def step(batch, progress):
            clock.t += rnd.choice([0.05, 0.1, 0.1, 0.5])
            return {"samples": 1}

        final = run_budgeted_loop(stream=FakeStream(clock), clock=c, step=step, agree=list,
                                  report=lambda m, ck: None, settings=LoopSettings(), is_chief=True, wall=clock,
                                  first_step_samples=1)
        assert abs(final["train_s"] - 5.0) <= final["max_step_s"] + 1e-9
