"""The data benchmarks run end to end at toy sizes and report what they claim (no timing assertions)."""
import numpy as np
import pyarrow.compute as pc
import pytest

from radscale.bench import run_bench
from radscale.bench.manifest import synthetic_manifest
from radscale.data.manifest import validate_manifest
from radscale.errors import RadscaleError


def test_synthetic_manifest_is_valid_and_shaped_like_mimic():
    t = synthetic_manifest(3000, seed=1)
    validate_manifest(t, "synthetic")
    ids = t.column("image_id").to_pylist()
    assert len(set(ids)) == 3000 and all(len(i) == 44 and i.count("-") == 4 for i in ids[:50])
    uri = t.column("uri")[0].as_py()
    assert uri.startswith("files/p1") and uri.endswith(ids[0] + ".jpg")
    assert 3 < 3000 / pc.count_distinct(t.column("patient_id")).as_py() < 9
    labels = t.column("pleural_effusion")
    assert 0.6 < labels.null_count / len(labels) < 0.8


def test_bench_manifest_reports_phases_and_exact_subset_sizes():
    out = run_bench("manifest", rows="4000", sizes="10,100,100000")   # strings, as from the command line
    assert out["sizes"] == [10, 100] and out["pool"] > 100 and out["rows"] == 4000
    for phase in ("validate", "splits", "subsets"):
        assert out[f"{phase}_s"] >= 0 and out[f"{phase}_peak_rss_mb"] > 0
    assert out["total_s"] == pytest.approx(out["validate_s"] + out["splits_s"] + out["subsets_s"], abs=1e-3)


def test_bench_ingest_compares_raw_and_prepared_paths():
    out = run_bench("ingest", images=2, source_size=160, short_side=64, decode_size=32, repeats=1)
    for key in ("raw_png8_img_s", "raw_png16_img_s", "raw_jpeg_img_s", "prepared_img_s", "shard_img_s",
                "canonical_img_s", "prepare_png16_img_s"):
        assert out[key] > 0
    assert out["prepared_kb"] < out["source_png16_kb"]
    assert np.isfinite(out["speedup_vs_raw_png8"])


def test_unknown_benchmarks_and_options_are_one_line_errors():
    with pytest.raises(RadscaleError, match="unknown benchmark 'x'"):
        run_bench("x")
    with pytest.raises(RadscaleError, match="unknown option 'bogus'"):
        run_bench("manifest", bogus="1")
    with pytest.raises(RadscaleError, match="expected int"):
        run_bench("manifest", rows="many")

