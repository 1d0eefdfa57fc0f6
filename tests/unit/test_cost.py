"""The cost bound without a cluster: prices, spend integration, admission, the stop signal, the Tune searcher that
asks the guard, and the loop's collective "end now" (fake clocks and node lists throughout)."""
import json
import pickle
from pathlib import Path

import pytest

from radscale.config.load import load_job, validate_job
from radscale.config.specs import BudgetSpec
from radscale.errors import RadscaleError
from radscale.orchestrate.cluster_config import load_prices, max_usd_per_hour, node_caps, validate_autoscaler_yaml
from radscale.orchestrate.cost import (
    CostGuard, CostMonitor, PriceBook, SpendTracker, StopSignal, TrialCost, build_cost_monitor, load_price_book,
    node_type, over_bound_note, project_trial_cost,
)
from radscale.train.budget import BudgetClock, BudgetState
from radscale.train.loop import LoopSettings, run_budgeted_loop
from radscale.train.worker import _carried

ROOT = Path(__file__).resolve().parents[2]
BASE = {"sweep": {"name": "c"}, "encoders": [{"name": "rad-dino-tiny", "objective": "dinov2"}], "sizes": [10],
        "budget": {"value": 3600.0}}


def _job(**sections):
    data = json.loads(json.dumps(BASE))
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return validate_job(data)


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


# ---------------------------------------------------------------- prices and projections


def test_prices_come_from_the_named_cluster_config(monkeypatch):
    monkeypatch.chdir(ROOT)
    job = _job(cost={"cluster": "cluster/aws.yaml", "node_prices": {"aws-head": 1.0}})
    book = load_price_book(job)
    table = load_prices(ROOT / "cluster/prices.toml", ceiling=True)
    assert book.price("aws-gpu-p5-spot") == table["aws-gpu-p5-spot"] == table["aws-gpu-p5"]   # spot at ceiling
    assert book.price("aws-head") == 1.0                                  # inline table wins
    caps = node_caps(validate_autoscaler_yaml(ROOT / "cluster/aws.yaml"))
    assert book.worst_case_usd_per_hour == pytest.approx(max_usd_per_hour(caps, {**table, "aws-head": 1.0}))
    assert book.price("someone-else") == 0.0                              # unknown type: the default
    kube = load_price_book(_job(cost={"cluster": "cluster/kuberay/rayjob.yaml", "spot_at_ceiling": False}))
    assert kube.worst_case_usd_per_hour == pytest.approx(117.34, abs=0.01)


def test_price_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RadscaleError, match="cost.prices: .*nope.toml: file not found"):
        load_price_book(_job(cost={"prices": "nope.toml"}))
    (tmp_path / "p.toml").write_text('[aws-head]\ninstance = "m"\nmarket = "on-demand"\nusd_per_hour = 1.0\n')
    with pytest.raises(RadscaleError) as err:           # the cluster has node types p.toml does not price
        load_price_book(_job(cost={"prices": "p.toml", "cluster": str(ROOT / "cluster/aws.yaml")}))
    assert "no price for node type(s)" in str(err.value) and "\n" not in str(err.value)


def test_a_bound_without_node_prices_or_with_negative_ones_is_refused():
    # $0 nodes: measured spend would never grow, and every trial would be admitted under any bound
    with pytest.raises(RadscaleError, match="cost.budget_usd is set but no node has a price"):
        load_price_book(_job(cost={"budget_usd": 100.0, "trial_usd_per_hour": 40.0}))
    assert load_price_book(_job(cost={"budget_usd": 100.0, "node_prices": {"gpu": 4.0}})).prices == {"gpu": 4.0}
    with pytest.raises(RadscaleError, match="cost.node_prices.gpu"):
        _job(cost={"node_prices": {"gpu": -5.0}})


def test_projection_per_budget_mode():
    job = _job(hardware={"num_workers": 8, "node_price_per_hour": 6.9}, cost={"startup_overhead_s": 600})
    cost = project_trial_cost(job)
    assert cost.seconds == 3600 + 600 and cost.usd_per_hour == pytest.approx(55.2)
    assert cost.usd == pytest.approx(55.2 * 70 / 60)
    gpu_h = _job(budget={"mode": "gpu_hours", "value": 16.0}, hardware={"num_workers": 8},
                 cost={"trial_usd_per_hour": 10.0, "startup_overhead_s": 0})
    assert project_trial_cost(gpu_h).seconds == 2 * 3600                  # 16 GPU-hours over 8 GPUs
    with pytest.raises(RadscaleError, match="expected_trial_s"):
        _job(budget={"mode": "samples", "value": 1e6}, cost={"budget_usd": 10})
    with pytest.raises(RadscaleError, match="no price"):
        project_trial_cost(_job(cost={"budget_usd": 10}))


