"""Fitting scaling laws: log-log OLS, robust Huber-on-log-residuals, Pareto-binned OLS, and the 2-D Chinchilla form.

- "loglog_ols": least squares on log residuals; closed form for the pure power law (Cherti et al. 2023).
- "huber": Huber loss on log residuals, multi-start, L-BFGS-B (Hoffmann et al. 2022 approach 3, as
  replicated by Besiroglu et al. 2024 / Epoch AI).

The optimiser is invariant to the scale of the objective: each L-BFGS-B round minimises f(θ)/f(θ_round_start),
so a summed and a mean Huber loss present the optimiser with the same function and the same stopping tests.
(With scipy's defaults, ftol is relative to max(|f|, 1) and gtol is absolute, so a mean Huber loss of ~1e-6
looks converged long before it is.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from radscale.scaling.bootstrap import (bootstrap_points, bootstrap_replicates, pairing_key_points,
                                        percentile_band, percentile_interval)
from radscale.scaling.forms import CHINCHILLA, Form, get_form

METHODS = ("loglog_ols", "huber")
REDUCTIONS = ("sum", "mean")
# Stage 1 (every start) stops on a loose relative decrease; stage 2 re-normalises and polishes the best starts.
_STAGE1 = {"ftol": 1e-10, "gtol": 1e-10, "maxiter": 5000}
_POLISH = {"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000, "maxcor": 20, "maxls": 100}
_POLISH_ROUNDS = 8
_POLISH_TOP = 3


def huber_terms(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss per residual and its derivative; delta = inf gives 0.5·r² (least squares)."""
    a = np.abs(r)
    rho = np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))
    return rho, np.clip(r, -delta, delta)


def huber_objective(form: Form, x: np.ndarray, err: np.ndarray, delta: float,
                    reduction: str) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """f(θ) = Σ or mean of Huber(log ê(θ) − log e) and its gradient."""
    y = np.log(err)
    scale = 1.0 / len(y) if reduction == "mean" else 1.0

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        log_pred, jac = form.log_predict(theta, x)
        rho, drho = huber_terms(log_pred - y, delta)
        return float(rho.sum() * scale), (drho @ jac) * scale
    return objective


def _descend(objective, theta: np.ndarray, bounds, rounds: int, options: dict) -> tuple[np.ndarray, float]:
    f = objective(theta)[0]
    for _ in range(rounds):
        if not np.isfinite(f) or f <= 0.0:
            break
        s = f  # normalise so the optimiser sees f ≈ 1 whatever the loss scale
        res = minimize(lambda t: tuple(v / s for v in objective(t)), theta, jac=True, method="L-BFGS-B",
                       bounds=bounds, options=options)
        f_new = objective(res.x)[0]
        if not f_new < f:
            break
        improved = f - f_new > 1e-12 * f
        theta, f = res.x, f_new
        if not improved:
            break
    return theta, f


def minimize_log_huber(form: Form, x: np.ndarray, err: np.ndarray, *, delta: float = 1e-3,
                       reduction: str = "sum", starts: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Multi-start L-BFGS-B on the Huber loss of log residuals; returns (θ, objective) of the best start."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}; expected one of {REDUCTIONS}")
    objective = huber_objective(form, x, err, delta, reduction)
    bounds = form.bounds(err)
    lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
    hi = np.array([np.inf if b[1] is None else b[1] for b in bounds])
    grid = form.starts(x, err) if starts is None else np.atleast_2d(np.asarray(starts, dtype=float))
    # scipy's L-BFGS-B calls BLAS on 5-vectors; threaded OpenBLAS then spins and is ~8x slower on a busy machine.
    with np.errstate(over="ignore", invalid="ignore"), threadpool_limits(limits=1, user_api="blas"):
        stage1 = [_descend(objective, np.clip(t, lo, hi), bounds, 1, _STAGE1) for t in grid]
        stage1 = sorted((r for r in stage1 if np.isfinite(r[1])), key=lambda r: r[1])[:_POLISH_TOP]
        if not stage1:
            raise ValueError(f"{form.name} fit: the objective is not finite at any of {len(grid)} starting points")
        best = min((_descend(objective, t, bounds, _POLISH_ROUNDS, _POLISH) for t, _ in stage1), key=lambda r: r[1])
    return best


