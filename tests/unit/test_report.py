"""The report from synthetic results tables: fits recover the curve, comparisons carry intervals, the held-out
check and the audit are there, files are deterministic and the HTML holds every table and figure."""
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radscale.config.load import load_job
from radscale.data.sweep_data import SweepData
from radscale.orchestrate.paths import SweepPaths
from radscale.report.analysis import analyse, holdout_of, series_from
from radscale.report.audit import audit_trials
from radscale.report.build import build_report, fit_series
from radscale.report.html import markdown_to_html
from test_report_synthetic import BASELINE_N, N_CROSS, TRUTH, crossing_results

ROOT = Path(__file__).resolve().parents[2]
DATA = SweepData("m", "e", 1000, ("pleural_effusion",), ("in-domain",), {"manifest": "/x/_phantom/m.parquet"})


def _independent(a=0.8, alpha=0.25, sizes=(150, 400, 1000, 3000)):
    rng = np.random.default_rng(0)
    rows = []
    for enc, obj, aa in (("rad-dino-tiny", "dinov2", a), ("mi2-tiny", "clip", a * 1.2)):
        for size in (0, *sizes):
            err = aa * max(size, 50) ** -alpha
            reps = 1 - (err + rng.normal(0, 0.005, 100))
            rows.append(dict(task="findings", domain="in-domain", metric="auroc", label="macro", value=1 - err,
                             ci_lo=np.percentile(reps, 2.5), ci_hi=np.percentile(reps, 97.5), n_test=200,
                             n_labels=6, replicates=reps.tolist(), trial_id=f"{enc}.{obj}.n{size}.s0",
                             encoder=enc, objective=obj, size=size, seed=0, n_eval_images=300, train_s=20.0,
                             samples_seen=500.0, epochs=1.0, budget_deviation=0.001, images_per_s=25.0,
                             startup_s=10.0))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The crossing table, built twice into the same folder (determinism) with a price set for the audit."""
    job = load_job(ROOT / "jobs/demo.toml", ["hardware.node_price_per_hour=3.0", "hardware.num_workers=2"])
    paths = SweepPaths(tmp_path_factory.mktemp("sweep"))
    out = build_report(job, crossing_results(), paths, DATA)
    first = {p.name: p.read_bytes() for p in sorted(paths.report_dir.iterdir())}
    build_report(job, crossing_results(), paths, DATA)
    second = {p.name: p.read_bytes() for p in sorted(paths.report_dir.iterdir())}
    return dict(out=out, first=first, second=second, dir=paths.report_dir,
                md=(paths.report_dir / "report.md").read_text(),
                fits=json.loads((paths.report_dir / "fits.json").read_text()))


def test_fit_recovers_exponent():
    df = _independent()
    fit, why = fit_series(df[df.encoder == "rad-dino-tiny"])
    assert why == "" and abs(fit.params["alpha"] - 0.25) < 0.03
    lo, hi = fit.ci["alpha"]
    assert lo < 0.25 < hi


def test_report_is_deterministic_and_self_contained(built):
    assert built["first"] == built["second"]
    names = set(built["first"])
    assert {"report.md", "report.html", "fits.json", "findings-in-domain.png",
            "findings-in-domain-multiplier.png"} <= names
    html = built["out"].read_text()
    pngs = [n for n in names if n.endswith(".png")]
    assert html.count('src="data:image/png;base64,') == len(pngs) == 2
    assert "src=\"findings" not in html  # nothing refers to a file next to it
    md_tables = sum(1 for a, b in zip(built["md"].splitlines(), built["md"].splitlines()[1:])
                    if a.startswith("|") and b.startswith("|---"))
    assert html.count("<table>") == md_tables >= 6


def test_fits_recover_both_laws_and_the_baseline_crossing(built):
    sec = built["fits"]["sections"]["findings/in-domain"]
    for (enc, obj), (a, alpha) in TRUTH.items():
        k = sec["keys"][f"{enc}.{obj}"]
        assert k["fit"]["params"]["alpha"] == pytest.approx(alpha, rel=1e-6)
        assert k["fit"]["params"]["a"] == pytest.approx(a, rel=1e-6)
        lo, hi = k["fit"]["ci"]["alpha"]
        assert lo < alpha < hi and hi - lo < 0.02
        nb = k["smallest_n_beating"]  # the size-0 error sits on the curve at N = 300
        assert nb["n_star"] == pytest.approx(BASELINE_N, rel=1e-3)
        assert nb["ci"][0] < BASELINE_N < nb["ci"][1]


def test_holdout_rows_predict_the_largest_size(built):
    sec = built["fits"]["sections"]["findings/in-domain"]
    for k in sec["keys"].values():
        h = k["holdout"]
        assert h["n_holdout"] == 8000 and h["fit"]["n_points"] == 4
        assert abs(h["rel_error"]) < 1e-6 and h["inside_band"] is True
    block = built["md"].split("### Held-out largest N")[1].split("###")[0]
    assert block.count("holdout N=8000: predicted") == 2 and "| `mi2-tiny.clip` | 8000 | 4 |" in block


def test_holdout_with_three_sizes_is_reported_with_its_caveat():
    df = crossing_results(sizes=(150, 1000, 8000))
    s = series_from(df[(df.encoder == "mi2-tiny") & (df.metric == "auroc") & (df.label == "macro")], "m")
    h, note = holdout_of(s)
    assert h is not None and h.fit.n_points == 2 and "0 residual dof" in note
    h2, note2 = holdout_of(series_from(df[(df.encoder == "mi2-tiny") & (df.metric == "auroc")
                                          & (df.label == "macro") & (df["size"] < 8000)], "m"))
    assert h2 is None and "needs ≥ 3 sizes" in note2


def test_comparisons_come_with_definitions_and_paired_intervals(built):
    md, sec = built["md"], built["fits"]["sections"]["findings/in-domain"]
    pair = sec["pairs"]["mi2-tiny.clip_vs_rad-dino-tiny.dinov2"]
    ratio = pair["exponent_ratio"]
    assert ratio["ratio"] == pytest.approx(2.0, rel=1e-6) and ratio["ci"][0] < 2.0 < ratio["ci"][1]
    (cross,) = pair["crossings"]["n_cross"]
    assert cross == pytest.approx(N_CROSS, rel=1e-6)
    m = pair["data_multiplier"]
    assert len(m["targets"]) >= 4
    r = np.array(m["ratio"], float)
    assert (r < 1).any() and (r > 1).any()  # the curves cross: no single "k× better"
    for tau, ratio_t, (lo, hi) in zip(m["targets"], m["ratio"], m["ci_ratio"]):
        expect = (1.0 / tau) ** (1 / 0.2) / (0.5 / tau) ** (1 / 0.1)
        assert ratio_t == pytest.approx(expect, rel=1e-6) and lo <= ratio_t <= hi
    bullets = [line for line in md.splitlines() if line.startswith(("- alpha_", "- data multiplier", "- `"))]
    assert len(bullets) == 6 and all("95%" in line for line in bullets)  # ratio, multiplier, 2 holdout, 2 beating
    assert "alpha_mi2-tiny.clip/alpha_rad-dino-tiny.dinov2 = 2 (95% CI" in md
    assert "data multiplier N*_mi2-tiny.clip(τ)/N*_rad-dino-tiny.dinov2(τ)" in md
    assert f"for N in [150, 8e+03]: {N_CROSS:.3g}" in md and "N^(−α)" in md


def test_audit_flags_the_trial_over_budget_and_totals_the_cost(built):
    df = crossing_results()
    job = load_job(ROOT / "jobs/demo.toml", ["hardware.node_price_per_hour=3.0", "hardware.num_workers=2"])
    a = audit_trials(df, job.hardware)
    assert [t.trial_id for t in a.flagged] == ["mi2-tiny.clip.n3000.s0"]
    trained = [t for t in a.trials if t.size > 0]
    hours = sum(2 * (t.train_s + t.startup_s) / 3600 for t in trained)
    assert a.worker_hours == pytest.approx(hours, rel=1e-12) and a.cost_usd == pytest.approx(3.0 * hours, rel=1e-12)
    assert a.gpu_hours == 0.0 and len(trained) == 10 and len(a.trials) == 12
    rows = [line for line in built["md"].splitlines() if line.startswith("| ") and "⚠" in line]
    assert len(rows) == 1 and rows[0].startswith("| mi2-tiny.clip.n3000.s0 |") and "3.00%" in rows[0]
    assert all(math.isnan(t.mfu) for t in a.trials)              # no achieved TFLOP/s recorded, no peak
    measured = df.assign(achieved_tflops=np.where(df["size"] > 0, 300.0, np.nan))
    assert all(math.isnan(t.mfu) for t in audit_trials(measured, job.hardware).trials)     # peak unknown
    peak = job.hardware.model_copy(update={"peak_tflops": 500.0})                          # x 2 workers
    assert {t.mfu for t in audit_trials(measured, peak).trials if t.size > 0} == {0.3}
    assert f"cost ${3.0 * hours:.2f}" in built["md"]


def test_sections_follow_the_headline_metric_and_empty_results_still_build(tmp_path):
    df = crossing_results(tasks=(("findings", "in-domain"), ("tubes", "ood")))
    secs = analyse(df)
    assert [(s.task, s.domain, s.metric) for s in secs] == [("findings", "in-domain", "auroc"),
                                                             ("tubes", "ood", "auroc")]
    job = load_job(ROOT / "jobs/demo.toml")
    out = build_report(job, pd.DataFrame(), SweepPaths(tmp_path), DATA)
    assert "No evaluation results yet." in out.read_text()
    assert json.loads((tmp_path / "report" / "fits.json").read_text())["sections"] == {}


def test_html_renders_the_markdown_subset(tmp_path):
    md = "# T\n\n- a `b` **c** <x>\n\n## S 1\n\n| h | i |\n|---|---|\n| 1 | 2 |\n\ntext\n"
    html = markdown_to_html(md, tmp_path)
    assert "<ul><li>a <code>b</code> <strong>c</strong> &lt;x&gt;</li></ul>" in html
    assert '<h2 id="s-s-1">S 1</h2>' in html and '<a href="#s-s-1">' in html
    assert "<thead><tr><th>h</th><th>i</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr>" in html
    assert "<p>text</p>" in html and re.search(r"<h1>T</h1>", html)


def test_degenerate_sweeps_still_report(tmp_path):
    """Only size-0 baselines (every trial stopped by the cost bound), and flat curves (α = 0 for both encoders:
    the exponent ratio is undefined, not a crash)."""
    from test_report_synthetic import crossing_results

    job = load_job(ROOT / "jobs/demo.toml")
    data = SweepData("m", "e", 1000, ("pleural_effusion",), ("in-domain",), {"manifest": "/x/_phantom/m.parquet"})
    r = crossing_results()
    assert build_report(job, r[r["size"] == 0].copy(), SweepPaths(tmp_path / "a"), data).exists()
    flat = r.assign(value=0.7, replicates=[[0.7] * 200 if x is not None else None for x in r["replicates"]])
    assert build_report(job, flat, SweepPaths(tmp_path / "b"), data).exists()


def test_planned_trials_without_results_are_listed_with_their_reason(tmp_path):
    from radscale.config.trial import plan_trials

    job = load_job(ROOT / "jobs/demo.toml")
    paths = SweepPaths(tmp_path)
    failed, stopped, unevaluated, evaluated, untouched, empty = [t.trial_id for t in plan_trials(job)
                                                                 if t.trained][:6]
    for tid, marker, payload in ((failed, paths.failed_json(failed), {"reason": "WorkerGroupError: gone"}),
                                 (stopped, paths.stopped_json(stopped), {"reason": "cost bound $1 reached"}),
                                 (unevaluated, paths.result_json(unevaluated), {"metrics": {}}),
                                 (empty, paths.eval_table(empty), {})):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(payload))
    md = build_report(job, pd.DataFrame(), paths, DATA).with_suffix(".md").read_text()
    section = md.split("## Trials without results\n\n", 1)[1]
    assert f"- `{failed}`: failed: WorkerGroupError: gone; the next run retries it" in section
    assert f"- `{stopped}`: stopped: cost bound $1 reached; the next run resumes it" in section
    assert f"- `{unevaluated}`: encoder ready, not evaluated yet" in section
    assert f"- `{empty}`: evaluated, no result rows" in section
    assert f"- `{untouched}`: not trained (refused by the cost bound, or the sweep ended before it)" in section

    from radscale.report.build import _without_results
    listed = "\n".join(_without_results(job, pd.DataFrame({"trial_id": [evaluated]}), paths))
    assert f"`{evaluated}`" not in listed and f"`{failed}`" in listed
    every = pd.DataFrame({"trial_id": [t.trial_id for t in plan_trials(job)]})
    assert _without_results(job, every, paths) == []            # a complete sweep has no such section
