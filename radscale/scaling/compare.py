"""Comparing two fitted scaling laws, each number with its definition and a paired-bootstrap interval.

RECIPES.md, "Scaling laws": compare encoders by (1) the exponent ratio and (2) the data multiplier
N*(τ) = (a/(τ − e∞))^(1/α) across several targets τ — curves can cross, so one "k× better" number misleads.
Intervals come from *paired* replicates: replicate r of both fits must come from the same resample (same seed
and N grid for point-bootstraps, the same test-set resamples for err_replicates).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from radscale.scaling.bootstrap import percentile_interval
from radscale.scaling.fit import ScalingFit


def n_star(a, alpha, e_inf, tau) -> np.ndarray:
    """N*(τ) = (a/(τ − e∞))^(1/α); +inf where τ ≤ e∞ or α ≤ 0 (the curve never gets down to τ) or past the float
    range (α ≈ 0); NaN where an input is NaN (e.g. an undefined baseline metric)."""
    a, alpha, e_inf, tau = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (a, alpha, e_inf, tau)))
    ok = (tau > e_inf) & (alpha > 0)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        out = np.where(ok, (a / np.where(ok, tau - e_inf, 1.0)) ** (1.0 / np.where(ok, alpha, 1.0)), np.inf)
    return np.where(np.isnan(a) | np.isnan(alpha) | np.isnan(e_inf) | np.isnan(tau), np.nan, out)


def unreachable_why(a: float, alpha: float, e_inf: float, tau: float) -> str:
    """Why N*(τ) is not finite ("" when it is)."""
    if np.isnan([a, alpha, e_inf, tau]).any():
        return "undefined (NaN input)"
    if alpha <= 0:
        return "the fitted error does not fall with N (α ≤ 0)"
    if tau <= e_inf:
        return "τ ≤ e∞"
    return "" if np.isfinite(n_star(a, alpha, e_inf, tau)) else "beyond the float range (α ≈ 0)"


def _n_star_of(fit: ScalingFit, tau: float, replicates: bool = False) -> np.ndarray:
    if replicates:
        return n_star(fit.param_replicates("a"), fit.param_replicates("alpha"), fit.param_replicates("e_inf"), tau)
    return n_star(fit.params["a"], fit.params["alpha"], fit.params.get("e_inf", 0.0), tau)


def _why_of(fit: ScalingFit, tau: float) -> str:
    return unreachable_why(fit.params["a"], fit.params["alpha"], fit.params.get("e_inf", 0.0), tau)


def _require_paired(fit_a: ScalingFit, fit_b: ScalingFit, where: str) -> None:
    if len(fit_a.replicates) == 0 or len(fit_b.replicates) == 0:
        raise ValueError(f"{where}: both fits need bootstrap replicates (fit with n_boot or err_replicates)")
    if fit_a.pairing_key != fit_b.pairing_key or len(fit_a.replicates) != len(fit_b.replicates):
        raise ValueError(f"{where}: replicates are not paired ({fit_a.pairing_key} vs {fit_b.pairing_key})")


def _ratio(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(np.isinf(x) & np.isinf(y), np.nan, x / y)  # inf/inf: both unreachable, no ratio


def _fmt_ci(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:.3g}, {ci[1]:.3g}]"


@dataclass(frozen=True)
class ExponentRatio:
    ratio: float
    ci: tuple[float, float]
    alpha_a: float
    alpha_b: float
    level: float
    n_replicates: int
    names: tuple[str, str]
    p_nonpositive: float = 0.0  # fraction of replicates with α_A ≤ 0 or α_B ≤ 0: there the ratio ranks nothing

    def describe(self) -> str:
        a, b = self.names
        head = (f"alpha_{a}/alpha_{b} = {self.ratio:.3g} ({self.level:.0%} CI {_fmt_ci(self.ci)}, paired bootstrap "
                f"R={self.n_replicates}): ratio of exponents α in e = a·N^−α (+ e∞ if saturating)")
        if not (self.alpha_a > 0 and self.alpha_b > 0):
            return head + (f"; α_{a} = {self.alpha_a:.3g}, α_{b} = {self.alpha_b:.3g}: an error that does not fall "
                           f"with N, so the ratio does not say whose error falls faster")
        caveat = "" if self.p_nonpositive == 0 else \
            f" (an α ≤ 0 in {self.p_nonpositive:.0%} of replicates: the CI is not a ranking)"
        return head + f"; > 1 means {a}'s error falls faster with N{caveat}"


def exponent_ratio(fit_a: ScalingFit, fit_b: ScalingFit, *, names: tuple[str, str] = ("A", "B")) -> ExponentRatio:
    """α_A/α_B with a percentile CI over paired replicates."""
    _require_paired(fit_a, fit_b, "exponent_ratio")
    ra, rb = fit_a.param_replicates("alpha"), fit_b.param_replicates("alpha")
    reps = _ratio(ra, rb)
    point = float(_ratio(np.asarray(fit_a.params["alpha"], float), np.asarray(fit_b.params["alpha"], float)))
    return ExponentRatio(ratio=point, ci=percentile_interval(reps, fit_a.level),
                         alpha_a=fit_a.params["alpha"], alpha_b=fit_b.params["alpha"], level=fit_a.level,
                         n_replicates=len(reps), names=names, p_nonpositive=float(np.mean((ra <= 0) | (rb <= 0))))


@dataclass(frozen=True)
class DataMultiplier:
    targets: tuple[float, ...]
    n_star_a: tuple[float, ...]  # NaN where unreachable (τ ≤ e∞ or α ≤ 0)
    n_star_b: tuple[float, ...]
    ratio: tuple[float, ...]  # N*_A / N*_B: how many times B's data A needs for the same error
    ci_a: tuple[tuple[float, float], ...]
    ci_b: tuple[tuple[float, float], ...]
    ci_ratio: tuple[tuple[float, float], ...]
    reachable_a: tuple[bool, ...]
    reachable_b: tuple[bool, ...]
    level: float
    names: tuple[str, str]

    def describe(self) -> str:
        a, b = self.names
        parts = []
        for i, tau in enumerate(self.targets):
            if not (self.reachable_a[i] and self.reachable_b[i]):
                who = " and ".join(x for x, ok in zip(self.names, (self.reachable_a[i], self.reachable_b[i])) if not ok)
                parts.append(f"τ={tau:.4g}: unreachable for {who} (τ ≤ e∞ or α ≤ 0)")
            else:
                parts.append(f"τ={tau:.4g}: {self.ratio[i]:.3g}× {_fmt_ci(self.ci_ratio[i])} "
                             f"(N*_{a}={self.n_star_a[i]:.3g}, N*_{b}={self.n_star_b[i]:.3g})")
        return (f"data multiplier N*_{a}(τ)/N*_{b}(τ), N*(τ) = (a/(τ − e∞))^(1/α) = data needed to reach "
                f"error τ, {self.level:.0%} paired-bootstrap CI: " + "; ".join(parts))


def data_multiplier(fit_a: ScalingFit, fit_b: ScalingFit, targets, *,
                    names: tuple[str, str] = ("A", "B")) -> DataMultiplier:
    """N*(τ) for both fits and their ratio at each target error τ, with paired-bootstrap CIs."""
    _require_paired(fit_a, fit_b, "data_multiplier")
    targets = tuple(float(t) for t in np.atleast_1d(targets))
    cols = {k: [] for k in ("na", "nb", "r", "ca", "cb", "cr", "ra", "rb")}
    for tau in targets:
        na, nb = float(_n_star_of(fit_a, tau)), float(_n_star_of(fit_b, tau))
        reps_a, reps_b = _n_star_of(fit_a, tau, True), _n_star_of(fit_b, tau, True)
        ra, rb = bool(np.isfinite(na)), bool(np.isfinite(nb))
        cols["na"].append(na if ra else float("nan"))
        cols["nb"].append(nb if rb else float("nan"))
        cols["r"].append(na / nb if ra and rb else float("nan"))
        cols["ca"].append(percentile_interval(reps_a, fit_a.level))
        cols["cb"].append(percentile_interval(reps_b, fit_a.level))
        cols["cr"].append(percentile_interval(_ratio(reps_a, reps_b), fit_a.level))
        cols["ra"].append(ra)
        cols["rb"].append(rb)
    return DataMultiplier(targets=targets, n_star_a=tuple(cols["na"]), n_star_b=tuple(cols["nb"]),
                          ratio=tuple(cols["r"]), ci_a=tuple(cols["ca"]), ci_b=tuple(cols["cb"]),
                          ci_ratio=tuple(cols["cr"]), reachable_a=tuple(cols["ra"]), reachable_b=tuple(cols["rb"]),
                          level=fit_a.level, names=names)


def _crossings(pred_a, pred_b, lo: float, hi: float, grid: int) -> list[float]:
    """N in [lo, hi] where log e_A(N) = log e_B(N): sign changes on a log grid, refined by Brent's method."""
    def g(t: float) -> float:
        n = np.array([np.exp(t)])
        return float(np.log(pred_a(n)[0]) - np.log(pred_b(n)[0]))
    ts = np.linspace(np.log(lo), np.log(hi), grid)
    vals = np.log(pred_a(np.exp(ts))) - np.log(pred_b(np.exp(ts)))
    out = []
    for i in np.flatnonzero(np.sign(vals[:-1]) * np.sign(vals[1:]) < 0):
        out.append(float(np.exp(brentq(g, ts[i], ts[i + 1], xtol=1e-12))))
    return out