@dataclass(frozen=True)
class ScalingFit:
    """A fitted 1-D scaling law e(N) with percentile-bootstrap intervals."""

    form: str
    method: str
    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    n_points: int
    n_range: tuple[float, float]
    residuals: dict[str, float]  # on log residuals log ê − log e: rmse_log, mae_log, max_abs_log
    level: float = 0.95
    ci_source: str = "none"  # "points" | "err_replicates" | "none"
    pairing_key: str = ""
    replicates: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), repr=False, compare=False)

    def predict(self, n: np.ndarray) -> np.ndarray:
        return get_form(self.form).predict(self.params, np.asarray(n, dtype=float))

    def replicate_predictions(self, n: np.ndarray) -> np.ndarray:
        """(R, len(n)) predictions, one row per bootstrap replicate (NaN rows for failed refits)."""
        f, n = get_form(self.form), np.atleast_1d(np.asarray(n, dtype=float))
        rows = [f.predict(dict(zip(f.param_names, p)), n) if np.all(np.isfinite(p)) else np.full(len(n), np.nan)
                for p in self.replicates]
        return np.array(rows).reshape(len(rows), len(n))

    def param_replicates(self, name: str) -> np.ndarray:
        """Replicates of one parameter; e_inf of a pure power law is identically 0."""
        names = get_form(self.form).param_names
        if name == "e_inf" and name not in names:
            return np.zeros(len(self.replicates))
        return self.replicates[:, names.index(name)]

    def band(self, n: np.ndarray, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise percentile band of the predicted error from the bootstrap replicates."""
        if len(self.replicates) == 0:
            raise ValueError("ScalingFit.band: this fit has no bootstrap replicates (pass n_boot or err_replicates)")
        return percentile_band(self.replicate_predictions(n), self.level if level is None else level)

    def to_dict(self) -> dict:
        return {"form": self.form, "method": self.method, "params": dict(self.params),
                "ci": {k: [lo, hi] for k, (lo, hi) in self.ci.items()}, "level": self.level,
                "n_points": self.n_points, "n_range": list(self.n_range), "residuals": dict(self.residuals),
                "ci_source": self.ci_source, "n_replicates": int(len(self.replicates)),
                "pairing_key": self.pairing_key}


def _as_points(n, err, where: str) -> tuple[np.ndarray, np.ndarray]:
    n, err = np.asarray(n, dtype=float).ravel(), np.asarray(err, dtype=float).ravel()
    if n.shape != err.shape:
        raise ValueError(f"{where}: n has {n.size} values but err has {err.size}")
    for name, v in (("n", n), ("err", err)):
        bad = np.flatnonzero(~(np.isfinite(v) & (v > 0)))
        if bad.size:
            raise ValueError(f"{where}: {name}[{bad[0]}] = {float(v[bad[0]])!r}; values must be finite and > 0 "
                             f"(log fit)")
    return n, err


def _point_fitter(form: Form, method: str, delta: float, reduction: str, starts):
    """(n, err) -> public parameter vector, for the point estimate and every bootstrap replicate."""
    def fit_point(n: np.ndarray, err: np.ndarray, start=None) -> np.ndarray:
        if len(np.unique(n)) < len(form.param_names):
            raise ValueError(f"{form.name} fit: {len(np.unique(n))} distinct N, needs {len(form.param_names)}")
        if form.name == "power" and method == "loglog_ols":
            slope, icpt = np.polyfit(np.log(n), np.log(err), 1)
            theta = np.array([icpt, -slope])
        else:
            grid = starts if start is None else start
            theta, _ = minimize_log_huber(form, n, err, delta=np.inf if method == "loglog_ols" else delta,
                                          reduction=reduction, starts=grid)
        p = form.to_params(theta)
        return np.array([p[k] for k in form.param_names])
    return fit_point


def _summarise(form: Form, method: str, n, err, theta_pub, replicates, level, ci_source, key) -> ScalingFit:
    params = dict(zip(form.param_names, (float(v) for v in theta_pub)))
    r = np.log(form.predict(params, n)) - np.log(err)
    ci = {k: percentile_interval(replicates[:, i], level) for i, k in enumerate(form.param_names)} \
        if len(replicates) else {}
    return ScalingFit(form=form.name, method=method, params=params, ci=ci, n_points=int(len(n)),
                      n_range=(float(n.min()), float(n.max())),
                      residuals={"rmse_log": float(np.sqrt(np.mean(r**2))), "mae_log": float(np.mean(np.abs(r))),
                                 "max_abs_log": float(np.max(np.abs(r)))},
                      level=level, ci_source=ci_source, pairing_key=key, replicates=replicates)


def fit_scaling_law(n, err, *, form: str = "power", method: str = "loglog_ols", delta: float = 1e-3,
                    reduction: str = "sum", n_boot: int = 0, err_replicates=None, seed: int = 0,
                    level: float = 0.95, starts=None) -> ScalingFit:
    """Fit e(N) ("power" a·N^−α or "saturating" e∞ + a·N^−α) with optional bootstrap CIs.

    CIs: n_boot > 0 resamples points; err_replicates (n_points, R) refits each test-set replicate column.
    "loglog_ols" on the saturating form is least squares on log residuals (Huber with δ = ∞).
    """
    f = get_form(form)
    if f.name == "chinchilla":
        raise ValueError("fit_scaling_law: form 'chinchilla' is 2-D; use fit_chinchilla(n, d, loss)")
    if method not in METHODS:
        raise ValueError(f"fit_scaling_law: method={method!r}; expected one of {METHODS}")
    if n_boot and err_replicates is not None:
        raise ValueError("fit_scaling_law: pass n_boot (bootstrap over points) or err_replicates, not both")
    n, err = _as_points(n, err, "fit_scaling_law")
    order = np.argsort(n, kind="stable")  # pairing of point-bootstraps is by position along sorted N
    n, err = n[order], err[order]
    fit_point = _point_fitter(f, method, delta, reduction, starts)
    theta = fit_point(n, err)
    warm = f.from_params(dict(zip(f.param_names, theta)))

    def refit(nn: np.ndarray, ee: np.ndarray) -> np.ndarray:  # replicates start from the full-data estimate
        return fit_point(nn, ee, start=warm[None, :])
    k = len(f.param_names)
    if err_replicates is not None:
        reps = np.asarray(err_replicates, dtype=float)
        if reps.ndim != 2 or reps.shape[0] != len(n):
            raise ValueError(f"fit_scaling_law: err_replicates has shape {reps.shape}, expected ({len(n)}, R)")
        reps = reps[order]
        _as_points(np.ones(reps.size), reps.ravel(), "fit_scaling_law err_replicates (flattened)")
        boot = bootstrap_replicates(refit, n, reps, k=k)
        source, key = "err_replicates", f"err_replicates(R={reps.shape[1]})"
    elif n_boot:
        boot = bootstrap_points(refit, n, err, k=k, n_boot=n_boot, seed=seed, min_distinct=k)
        source, key = "points", pairing_key_points(n, n_boot, seed)
    else:
        boot, source, key = np.empty((0, k)), "none", ""
    return _summarise(f, method, n, err, theta, boot, level, source, key)


def pareto_bins(x, err, *, n_bins: int = 5, upper_pad_decades: float = 0.1,
                x_at: str = "center") -> tuple[np.ndarray, np.ndarray]:
    """Lower envelope of (x, err): n_bins equal bins in log10 x, min error per bin (Cherti et al. 2023).

    Bins span [log10 min x, log10 max x + upper_pad_decades]; Cherti et al.'s figures.ipynb pads by 0.1 so the
    largest x falls inside the last bin, and regresses on the bin *centres* (x_at="center"); x_at="argmin" uses
    the x of each bin's best point instead.
    """
    x, err = _as_points(x, err, "pareto_bins")
    if x_at not in ("center", "argmin"):
        raise ValueError(f"pareto_bins: x_at={x_at!r}; expected 'center' or 'argmin'")
    lx = np.log10(x)
    edges = np.linspace(lx.min(), lx.max() + upper_pad_decades, n_bins + 1)
    which = np.clip(np.searchsorted(edges, lx, side="right") - 1, 0, n_bins - 1)
    xs, es = [], []
    for b in range(n_bins):
        members = np.flatnonzero(which == b)
        if members.size:
            best = members[np.argmin(err[members])]
            xs.append(10 ** ((edges[b] + edges[b + 1]) / 2) if x_at == "center" else x[best])
            es.append(err[best])
    return np.array(xs), np.array(es)


def fit_pareto_binned(x, err, *, n_bins: int = 5, upper_pad_decades: float = 0.1, x_at: str = "center",
                      n_boot: int = 0, seed: int = 0, level: float = 0.95) -> ScalingFit:
    """Pure power law by OLS in log-log on the binned lower envelope; n_boot resamples the raw points."""
    x, err = _as_points(x, err, "fit_pareto_binned")
    order = np.argsort(x, kind="stable")  # pairing of point-bootstraps is by position along sorted x
    x, err = x[order], err[order]
    ols = _point_fitter(get_form("power"), "loglog_ols", np.inf, "sum", None)

    def fit_point(xx: np.ndarray, ee: np.ndarray) -> np.ndarray:
        return ols(*pareto_bins(xx, ee, n_bins=n_bins, upper_pad_decades=upper_pad_decades, x_at=x_at))
    theta = fit_point(x, err)
    boot = bootstrap_points(fit_point, x, err, k=2, n_boot=n_boot, seed=seed, min_distinct=2) if n_boot \
        else np.empty((0, 2))
    xb, eb = pareto_bins(x, err, n_bins=n_bins, upper_pad_decades=upper_pad_decades, x_at=x_at)
    key = pairing_key_points(x, n_boot, seed) if n_boot else ""
    return _summarise(get_form("power"), f"pareto_binned_ols(bins={n_bins})", xb, eb, theta, boot, level,
                      "points" if n_boot else "none", key)


@dataclass(frozen=True)
class ChinchillaFit:
    """L(N, D) = E + A/N^α + B/D^β fitted by Huber on log residuals (Hoffmann et al. 2022, approach 3)."""

    params: dict[str, float]
    objective: float
    reduction: str
    n_points: int
    n_starts: int

    def predict(self, n, d) -> np.ndarray:
        return CHINCHILLA.predict(self.params, np.stack([np.asarray(n, float), np.asarray(d, float)], axis=1))


def fit_chinchilla(n, d, loss, *, delta: float = 1e-3, reduction: str = "sum", starts=None) -> ChinchillaFit:
    """Multi-start L-BFGS-B over the LSE parameterisation (log A, log B, log E, α, β); starts default to a grid."""
    n, loss = _as_points(n, loss, "fit_chinchilla")
    d, _ = _as_points(d, loss, "fit_chinchilla")
    x = np.stack([n, d], axis=1)
    grid = CHINCHILLA.starts(x, loss) if starts is None else np.atleast_2d(np.asarray(starts, dtype=float))
    theta, obj = minimize_log_huber(CHINCHILLA, x, loss, delta=delta, reduction=reduction, starts=grid)
    return ChinchillaFit(params=CHINCHILLA.to_params(theta), objective=obj, reduction=reduction,
                         n_points=int(len(loss)), n_starts=int(len(grid)))


@dataclass(frozen=True)
class HoldoutResult:
    """Fit on all but the largest N, predict the largest N (RECIPES.md: validate by extrapolation).

    `curve_band` is the bootstrap band of the fitted curve at N_max. `band` is where the observation should
    fall if the law holds: for a point-bootstrap the curve band widened by resampled log residuals; for
    err_replicates (test-set resamples shared by every trial) the prediction times the spread of the paired
    ratio held-out replicate / curve replicate, so noise common to all trials cancels (it may be narrower
    than `curve_band`). `inside_band` asks whether the observation is a plausible draw from the prediction.
    """

    n_holdout: float
    observed: float  # mean error over the rows at the largest N
    predicted: float
    abs_error: float
    rel_error: float  # (predicted − observed) / observed
    band: tuple[float, float]
    curve_band: tuple[float, float]
    inside_band: bool | None  # None when the fit has no replicates
    fit: ScalingFit

    def describe(self) -> str:
        band = "no band" if self.inside_band is None else (
            f"{self.fit.level:.0%} prediction band [{self.band[0]:.4g}, {self.band[1]:.4g}] "
            f"{'contains' if self.inside_band else 'misses'} it")
        return (f"holdout N={self.n_holdout:.4g}: predicted {self.predicted:.4g} vs observed {self.observed:.4g} "
                f"(rel. error {self.rel_error:+.1%}; {self.fit.form}/{self.fit.method} fit on "
                f"{self.fit.n_points} smaller-N points; {band})")


def holdout_largest(n, err, *, form: str = "power", method: str = "loglog_ols", n_boot: int = 200,
                    err_replicates=None, seed: int = 0, level: float = 0.95, **fit_kwargs) -> HoldoutResult:
    """Drop every row at the largest N, fit the rest (bootstrap as in fit_scaling_law), predict it."""
    n, err = _as_points(n, err, "holdout_largest")
    held = n == n.max()
    reps = None if err_replicates is None else np.asarray(err_replicates, dtype=float)
    if reps is not None and (reps.ndim != 2 or reps.shape[0] != len(n)):
        raise ValueError(f"holdout_largest: err_replicates has shape {reps.shape}, expected ({len(n)}, R)")
    fit = fit_scaling_law(n[~held], err[~held], form=form, method=method, n_boot=0 if reps is not None else n_boot,
                          err_replicates=None if reps is None else reps[~held], seed=seed, level=level, **fit_kwargs)
    observed, predicted = float(err[held].mean()), float(fit.predict(np.array([n.max()]))[0])
    nan2 = (float("nan"), float("nan"))
    curve_band, band, inside = nan2, nan2, None
    if len(fit.replicates):
        curve = fit.replicate_predictions(np.array([n.max()]))[:, 0]
        curve_band = percentile_interval(curve, level)
        if reps is not None:
            # Paired: every trial is scored on the same test resamples, so noise they share moves a replicate's
            # curve and its held-out point together and cancels between observed and predicted, as it does on
            # the real test set. Spread of (held-out / curve) per replicate, centred on observed / predicted.
            z = (reps[held].mean(axis=0) / observed) / (curve / predicted)
            band = percentile_interval(predicted * z, level)
        else:  # a resampled log residual, inflated for the k fitted parameters (Davison & Hinkley 1997, §6.2)
            r = np.log(err[~held]) - np.log(fit.predict(n[~held]))
            k = len(fit.params)
            r = (r - r.mean()) * np.sqrt(len(r) / max(len(r) - k, 1))
            noise = np.exp(np.random.default_rng(seed + 1).choice(r, size=len(curve)))
            band = percentile_interval(curve * noise, level)
        inside = bool(band[0] <= observed <= band[1])
    return HoldoutResult(n_holdout=float(n.max()), observed=observed, predicted=predicted,
                         abs_error=abs(predicted - observed), rel_error=(predicted - observed) / observed,
                         band=band, curve_band=curve_band, inside_band=inside, fit=fit)