def test_output_dir_must_be_a_path_but_storage_may_be_a_uri():
    with pytest.raises(RadscaleError, match="sweep.output_dir must be a local or mounted path"):
        _job(sweep={"output_dir": "s3://bucket/runs"})
    assert _job(sweep={"storage_uri": "s3://bucket/ray"}).sweep.storage_uri == "s3://bucket/ray"
    assert load_job(ROOT / "jobs/paper.toml").cost.budget_usd == 0.0     # shipped jobs still validate


def test_node_type_from_labels():
    assert node_type({"Labels": {"radscale.io/node-type": "aws-gpu-p5", "ray.io/node-group": "gpu"}}) == "aws-gpu-p5"
    assert node_type({"Labels": {"ray.io/node-group": "aws-head"}}) == "aws-head"
    assert node_type({"Labels": {}}) == node_type({}) == ""


# ---------------------------------------------------------------- spend and admission


def test_spend_errs_high_when_nodes_come_and_go():
    clock = Clock()
    tracker = SpendTracker(PriceBook({"gpu": 36.0, "head": 3.6}, default=1.8), clock=clock)
    tracker.poll([("h", "head")])
    clock.t += 100
    tracker.poll([("h", "head"), ("g", "gpu")])      # g appeared during the interval: charged for all of it
    clock.t += 100
    tracker.poll([("h", "head"), ("x", "")])        # g vanished during it: charged too; x has the default
    snap = tracker.snapshot()
    assert tracker.spent_usd == pytest.approx(200 * 0.001 + 200 * 0.01 + 100 * 0.0005)
    assert snap["node_hours"] == pytest.approx((200 + 200 + 100) / 3600)
    assert snap["by_node_type"]["unknown"]["usd"] == pytest.approx(0.05) and snap["alive_nodes"] == 2


def test_guard_admits_what_fits_and_counts_running_trials():
    clock = Clock()
    tracker = SpendTracker(PriceBook({}, default=0.0), spent_usd=10.0, clock=clock)
    guard = CostGuard(39.0, TrialCost(3600.0, 10.0), tracker, clock)      # $10 per trial
    assert guard.admit("a").admitted and guard.admit("b").admitted        # 10 + 10 + 10 <= 39
    third = guard.admit("c")
    assert not third.admitted and not third.final                         # a and b may finish under projection
    assert "spent $10.00 + running $20.00 + this trial $10.00 > $39.00" in third.message
    clock.t += 1800                                                       # half of a and b's projection is used
    assert guard.committed_usd() == pytest.approx(10.0)
    guard.release("a"), guard.release("b")
    assert guard.admit("c").admitted
    guard.release("c")
    tracker._spent = 35.0
    last = guard.admit("d")
    assert not last.admitted and last.final                               # nothing running could free room
    guard.halt("stop requested")
    assert guard.admit("e").message == "skipped: stop requested"
    assert CostGuard(0.0, TrialCost(1e9, 1e9), tracker, clock).admit("f").admitted   # no bound


@pytest.mark.parametrize("kind", ["path", "uri"])
def test_stop_signal_roundtrip(tmp_path, kind):
    base = str(tmp_path / "store") if kind == "path" else (tmp_path / "store").as_uri()
    stop = StopSignal.for_sweep(base, "s")
    assert stop.reason() is None
    stop.raise_("cost budget reached")
    assert stop.reason() == "cost budget reached" and (tmp_path / "store" / "s.stop").exists()
    stop.clear()
    assert stop.reason() is None
    (tmp_path / "store" / "s.stop").write_text("")               # a user's `touch` works too
    assert stop.reason() == ""


def test_a_stop_file_that_fails_to_write_is_written_at_the_next_poll(tmp_path):
    clock = Clock()
    tracker = SpendTracker(PriceBook({}, default=3600.0), clock=clock)
    guard = CostGuard(10.0, TrialCost(5.0, 3600.0), tracker, clock)
    stop = StopSignal.for_sweep(str(tmp_path / "ray"), "c")
    calls = []

    class Flaky:                           # the stop signal with a transient storage error on the first write
        uri = stop.uri

        def reason(self):
            return stop.reason()

        def raise_(self, reason):
            calls.append(reason)
            if len(calls) == 1:
                raise OSError("503 Slow Down")
            stop.raise_(reason)
    monitor = CostMonitor(guard, Flaky(), tmp_path / "spend.json", 1.0, lambda: [("n", "")], lambda _m: None)
    monitor.poll()
    clock.t += 20
    with pytest.raises(OSError):
        monitor.poll()
    assert guard.halted and stop.reason() is None          # no new trial starts; the running ones not told yet
    monitor.poll()
    assert len(calls) == 2 and "cost budget reached" in stop.reason()
    monitor.poll()
    assert len(calls) == 2                                   # written once it succeeded


