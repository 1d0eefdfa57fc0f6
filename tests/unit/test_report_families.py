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
