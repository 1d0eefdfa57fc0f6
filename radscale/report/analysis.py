"""The scaling analysis of one results table, per (task, domain): fits, held-out checks, paired comparisons.

Error e = 1 − headline metric (SCIENCE.md: 1 − macro AUROC, 1 − Dice, 1 − label F1); pure power law
e = a·N^(−α) by log-log least squares (Cherti et al. 2023); CIs by refitting each test-set bootstrap replicate.
Every trial is scored on the same patient resamples, so the fits of two encoder keys are paired replicate by
replicate and every comparison interval is a paired one (scaling/compare.py).

Held-out-largest-N (RECIPES.md "validate by holding out the largest N") runs with ≥ 3 distinct sizes. With
exactly 3 the 2-parameter law is fitted on 2 sizes: it passes through them (0 residual degrees of freedom), so
the check still tests the extrapolation but its band holds test-set noise only — the row says so. The main fit
itself needs ≥ 3 sizes: a law drawn through 2 points has nothing left to check it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from radscale.scaling.bootstrap import percentile_interval
from radscale.scaling.compare import (Crossings, DataMultiplier, ExponentRatio, NBeating, data_multiplier,
                                      exponent_ratio, find_crossings, n_star, smallest_n_beating)
from radscale.scaling.fit import HoldoutResult, ScalingFit, fit_scaling_law, holdout_largest

HEADLINE = {"auroc": "AUROC", "dice": "Dice", "label_f1": "label F1"}  # preference order per task
ERR_FLOOR = 1e-4          # error 0 (a perfect score) cannot enter a log-log fit
MIN_FIT_SIZES = 3
MIN_HOLDOUT_SIZES = 3
CROSSING_EXTRAPOLATION = 100.0  # crossings are also searched up to this multiple of the largest N


@dataclass(frozen=True, eq=False)
class Series:
    """One encoder key in one (task, domain): the trained points and the size-0 (initial weights) row."""

    key: str
    n: np.ndarray                   # trained sizes, one per row (seeds repeat a size)
    seed: np.ndarray
    value: np.ndarray               # headline metric (quality, higher is better)
    lo: np.ndarray
    hi: np.ndarray
    n_labels: np.ndarray
    err_reps: np.ndarray | None     # (rows, R) error replicates; None when a row has none
    baseline: tuple[float, float, float] | None = None   # (value, ci_lo, ci_hi) at size 0
    baseline_err_reps: np.ndarray | None = None          # (R,)

    @property
    def err(self) -> np.ndarray:
        return np.clip(1.0 - self.value, ERR_FLOOR, None)

    @property
    def baseline_err(self) -> float | None:
        if self.baseline is None:
            return None
        return max(1.0 - self.baseline[0], ERR_FLOOR) if np.isfinite(self.baseline[0]) else float("nan")

    @property
    def sizes(self) -> np.ndarray:
        return np.unique(self.n)


def _err_reps(reps, value: float) -> np.ndarray:
    a = np.asarray(reps if reps is not None else [], dtype=float).ravel()
    a = np.where(np.isfinite(a), a, value)  # a resample where the metric is undefined keeps the point value
    return np.clip(1.0 - a, ERR_FLOOR, None)


def series_from(df: pd.DataFrame, key: str = "") -> Series:
    """Rows of one (encoder key, task, domain, metric, label='macro'); size 0 is the baseline."""
    pts = df[df["size"] > 0].sort_values(["size", "seed"], kind="stable")
    reps = [_err_reps(r, v) for r, v in zip(pts["replicates"], pts["value"])]
    width = min((len(r) for r in reps), default=0)
    base = df[df["size"] == 0]
    baseline, base_reps = None, None
    if len(base):
        b = base.sort_values("seed", kind="stable").iloc[0]
        baseline = (float(b["value"]), float(b["ci_lo"]), float(b["ci_hi"]))
        br = _err_reps(b["replicates"], float(b["value"]))
        base_reps = br[:width] if width and len(br) >= width else None
    return Series(key=key, n=pts["size"].to_numpy(float), seed=pts["seed"].to_numpy(int),
                  value=pts["value"].to_numpy(float), lo=pts["ci_lo"].to_numpy(float),
                  hi=pts["ci_hi"].to_numpy(float), n_labels=pts["n_labels"].to_numpy(int),
                  err_reps=np.stack([r[:width] for r in reps]) if width else None,
                  baseline=baseline, baseline_err_reps=base_reps)


def fit_of(s: Series) -> tuple[ScalingFit | None, str]:
    if len(s.sizes) < MIN_FIT_SIZES:
        return None, f"needs ≥ {MIN_FIT_SIZES} sizes, has {len(s.sizes)}"
    try:
        return fit_scaling_law(s.n, s.err, form="power", err_replicates=s.err_reps), ""
    except ValueError as e:
        return None, str(e)


def fit_series(df: pd.DataFrame) -> tuple[ScalingFit | None, str]:
    """Power law on error = 1 − headline metric vs N for one series' rows; (None, why) when it cannot fit."""
    return fit_of(series_from(df))