def test_monitor_raises_the_stop_at_the_bound_and_spend_accumulates_across_runs(tmp_path):
    clock = Clock()
    tracker = SpendTracker(PriceBook({}, default=3600.0), clock=clock)              # $1 per node-second
    guard = CostGuard(30.0, TrialCost(5.0, 3600.0), tracker, clock)
    stop = StopSignal.for_sweep(str(tmp_path / "ray"), "c")             # the sweep of _job()
    lines = []
    monitor = CostMonitor(guard, stop, tmp_path / "spend.json", 1.0, lambda: [("n", "")], lines.append)
    monitor.poll()
    clock.t += 20
    monitor.poll()
    assert stop.reason() is None and guard.admit("a").admitted                      # 20 + 5 <= 30
    clock.t += 15
    monitor.poll()
    assert "cost budget reached (spent $35.00 >= $30.00)" in stop.reason() and guard.halted
    assert not guard.admit("b").admitted and any("no new trial starts" in x for x in lines)
    saved = json.loads((tmp_path / "spend.json").read_text())
    assert saved["spent_usd"] == pytest.approx(35.0) and saved["halted"].startswith("cost budget reached")

    job = _job(hardware={"node_price_per_hour": 3600.0}, cost={"budget_usd": 100.0})
    again = build_cost_monitor(job, str(tmp_path / "ray"), tmp_path / "spend.json", lines.append,
                               list_nodes=lambda: [("n", "")])
    assert again.guard.tracker.spent_usd == pytest.approx(35.0)                    # the earlier run's spend
    assert stop.reason() is None and not again.guard.halted       # the earlier run's stop does not halt this one
    stop.raise_("")                                               # a user's stop file during the run
    again.poll()
    assert again.guard.halted == f"stop requested ({stop.uri})" and not again.guard.admit("x").admitted
    assert again.close()["halted"] == again.guard.halted


def test_searcher_asks_the_guard_before_each_trial():
    from radscale.orchestrate.tune_sweep import GuardedQueue

    clock = Clock()
    tracker = SpendTracker(PriceBook({}, default=0.0), spent_usd=0.0, clock=clock)
    guard = CostGuard(25.0, TrialCost(3600.0, 10.0), tracker, clock)
    skipped = {}
    q = GuardedQueue(["a", "b", "c", "d"], guard, lambda tid, msg: skipped.setdefault(tid, msg))
    assert q.suggest("t1") == {"trial_id": "a"} and q.suggest("t2") == {"trial_id": "b"}
    assert q.suggest("t3") is None and not skipped                       # a and b still run
    q.on_trial_complete("t1")
    tracker._spent = 12.0                                                 # a cost more than projected
    q.on_trial_complete("t2")
    assert q.suggest("t4") == {"trial_id": "c"}                           # 12 + 10 <= 25
    q.on_trial_complete("t4")
    tracker._spent = 20.0
    assert q.suggest("t5") == "FINISHED" and set(skipped) == {"d"}
    assert skipped["d"].startswith("skipped: over cost budget")
    assert pickle.loads(pickle.dumps(q))._queue == []                    # Tune pickles its config



def test_a_failed_trial_is_named_by_its_innermost_cause_on_one_line():
    """Ray's wrappers are unwrapped to the worker's own error; its message is kept only where it cannot quote
    data (a library error may hold a table cell, i.e. report text: it goes to MLflow and the report)."""
    from ray.exceptions import ActorDiedError, RayTaskError
    from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

    from radscale.errors import RadscaleError
    from radscale.orchestrate.tune_sweep import failure_line

    try:
        try:
            raise MemoryError("CUDA out of memory\nTried to allocate 2 GiB")
        except MemoryError as inner:
            raise RuntimeError("ray::ImplicitFunc.train() (pid=1)") from inner
    except RuntimeError as err:
        assert failure_line(err, "/s") == "MemoryError: CUDA out of memory (logs under /s)"
    assert failure_line(RadscaleError(""), "/s") == "RadscaleError (logs under /s)"
    leaky = ValueError("could not parse 'FINDINGS: small left effusion'")          # e.g. a library quoting a cell
    # What Tune hands back (Ray 2.60 gives the bare worker exception inside WorkerGroupError; older Rays wrap
    # it in a RayTaskError too): either way the innermost error, and no message for a library error.
    for worker in (leaky, RayTaskError("fn", "Traceback ...", leaky).as_instanceof_cause()):
        trial = RayTaskError("trial_driver", "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1)",
                             WorkerGroupError("rank 1 died", {1: worker, 3: MemoryError("x")})).as_instanceof_cause()
        line = failure_line(trial, "/s")
        assert line == "rank 1: ValueError (message not recorded: it may quote data; logs under /s)"
        assert "FINDINGS" not in line
    died = ActorDiedError()
    assert failure_line(WorkerGroupError("x", {0: died}), "/s").startswith("rank 0: ActorDiedError: The actor died")
    boom = RadscaleError("runs/x/data: shard 3 unreadable")
    assert failure_line(ControllerError(boom), "/s") == "RadscaleError: runs/x/data: shard 3 unreadable (logs under /s)"


