"""The sweep report: Markdown + self-contained HTML with tables and plots, from results.parquet alone.

Deterministic: the same results give byte-identical report files (no timestamps; seeded bootstraps).
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from radscale.config.specs import JobSpec
from radscale.report.plots import plot_scaling
from radscale.scaling.compare import exponent_ratio
from radscale.scaling.fit import ScalingFit, fit_scaling_law

ERR_FLOOR = 1e-4          # error 0 (AUROC 1) cannot enter a log-log fit


def fit_series(df: pd.DataFrame) -> tuple[ScalingFit | None, str]:
    """Power law on error = 1 − macro AUROC vs N, CIs from the test-set bootstrap replicates."""
    pts = df[df["size"] > 0].sort_values("size")
    if pts["size"].nunique() < 3:
        return None, "needs ≥ 3 sizes"
    err = np.clip(1 - pts["value"].to_numpy(float), ERR_FLOOR, None)
    reps = []
    for r, v in zip(pts["replicates"], pts["value"]):
        a = np.asarray(r if r is not None else [], float)
        a = np.where(np.isfinite(a), a, v)
        reps.append(np.clip(1 - a, ERR_FLOOR, None))
    width = min(len(r) for r in reps)
    try:
        fit = fit_scaling_law(pts["size"].to_numpy(float), err, form="power",
                              err_replicates=np.stack([r[:width] for r in reps]) if width else None)
    except ValueError as e:
        return None, str(e)
    return fit, ""


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def build_report(job: JobSpec, results: pd.DataFrame, paths, data) -> Path:
    out = paths.report_dir
    out.mkdir(parents=True, exist_ok=True)
    md: list[str] = [f"# radscale sweep `{job.sweep.name}`", ""]
    src = data.sources.get("manifest", "")
    md += [f"- data: `{Path(src).name}` ({'phantom corpus' if '_phantom' in src else 'manifest'}), "
           f"pretraining pool {data.pool_size} images, domains: {', '.join(data.domains)}",
           f"- budget per trial: {job.budget.value:g} {job.budget.mode} (training loop incl. data stalls; startup "
           f"excluded)",
           f"- encoders: " + ", ".join(f"`{e.key}` ({'weights ' + Path(e.weights).name if e.weights else 'random init'})"
                                      for e in job.encoders),
           f"- probes: linear (logistic regression per label, C on probe_val); uncertain={job.eval.uncertain}, "
           f"unmentioned={job.eval.unmentioned}; 95% CIs: patient-clustered bootstrap (R={job.eval.bootstrap})", ""]
    html_parts: list[str] = []
    if results.empty:
        md.append("No evaluation results yet.")
    else:
        md += ["## Trials", "", _trial_table(results), ""]
        macro = results[(results["label"] == "macro") & (results["metric"] == "auroc")]
        fits_json = {}
        for (task, domain), grp in macro.groupby(["task", "domain"], sort=True):
            md += [f"## {task} — {domain}", ""]
            series, rows = [], []
            fits = {}
            for key, g in grp.groupby(grp["encoder"] + "." + grp["objective"], sort=True):
                fit, why = fit_series(g)
                fits[key] = fit
                base = g[g["size"] == 0]["value"]
                pts = g[g["size"] > 0].sort_values("size")
                series.append(dict(name=key, n=pts["size"], value=pts["value"], lo=pts["ci_lo"], hi=pts["ci_hi"],
                                   fit=fit, baseline=float(base.iloc[0]) if len(base) else None))
                for r in g.sort_values("size").itertuples():
                    rows.append(f"| {key} | {r.size} | {r.value:.3f} [{r.ci_lo:.3f}, {r.ci_hi:.3f}] | {r.n_labels} |")
                if fit is not None:
                    fits_json[f"{task}/{domain}/{key}"] = fit.to_dict()
                    a, al = fit.params["a"], fit.params["alpha"]
                    ci = fit.ci.get("alpha", (np.nan, np.nan))
                    md.append(f"- `{key}`: 1 − AUROC = a·N^(−α) with a = {a:.3g}, α = {al:.3g} "
                              f"(95% CI [{ci[0]:.3g}, {ci[1]:.3g}]), log-RMSE {fit.residuals['rmse_log']:.3f}")
                else:
                    md.append(f"- `{key}`: no fit ({why})")
            keys = [k for k, f in fits.items() if f is not None]
            if len(keys) >= 2:
                try:
                    md.append("- " + exponent_ratio(fits[keys[0]], fits[keys[1]], names=(keys[0], keys[1])).describe())
                except ValueError as e:
                    md.append(f"- exponent ratio unavailable: {e}")
            png = plot_scaling(series, f"{task} ({domain}): macro AUROC vs N", "macro AUROC",
                               out / f"{task}-{domain}.png")
            md += ["", "| encoder | N | macro AUROC [95% CI] | labels |", "|---|---|---|---|", *rows, "",
                   f"![{task} {domain}]({png.name})", ""]
        (out / "fits.json").write_text(json.dumps(fits_json, indent=2, sort_keys=True))
    text = "\n".join(md) + "\n"
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(_html(text, out))
    return out / "report.html"


def _trial_table(results: pd.DataFrame) -> str:
    cols = ["trial_id", "size", "samples_seen", "epochs", "train_s", "budget_deviation", "images_per_s"]
    t = results.drop_duplicates("trial_id")[cols].sort_values(["trial_id"])
    lines = ["| trial | N | samples | epochs | train s | budget dev. | img/s |", "|---|---|---|---|---|---|---|"]
    for r in t.itertuples():
        lines.append(f"| {r.trial_id} | {r.size} | {_num(r.samples_seen, 0)} | {_num(r.epochs, 2)} "
                     f"| {_num(r.train_s, 1)} | {_num(r.budget_deviation, 2, 100, '%')} | {_num(r.images_per_s, 1)} |")
    return "\n".join(lines)


def _num(v, digits: int, scale: float = 1.0, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    return f"{v * scale:.{digits}f}{unit}"


def _html(markdown: str, folder: Path) -> str:
    """A small Markdown subset to HTML, images inlined so the file is self-contained."""
    body, table = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= set("-") for c in cells):
                table.append(cells)
            continue
        if table:
            head, *rest = table
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rest)
                        + "</table>")
            table = []
        if line.startswith("!["):
            name = line[line.index("(") + 1:-1]
            body.append(f'<img src="{_img(folder / name)}" alt="{html.escape(name)}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:]).replace('`', '')}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    style = ("body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
             "img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>radscale report</title><style>{style}</style>" \
           f"</head><body>{''.join(body)}</body></html>\n"
