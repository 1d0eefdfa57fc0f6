"""Evaluation checks that run before any training: a missing decoder, features that cannot fit the driver."""
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from radscale.config.specs import EvalSpec
from radscale.errors import RadscaleError
from radscale.evaluate.extract import bytes_per_image
from radscale.evaluate.preflight import COPIES, check_evaluation, feature_memory_bytes

ROOT = Path(__file__).resolve().parents[2]


def _rows(tmp_path, n, masks=True):
    """An eval-rows Parquet of n rows (a mask on one row when masks)."""
    cols = {"eval_id": [f"e{i}" for i in range(n)]}
    if masks:
        cols["mask_uri"] = [None] * (n - 1) + ["m.png"]
    path = tmp_path / f"eval-{n}-{masks}.parquet"
    pq.write_table(pa.table(cols), path)
    return str(path)


def test_feature_memory_is_the_largest_pass_of_one_input_size():
    spec = EvalSpec(models_per_pass=2)
    dino, mi2, dino_full = (bytes_per_image(n, seg_layers=4, seg_stage=-2) for n in ("rad-dino-tiny", "mi2-tiny",
                                                                                      "rad-dino"))
    # Three 64-px encoders share passes of 2 (at worst the two largest); the 518-px one has a pass of its own.
    # Each pass also holds its decoded images (uint8 squares).
    need = feature_memory_bytes(spec, ["mi2-tiny", "rad-dino-tiny", "mi2-tiny", "rad-dino"], 100, 100)
    assert need == 100 * max(COPIES * (dino + mi2) + 64 * 64, COPIES * dino_full + 518 * 518)
    assert feature_memory_bytes(spec, ["mi2-tiny", "rad-dino-tiny", "rad-dino-tiny"], 100, 100) == \
        100 * (COPIES * 2 * max(dino, mi2) + 64 * 64)
    # Without masks no segmentation tokens; without patch-token families only the CLS features.
    no_masks = feature_memory_bytes(spec, ["rad-dino-tiny"], 100, 0)
    assert no_masks == 100 * (COPIES * bytes_per_image("rad-dino-tiny") + 64 * 64)
    cls_only = EvalSpec(attention_probe=False, segmentation=False, report_generation=False)
    assert feature_memory_bytes(cls_only, ["rad-dino-tiny"], 100, 100) == \
        100 * (COPIES * bytes_per_image("rad-dino-tiny", patch_tokens=False) + 64 * 64)


def test_segmentation_tokens_count_only_the_rows_with_known_masks(tmp_path):
    spec = EvalSpec()
    full, base = (bytes_per_image("rad-dino-tiny", **kw) for kw in ({"seg_layers": 4, "seg_stage": -2}, {}))
    assert full > base
    assert feature_memory_bytes(spec, ["rad-dino-tiny"], 100, 10) == \
        COPIES * (100 * base + 10 * (full - base)) + 100 * 64 * 64
    # Device-positive rows without a mask (RANZCR images without annotations) are not known: no seg tokens.
    path = tmp_path / "eval.parquet"
    pq.write_table(pa.table({"eval_id": [f"e{i}" for i in range(100)],
                             "mask_uri": ["m.png"] * 10 + [None] * 90,
                             "support_devices": [1.0] * 50 + [0.0] * 30 + [None] * 20}), path)
    assert check_evaluation(spec, ["rad-dino-tiny"], str(path)) == \
        feature_memory_bytes(spec, ["rad-dino-tiny"], 100, 10 + 30 + 20)


def test_an_unknown_mask_device_is_refused_before_training(tmp_path):
    path = tmp_path / "eval.parquet"
    pq.write_table(pa.table({"eval_id": ["e0", "e1"], "mask_uri": ["m.png", "n.png"],
                             "mask_devices": ["ett", "ett,pacemaker"]}), path)
    with pytest.raises(RadscaleError) as e:
        check_evaluation(EvalSpec(), ["rad-dino-tiny"], str(path))
    assert str(e.value) == (f"{path}: mask_devices: unknown device type 'pacemaker' at eval row 1 "
                            "(known: ett, ngt, cvc, swan_ganz, chest_tube)")


def test_check_evaluation_refuses_what_cannot_fit_or_run(tmp_path):
    rows = _rows(tmp_path, 1000)
    need = check_evaluation(EvalSpec(), ["rad-dino-tiny", "mi2-tiny"], rows)
    assert need == feature_memory_bytes(EvalSpec(), ["rad-dino-tiny", "mi2-tiny"], 1000, 1000)
    with pytest.raises(RadscaleError) as e:
        check_evaluation(EvalSpec(max_feature_gb=need / 2e9), ["rad-dino-tiny", "mi2-tiny"], rows)
    assert "1,000 eval images" in str(e.value) and "\n" not in str(e.value)
    # The paper's 1.2M eval images of one RAD-DINO trial do not fit a 64 GB head at the defaults.
    big = _rows(tmp_path, 1_200_000, masks=False)
    with pytest.raises(RadscaleError, match="eval.max_feature_gb"):
        check_evaluation(EvalSpec(max_feature_gb=51.2), ["rad-dino"], big)
    # `radscale validate` may run off the cluster: only an explicit limit refuses there.
    assert check_evaluation(EvalSpec(), ["rad-dino"], big, on_this_host=False) > 51.2e9
    with pytest.raises(RadscaleError, match="report_decoder"):
        check_evaluation(EvalSpec(report_decoder=str(tmp_path / "no-such-lm")), ["mi2-tiny"], rows)


def test_the_paper_job_fits_its_cluster_head():
    from radscale.config.load import load_job
    from radscale.config.trial import plan_trials

    job = load_job(str(ROOT / "jobs" / "paper.toml"), [])
    rows = 3 * job.data.max_eval_images                      # probe_train, probe_val, test; no OOD manifest
    need = feature_memory_bytes(job.eval, [t.encoder.name for t in plan_trials(job)], rows, rows)
    assert need <= 0.8 * 64e9                                # cluster/aws.yaml head: m7i.4xlarge, 64 GiB


def test_validate_prints_the_estimate_and_sweep_refuses_before_training(tmp_path):
    base = [sys.executable, "-m", "radscale"]
    common = ["jobs/demo.toml", "--set", f"sweep.output_dir='{tmp_path}'", "--set", "data.phantom.n_images=200",
              "--set", "sizes=[50]"]
    ok = subprocess.run(base + ["validate"] + common, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "GB of driver memory in the largest extraction pass" in ok.stdout and "warning" not in ok.stdout
    bad = subprocess.run(base + ["sweep"] + common + ["--set", "eval.max_feature_gb=0.001"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("radscale: error: eval: frozen features of ")
    assert len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "demo" / "job.json").exists() and not (tmp_path / "demo" / "trials").exists()
