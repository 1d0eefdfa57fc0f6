"""The MLflow tracker on a real sqlite store: runs are found again by tag (no duplicates on resume)."""
import pytest

from radscale.tracking.tracker import MLflowTracker, NullTracker, flatten


@pytest.fixture()
def tracker(tmp_path):
    return MLflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", str(tmp_path / "art"))


def test_runs_are_reused_by_tag(tracker, tmp_path):
    parent = tracker.sweep_run("s", {"a": {"b": 1}}, {})
    r1 = tracker.trial_run(parent, "enc.dinov2.n10.s0", {"size": 10}, {"encoder": "enc"})
    tracker.log_metrics(r1, {"train/loss": 1.5, "bad": float("nan"), "flag": True}, step=3)
    tracker.finish(r1)
    again = MLflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp")
    assert again.sweep_run("s", {"a": {"b": 1}}, {}) == parent
    assert again.trial_run(parent, "enc.dinov2.n10.s0", {"size": 10}, {}) == r1
    runs = {r["name"]: r for r in again.runs()}
    assert set(runs) == {"s", "enc.dinov2.n10.s0"}
    trial = runs["enc.dinov2.n10.s0"]
    assert trial["metrics"] == {"train/loss": 1.5}
    assert trial["tags"]["mlflow.parentRunId"] == parent and trial["tags"]["encoder"] == "enc"


def test_trial_runs_belong_to_their_sweep_and_changed_params_are_kept(tracker):
    a = tracker.sweep_run("a", {"sizes": "[10]"}, {})
    b = tracker.sweep_run("b", {}, {})                      # another sweep in the same experiment
    ra = tracker.trial_run(a, "enc.dinov2.n10.s0", {"size": 10}, {})
    rb = tracker.trial_run(b, "enc.dinov2.n10.s0", {"size": 10}, {})
    assert ra != rb and tracker.trial_run(a, "enc.dinov2.n10.s0", {"size": 10}, {}) == ra
    assert tracker.sweep_run("a", {"sizes": "[10, 20]"}, {}) == a          # a re-run that added a size
    run = {r["name"]: r for r in tracker.runs()}["a"]
    assert run["params"]["sizes"] == "[10]" and run["tags"]["radscale.updated.sizes"] == "[10, 20]"


def test_artifacts_land_under_the_given_root(tracker, tmp_path):
    run = tracker.sweep_run("s", {}, {})
    tracker.log_dict(run, {"x": 1}, "job.json")
    assert list((tmp_path / "art").rglob("job.json"))


def test_flatten_and_null_twin():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
    n = NullTracker()
    assert n.trial_run("", "t", {}, {}) == "" and n.runs() == []
