"""`radscale plan` text (exact cost arithmetic, extrapolated N*, next sizes) and the MLflow summary metrics."""
import math
import re
from pathlib import Path

import numpy as np
import pytest

from radscale.config.load import load_job
from radscale.report.analysis import analyse
from radscale.report.metrics import summary_metrics
from radscale.report.next_sizes import candidate_sizes, size_benefit
from radscale.report.plan import DEFAULT_STARTUP_S, plan_text, project_costs
from test_report_synthetic import BASELINE_N, TRUTH, crossing_results

ROOT = Path(__file__).resolve().parents[2]
PAPER = ["hardware.node_price_per_hour=6.9", "hardware.num_workers=8"]


@pytest.fixture(scope="module")
def results():
    return crossing_results()


def _job(*extra):
    return load_job(ROOT / "jobs/demo.toml", [*PAPER, "budget.value=86400", "sizes=[150, 400, 1000, 3000, 8000]",
                                              *extra])


def test_cost_arithmetic_is_exact():
    job = _job()
    c = project_costs(job, None, startup_s=300.0)
    per = 6.9 * 8 * (86400 + 300) / 3600
    assert c.cost_per_trial == per and c.train_s == 86400 and c.startup_s == 300.0
    trained = [t for t in c.trials if t.trained]
    assert len(c.trials) == 12 and len(trained) == 10
    assert c.total_usd == pytest.approx(10 * per, rel=1e-15) and c.remaining_usd == c.total_usd
    assert all(t.cost_usd == 0.0 for t in c.trials if not t.trained)
    text = plan_text(job, None, startup_s=300.0)
    assert f"total ${10 * per:.2f}" in text and f"{per:.2f}" in text
    assert "rad-dino-tiny.dinov2.n0.s0" in text and "mi2-tiny.clip.n8000.s0" in text
    assert project_costs(job).startup_s == DEFAULT_STARTUP_S  # no results: the documented default
    gpu = project_costs(_job("budget.mode='gpu_hours'", "budget.value=16"), None, startup_s=0.0)
    assert gpu.train_s == 16 * 3600 / 8 and gpu.cost_per_trial == pytest.approx(6.9 * 16, rel=1e-12)


def test_costs_use_observed_startup_and_mark_done_trials(results):
    c = project_costs(_job(), results)
    assert c.startup_s == 10.0 and c.startup_source == "observed median"
    assert all(t.done for t in c.trials) and c.remaining_usd == 0.0
    samples = project_costs(_job("budget.mode='samples'", "budget.value=5000"), results, startup_s=0.0)
    assert samples.train_s == pytest.approx(20.0 * 1.002)  # median observed train_s
    assert math.isnan(project_costs(_job("budget.mode='samples'", "budget.value=5000")).train_s)


def test_plan_extrapolates_n_star_to_the_truth(results):
    a, alpha = TRUTH[("mi2-tiny", "clip")]
    taus = [a * 50 ** -alpha, a * 2e4 ** -alpha, a * 1e5 ** -alpha]  # N* = 50 (below the data), 20,000, 100,000
    text = plan_text(_job(), results, targets=taus)
    rows = [line for line in text.splitlines() if line.startswith("findings") and "mi2-tiny.clip" in line]
    assert len(rows) == 3
    for row, truth in zip(rows, (50, 2e4, 1e5)):
        est, lo, hi = (float(x) for x in re.search(r"([\d.e+]+) \[([\d.e+]+), ([\d.e+]+)\]\s+extrapolated$",
                                                     row).groups())
        assert est == pytest.approx(truth, rel=0.01) and lo < truth < hi


def test_next_sizes_prefer_leverage_and_respect_the_budget(results):
    assert candidate_sizes([150, 400, 1000]) == [245, 632, 2000, 4000]
    assert candidate_sizes([150, 400, 1000], pool_size=1133, exclude=[632]) == [245]
    sec = analyse(results)[0]
    ka = sec.keys["mi2-tiny.clip"]
    far = size_benefit(ka.series, ka.fit, 32000, sec.targets)
    mid = size_benefit(ka.series, ka.fit, 1732, sec.targets)
    # log-log OLS is linear in log e: the analytic spread of α is the spread over the refitted replicates
    assert far.alpha_sd == pytest.approx(np.std(ka.fit.param_replicates("alpha"), ddof=1), rel=1e-9)
    assert 0 < mid.alpha_reduction < far.alpha_reduction < 1  # leverage: a point beyond the range helps most
    assert size_benefit(ka.series, ka.fit, 32000, sec.targets, copies=2).alpha_reduction > far.alpha_reduction
    per = 6.9 * 8 * (86400 + 10.0) / 3600
    text = plan_text(_job(), results, extra_budget_usd=1.5 * per)
    (pick,) = [line for line in text.splitlines() if line.startswith("within $")]
    assert pick.count(" at N=") == 1 and "N=32000" in pick and f"${1.5 * per - per:.2f} left" in pick
    assert "no selection" in plan_text(_job("hardware.node_price_per_hour=0"), results, extra_budget_usd=100.0)


def test_summary_metrics_names_and_values(results):
    m = summary_metrics(results, _job())
    root = "scaling/findings/in-domain"
    for (enc, obj), (a, alpha) in TRUTH.items():
        k = f"{root}/{enc}.{obj}"
        assert m[f"{k}/alpha"] == pytest.approx(alpha, rel=1e-6) and m[f"{k}/a"] == pytest.approx(a, rel=1e-6)
        assert m[f"{k}/alpha_ci_lo"] < alpha < m[f"{k}/alpha_ci_hi"]
        assert abs(m[f"{k}/holdout_rel_error"]) < 1e-6 and m[f"{k}/holdout_inside_band"] == 1.0
        assert m[f"{k}/smallest_n_beating"] == pytest.approx(BASELINE_N, rel=1e-3)
        tau = m[f"{root}/target"]
        assert m[f"{k}/n_star"] == pytest.approx((a / tau) ** (1 / alpha), rel=1e-9)
    assert m[f"{root}/mi2-tiny.clip_vs_rad-dino-tiny.dinov2/exponent_ratio"] == pytest.approx(2.0, rel=1e-6)
    assert m["budget/trials_outside_tolerance"] == 1.0 and m["cost/usd"] > 0
    assert all(math.isfinite(v) for v in m.values()) and list(m) == sorted(m)
    assert all(re.fullmatch(r"[\w./ -]+", k) for k in m)  # MLflow's allowed metric-name characters


def test_an_undefined_size0_metric_is_not_called_unreachable(results):
    df = results.copy()
    base = (df["size"] == 0) & (df["encoder"] == "mi2-tiny") & (df["label"] == "macro")
    assert base.any()
    df.loc[base, "value"] = np.nan
    ka = analyse(df)[0].keys["mi2-tiny.clip"]
    assert ka.beating is None and ka.beating_note == "size-0 metric undefined" and math.isnan(ka.series.baseline_err)
