"""A real local Ray cluster: `ray start --head` (token auth, loopback, a node-type label), then two submissions of
one sweep with `ray job submit -- python -m radscale sweep job.toml` (Ray storage on a file:// URI):

1. one trained size, no bound: the job succeeds, outputs land where configured, spend is measured per node type;
2. the same sweep with two more sizes and a cost bound just above the spend so far: the first new trial is
   admitted and ends cleanly when the bound is reached (stopped, resumable), the next one never starts.

Everything the head starts stays in the process session of `ray start` and in a private --temp-dir; cleanup
kills exactly those PIDs (`ray stop` would stop every Ray on the machine).
"""
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

RAY = str(Path(sys.executable).with_name("ray"))
NODE_TYPE = "test-node"
DONE, STOPPED, SKIPPED = ("rad-dino-tiny.dinov2.n40.s0", "rad-dino-tiny.dinov2.n80.s0",
                          "rad-dino-tiny.dinov2.n120.s0")
HEADROOM_USD = 15.0                 # second job's bound = spend so far + this ($1/s: ~15 s of the cluster)
JOB = """
sizes = [40]
[sweep]
name = "cj"
output_dir = "{out}"
storage_uri = "{storage}"
[data]
decode_size = 48
[data.phantom]
n_images = 240
image_size = 64
[[encoders]]
name = "rad-dino-tiny"
objective = "dinov2"
[budget]
value = 6.0
[train]
batch_size = 4
report_every_s = 0.5
checkpoint_every_s = 2.0
[train.dinov2]
global_size = 32
local_size = 16
local_crops = 2
n_prototypes = 256
head_hidden = 64
head_bottleneck = 32
[hardware]
cpus_per_worker = 0.5
torch_threads = 2
data_cpus = 0.75
[eval]
bootstrap = 20
min_positives = 2
tasks = ["findings"]
attention_probe = false                     # about the job and its cost: one linear probe is evaluation enough
segmentation = false
report_generation = false
[cost]
node_prices = {{ {node_type} = 3600.0 }}   # $1 per second of the (one-node) cluster
trial_usd_per_hour = 3.6                    # projects (6 s + 0 s overhead) x $0.001/s per trial
startup_overhead_s = 0.0
poll_s = 1.0
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Head:
    """`ray start --head` in its own session, every port chosen free, a private temp dir."""

    def __init__(self):
        self.temp = tempfile.mkdtemp(prefix="rscj-", dir="/tmp")       # short: Ray's socket paths have a limit
        gcs, self.dash, client, agent, agent_grpc, env_agent, metrics = _free_ports(7)
        self.env = dict(os.environ, RAY_AUTH_MODE="token", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                        RAY_OVERRIDE_LABELS=json.dumps({"radscale.io/node-type": NODE_TYPE}))
        self.env.pop("RAY_ADDRESS", None)
        self.proc = subprocess.Popen(
            [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
             "--port", str(gcs), "--dashboard-port", str(self.dash), "--ray-client-server-port", str(client),
             "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
             "--runtime-env-agent-port", str(env_agent), "--metrics-export-port", str(metrics),
             "--num-cpus", "2", "--temp-dir", self.temp, "--disable-usage-stats"],
            env=self.env, stdout=open(Path(self.temp) / "start.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True)   # a file, not a pipe: the daemons it leaves behind inherit it
        self.sid = self.proc.pid
        self.address = f"http://127.0.0.1:{self.dash}"

    def wait_ready(self, timeout: float = 120) -> None:
        rc = self.proc.wait(timeout=timeout)                      # `ray start` returns once the head is up
        assert rc == 0, (Path(self.temp) / "start.log").read_text()[-3000:]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.address}/api/version", timeout=2)
                return
            except urllib.error.HTTPError:                         # 401 without the token: the server is up
                return
            except OSError:
                time.sleep(1)
        pytest.fail("the job server did not come up")

    def job(self, command: str, *args: str, timeout: float = 60) -> str:
        res = subprocess.run([RAY, "job", command, "--address", self.address, *args], env=self.env,
                             capture_output=True, text=True, timeout=timeout)
        return res.stdout + res.stderr

    def run(self, workdir: Path, *sweep_args: str, timeout: float = 400) -> tuple[str, str, float]:
        """Submit `python -m radscale sweep job.toml ARGS` and wait: (final status, job logs, seconds)."""
        t0 = time.monotonic()
        out = self.job("submit", "--no-wait", "--working-dir", str(workdir), "--",
                       sys.executable, "-m", "radscale", "sweep", "job.toml", *sweep_args)
        found = re.search(r"raysubmit_\w+", out)
        assert found, out[-3000:]
        status = "RUNNING"
        while time.monotonic() - t0 < timeout and status == "RUNNING":
            time.sleep(3)
            text = self.job("status", found.group(0)).lower()   # "Job '…' succeeded" / "… failed" / "… was stopped"
            status = next((s.upper() for s in ("succeeded", "failed", "stopped")
                           if f"' {s}" in text or f"was {s}" in text), "RUNNING")
        return status, self.job("logs", found.group(0)), time.monotonic() - t0

    def pids(self) -> list[int]:
        out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
        return [int(p) for p, s in (line.split() for line in out.splitlines() if line.strip()) if int(s) == self.sid]

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 15
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.5)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    work = tmp / "job"                         # the uploaded working dir: only the job file (radscale is installed)
    work.mkdir()
    store = tmp / "store"
    (work / "job.toml").write_text(JOB.format(out=tmp / "runs", storage=store.as_uri(), node_type=NODE_TYPE))
    root = tmp / "runs" / "cj"
    head = Head()
    try:
        head.wait_ready()
        first = head.run(work)
        assert first[0] == "SUCCEEDED", first[1][-4000:]
        spend1 = json.loads((root / "spend.json").read_text())
        bound = spend1["spent_usd"] + HEADROOM_USD
        # No spaces inside an argument: the entrypoint is one shell line.
        second = head.run(work, "--set", "sizes=[40,80,120]", "--set", f"cost.budget_usd={bound:.2f}")
        assert second[0] == "SUCCEEDED", second[1][-4000:]
        print(f"\ncluster jobs: first {first[2]:.0f} s (${spend1['spent_usd']:.2f}), second {second[2]:.0f} s")
        yield tmp, store, root, first, second, spend1, bound
    finally:
        head.stop()
        assert not head.pids()


def test_job_outputs_land_where_configured(jobs):
    tmp, store, root, first, *_ = jobs
    assert (root / "report" / "report.html").exists() and (root / "results.parquet").exists()
    assert json.loads((root / "trials" / DONE / "result.json").read_text())["metrics"]["ended_early"] == 0
    assert list((store / f"cj.{DONE}").glob("checkpoint_*"))        # Train storage on the file:// URI
    assert (store / "tune-cj").is_dir() and not (root / "ray").exists()
    assert "trained 1, skipped 0 complete, evaluated 2" in first[1]


def test_spend_is_measured_per_node_type_and_accumulates(jobs):
    *_, spend1, bound = jobs
    root = jobs[2]
    spend = json.loads((root / "spend.json").read_text())
    assert spend1["spent_usd"] > 10 and spend1["by_node_type"][NODE_TYPE]["usd"] == spend1["spent_usd"]
    assert spend["spent_usd"] >= bound > spend1["spent_usd"] and spend["budget_usd"] == pytest.approx(bound, abs=0.01)
    assert spend["node_hours"] == pytest.approx(spend["spent_usd"] / 3600.0)


def test_cost_bound_stops_the_running_trial_and_skips_the_next(jobs):
    tmp, store, root, first, second, *_ = jobs
    logs = second[1]
    assert "1 trial(s) already complete, skipped" in logs and "training 2 trial(s)" in logs
    stopped = json.loads((root / "trials" / STOPPED / "stopped.json").read_text())
    assert stopped["reason"].startswith("cost budget reached") and stopped["metrics"]["ended_early"] == 1
    assert stopped["metrics"]["train_s"] < 6.0 and not (root / "trials" / STOPPED / "result.json").exists()
    assert list((store / f"cj.{STOPPED}").glob("checkpoint_*"))      # a re-run resumes from it
    assert not (root / "trials" / SKIPPED).exists()                   # never started
    assert f"{SKIPPED} skipped: cost budget reached" in logs
    assert f"{STOPPED} stopped at" in logs and "a re-run resumes it from its checkpoint" in logs
    spend = json.loads((root / "spend.json").read_text())
    assert spend["skipped"][SKIPPED].startswith("skipped: cost budget reached") and STOPPED in spend["stopped"]
    assert (store / "cj.stop").exists()


def test_mlflow_runs(jobs):
    tmp = jobs[0]
    with sqlite3.connect(tmp / "runs" / "mlflow.db") as con:
        runs = dict(con.execute("select name, status from runs"))
        ids = dict(con.execute("select name, run_uuid from runs"))

        def of(run: str, table: str) -> dict:
            return dict(con.execute(f"select key, value from {table} where run_uuid = ?", (ids[run],)))

        parent, stopped, done = of("cj", "latest_metrics"), of(STOPPED, "tags"), of(DONE, "latest_metrics")
        parent_tags = of("cj", "tags")
    assert runs["cj"] == runs[DONE] == runs["rad-dino-tiny.dinov2.n0.s0"] == "FINISHED"
    assert runs[STOPPED] == "KILLED" and stopped["radscale.status"].startswith("stopped at")
    assert SKIPPED not in runs
    assert parent["cost/spent_usd"] > 10 and parent["cost/trials_skipped"] == parent["cost/trials_stopped"] == 1
    assert SKIPPED in parent_tags["radscale.cost.skipped"]
    assert "eval/findings/in-domain/auroc" in done and "train/loss" in done