# ---------------------------------------------------------------- the loop's end-now and the clock


def _loop(clock, budget, end_after=None, report_cost_s=0.0, chief=True, agree=None):
    c = BudgetClock(BudgetSpec(value=budget), BudgetState(), clock=clock)
    c.start()
    reports, steps = [], [0]

    def step(batch, progress):
        clock.t += 0.5
        steps[0] += 1
        return {"samples": 4}

    def report(metrics, with_ckpt):
        clock.t += report_cost_s                  # writing a checkpoint takes time; the clock must not see it
        reports.append((dict(metrics), with_ckpt))

    final = run_budgeted_loop(
        stream=type("S", (), {"get": lambda self, timeout: {"x": 1}})(), clock=c, step=step,
        agree=agree or list, report=report, is_chief=chief, wall=clock,
        settings=LoopSettings(report_every_s=1.0, checkpoint_every_s=2.0), first_step_samples=4,
        end_requested=(lambda: steps[0] >= end_after) if end_after else None)
    return final, reports


def test_end_request_ends_the_loop_with_a_checkpoint_and_marks_it_early():
    final, reports = _loop(Clock(), 100.0, end_after=6)
    assert final["ended_early"] == 1 and final["steps"] == 6 and final["train_s"] == pytest.approx(3.0)
    assert reports[-1] == (final, True)
    done, _ = _loop(Clock(), 3.0)
    assert done["ended_early"] == 0 and done["train_s"] == pytest.approx(3.0)
    # Rank 1 never reads the signal: it ends when the all-reduced flag says 2 (rank 0's "end now").
    flags = iter([[0, 0, 0, 0]] * 4 + [[2, 0, 0, 0]])
    follower, _ = _loop(Clock(), 100.0, chief=False, agree=lambda f: next(flags))
    assert follower["ended_early"] == 1 and follower["steps"] == 4


def test_reports_and_checkpoints_pause_the_budget_clock():
    clock = Clock()
    final, reports = _loop(clock, 10.0, report_cost_s=0.7)
    assert sum(ck for _, ck in reports[:-1]) >= 3 and len(reports) > 8
    assert final["train_s"] == pytest.approx(10.0, abs=0.25)             # 20 steps of 0.5 s, I/O excluded
    assert clock.t - 1000.0 > final["train_s"] + 0.7 * (len(reports) - 1) - 1e-6


def test_recovery_interval_is_recorded_not_trained(tmp_path):
    (tmp_path / "trial.json").write_text(json.dumps({"saved_unix": 100.0, "io_s": 2.0, "recovery_s": 1.0}))
    assert _carried(str(tmp_path), 130.0) == {"io_s": 2.0, "recovery_s": 31.0}   # crash: 30 s since the checkpoint
    (tmp_path / "trial.json").write_text(json.dumps({"saved_unix": 100.0, "io_s": 2.0, "clean_end": True}))
    assert _carried(str(tmp_path), 5000.0)["recovery_s"] == 0.0                 # a clean stop, resumed later
    assert _carried(None, 1.0) == {"io_s": 0.0, "recovery_s": 0.0}


def test_the_trial_stop_watcher_survives_any_storage_error(monkeypatch):
    import time

    from radscale.orchestrate.ray_runtime import StopWatcher
    calls = []

    def reason(self):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("ArrowInvalid: transient")      # not an OSError
        return "cost budget reached"
    monkeypatch.setattr(StopSignal, "reason", reason)
    watch = StopWatcher("/tmp/radscale-test.stop", every_s=0.01)
    deadline = time.time() + 5
    while not watch() and time.time() < deadline:
        time.sleep(0.01)
    watch.close()
    assert watch() and len(calls) >= 2


def test_a_sweep_projected_over_its_bound_is_told_before_training():
    trial = TrialCost(3600.0, 40.0)                                  # $40 per trial
    assert over_bound_note(100.0, 0.0, 2, trial) is None             # $80 fits
    assert over_bound_note(0.0, 0.0, 10, trial) is None              # no bound
    note = over_bound_note(100.0, 10.0, 10, trial)
    assert note == ("radscale: cost: 10 trial(s) to train project $400.00 (+ $10.00 spent) over the $100.00 "
                    "bound: about 2 can run, the rest will be skipped (raise cost.budget_usd to run them all)")
