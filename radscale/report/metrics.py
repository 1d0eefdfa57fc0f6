"""Flat scalar summaries of the scaling analysis, for the sweep's parent run in MLflow.

Names: "scaling/<task>/<domain>/<encoder key>/<quantity>", "scaling/<task>/<domain>/<key A>_vs_<key B>/<quantity>"
(keys in sorted order), "scaling/<task>/<domain>/target" (the default target error τ0: the lowest error
observed at any trained size in that section), and "cost/…", "budget/…" when a job is given.
Only finite values are returned: an absent metric means undefined (no fit, unreachable target, no baseline).
"""
from __future__ import annotations

import math

import pandas as pd

from radscale.config.specs import JobSpec
from radscale.report.analysis import SectionAnalysis, analyse, n_star_ci
from radscale.report.audit import audit_trials


def _section_metrics(sec: SectionAnalysis) -> dict[str, float]:
    root = f"scaling/{sec.task}/{sec.domain}"
    out = {f"{root}/target": sec.default_target}
    for k, ka in sec.keys.items():
        p = f"{root}/{k}"
        f = ka.fit
        if f is not None:
            out[f"{p}/a"], out[f"{p}/alpha"] = f.params["a"], f.params["alpha"]
            out[f"{p}/alpha_ci_lo"], out[f"{p}/alpha_ci_hi"] = f.ci.get("alpha", (math.nan, math.nan))
            out[f"{p}/log_rmse"] = f.residuals["rmse_log"]
            est, lo, hi = n_star_ci(f, [sec.default_target])
            out[f"{p}/n_star"], out[f"{p}/n_star_ci_lo"], out[f"{p}/n_star_ci_hi"] = est[0], lo[0], hi[0]
        h = ka.holdout
        if h is not None:
            out[f"{p}/holdout_rel_error"] = h.rel_error
            if h.inside_band is not None:
                out[f"{p}/holdout_inside_band"] = 1.0 if h.inside_band else 0.0
        nb = ka.beating
        if nb is not None:
            out[f"{p}/smallest_n_beating"] = nb.n_star
            out[f"{p}/smallest_n_beating_ci_lo"], out[f"{p}/smallest_n_beating_ci_hi"] = nb.ci
    for pair in sec.pairs:
        p = f"{root}/{pair.names[0]}_vs_{pair.names[1]}"
        if pair.ratio is not None:
            out[f"{p}/exponent_ratio"] = pair.ratio.ratio
            out[f"{p}/exponent_ratio_ci_lo"], out[f"{p}/exponent_ratio_ci_hi"] = pair.ratio.ci
        if pair.crossings is not None:
            out[f"{p}/n_crossings"] = float(len(pair.crossings.n_cross))
    return out


def summary_metrics(results: pd.DataFrame, job: JobSpec | None = None) -> dict[str, float]:
    """Scaling quantities per (task, domain, encoder key) and per pair; with `job`, cost and budget totals."""
    out: dict[str, float] = {}
    for sec in analyse(results):
        out.update(_section_metrics(sec))
    if job is not None and results is not None and not results.empty:
        a = audit_trials(results, job.hardware)
        out.update({"cost/worker_hours": a.worker_hours, "cost/gpu_hours": a.gpu_hours, "cost/usd": a.cost_usd,
                    "budget/max_abs_deviation": a.max_abs_deviation,
                    "budget/trials_outside_tolerance": float(len(a.flagged))})
    return {k: float(v) for k, v in sorted(out.items()) if v is not None and math.isfinite(float(v))}
