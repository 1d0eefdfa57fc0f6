"""Figures: quality vs N per task (log N, points with CIs, fitted curves with bands, open-weights baseline)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_scaling(series: list[dict], title: str, ylabel: str, out: Path) -> Path:
    """series: {name, n, value, lo, hi, fit (ScalingFit|None), baseline (value|None), color}."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    all_n = np.concatenate([np.asarray(s["n"], float) for s in series if len(s["n"])]) if series else np.array([1.0])
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
        if s.get("baseline") is not None and np.isfinite(s["baseline"]):
            ax.axhline(s["baseline"], color=c, ls=":", lw=1.2, label=f"{s['name']} size 0 (initial weights)")
    ax.set_xscale("log")
    ax.set_xlabel("pretraining images N (nested subsets)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, metadata={"Software": None, "Creation Time": None} if out.suffix == ".png" else None)
    plt.close(fig)
    return out
