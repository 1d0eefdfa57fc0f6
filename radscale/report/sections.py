"""Markdown (and figures) for one (task, domain) section of the report.

Every comparison sentence is the `.describe()` of a scaling.compare result, which states its definition and its
paired-bootstrap interval — the report never prints a bare "k× better".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from radscale.report.analysis import SectionAnalysis, n_star_ci
from radscale.report.plots import plot_multiplier, plot_scaling
from radscale.report.tables import ci, md_table, num, with_ci
from radscale.scaling.compare import data_multiplier

MULTIPLIER_GRID = 40  # targets on the N*(τ) figure


def _fits(sec: SectionAnalysis, init: dict[str, str]) -> list[str]:
    rows = []
    for k, ka in sec.keys.items():
        s, f = ka.series, ka.fit
        base = "—" if s.baseline is None else with_ci(*s.baseline, 3, "f")
        sizes = f"{len(s.n)} ({len(s.sizes)})"
        if f is None:
            rows.append([f"`{k}`", f"no fit: {ka.why}", "", "", "", sizes, base, init.get(k, "")])
            continue
        a_ci, al_ci = f.ci.get("a", (np.nan, np.nan)), f.ci.get("alpha", (np.nan, np.nan))
        rows.append([f"`{k}`", with_ci(f.params["a"], *a_ci), with_ci(f.params["alpha"], *al_ci),
                     num(f.residuals["rmse_log"], 4, "f"), num(f.residuals["max_abs_log"], 4, "f"), sizes, base,
                     init.get(k, "")])
    head = ["encoder key", "a [95% CI]", "α [95% CI]", "log-RMSE", "max abs log res.", "points (sizes)",
            f"size 0 {sec.metric_label} [95% CI]", "size 0 is"]
    return [f"e = 1 − {sec.metric_label} = a·N^(−α), least squares on log e vs log N; 95% CIs from refitting "
            f"each test-set bootstrap replicate; residuals are log ê − log e.", "", *md_table(head, rows), ""]


def _holdout(sec: SectionAnalysis) -> list[str]:
    rows, notes = [], []
    for k, ka in sec.keys.items():
        h = ka.holdout
        if h is None:
            rows.append([f"`{k}`", "—", "—", "—", "—", "—", "—", "—", ka.holdout_note])
            continue
        inside = "—" if h.inside_band is None else ("yes" if h.inside_band else "**no**")
        rows.append([f"`{k}`", num(h.n_holdout, 6), str(h.fit.n_points), num(h.predicted, 4), num(h.observed, 4),
                     num(h.rel_error, 1, "f", 100, "%"), ci(*h.band, 4), inside, ka.holdout_note])
        notes.append(f"- `{k}`: {h.describe()}")
    head = ["encoder key", "held-out N", "fitted on (rows)", "predicted e", "observed e", "rel. error",
            "95% prediction band", "in band", "note"]
    return ["Fit without the largest N, predict it. The band is where the observation should fall if the law "
            "holds: the prediction times the spread, over the shared test-set resamples, of held-out replicate / "
            "fitted-curve replicate (noise common to all trials cancels, as between observed and predicted).", "",
            *md_table(head, rows), "", *notes, ""]


def _comparisons(sec: SectionAnalysis, out: Path) -> tuple[list[str], Path | None]:
    if not sec.pairs:
        return ["Fewer than two fitted encoder keys: nothing to compare.", ""], None
    md = [f"Target errors τ: {', '.join(num(t, 3) for t in sec.targets)} (log-spaced from the worst to the best "
          f"observed error, and 0.8× the best). N*(τ) = (a/τ)^(1/α) is the data a fitted curve needs to reach "
          f"error τ; ∞ = never (α ≤ 0).", ""]
    for p in sec.pairs:
        a, b = p.names
        md += [f"#### `{a}` vs `{b}`", ""]
        md += [f"- {x.describe()}" for x in (p.ratio, p.multiplier, p.crossings) if x is not None]
        if p.crossings_ext is not None:
            md.append(f"- extrapolated to {p.crossings_ext.n_range[1] / p.crossings_ext.n_range[0]:.0f}× the "
                      f"largest N: {p.crossings_ext.describe()}")
        md += [f"- not computed: {n}" for n in p.notes]
        m = p.multiplier
        if m is not None:
            rows = [[num(t, 3), with_ci(m.n_star_a[i], *m.ci_a[i]), with_ci(m.n_star_b[i], *m.ci_b[i]),
                     with_ci(m.ratio[i], *m.ci_ratio[i])] for i, t in enumerate(m.targets)]
            md += ["", *md_table(["τ", f"N*_{a} [95% CI]", f"N*_{b} [95% CI]", f"N*_{a}/N*_{b} [95% CI]"], rows)]
        md.append("")
    return md, _multiplier_figure(sec, out)


def _multiplier_figure(sec: SectionAnalysis, out: Path) -> Path | None:
    if not sec.targets:
        return None
    taus = np.geomspace(max(sec.targets), min(sec.targets), MULTIPLIER_GRID)
    curves = []
    for k, ka in sec.keys.items():
        if ka.fit is not None:
            est, lo, hi = n_star_ci(ka.fit, taus)
            curves.append(dict(name=k, taus=taus, est=est, lo=lo, hi=hi))
    ratios = []
    for p in sec.pairs:
        if p.multiplier is None:
            continue
        fa, fb = sec.keys[p.names[0]].fit, sec.keys[p.names[1]].fit
        m = data_multiplier(fa, fb, taus, names=p.names)
        ratios.append(dict(name=f"{p.names[0]} / {p.names[1]}", taus=taus, est=np.array(m.ratio),
                           lo=np.array([c[0] for c in m.ci_ratio]), hi=np.array([c[1] for c in m.ci_ratio])))
    ns = np.concatenate([ka.series.n for ka in sec.keys.values()])
    return plot_multiplier(curves, ratios, sec.targets, (float(ns.min()), float(ns.max())),
                           f"{sec.task} ({sec.domain}): data to reach target error", out / f"{sec.slug}-multiplier.png")


def _beating(sec: SectionAnalysis) -> list[str]:
    rows, notes = [], []
    for k, ka in sec.keys.items():
        nb = ka.beating
        if nb is None:
            rows.append([f"`{k}`", num(ka.series.baseline_err, 4), "—", "—", "—", ka.beating_note])
            continue
        fixed = "" if ka.series.baseline_err_reps is not None else "baseline held fixed (no paired replicates)"
        rows.append([f"`{k}`", num(nb.baseline_err, 4), with_ci(nb.n_star, *nb.ci),
                     num(nb.p_unreachable, 0, "f", 100, "%"), "yes" if nb.extrapolated else "no", fixed])
        notes.append(f"- `{k}`: {nb.describe()}")
    head = ["encoder key", "size-0 error", "N* [95% CI]", "unreachable in", "extrapolated", "note"]
    return ["The smallest N whose fitted error is at most the error of the same encoder key's size-0 (initial "
            "weights) checkpoint; the interval resamples the fit and (where it has them) the baseline on the same "
            "test resamples.", "", *md_table(head, rows), "", *notes, ""]


def _points(sec: SectionAnalysis) -> list[str]:
    rows = []
    for k, ka in sec.keys.items():
        s = ka.series
        if s.baseline is not None:
            rows.append([f"`{k}`", "0", "—", with_ci(*s.baseline, 3, "f"), num(1 - s.baseline[0], 4)])
        for i in range(len(s.n)):
            rows.append([f"`{k}`", str(int(s.n[i])), str(int(s.seed[i])), with_ci(s.value[i], s.lo[i], s.hi[i], 3, "f"),
                         num(s.err[i], 4)])
    return md_table(["encoder key", "N", "seed", f"macro {sec.metric_label} [95% CI]", "error e"], rows) + [""]


def _scaling_figure(sec: SectionAnalysis, out: Path) -> Path:
    series = []
    for k, ka in sec.keys.items():
        s = ka.series
        series.append(dict(name=k, n=s.n, value=s.value, lo=s.lo, hi=s.hi, fit=ka.fit,
                           baseline=None if s.baseline is None else s.baseline[0], holdout=ka.holdout))
    return plot_scaling(series, f"{sec.task} ({sec.domain}): macro {sec.metric_label} vs N",
                        f"macro {sec.metric_label}", out / f"{sec.slug}.png")


def render_section(sec: SectionAnalysis, out: Path, init: dict[str, str]) -> list[str]:
    """Markdown lines of one section; writes its figures into `out`. `init` maps key -> what size 0 is."""
    md = [f"## {sec.task} — {sec.domain}", "", f"![{sec.task} {sec.domain}]({_scaling_figure(sec, out).name})", "",
          "### Fits", "", *_fits(sec, init), "### Held-out largest N", "", *_holdout(sec),
          "### Comparisons", ""]
    comp, fig = _comparisons(sec, out)
    md += comp
    if fig is not None:
        md += [f"![{sec.task} {sec.domain} data multiplier]({fig.name})", ""]
    md += ["### Smallest N beating the size-0 baseline", "", *_beating(sec), "### Points", "", *_points(sec)]
    return md
