"""`radscale plan JOB`: what a job runs and costs, and — given results — what the fits say to run next.

Projected cost of a trained trial = node_price_per_hour × num_workers × (train_s + startup_s) / 3600, with
train_s = the budget for mode "seconds"; budget × 3600 / num_workers for "gpu_hours" (the budget clock counts
wall time × workers, train/budget.py); the observed median train_s for "samples" and "flops" (unknown without
results). startup_s (worker start, weights, DeepSpeed init, first step) is outside the budget but billed: the
`startup_s` argument, else the observed median in results, else DEFAULT_STARTUP_S. Size-0 trials are only
evaluated and carry no training cost; evaluation is not costed.

With results: N*(τ) = (a/τ)^(1/α) per (encoder key, task, domain) and target error τ with its 95% CI over the fit's
test-set bootstrap replicates, and the expected CI narrowing of candidate sizes (report/next_sizes.py). The
recommendation takes candidates in order of expected narrowing, at most one new size per encoder key (benefits
are measured against the current data, so two new sizes of one key would overlap), while the extra budget lasts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from radscale.config.specs import JobSpec
from radscale.config.trial import plan_trials
from radscale.report.analysis import SectionAnalysis, analyse, n_star_ci
from radscale.report.next_sizes import CANDIDATE_FACTORS, candidate_sizes, size_benefit
from radscale.report.tables import num, text_table, with_ci
from radscale.scaling.compare import unreachable_why

# A GPU node: Ray worker group, weights, DeepSpeed init, compile warm-up and first step (the CPU demo: 8–25 s).
DEFAULT_STARTUP_S = 300.0
RANK_BY = ("alpha", "n_star")


@dataclass(frozen=True)
class PlannedTrial:
    trial_id: str
    size: int
    seed: int
    trained: bool
    cost_usd: float          # NaN when the training time is unknown
    done: bool               # present in results (with a budget record when trained)


@dataclass(frozen=True)
class PlanCosts:
    trials: tuple[PlannedTrial, ...]
    train_s: float           # per trained trial; NaN unknown
    train_source: str
    startup_s: float
    startup_source: str
    worker_hours_per_trial: float
    cost_per_trial: float
    total_usd: float
    remaining_usd: float     # trials not yet done


def _observed_median(results: pd.DataFrame | None, col: str) -> float:
    if results is None or results.empty or col not in results:
        return float("nan")
    per_trial = results[results["size"] > 0].drop_duplicates("trial_id")[col]
    v = pd.to_numeric(per_trial, errors="coerce").dropna()
    return float(v.median()) if len(v) else float("nan")


def _train_seconds(job: JobSpec, results: pd.DataFrame | None) -> tuple[float, str]:
    b, w = job.budget, job.hardware.num_workers
    if b.mode == "seconds":
        return b.value, f"budget {b.value:g} s"
    if b.mode == "gpu_hours":
        return b.value * 3600.0 / w, f"budget {b.value:g} GPU-hours / {w} worker(s)"
    med = _observed_median(results, "train_s")
    return med, (f"observed median train_s ({b.mode} budget)" if math.isfinite(med)
                 else f"unknown: a {b.mode} budget needs results to time it")


def project_costs(job: JobSpec, results: pd.DataFrame | None = None, startup_s: float | None = None) -> PlanCosts:
    """Per-trial and total projected cost of every trial of the job (module docstring for the formula)."""
    train_s, train_src = _train_seconds(job, results)
    if startup_s is not None:
        start, start_src = float(startup_s), "given"
    else:
        med = _observed_median(results, "startup_s")
        start, start_src = (med, "observed median") if math.isfinite(med) else \
            (DEFAULT_STARTUP_S, "assumed default DEFAULT_STARTUP_S")
    wh = job.hardware.num_workers * (train_s + start) / 3600.0
    per = job.hardware.node_price_per_hour * wh
    done_ids = set()
    if results is not None and not results.empty:
        rec = results.drop_duplicates("trial_id")
        ok = (rec["size"] == 0) | pd.to_numeric(rec.get("train_s"), errors="coerce").notna()
        done_ids = set(rec.loc[ok, "trial_id"])
    trials = tuple(PlannedTrial(t.trial_id, t.size, t.seed, t.trained, per if t.trained else 0.0,
                                t.trial_id in done_ids) for t in plan_trials(job))
    total = sum(t.cost_usd for t in trials)
    remaining = sum(t.cost_usd for t in trials if not t.done)
    return PlanCosts(trials, train_s, train_src, start, start_src, wh, per, total, remaining)


def _cost_lines(job: JobSpec, c: PlanCosts) -> list[str]:
    hw = job.hardware
    price = f"${hw.node_price_per_hour:g}/h per worker" if hw.node_price_per_hour > 0 else \
        "no price set (hardware.node_price_per_hour = 0)"
    rows = [[t.trial_id, str(t.size), str(t.seed), num(c.train_s, 1, "f") if t.trained else "—",
             num(c.startup_s, 1, "f") if t.trained else "—", num(c.worker_hours_per_trial, 3, "f") if t.trained
             else "—", num(t.cost_usd, 2, "f"), ("done" if t.done else "to run") + ("" if t.trained else
                                                                                   " (size 0: evaluated only)")]
            for t in c.trials]
    n_train = sum(t.trained for t in c.trials)
    return [f"radscale plan: sweep `{job.sweep.name}`: {len(c.trials)} trials ({n_train} trained, "
            f"{len(c.trials) - n_train} size-0 baselines), {hw.num_workers} worker(s) per trial, {price}",
            f"cost per trained trial = price × workers × (train s + startup s) / 3600; train s: {c.train_source}; "
            f"startup s = {c.startup_s:.1f} ({c.startup_source})", "",
            *text_table(["trial", "N", "seed", "train s", "startup s", "worker-h", "cost $", "status"], rows,
                        "lrrrrrrl"), "",
            f"total ${num(c.total_usd, 2, 'f')} ({num(c.worker_hours_per_trial * n_train, 3, 'f')} worker-hours); "
            f"not yet done: ${num(c.remaining_usd, 2, 'f')}"]


def _extrapolation_lines(sections: list[SectionAnalysis]) -> list[str]:
    rows = []
    for sec in sections:
        for k, ka in sec.keys.items():
            f = ka.fit
            if f is None:
                rows.append([sec.task, sec.domain, k, f"no fit: {ka.why}", "", "", ""])
                continue
            est, lo, hi = n_star_ci(f, sec.targets)
            alpha = with_ci(f.params["alpha"], *f.ci.get("alpha", (math.nan, math.nan)))
            for i, tau in enumerate(sec.targets):
                where = f"unreachable: {unreachable_why(f.params['a'], f.params['alpha'], 0.0, tau)}" \
                    if not np.isfinite(est[i]) else \
                    ("within data" if f.n_range[0] <= est[i] <= f.n_range[1] else "extrapolated")
                rows.append([sec.task, sec.domain, k, alpha, num(tau, 3), with_ci(est[i], lo[i], hi[i]), where])
    return ["N*(τ) = (a/τ)^(1/α): images needed to reach error τ = 1 − headline metric; 95% CI over the fit's "
            "test-set bootstrap replicates", "",
            *text_table(["task", "domain", "encoder key", "α [95% CI]", "τ", "N*(τ) [95% CI]", ""], rows, "lllrrrl")]


def _next_size_lines(job: JobSpec, sections: list[SectionAnalysis], c: PlanCosts, extra_budget_usd: float | None,
                     pool_size: int | None, rank_by: str) -> list[str]:
    seeds = len(job.sweep.seeds)
    sizes: dict[str, set] = {}
    for sec in sections:
        for k, ka in sec.keys.items():
            sizes.setdefault(k, set()).update(ka.series.sizes.tolist())
    cands = []
    for k in sorted(sizes):
        for n_new in candidate_sizes(sizes[k], pool_size, exclude=job.sizes):
            bs = [b for sec in sections if k in sec.keys and sec.keys[k].fit is not None
                  for b in [size_benefit(sec.keys[k].series, sec.keys[k].fit, n_new, sec.targets, seeds)]
                  if b is not None]
            if not bs:
                continue
            a_red = [b.alpha_reduction for b in bs if math.isfinite(b.alpha_reduction)]
            s_red = [b.n_star_reduction for b in bs if math.isfinite(b.n_star_reduction)]
            cands.append(dict(key=k, n=n_new, alpha=float(np.mean(a_red)) if a_red else math.nan,
                              n_star=float(np.mean(s_red)) if s_red else math.nan, cost=seeds * c.cost_per_trial,
                              sections=len(bs)))
    if not cands:
        return ["No candidate sizes: no fit with bootstrap replicates."]
    score = (lambda d: d[rank_by] if math.isfinite(d[rank_by]) else -math.inf)
    cands.sort(key=lambda d: (-score(d), d["key"], d["n"]))
    rows = [[d["key"], str(d["n"]), str(seeds), num(d["cost"], 2, "f"), num(d["alpha"], 1, "f", 100, "%"),
             num(d["n_star"], 1, "f", 100, "%"), str(d["sections"])] for d in cands]
    pool = "not checked against the pretraining pool (pass pool_size)" if pool_size is None else \
        f"at most the pretraining pool of {pool_size} images"
    out = [f"Candidate sizes: {' and '.join(f'{f:g}×' for f in CANDIDATE_FACTORS)} the largest size and geometric "
           f"midpoints of adjacent sizes, not already in the job; {pool}. Expected CI narrowing = 1 − spread over "
           "test-set replicates with one hypothetical trial per seed on the current fit (sharing the resample noise "
           "of all trials, own noise like its nearest size's) / spread now; α exactly (log-log least squares is "
           "linear in log e), log N*(τ) by the delta method, mean over targets; averaged over (task, domain). "
           f"Ranked by {'α' if rank_by == 'alpha' else 'N*(τ)'}.", "",
           *text_table(["encoder key", "new N", "trials", "cost $", "α CI narrower by", "N* CI narrower by",
                        "sections"], rows), ""]
    s_all = [d["n_star"] for d in cands if math.isfinite(d["n_star"])]
    if s_all and max(s_all) < 0.05:
        out += ["N*(τ) intervals are dominated by the test-set noise shared by all trials: new sizes barely narrow "
                "them; a larger test set would.", ""]
    if extra_budget_usd is None:
        return out + ["(pass an extra budget to get a selection)"]
    if not (math.isfinite(c.cost_per_trial) and c.cost_per_trial > 0):
        return out + [f"extra budget ${extra_budget_usd:g}: no selection — the cost of a trial is unknown or zero "
                      f"(set hardware.node_price_per_hour)"]
    picked, left = _select(cands, float(extra_budget_usd), score)
    if not picked:
        return out + [f"extra budget ${extra_budget_usd:g}: nothing selected (one candidate costs "
                      f"${cands[0]['cost']:.2f}; only candidates with a positive expected narrowing count)"]
    def pct(v) -> str:
        return num(v, 0, "f", 100, "%")
    return out + [f"within ${extra_budget_usd:g} (at most one new size per encoder key): "
                  + "; ".join(f"{d['key']} at N={d['n']} (${d['cost']:.2f}; α CI −{pct(d['alpha'])}, "
                              f"N* CI −{pct(d['n_star'])})" for d in picked)
                  + f"; ${left:.2f} left"]


def _select(cands: list[dict], budget: float, score) -> tuple[list[dict], float]:
    """Greedy in ranked order: at most one new size per key, positive expected narrowing, while budget lasts."""
    picked, keys = [], set()
    for d in cands:
        if d["key"] in keys or d["cost"] > budget or not score(d) > 0:
            continue
        picked.append(d)
        keys.add(d["key"])
        budget -= d["cost"]
    return picked, budget


def plan_text(job: JobSpec, results: pd.DataFrame | None = None, targets: list[float] | None = None,
              extra_budget_usd: float | None = None, *, startup_s: float | None = None,
              pool_size: int | None = None, rank_by: str = "alpha") -> str:
    """The plan as text: trials and projected cost; with results, N*(τ) per target and the sizes to run next."""
    if rank_by not in RANK_BY:
        raise ValueError(f"plan_text: rank_by={rank_by!r}; expected one of {RANK_BY}")
    c = project_costs(job, results, startup_s)
    lines = _cost_lines(job, c)
    sections = analyse(results, targets) if results is not None and not results.empty else []
    if sections:
        lines += ["", *_extrapolation_lines(sections), "", *_next_size_lines(job, sections, c, extra_budget_usd,
                                                                            pool_size, rank_by)]
    elif results is not None:
        lines += ["", "No evaluation results with a headline metric yet: no extrapolation."]
    return "\n".join(lines) + "\n"
