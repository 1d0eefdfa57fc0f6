"""The report from a synthetic results table: fits recover the curve, files are deterministic."""
from pathlib import Path

import numpy as np
import pandas as pd

from radscale.config.load import load_job
from radscale.data.sweep_data import SweepData
from radscale.orchestrate.paths import SweepPaths
from radscale.report.build import build_report, fit_series

ROOT = Path(__file__).resolve().parents[2]


def _results(a=0.8, alpha=0.25):
    rng = np.random.default_rng(0)
    rows = []
    for enc, obj, aa in (("rad-dino-tiny", "dinov2", a), ("mi2-tiny", "clip", a * 1.2)):
        for size in (0, 150, 400, 1000, 3000):
            err = aa * max(size, 50) ** -alpha
            reps = 1 - (err + rng.normal(0, 0.005, 100))
            rows.append(dict(task="findings", domain="in-domain", metric="auroc", label="macro", value=1 - err,
                             ci_lo=np.percentile(reps, 2.5), ci_hi=np.percentile(reps, 97.5), n_test=200,
                             n_labels=6, replicates=reps.tolist(), trial_id=f"{enc}.{obj}.n{size}.s0",
                             encoder=enc, objective=obj, size=size, seed=0, n_eval_images=300, train_s=20.0,
                             samples_seen=500.0, epochs=1.0, budget_deviation=0.001, images_per_s=25.0,
                             startup_s=10.0))
    return pd.DataFrame(rows)


def test_fit_recovers_exponent():
    df = _results()
    g = df[df.encoder == "rad-dino-tiny"]
    fit, why = fit_series(g)
    assert why == "" and abs(fit.params["alpha"] - 0.25) < 0.03
    lo, hi = fit.ci["alpha"]
    assert lo < 0.25 < hi


def test_report_is_deterministic_and_complete(tmp_path):
    job = load_job(ROOT / "jobs/demo.toml")
    data = SweepData("m", "e", 1000, ("pleural_effusion",), ("in-domain",), {"manifest": "/x/_phantom/m.parquet"})
    paths = SweepPaths(tmp_path)
    out = build_report(job, _results(), paths, data)
    first = {p.name: p.read_bytes() for p in paths.report_dir.iterdir()}
    build_report(job, _results(), paths, data)
    second = {p.name: p.read_bytes() for p in paths.report_dir.iterdir()}
    assert first == second
    assert {"report.md", "report.html", "findings-in-domain.png", "fits.json"} <= set(first)
    md = (paths.report_dir / "report.md").read_text()
    assert "alpha_mi2-tiny.clip/alpha_rad-dino-tiny.dinov2" in md and "N^(−α)" in md
    assert out.read_text().count("data:image/png;base64,") == 1
