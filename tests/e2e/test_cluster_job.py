"""A real local Ray cluster: `ray start --head` (token auth, loopback, a node-type label), then
`ray job submit -- python -m radscale sweep job.toml` with Ray storage on a file:// URI and a cost bound that the
sweep must hit: the running trial ends cleanly at the bound (stopped, resumable) and the next one never starts.

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
JOB = """
sizes = [60, 120]
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
value = 120.0
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
[cost]
budget_usd = 30.0
node_prices = {{ {node_type} = 3600.0 }}   # $1 per second: the bound is reached ~30 s after the sweep joins
trial_usd_per_hour = 3.6                    # projects $0.12 per trial, so the first trial is admitted
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

    def job(self, command: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, "job", command, "--address", self.address, *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

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
def submitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    work = tmp / "job"                         # the uploaded working dir: only the job file (radscale is installed)
    work.mkdir()
    store = tmp / "store"
    (work / "job.toml").write_text(JOB.format(out=tmp / "runs", storage=store.as_uri(), node_type=NODE_TYPE))
    head = Head()
    try:
        head.wait_ready()
        t0 = time.monotonic()
        sub = head.job("submit", "--no-wait", "--working-dir", str(work), "--",
                       sys.executable, "-m", "radscale", "sweep", "job.toml")
        assert sub.returncode == 0, sub.stdout[-2000:] + sub.stderr[-2000:]
        job_id = re.search(r"raysubmit_\w+", sub.stdout + sub.stderr).group(0)
        status = ""
        while time.monotonic() - t0 < 420 and status not in ("SUCCEEDED", "FAILED", "STOPPED"):
            time.sleep(3)
            res = head.job("status", job_id)
            out = res.stdout + res.stderr
            status = next((s for s in ("SUCCEEDED", "FAILED", "STOPPED", "RUNNING", "PENDING") if s in out), "")
        res = head.job("logs", job_id)
        logs = res.stdout + res.stderr
        took = time.monotonic() - t0
        yield tmp, store, status, logs, took
    finally:
        head.stop()
        assert not head.pids()


def test_job_succeeds_and_outputs_land_where_configured(submitted):
    tmp, store, status, logs, took = submitted
    print(f"\njob ran {took:.0f} s")
    assert status == "SUCCEEDED", logs[-4000:]
    root = tmp / "runs" / "cj"
    assert (root / "report" / "report.html").exists() and (root / "results.parquet").exists()
    trial = "rad-dino-tiny.dinov2.n60.s0"
    assert list((store / f"cj.{trial}").glob("checkpoint_*"))       # Train storage on the file:// URI
    assert (store / "tune-cj").is_dir() and not (root / "ray").exists()


def test_cost_bound_stops_the_running_trial_and_skips_the_next(submitted):
    tmp, store, status, logs, _ = submitted
    root = tmp / "runs" / "cj"
    first, second = "rad-dino-tiny.dinov2.n60.s0", "rad-dino-tiny.dinov2.n120.s0"
    spend = json.loads((root / "spend.json").read_text())
    assert spend["spent_usd"] >= 30.0 and spend["by_node_type"][NODE_TYPE]["usd"] == spend["spent_usd"]
    assert spend["halted"].startswith("cost budget reached")
    stopped = json.loads((root / "trials" / first / "stopped.json").read_text())
    assert stopped["reason"].startswith("cost budget reached") and stopped["metrics"]["ended_early"] == 1
    assert stopped["metrics"]["train_s"] < 120.0 and not (root / "trials" / first / "result.json").exists()
    assert not (root / "trials" / second).exists()                  # never started
    assert f"{second} skipped: cost budget reached" in logs
    assert f"{first} stopped at" in logs and "a re-run resumes it from its checkpoint" in logs
    assert spend["skipped"][second].startswith("skipped: cost budget reached") and first in spend["stopped"]
    assert (store / "cj.stop").exists()


def test_mlflow_runs(submitted):
    tmp, *_ = submitted
    db = tmp / "runs" / "mlflow.db"
    with sqlite3.connect(db) as con:
        runs = dict(con.execute("select name, status from runs"))
        run_ids = dict(con.execute("select name, run_uuid from runs"))
        metrics = {k: v for k, v in con.execute("select key, value from latest_metrics where run_uuid = ?",
                                                (run_ids["cj"],))}
        tags = dict(con.execute("select key, value from tags where run_uuid = ?", (run_ids["cj"],)))
        trial_tags = dict(con.execute("select key, value from tags where run_uuid = ?",
                                      (run_ids["rad-dino-tiny.dinov2.n60.s0"],)))
        base = {k for (k,) in con.execute("select key from latest_metrics where run_uuid = ?",
                                          (run_ids["rad-dino-tiny.dinov2.n0.s0"],))}
    assert runs["cj"] == "FINISHED" and runs["rad-dino-tiny.dinov2.n0.s0"] == "FINISHED"
    assert runs["rad-dino-tiny.dinov2.n60.s0"] == "KILLED"
    assert trial_tags["radscale.status"].startswith("stopped at")
    assert "rad-dino-tiny.dinov2.n120.s0" not in runs
    assert metrics["cost/spent_usd"] >= 30.0 and metrics["cost/trials_skipped"] == 1
    assert metrics["cost/trials_stopped"] == 1
    assert "rad-dino-tiny.dinov2.n120.s0" in tags["radscale.cost.skipped"]
    assert "eval/findings/in-domain/auroc" in base
