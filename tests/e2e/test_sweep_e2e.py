"""One end-to-end sweep on a real local Ray instance (Tune -> Train + DeepSpeed -> Ray Data -> actor-pool
extraction -> probes -> fits -> report -> MLflow sqlite), then a re-run that must train nothing."""
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]

JOB = """
sizes = [60, 120, 240]
[sweep]
name = "e2e"
output_dir = "{out}"
[data]
decode_size = 48
ood_phantom_profile = "scanner-b"
[data.phantom]
n_images = 480
image_size = 64
[[encoders]]
name = "rad-dino-tiny"
objective = "dinov2"
[[encoders]]
name = "mi2-tiny"
objective = "unicl"
[budget]
value = 4.0
[train]
batch_size = 8
report_every_s = 1.0
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
bootstrap = 50
min_positives = 3
seg_repeats = 2                 # the mean-of-fits path at one fit less per trial (the default 3 is slower here)
"""


def _radscale(*args, cwd):
    return subprocess.run([sys.executable, "-m", "radscale", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1500)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    job = tmp / "job.toml"
    job.write_text(JOB.format(out=tmp / "runs"))
    t0 = time.monotonic()
    first = _radscale("sweep", str(job), cwd=tmp)
    first_s = time.monotonic() - t0
    assert first.returncode == 0, first.stderr[-3000:]
    return tmp, job, first, first_s


def test_report_results_and_budget(sweep):
    tmp, job, first, _ = sweep
    report = Path(first.stdout.strip().splitlines()[-1].split("report ", 1)[1])
    assert report.exists() and report.name == "report.html"
    assert (report.parent / "findings-in-domain.png").exists()
    assert "mean of 2 fits (seeds 0..1)" in (report.parent / "report.md").read_text()
    root = tmp / "runs" / "e2e"
    results = pd.read_parquet(root / "results.parquet")
    ids = {f"{e}.n{n}.s0" for e in ("rad-dino-tiny.dinov2", "mi2-tiny.unicl") for n in (0, 60, 120, 240)}
    assert set(results["trial_id"]) == ids
    assert {"in-domain", "phantom-scanner-b"} <= set(results["domain"])
    macro = results[(results.label == "macro") & (results.metric == "auroc")]
    assert ((macro.ci_lo <= macro.value) & (macro.value <= macro.ci_hi)).all()
    for tid in ids - {i for i in ids if ".n0." in i}:
        res = json.loads((root / "trials" / tid / "result.json").read_text())["metrics"]
        assert res["steps"] > 1 and res["startup_s"] > 0 and res["images_per_s"] > 0
        # The stop lands within one step (+ the bounded wait for data) of the budget, whatever the load.
        assert abs(res["train_s"] - 4.0) <= res["max_step_s"] + 0.25 + 1e-6, (tid, res)
        assert res["epochs"] == pytest.approx(res["samples_seen"] / int(tid.split(".n")[1].split(".")[0]))
        assert res["data_cache_s"] > 0       # demo-sized subsets are decoded once, before training


def test_every_evaluation_family_per_trial_and_domain(sweep):
    """Linear and attention probes, segmentation and report generation: macro rows for every trial and domain,
    a report section per family, and the MLflow metric names built from the rows."""
    tmp, *_ = sweep
    root = tmp / "runs" / "e2e"
    results = pd.read_parquet(root / "results.parquet")
    macro = results[results.label == "macro"]
    headline = {"findings": "auroc", "tubes": "auroc", "findings:attention": "auroc", "tubes:attention": "auroc",
                "segmentation": "dice", "report_generation": "label_f1"}
    for tid, rows in macro.groupby("trial_id"):
        for task, metric in headline.items():
            got = set(rows[(rows.task == task) & (rows.metric == metric)].domain)
            assert got == {"in-domain", "phantom-scanner-b"}, (tid, task, got)
    seg = macro[macro.task == "segmentation"]
    assert ((seg.ci_lo <= seg.value) & (seg.value <= seg.ci_hi)).all() and (seg.n_labels >= 1).all()
    assert set(macro[macro.task == "report_generation"].metric) == {"label_f1", "bleu4", "rouge_l"}
    seconds = json.loads((root / "trials" / "rad-dino-tiny.dinov2.n60.s0" / "eval_seconds.json").read_text())
    assert set(seconds) == {"linear", "attention", "segmentation", "report_generation"}
    md = (root / "report" / "report.md").read_text()
    for task in headline:
        assert f"## {task} — in-domain" in md and f"## {task} — phantom-scanner-b" in md, task
    assert (root / "report" / "findings_attention-in-domain.png").exists()


def test_mlflow_runs_match_trials(sweep):
    tmp, *_ = sweep
    from radscale.tracking.tracker import MLflowTracker

    runs = MLflowTracker(f"sqlite:///{tmp / 'runs' / 'mlflow.db'}", "e2e").runs()
    by_name = {r["name"]: r for r in runs}
    results = pd.read_parquet(tmp / "runs" / "e2e" / "results.parquet")
    assert set(by_name) == set(results["trial_id"]) | {"e2e"}
    assert all(r["status"] == "FINISHED" for r in runs)
    trained = [r for n, r in by_name.items() if n != "e2e" and ".n0." not in n]
    for r in trained:
        assert "train/loss" in r["metrics"] and "summary/train_s" in r["metrics"]
        assert "eval/findings/in-domain/auroc" in r["metrics"]
        assert {"eval/findings:attention/in-domain/auroc", "eval/segmentation/phantom-scanner-b/dice",
                "eval/report_generation/in-domain/label_f1"} <= set(r["metrics"])
        assert r["tags"]["mlflow.parentRunId"] == by_name["e2e"]["run_id"]


def test_no_report_text_reaches_tracking(sweep):
    tmp, *_ = sweep
    manifest = next((tmp / "runs" / "_phantom").glob("default-*/manifest.parquet"))
    reports = [r for r in pq.read_table(manifest, columns=["report"]).column("report").to_pylist() if r]
    sentences = {s.strip() for r in reports[:50] for s in r.split(".") if len(s.strip()) > 25}
    blob = (tmp / "runs" / "mlflow.db").read_bytes()
    with sqlite3.connect(tmp / "runs" / "mlflow.db") as db:
        params = " ".join(v for (v,) in db.execute("select value from params"))
    leaked = [s for s in sentences if s.encode() in blob or s in params]
    assert sentences and not leaked


def test_rerun_trains_nothing_and_reproduces_the_report(sweep):
    tmp, job, first, first_s = sweep
    root = tmp / "runs" / "e2e" / "report"
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    t0 = time.monotonic()
    second = _radscale("sweep", str(job), cwd=tmp)
    second_s = time.monotonic() - t0
    assert second.returncode == 0, second.stderr[-2000:]
    assert "6 trial(s) already complete" in second.stdout and "trained 0" in second.stdout
    assert second_s < 0.25 * first_s, (second_s, first_s)
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before


def test_bad_input_is_refused_before_compute(sweep):
    tmp, job, *_ = sweep
    out = _radscale("sweep", str(job), "--set", "sizes=[60, 120, 100000]", cwd=tmp)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "exceed the pretraining pool" in lines[0]


def test_mlflow_ui_lists_the_sweep_runs(sweep):
    """`radscale ui` serves the store on loopback and its REST API lists every trial run."""
    import json as _json
    import socket
    import urllib.request

    tmp, *_ = sweep
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = f"sqlite:///{tmp / 'runs' / 'mlflow.db'}"
    ui = subprocess.Popen([sys.executable, "-m", "radscale", "ui", "--store", store, "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                exps = _json.loads(urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=10",
                                                          timeout=5).read())
                break
            except OSError:
                assert time.monotonic() < deadline, "MLflow UI did not come up"
                time.sleep(1)
        exp = next(e for e in exps["experiments"] if e["name"] == "e2e")
        req = urllib.request.Request(f"{url}/api/2.0/mlflow/runs/search", method="POST",
                                     data=_json.dumps({"experiment_ids": [exp["experiment_id"]],
                                                       "max_results": 100}).encode(),
                                     headers={"Content-Type": "application/json"})
        runs = _json.loads(urllib.request.urlopen(req, timeout=10).read())["runs"]
        names = {r["info"]["run_name"] for r in runs}
        results = pd.read_parquet(tmp / "runs" / "e2e" / "results.parquet")
        assert names == set(results["trial_id"]) | {"e2e"}
        html = urllib.request.urlopen(url + "/", timeout=10).read()
        assert b"<html" in html.lower()
    finally:
        ui.terminate()
        ui.wait(timeout=30)
