"""The command line: user errors are one line on stderr with exit code 2, never a traceback."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "radscale", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_bad_job_value_is_one_line(tmp_path):
    out = _run("sweep", "jobs/demo.toml", "--set", "budget.value=0")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "radscale: error: jobs/demo.toml: budget.value: Input should be greater than 0 (got 0)"]


def test_missing_manifest_is_refused_before_compute(tmp_path):
    out = _run("validate", "jobs/paper.toml", "--set", f"data.manifest='{tmp_path / 'nope.parquet'}'",
               "--set", f"sweep.output_dir='{tmp_path}'")
    assert out.returncode == 2
    assert out.stderr.strip() == f"radscale: error: {tmp_path / 'nope.parquet'}: manifest not found"


def test_bad_cost_settings_and_changed_reruns_are_refused_before_compute(tmp_path):
    out = _run("sweep", "jobs/demo.toml", "--set", f"sweep.output_dir='{tmp_path}'", "--set",
               f"cost.prices='{tmp_path / 'nope.toml'}'")
    assert out.returncode == 2 and out.stderr.strip() == \
        f"radscale: error: cost.prices: {tmp_path / 'nope.toml'}: file not found"
    assert not (tmp_path / "demo").exists()                 # no phantom, no data, no Ray
    (tmp_path / "demo").mkdir()
    ok = _run("validate", "jobs/demo.toml", "--set", f"sweep.output_dir='{tmp_path}'")
    assert ok.returncode == 0, ok.stderr
    from radscale.config.load import load_job
    (tmp_path / "demo" / "job.json").write_text(load_job(ROOT / "jobs/demo.toml").model_dump_json())  # a first run
    out = _run("validate", "jobs/demo.toml", "--set", f"sweep.output_dir='{tmp_path}'", "--set", "train.lr=0.5")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "this sweep was run with other settings (train.lr)" in out.stderr


def test_help_lists_commands():
    out = _run("--help")
    assert out.returncode == 0 and all(c in out.stdout for c in ("sweep", "validate", "phantom", "report", "ui"))


def test_phantom_then_label_against_its_own_ground_truth(tmp_path):
    out = _run("phantom", "--out", str(tmp_path / "ph"), "--n", "60", "--size", "64")
    assert out.returncode == 0, out.stderr
    manifest = tmp_path / "ph" / "manifest.parquet"
    labelled = tmp_path / "labelled.parquet"
    out = _run("label", str(manifest), "--out", str(labelled), "--evaluate", str(manifest))
    assert out.returncode == 0, out.stderr
    assert "labelled 60 report(s)" in out.stdout
    macro = [line for line in out.stdout.splitlines() if line.strip().startswith("macro")]
    assert macro and float(macro[0].split()[-1]) > 0.9          # rule labeler vs the phantom's own labels


def test_import_folder_end_to_end(tmp_path):
    import numpy as np
    from PIL import Image

    for p in ("p1", "p2"):
        (tmp_path / "imgs" / p).mkdir(parents=True)
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "imgs" / p / f"{p}_a.png")
    out = _run("import", "folder", str(tmp_path / "imgs"), "--out", str(tmp_path / "m.parquet"))
    assert out.returncode == 0, out.stderr
    assert "imported 2 image(s) of 2 patient(s)" in out.stdout
    bad = _run("import", "nosuch", str(tmp_path), "--out", str(tmp_path / "x.parquet"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_plan_prints_projected_cost_before_anything_runs(tmp_path):
    out = _run("plan", "jobs/paper.toml", "--set", f"sweep.output_dir='{tmp_path}'")
    assert out.returncode == 0, out.stderr
    assert "18 trials (15 trained, 3 size-0 baselines)" in out.stdout
    # 24 h budget + 300 s assumed startup, 8 workers at $6.9/h: the per-trial cost is printed exactly.
    assert f"{6.9 * 8 * (86400 + 300) / 3600:.2f}" in out.stdout


def test_bench_options_reach_the_benchmark():
    """`radscale bench KIND` passes its options (and --help) through to that benchmark's own parser."""
    import json

    out = _run("bench", "manifest", "--rows", "3000")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["rows"] == 3000
    helped = _run("bench", "ingest", "--help")
    assert helped.returncode == 0 and "--decode-size" in helped.stdout


def test_report_of_a_sweep_with_a_bad_job_json_is_one_line(tmp_path):
    import pandas as pd

    pd.DataFrame({"trial_id": ["x"]}).to_parquet(tmp_path / "results.parquet")
    (tmp_path / "job.json").write_text('{"sweep": {"name": "s"}, "encoders": [{"name": "mi2-tiny", "objective": '
                                       '"clip"}], "sizes": [1], "budget": {"value": 1, "old": 1}}')
    out = _run("report", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"radscale: error: {tmp_path / 'job.json'}: budget.old: unknown key"]