def holdout_of(s: Series) -> tuple[HoldoutResult | None, str]:
    """Fit without the largest N and predict it; the note carries the caveat for a 2-size fit."""
    if len(s.sizes) < MIN_HOLDOUT_SIZES:
        return None, f"needs ≥ {MIN_HOLDOUT_SIZES} sizes, has {len(s.sizes)}"
    try:
        h = holdout_largest(s.n, s.err, form="power", err_replicates=s.err_reps, n_boot=0)
    except ValueError as e:
        return None, str(e)
    note = "exactly determined: 2 sizes for 2 parameters (0 residual dof); band = test-set noise only" \
        if len(s.sizes) - 1 == 2 else ""
    return h, note


def n_star_ci(fit: ScalingFit, taus) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N*(τ) = (a/τ)^(1/α) for each τ with its percentile CI over the fit's replicates (+inf: unreachable)."""
    taus = np.atleast_1d(np.asarray(taus, dtype=float))
    est = n_star(fit.params["a"], fit.params["alpha"], 0.0, taus)
    if len(fit.replicates) == 0:
        nan = np.full(len(taus), np.nan)
        return est, nan, nan
    reps = n_star(fit.param_replicates("a")[:, None], fit.param_replicates("alpha")[:, None], 0.0, taus[None, :])
    ci = np.array([percentile_interval(reps[:, j], fit.level) for j in range(len(taus))])
    return est, ci[:, 0], ci[:, 1]


@dataclass(frozen=True, eq=False)
class KeyAnalysis:
    series: Series
    fit: ScalingFit | None
    why: str
    holdout: HoldoutResult | None
    holdout_note: str
    beating: NBeating | None
    beating_note: str


@dataclass(frozen=True, eq=False)
class PairAnalysis:
    names: tuple[str, str]
    ratio: ExponentRatio | None
    multiplier: DataMultiplier | None
    crossings: Crossings | None          # inside the observed N range
    crossings_ext: Crossings | None      # up to CROSSING_EXTRAPOLATION × the largest N
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class SectionAnalysis:
    task: str
    domain: str
    metric: str                       # headline metric column value, e.g. "auroc"
    targets: tuple[float, ...]        # target errors τ for N*(τ) and the data multiplier
    default_target: float             # lowest error observed at any trained size (NaN: none)
    keys: dict[str, KeyAnalysis] = field(default_factory=dict)
    pairs: tuple[PairAnalysis, ...] = ()

    @property
    def metric_label(self) -> str:
        return HEADLINE.get(self.metric, self.metric)

    @property
    def slug(self) -> str:
        """File-name stem; ':' (attention-probe tasks, "findings:attention") would read as a URL scheme in
        Markdown links, so it becomes '_'."""
        return f"{self.task}-{self.domain}".replace(":", "_")


def _round3(x: float) -> float:
    return float(f"{x:.3g}")


