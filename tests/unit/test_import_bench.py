"""`radscale bench import`: synthetic public layouts, per-stage timings/peaks, and a manifest that validates."""
import json

import pandas as pd
import pytest

from radscale.bench.import_bench import (
    CHEXPERT_LABEL_COLUMNS, MAX_MIMIC_ROWS, main, run_import_bench, write_chexpert_source,
)
from radscale.data.importers.chexpert import _PATIENT, _STUDY
from radscale.data.manifest import read_manifest


def test_chexpert_source_has_the_documented_header_and_exact_rows_across_chunks(tmp_path):
    write_chexpert_source(tmp_path, 1_001, seed=3, chunk_rows=250)
    frame = pd.read_csv(tmp_path / "train.csv", dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABEL_COLUMNS]
    assert len(frame) == 1_001 and frame["Path"].is_unique
    assert set(frame[list(CHEXPERT_LABEL_COLUMNS)].to_numpy().ravel()) <= {"1.0", "0.0", "-1.0", ""}
    assert set(frame["AP/PA"][frame["Frontal/Lateral"] == "Lateral"]) <= {""}
    patients = frame["Path"].str.extract(_PATIENT.pattern)[0]
    studies = frame["Path"].str.extract(_STUDY.pattern)[0]
    assert patients.notna().all() and 1 < patients.nunique() < studies.nunique() < len(frame)
    # a patient never spans two generator chunks, so its sex and age are one value
    assert (frame.groupby(patients)[["Sex", "Age"]].nunique() == 1).all().all()


def test_cli_bench_on_5000_rows_gives_sane_figures_and_a_valid_manifest(tmp_path, capsys):
    assert main(["--rows", "5000", "--label-rows", "200", "--workdir", str(tmp_path), "--seed", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["rows"] == out["imported_rows"] == 5000 and out["skipped"] == 0
    assert 0 < out["patients"] < out["studies"] < 5000 and out["with_report"] == 0
    for stage in ("import", "validate", "label"):
        assert 0 < out[f"{stage}_s"] < 60 and out[f"{stage}_cpu_s"] >= 0
        assert 50 < out[f"{stage}_peak_rss_mb"] < 4096
    assert out["import_peak_rss_mb"] >= out["import_base_rss_mb"] > 0
    assert out["import_validate_s"] == pytest.approx(out["import_s"] + out["validate_s"], abs=1e-3)
    assert out["meets_target"] is True and out["source_mb"] > 0 and out["manifest_mb"] > 0
    assert out["label_reports"] == out["label_unique_reports"] == 200
    assert 10 < out["label_reports_per_cpu_s"] < 1e6
    assert out["label_hours_4m_one_core_extrapolated"] == pytest.approx(
        4_000_000 / out["label_reports_per_cpu_s"] / 3600, rel=0.01)
    table = read_manifest(tmp_path / "manifest.parquet")
    assert table.num_rows == 5000 and table.column("source")[0].as_py() == "chexpert"


def test_mimic_layout_imports_with_reports_from_files(tmp_path):
    out = run_import_bench(rows=400, fmt="mimic-cxr", workdir=str(tmp_path), label_rows=50, seed=2)
    assert out["imported_rows"] == out["with_report"] == 400 and out["skipped"] == 0
    assert out["label_reports"] == 50 and out["label_unique_reports"] <= 50
    table = read_manifest(tmp_path / "manifest.parquet")
    assert table.column("report").null_count == 0
    assert set(table.column("source_split").to_pylist()) <= {"train", "validate", "test"}
    assert len(table.column("image_id")[0].as_py()) == 44


def test_bad_arguments_are_one_line_value_errors(tmp_path):
    with pytest.raises(ValueError, match="fmt must be one of"):
        run_import_bench(rows=10, fmt="nih", workdir=str(tmp_path))
    with pytest.raises(ValueError, match="rows must be"):
        run_import_bench(rows=0, workdir=str(tmp_path))
    with pytest.raises(ValueError, match="one report file per study"):
        run_import_bench(rows=MAX_MIMIC_ROWS + 1, fmt="mimic-cxr", workdir=str(tmp_path), label_rows=0)