@dataclass(frozen=True)
class Crossings:
    n_cross: tuple[float, ...]
    better_at_start: str  # name of the fit with lower predicted error at n_range[0] ("tie" if equal)
    n_range: tuple[float, float]
    p_cross: float  # fraction of paired replicates whose curves cross inside n_range (NaN: no replicates)
    names: tuple[str, str]

    def describe(self) -> str:
        where = ", ".join(f"{n:.3g}" for n in self.n_cross) or "none"
        rep = "" if np.isnan(self.p_cross) else f"; curves cross in {self.p_cross:.0%} of paired bootstrap replicates"
        return (f"crossings of predicted error e_{self.names[0]}(N) = e_{self.names[1]}(N) for N in "
                f"[{self.n_range[0]:.3g}, {self.n_range[1]:.3g}]: {where}; {self.better_at_start} is lower at the "
                f"smallest N{rep}")


def find_crossings(fit_a: ScalingFit, fit_b: ScalingFit, n_range: tuple[float, float], *,
                   names: tuple[str, str] = ("A", "B"), grid: int = 2000) -> Crossings:
    """Where the two fitted curves cross inside n_range, and how often paired replicates cross there."""
    lo, hi = float(n_range[0]), float(n_range[1])
    if not 0 < lo < hi:
        raise ValueError(f"find_crossings: n_range={n_range!r}; needs 0 < low < high")
    cross = _crossings(fit_a.predict, fit_b.predict, lo, hi, grid)
    ea, eb = fit_a.predict(np.array([lo]))[0], fit_b.predict(np.array([lo]))[0]
    start = names[0] if ea < eb else names[1] if eb < ea else "tie"
    p = float("nan")
    if len(fit_a.replicates) and len(fit_b.replicates):
        _require_paired(fit_a, fit_b, "find_crossings")
        ts = np.geomspace(lo, hi, grid)
        d = np.log(fit_a.replicate_predictions(ts)) - np.log(fit_b.replicate_predictions(ts))
        valid = ~np.isnan(d).any(axis=1)
        p = float(np.mean((np.sign(d[valid, :-1]) * np.sign(d[valid, 1:]) < 0).any(axis=1))) if valid.any() else p
    return Crossings(n_cross=tuple(cross), better_at_start=start, n_range=(lo, hi), p_cross=p, names=names)


