"""The sweep report: Markdown + self-contained HTML with tables and plots, and fits.json, from results alone.

One section per (task, domain): quality vs N with fitted curves and the size-0 baseline, fits with CIs,
held-out-largest-N validation, paired comparisons between encoder keys (exponent ratio, data multiplier across
targets, crossings), the smallest N beating the baseline; then the cost and budget audit, and the planned
trials without results (failed, stopped, not evaluated, not trained), each with its reason.
Deterministic: the same inputs give byte-identical files (no timestamps, no unseeded randomness, sorted keys).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from radscale.config.specs import JobSpec
from radscale.config.trial import plan_trials
from radscale.report.analysis import ERR_FLOOR, analyse, fit_series  # noqa: F401  (fit_series: public API)
from radscale.report.audit import audit_trials, render_audit
from radscale.report.export import fits_json
from radscale.report.html import markdown_to_html
from radscale.report.sections import render_section


def _families(spec) -> str:
    """The enabled evaluation families, as configured (EvalSpec)."""
    out = [f"linear ({', '.join(spec.tasks)}: logistic regression per label, C on probe_val; CLS of the last "
           f"{spec.layers} layers ++ mean patch token)"]
    if spec.attention_probe:
        out.append("attention pooling on patch tokens")
    if spec.segmentation:
        out.append(f"tube segmentation ({spec.seg_head} head on patch tokens: of the last {spec.seg_layers} "
                   f"blocks for ViT, of stage {spec.seg_stage} for DaViT; Dice, clDice"
                   + _seg_fits(spec) + ")")
    if spec.report_generation:
        out.append(f"report generation (decoder: {'small' if spec.report_decoder == 'small' else 'HF causal LM'}; "
                   f"label F1, BLEU-4, ROUGE-L)")
    return "; ".join(out)


def _seg_fits(spec) -> str:
    if spec.seg_repeats == 1:
        return f", one fit (seed {spec.seed})"
    return f" per image, mean of {spec.seg_repeats} fits (seeds {spec.seed}..{spec.seed + spec.seg_repeats - 1})"


def _header(job: JobSpec, data) -> list[str]:
    src = data.sources.get("manifest", "")
    return [f"# radscale sweep `{job.sweep.name}`", "",
            f"- data: `{Path(src).name}` ({'phantom corpus' if '_phantom' in src else 'manifest'}), "
            f"pretraining pool {data.pool_size} images, domains: {', '.join(data.domains)}",
            f"- budget per trial: {job.budget.value:g} {job.budget.mode} (training loop incl. data stalls; startup "
            f"excluded)",
            "- encoders: " + ", ".join(f"`{e.key}` (size 0 = "
                                       f"{'open weights ' + Path(e.weights).name if e.weights else 'random init'})"
                                       for e in job.encoders),
            f"- probes on frozen features: {_families(job.eval)}; uncertain={job.eval.uncertain}, "
            f"unmentioned={job.eval.unmentioned}; 95% CIs: patient-clustered bootstrap (R={job.eval.bootstrap}), "
            f"the same resamples for every trial, so comparisons between encoder keys are paired",
            f"- scaling: error e = 1 − macro headline metric (AUROC; Dice; label F1), floored at {ERR_FLOOR:g}; "
            f"pure power law e = a·N^(−α); fits need ≥ 3 sizes; the held-out check with exactly 3 sizes fits 2 "
            f"points (flagged)", ""]


def _reason(marker: Path) -> str:
    try:
        return str(json.loads(marker.read_text()).get("reason", "")) or "no reason recorded"
    except (OSError, ValueError):
        return "unreadable marker"


def _without_results(job: JobSpec, results: pd.DataFrame | None, paths) -> list[str]:
    """Planned trials missing from the results: a sweep that lost some must say so, not just show fewer points."""
    have = set() if results is None or results.empty else set(results["trial_id"])
    rows = []
    for t in plan_trials(job):
        if t.trial_id in have:
            continue
        if paths.failed_json(t.trial_id).exists():
            why = f"failed: {_reason(paths.failed_json(t.trial_id))}; the next run retries it"
        elif paths.stopped_json(t.trial_id).exists():
            why = f"stopped: {_reason(paths.stopped_json(t.trial_id))}; the next run resumes it"
        elif paths.eval_table(t.trial_id).exists():
            why = "evaluated, no result rows (e.g. every label under eval.min_positives)"
        elif paths.result_json(t.trial_id).exists():
            why = "encoder ready, not evaluated yet"
        else:
            why = "not trained (refused by the cost bound, or the sweep ended before it)"
        rows.append(f"- `{t.trial_id}`: {why}")
    return ["## Trials without results", "", *rows, ""] if rows else []


def build_report(job: JobSpec, results: pd.DataFrame, paths, data) -> Path:
    """Write report.md, report.html (figures inlined), the PNGs and fits.json into paths.report_dir."""
    out = paths.report_dir
    out.mkdir(parents=True, exist_ok=True)
    md = _header(job, data)
    init = {e.key: ("open weights" if e.weights else "random init") for e in job.encoders}
    sections = analyse(results)
    audit = None
    if results is None or results.empty:
        md.append("No evaluation results yet.")
    else:
        for sec in sections:
            md += render_section(sec, out, init)
        audit = audit_trials(results, job.hardware)
        md += render_audit(audit, job.budget)
    md += _without_results(job, results, paths)
    (out / "fits.json").write_text(fits_json(sections, audit), encoding="utf-8")
    text = "\n".join(md).rstrip("\n") + "\n"
    (out / "report.md").write_text(text, encoding="utf-8")
    (out / "report.html").write_text(markdown_to_html(text, out, f"radscale report: {job.sweep.name}"),
                                     encoding="utf-8")
    return out / "report.html"
