"""The report renders a section per evaluation family (attention probes, segmentation, report generation), each
with its headline metric, and survives a family whose error does not move with N (a tiny demo's label F1 of 0)."""
from pathlib import Path

import numpy as np
import pandas as pd

from radscale.config.load import load_job
from radscale.data.sweep_data import SweepData
from radscale.orchestrate.paths import SweepPaths
from radscale.report.analysis import analyse
from radscale.report.build import build_report
from test_report_synthetic import crossing_results

ROOT = Path(__file__).resolve().parents[2]
DATA = SweepData("m", "e", 1000, (), ("in-domain",), {"manifest": "/x/_phantom/m.parquet"})


def _families() -> pd.DataFrame:
    base = crossing_results(sizes=(150, 400, 1000), r=50)
    macro = base[(base.metric == "auroc") & (base.label == "macro")]
    attention = macro.assign(task="findings:attention")
    seg = macro.assign(task="segmentation", metric="dice")
    # A nearly flat Dice for one key (a 2x2 patch grid learns almost nothing): N*(τ) beyond any plot range.
    nearly = seg.encoder == "rad-dino-tiny"
    seg.loc[nearly, "value"] = 0.015 + 1e-5 * np.log(seg.loc[nearly, "size"].clip(lower=100))
    seg.loc[nearly, "replicates"] = pd.Series([list(v + np.linspace(-1e-3, 1e-3, 50)) for v in
                                               seg.loc[nearly, "value"]], index=seg.index[nearly])
    flat = macro.assign(task="report_generation", metric="label_f1", value=0.0, ci_lo=0.0, ci_hi=0.0)
    flat["replicates"] = [[0.0] * 50 for _ in range(len(flat))]
    bleu = flat.assign(metric="bleu4", value=0.2)
    return pd.concat([base, attention, seg, flat, bleu], ignore_index=True)


def test_every_family_gets_a_section_with_its_headline(tmp_path):
    results = _families()
    sections = {s.task: s for s in analyse(results)}
    assert {k: s.metric for k, s in sections.items()} == {
        "findings": "auroc", "findings:attention": "auroc", "segmentation": "dice", "report_generation": "label_f1"}
    assert sections["findings:attention"].slug == "findings_attention-in-domain"   # no ':' in file names
    flat = sections["report_generation"]
    assert all(np.isclose(k.fit.params["alpha"], 0.0) for k in flat.keys.values())
    assert any("ratio" in n for p in flat.pairs for n in p.notes)                   # undefined, said so
    out = build_report(load_job(ROOT / "jobs/demo.toml"), results, SweepPaths(tmp_path), DATA)
    md = (out.parent / "report.md").read_text()
    for task in ("findings", "findings:attention", "segmentation", "report_generation"):
        assert f"## {task} — in-domain" in md
    assert (out.parent / "findings_attention-in-domain.png").exists()
    assert "](findings_attention-in-domain.png)" in md
    assert "Dice, clDice per image, mean of 3 fits (seeds 0..2)" in md     # the methods line says how Dice was got


def test_methods_line_names_the_segmentation_fits():
    from radscale.config.specs import EvalSpec
    from radscale.report.build import _families

    assert "mean of 4 fits (seeds 7..10)" in _families(EvalSpec(seg_repeats=4, seed=7))
    assert "Dice, clDice, one fit (seed 3))" in _families(EvalSpec(seg_repeats=1, seed=3))


def test_multiplier_plot_draws_curves_beyond_every_cap(tmp_path):
    """Seen on a 4-s demo: Dice flat in N gives N*(τ) of inf, 0 or 1e174 and no finite ratio; the log axes
    still need limits to draw."""
    from radscale.report.plots import plot_multiplier

    taus = np.geomspace(0.98, 0.78, 5)
    inf = np.full(5, np.inf)
    curves = [dict(name="a", taus=taus, est=inf, lo=inf, hi=inf),
              dict(name="b", taus=taus, est=inf, lo=np.array([0.0, 0.0, 2.2e174, 3e180, 1e200]), hi=inf)]
    ratios = [dict(name="a / b", taus=taus, est=np.full(5, np.nan), lo=inf, hi=inf)]
    out = plot_multiplier(curves, ratios, tuple(taus), (60.0, 240.0), "flat", tmp_path / "m.png")
    assert out.exists() and out.stat().st_size > 0
