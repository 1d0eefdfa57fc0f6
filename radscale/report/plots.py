"""Figures: quality vs N (points with CIs, fitted curves with bands, held-out predictions, size-0 baselines) and
the data needed to reach a target error, N*(τ), with the paired multiplier between encoder keys."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter  # noqa: E402
import numpy as np  # noqa: E402

# PNG metadata would otherwise carry the matplotlib version and break byte-identical rebuilds across installs.
_PNG_META = {"Software": None, "Creation Time": None}


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Log axes transform capped extrapolations (up to ~1e300) through exp(): overflow there is harmless.
    with np.errstate(over="ignore"):
        fig.tight_layout()
        fig.savefig(out, metadata=_PNG_META if out.suffix == ".png" else None)
    plt.close(fig)
    return out


def _colors() -> list[str]:
    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


def plot_scaling(series: list[dict], title: str, ylabel: str, out: Path) -> Path:
    """series: {name, n, value, lo, hi, fit (ScalingFit|None), baseline (value|None), holdout (HoldoutResult|None)}.

    Quality is 1 − error, so curves and bands are drawn as 1 − e(N); a hollow diamond with a bar is the
    held-out-largest-N prediction and its prediction band.
    """
    fig, ax = plt.subplots(figsize=(9.0, 4.2), dpi=110)
    colors = _colors()
    ns = [np.asarray(s["n"], float) for s in series if len(s["n"])]
    all_n = np.concatenate(ns) if ns else np.empty(0)
    grid = np.geomspace(all_n.min() * 0.8, all_n.max() * 1.25, 100) if len(all_n) else None
    for i, s in enumerate(series):
        c = colors[i % len(colors)]
        n, v = np.asarray(s["n"], float), np.asarray(s["value"], float)
        yerr = np.vstack([v - np.asarray(s["lo"], float), np.asarray(s["hi"], float) - v])
        ax.errorbar(n, v, yerr=np.clip(yerr, 0, None), fmt="o", color=c, capsize=3, label=s["name"])
        fit = s.get("fit")
        if fit is not None and grid is not None:
            ax.plot(grid, 1 - fit.predict(grid), "-", color=c, alpha=0.8,
                    label=f"{s['name']} fit: α = {fit.params['alpha']:.3g}")
            if len(fit.replicates):
                lo, hi = fit.band(grid)
                ax.fill_between(grid, 1 - hi, 1 - lo, color=c, alpha=0.12)
        h = s.get("holdout")
        if h is not None:
            q = 1 - h.predicted
            err = None
            if h.inside_band is not None:
                err = np.clip([[q - (1 - h.band[1])], [(1 - h.band[0]) - q]], 0, None)
            ax.errorbar([h.n_holdout * 1.04], [q], yerr=err, fmt="D", mfc="none", color=c, capsize=3,
                        label=f"{s['name']} held-out prediction")
        if s.get("baseline") is not None and np.isfinite(s["baseline"]):
            ax.axhline(s["baseline"], color=c, ls=":", lw=1.2, label=f"{s['name']} size 0 (initial weights)")
    if any(len(s["n"]) for s in series):       # only size-0 baselines (e.g. every trial stopped): linear axis
        ax.set_xscale("log")
    ax.set_xlabel("pretraining images N (nested subsets)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # outside: no data hidden
    return _save(fig, out)


def _finite(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return np.where(np.isfinite(v), v, np.nan)  # unreachable (inf) leaves a gap instead of breaking the axis


def _limit(ax, arrays, lo_cap: float, hi_cap: float) -> None:
    """y-limits from the finite data, clamped: N* of 1e100 images is 'never', and would hide the rest."""
    v = np.concatenate([_finite(a).ravel() for a in arrays]) if arrays else np.empty(0)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:          # e.g. flat series (α = 0): a log axis still needs positive limits to draw
        ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylim(lo_cap, hi_cap)
        return
    lo, hi = max(v.min() / 1.5, lo_cap), min(v.max() * 1.5, hi_cap)
    ax.set_ylim(*((lo, hi) if hi > lo else (lo_cap, hi_cap)))   # all data beyond the caps: show the caps


def plot_multiplier(curves: list[dict], ratios: list[dict], ticks, n_range: tuple[float, float], title: str,
                    out: Path) -> Path:
    """Left: N*(τ) per encoder key; right: N*_A(τ)/N*_B(τ) per pair; each with its 95% band.

    curves: {name, taus, est, lo, hi}; ratios: {name, taus, est, lo, hi}; ticks: the report's targets.
    τ (target error) runs right-to-left so harder targets are on the right. The N* axis is clamped to
    [N_min/10, 1000·N_max] and the ratio axis to [1e-3, 1e3]: beyond that the extrapolation means nothing.
    """
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.0), dpi=110)
    colors = _colors()
    for i, c in enumerate(curves):
        col = colors[i % len(colors)]
        ax1.plot(c["taus"], _finite(c["est"]), "-", color=col, label=c["name"])
        ax1.fill_between(c["taus"], _finite(c["lo"]), _finite(c["hi"]), color=col, alpha=0.12)
    for i, r in enumerate(ratios):
        col = colors[(i + len(curves)) % len(colors)]
        ax2.plot(r["taus"], _finite(r["est"]), "-", color=col, label=r["name"])
        ax2.fill_between(r["taus"], _finite(r["lo"]), _finite(r["hi"]), color=col, alpha=0.12)
    ax2.axhline(1.0, color="k", lw=0.8, ls="--")
    ticks = sorted({float(t) for t in ticks})
    for ax, ylabel in ((ax1, "N*(τ): images to reach error τ"), (ax2, "data multiplier N*_A(τ) / N*_B(τ)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        if len(ticks) > 1:
            ax.set_xlim(ticks[-1], ticks[0])  # inverted: harder targets to the right
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)  # targets can sit close together
        ax.set_xlabel("target error τ")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.25)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    _limit(ax1, [c[k] for c in curves for k in ("est", "lo", "hi")], n_range[0] / 10, n_range[1] * 1e3)
    ratio_values = [r[k] for r in ratios for k in ("est", "lo", "hi")]
    if any(np.isfinite(_finite(v)).any() for v in ratio_values):
        _limit(ax2, ratio_values + [np.ones(1)], 1e-3, 1e3)
    else:
        ax2.text(0.5, 0.5, "no finite ratio: a curve never reaches these targets", transform=ax2.transAxes,
                 ha="center", va="center", fontsize=8)
        ax2.set_ylim(1e-3, 1e3)
    fig.suptitle(title, fontsize=10)
    return _save(fig, out)