@dataclass(frozen=True)
class NBeating:
    n_star: float  # NaN where unreachable
    ci: tuple[float, float]
    baseline_err: float
    reachable: bool
    p_unreachable: float  # fraction of replicates in which the baseline is never beaten
    extrapolated: bool  # N* outside the fitted N range
    level: float
    name: str
    why: str = ""  # why N* is not finite ("" when reachable)

    def describe(self) -> str:
        head = (f"smallest N with predicted error of {self.name} ≤ baseline {self.baseline_err:.4g}, "
                f"N* = (a/(baseline − e∞))^(1/α): ")
        if not self.reachable:
            return head + f"unreachable ({self.why}); {self.level:.0%} CI {_fmt_ci(self.ci)}"
        return head + (f"{self.n_star:.3g} ({self.level:.0%} CI {_fmt_ci(self.ci)}; unreachable in "
                       f"{self.p_unreachable:.0%} of replicates{'; extrapolated' if self.extrapolated else ''})")


def smallest_n_beating(fit: ScalingFit, baseline_err: float, *, baseline_replicates=None,
                       name: str = "A") -> NBeating:
    """N*(baseline_err); with baseline_replicates (R,) paired to fit's replicates the baseline's noise is included."""
    if not np.isfinite(baseline_err):
        raise ValueError(f"smallest_n_beating: the baseline error of {name} is {baseline_err} (metric undefined)")
    n_hat = float(_n_star_of(fit, baseline_err))
    if baseline_replicates is None:
        taus = np.full(len(fit.replicates), float(baseline_err))
    else:
        taus = np.asarray(baseline_replicates, dtype=float).ravel()
        if len(taus) != len(fit.replicates):
            raise ValueError(f"smallest_n_beating: {len(taus)} baseline replicates for {len(fit.replicates)} "
                             f"fit replicates")
    reps = _n_star_of(fit, taus, True) if len(fit.replicates) else np.empty(0)
    ci = percentile_interval(reps, fit.level) if len(reps) else (float("nan"), float("nan"))
    finite = reps[~np.isnan(reps)]
    reachable = bool(np.isfinite(n_hat))
    return NBeating(n_star=n_hat if reachable else float("nan"), ci=ci, baseline_err=float(baseline_err),
                    reachable=reachable,
                    p_unreachable=float(np.mean(np.isinf(finite))) if len(finite) else float("nan"),
                    extrapolated=reachable and not (fit.n_range[0] <= n_hat <= fit.n_range[1]), level=fit.level,
                    name=name, why="" if reachable else _why_of(fit, float(baseline_err)))
