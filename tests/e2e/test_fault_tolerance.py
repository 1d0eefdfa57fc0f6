"""Kill tests on a local Ray instance, each in its own process session and Ray temp dir, so cleanup kills only
what the test started (by PID):

(a) SIGKILL the Ray Train worker mid-trial: Train restarts the worker group from the last time-based checkpoint,
    the budget clock continues from it, and the work done after that checkpoint is lost, not counted.
(b) SIGKILL the `radscale sweep` driver mid-sweep: the re-run retrains nothing that finished and resumes the
    interrupted trial's Train run from its checkpoint.
(c) SIGKILL the worker of a trial allowed no restarts: it fails, the rest of the sweep trains, evaluates and
    reports, and the command exits 1 naming it.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

JOB = """
sizes = {sizes}
[sweep]
name = "ft"
output_dir = "{out}"
[data]
decode_size = 48
[data.phantom]
n_images = 240
image_size = 64
[[encoders]]
name = "rad-dino-tiny"
objective = "dinov2"
[budget]
value = {budget}
[train]
batch_size = 4
report_every_s = 0.5
checkpoint_every_s = {ckpt}
[train.dinov2]
global_size = 32
local_size = 16
local_crops = 2
n_prototypes = 256
head_hidden = 64
head_bottleneck = 32
[hardware]
cpus_per_worker = 0.5
torch_threads = 1
data_cpus = 0.75
max_failures = 2
[eval]
bootstrap = 20
min_positives = 2
tasks = ["findings"]
# these tests are about the trial lifecycle: one linear probe shows a trial was evaluated
attention_probe = false
segmentation = false
report_generation = false
"""


class Session:
    """A `radscale sweep` in a new process session with a private RAY_TMPDIR (isolated from other Rays)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.ray_tmp = tempfile.mkdtemp(prefix="rsft-", dir="/tmp")     # short: Ray's socket paths have a limit
        self.sids: set[int] = set()

    def start(self, job: Path, log: Path) -> subprocess.Popen:
        env = dict(os.environ, RAY_TMPDIR=self.ray_tmp, PYTHONUNBUFFERED="1")
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.Popen([sys.executable, "-m", "radscale", "sweep", str(job)], cwd=self.tmp, env=env,
                                stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.sids.add(proc.pid)                  # a new session's id is its leader's pid
        return proc

    def pids(self, title: str = "") -> list[int]:
        out = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout
        rows = [line.split(None, 2) for line in out.splitlines() if line.strip()]
        return [int(r[0]) for r in rows if len(r) == 3 and int(r[1]) in self.sids and r[2].startswith(title)]

    def close(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.5)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


def _wait(cond, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"sweep exited ({proc.returncode}) before {what}: {log.read_text()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}" + (f": {log.read_text()[-3000:]}" if log else ""))


def _reports(root: Path) -> list[dict]:
    """Every report Tune received for the trials (Tune's result.json lines, in order)."""
    files = sorted((root / "ray").glob("tune-ft/trial_driver_*/result.json"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def _checkpoints(root: Path, trial_id: str) -> list[Path]:
    return sorted((root / "ray" / f"ft.{trial_id}").glob("checkpoint_*"))


def _registered(root: Path, trial_id: str) -> list[dict]:
    """Checkpoints Train has recorded in its run snapshot: only those survive the loss of the driver (a
    checkpoint folder that is uploaded but not yet recorded is ignored on resume)."""
    snap = root / "ray" / f"ft.{trial_id}" / "checkpoint_manager_snapshot.json"
    try:
        return json.loads(snap.read_text())["checkpoint_results"]
    except (OSError, ValueError, KeyError):
        return []


_seen: dict[Path, tuple[int, float]] = {}


def _kill_window(root: Path) -> bool:
    """True when the worker is surely between two checkpoints, with work since the last one to lose.

    Reports reach Tune's log every ~2 s here (each is a barrier) and checkpoints every 6 s of wall time, so: the
    newest report carries no checkpoint, is ≥ 0.5 s of training past the newest checkpoint, and that checkpoint
    was first seen < 3.5 s ago (the next one is then ≥ 2 s away). Killing on train_s alone raced a checkpoint.
    """
    reports = _reports(root)
    ckpts = [i for i, r in enumerate(reports) if r.get("checkpoint_path")]
    if not ckpts:
        return False
    if _seen.get(root, (-1, 0.0))[0] != ckpts[-1]:
        _seen[root] = (ckpts[-1], time.monotonic())
    last = reports[-1]
    return (not last.get("checkpoint_path") and last["train_s"] - reports[ckpts[-1]]["train_s"] >= 0.5
            and time.monotonic() - _seen[root][1] < 3.5)


@pytest.fixture
def session(tmp_path):
    s = Session(tmp_path)
    yield s
    s.close()


def test_killed_train_worker_resumes_from_its_checkpoint_within_budget(session, tmp_path):
    budget = 20.0
    job = tmp_path / "job.toml"
    job.write_text(JOB.format(sizes="[60]", out=tmp_path / "runs", budget=budget, ckpt=6.0))
    root, tid, log = tmp_path / "runs" / "ft", "rad-dino-tiny.dinov2.n60.s0", tmp_path / "sweep.log"
    t0 = time.monotonic()
    proc = session.start(job, log)
    _wait(lambda: _kill_window(root), 240, "training between two checkpoints", proc, log)
    workers = session.pids("ray::RayTrainWorker")
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)
    killed_at = _reports(root)[-1]["train_s"]
    assert proc.wait(timeout=420) == 0, log.read_text()[-3000:]
    took = time.monotonic() - t0

    final = json.loads((root / "trials" / tid / "result.json").read_text())["metrics"]
    reports = _reports(root)
    before = [r for r in reports if r["restarts"] == 0]
    after = [r for r in reports if r["restarts"] == 1]
    resumed_from = max(r["train_s"] for r in before if r.get("checkpoint_path") and r["train_s"] <= after[0]["train_s"])
    lost = max(r["train_s"] for r in before) - resumed_from
    print(f"\nkill at train_s={killed_at:.2f}, resumed from checkpoint at {resumed_from:.2f} (lost {lost:.2f} s), "
          f"final train_s={final['train_s']:.3f} ({100 * final['budget_deviation']:+.2f}%), "
          f"recovery_s={final['recovery_s']:.1f}, io_s={final['io_s']:.2f}, max_step_s={final['max_step_s']:.2f}, "
          f"test {took:.0f} s")
    assert final["restarts"] == 1 and final["ended_early"] == 0
    # The clock continued from the checkpoint: the first report after the restart starts near its train_s ...
    assert after[0]["train_s"] - resumed_from < 2.0
    # ... so the lost interval is not counted: the weights saw `budget` seconds of training, not budget + lost.
    assert lost > 0.3
    assert abs(final["train_s"] - budget) <= max(0.02 * budget, final["max_step_s"] / 2 + 0.05), final
    # The failure is visible as recovery time: lost work + detection + the new worker group's start.
    assert final["recovery_s"] >= lost and final["startup_s"] > 0
    assert (root / "trials" / tid / "eval.parquet").exists()
    assert not session.pids("ray::")                        # the sweep's Ray went down with it


def test_killed_sweep_driver_resumes_without_retraining(session, tmp_path):
    budget = 6.0
    job = tmp_path / "job.toml"
    job.write_text(JOB.format(sizes="[60, 120]", out=tmp_path / "runs", budget=budget, ckpt=2.0))
    root = tmp_path / "runs" / "ft"
    first_id, second_id = "rad-dino-tiny.dinov2.n60.s0", "rad-dino-tiny.dinov2.n120.s0"
    t0 = time.monotonic()
    log1 = tmp_path / "sweep1.log"
    proc = session.start(job, log1)
    _wait(lambda: (root / "trials" / first_id / "result.json").exists(), 300, "the first trial", proc, log1)
    _wait(lambda: _registered(root, second_id), 180, "a recorded checkpoint of the second trial", proc, log1)
    saved = _registered(root, second_id)[-1]["metrics"]     # the latest checkpoint the run can resume from
    first_result = (root / "trials" / first_id / "result.json").read_bytes()
    first_ckpts = _checkpoints(root, first_id)
    os.kill(proc.pid, signal.SIGKILL)                      # the driver only: Ray dies with it (fate sharing)
    proc.wait(timeout=30)
    session.close()                                         # whatever Ray left behind, by PID
    assert not (root / "trials" / second_id / "result.json").exists()

    log2 = tmp_path / "sweep2.log"
    second = session.start(job, log2)
    assert second.wait(timeout=420) == 0, log2.read_text()[-3000:]
    took = time.monotonic() - t0
    out = log2.read_text()
    assert "1 trial(s) already complete, skipped" in out and "training 1 trial(s)" in out, out[-2000:]
    assert (root / "trials" / first_id / "result.json").read_bytes() == first_result
    assert _checkpoints(root, first_id) == first_ckpts      # the finished trial's Train run was not touched
    final = json.loads((root / "trials" / second_id / "result.json").read_text())["metrics"]
    print(f"\nresumed trial: restarts={final['restarts']}, train_s={final['train_s']:.3f} "
          f"({100 * final['budget_deviation']:+.2f}%), recovery_s={final['recovery_s']:.1f}, test {took:.0f} s")
    assert final["restarts"] == 1                           # resumed from the checkpoint, not started over
    resumed = [r for r in _reports(root) if r.get("restarts") == 1]
    assert resumed and resumed[0]["train_s"] >= saved["train_s"] and resumed[0]["steps"] > saved["steps"]
    assert abs(final["train_s"] - budget) <= max(0.02 * budget, final["max_step_s"] / 2 + 0.05), final
    for tid in (first_id, second_id, "rad-dino-tiny.dinov2.n0.s0"):
        assert (root / "trials" / tid / "eval.parquet").exists()


def test_a_failed_trial_does_not_hold_back_the_others(session, tmp_path):
    """No restarts allowed (max_failures = 0) and the first trial's worker killed: that trial fails, the next one
    still trains, every finished trial is evaluated and reported, and the failure is named: exit 1, failed.json,
    the report's "Trials without results", a FAILED MLflow run with the reason."""
    job = tmp_path / "job.toml"
    job.write_text(JOB.format(sizes="[60, 120]", out=tmp_path / "runs", budget=4.0, ckpt=60.0)
                   .replace("max_failures = 2", "max_failures = 0"))
    root, log = tmp_path / "runs" / "ft", tmp_path / "sweep.log"
    failed_id, ok_id, base_id = (f"rad-dino-tiny.dinov2.n{n}.s0" for n in (60, 120, 0))
    proc = session.start(job, log)
    _wait(lambda: any(r.get("train_s", 0) > 0.5 for r in _reports(root)), 240, "the first trial training", proc,
          log)
    workers = session.pids("ray::RayTrainWorker")
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)
    assert proc.wait(timeout=420) == 1, log.read_text()[-3000:]
    out = log.read_text()
    assert f"radscale: {failed_id} failed: " in out, out[-3000:]
    assert f"1 trial(s) failed ({failed_id})" in out and "radscale: report " in out, out[-3000:]

    assert not (root / "trials" / failed_id / "result.json").exists()
    reason = json.loads((root / "trials" / failed_id / "failed.json").read_text())["reason"]
    assert reason and "\n" not in reason and "logs under" in reason
    for tid in (ok_id, base_id):                            # trained/baseline trials are evaluated regardless
        assert (root / "trials" / tid / "eval.parquet").exists(), tid
    assert set(pd.read_parquet(root / "results.parquet")["trial_id"]) == {ok_id, base_id}
    report = (root / "report" / "report.md").read_text()
    assert f"## Trials without results\n\n- `{failed_id}`: failed: " in report

    from radscale.tracking.tracker import MLflowTracker
    runs = {r["name"]: r for r in MLflowTracker(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", "ft").runs()}
    assert runs[failed_id]["status"] == "FAILED" and runs[failed_id]["tags"]["radscale.status"].startswith("failed")
    assert runs[ok_id]["status"] == "FINISHED"
    assert runs["ft"]["status"] == "FAILED" and runs["ft"]["tags"]["radscale.failed_trials"] == failed_id
    print(f"\nfailed trial: {reason}")