def default_targets(errors: np.ndarray) -> tuple[tuple[float, ...], float]:
    """Targets spanning the observed errors (4 log-spaced from the worst to the best) plus 0.8× the best.

    Curves can cross inside the data, so the data multiplier is reported across that span rather than at one τ.
    """
    e = np.asarray(errors, dtype=float)
    e = e[np.isfinite(e) & (e > 0)]
    if e.size == 0:
        return (), float("nan")
    best = _round3(e.min())
    grid = [_round3(t) for t in np.geomspace(e.max(), e.min(), 4)] + [_round3(0.8 * e.min())]
    return tuple(sorted(set(grid), reverse=True)), best


def _key_analysis(s: Series) -> KeyAnalysis:
    fit, why = fit_of(s)
    holdout, hnote = holdout_of(s)
    beating, bnote = None, ""
    if fit is None:
        bnote = "no fit"
    elif s.baseline is None:
        bnote = "no size-0 row"
    elif not np.isfinite(s.baseline_err):
        bnote = "size-0 metric undefined"
    else:
        try:
            beating = smallest_n_beating(fit, s.baseline_err, baseline_replicates=s.baseline_err_reps
                                         if len(fit.replicates) else None, name=s.key)
        except (ValueError, ArithmeticError) as e:
            bnote = str(e)
    return KeyAnalysis(s, fit, why, holdout, hnote, beating, bnote)


def _exponent_ratio(fa: ScalingFit, fb: ScalingFit, names: tuple[str, str]) -> ExponentRatio:
    if fb.params["alpha"] == 0:      # error flat in N (e.g. a metric stuck at 0 on a tiny probe set)
        raise ValueError(f"α of {names[1]} is 0 (error flat in N): the ratio is undefined")
    return exponent_ratio(fa, fb, names=names)


def _pair_analysis(a: KeyAnalysis, b: KeyAnalysis, targets: tuple[float, ...]) -> PairAnalysis:
    names = (a.series.key, b.series.key)
    fa, fb = a.fit, b.fit
    lo = float(min(a.series.n.min(), b.series.n.min()))
    hi = float(max(a.series.n.max(), b.series.n.max()))
    out, notes = {}, []
    calls = {"ratio": lambda: _exponent_ratio(fa, fb, names),
             "multiplier": lambda: data_multiplier(fa, fb, targets, names=names) if targets else None,
             "crossings": lambda: find_crossings(fa, fb, (lo, hi), names=names),
             "crossings_ext": lambda: find_crossings(fa, fb, (hi, hi * CROSSING_EXTRAPOLATION), names=names)}
    for name, call in calls.items():
        try:
            out[name] = call()
        except (ValueError, ArithmeticError) as e:     # e.g. a flat series: α = 0 divides
            out[name] = None
            notes.append(f"{name}: {e}")
    return PairAnalysis(names=names, notes=tuple(dict.fromkeys(notes)), **out)


def headline_metric(metrics) -> str | None:
    present = set(metrics)
    return next((m for m in HEADLINE if m in present), None)


def analyse(results: pd.DataFrame, targets=None) -> list[SectionAnalysis]:
    """One SectionAnalysis per (task, domain) with a headline metric, in sorted order."""
    if results is None or results.empty:
        return []
    macro = results[results["label"] == "macro"]
    sections = []
    for (task, domain), grp in macro.groupby(["task", "domain"], sort=True):
        metric = headline_metric(grp["metric"].unique())
        if metric is None:
            continue
        rows = grp[grp["metric"] == metric]
        keys = rows["encoder"] + "." + rows["objective"]
        series = {k: series_from(g, k) for k, g in rows.groupby(keys, sort=True)}
        trained = np.concatenate([s.err for s in series.values()]) if series else np.empty(0)
        grid, best = default_targets(trained)
        taus = tuple(float(t) for t in targets) if targets is not None else grid
        ka = {k: _key_analysis(s) for k, s in series.items()}
        fitted = [k for k in ka if ka[k].fit is not None]
        pairs = tuple(_pair_analysis(ka[x], ka[y], taus) for x, y in combinations(fitted, 2))
        sections.append(SectionAnalysis(str(task), str(domain), metric, taus, best, ka, pairs))
    return sections
