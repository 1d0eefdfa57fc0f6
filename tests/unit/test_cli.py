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


def test_help_lists_commands():
    out = _run("--help")
    assert out.returncode == 0 and all(c in out.stdout for c in ("sweep", "validate", "phantom", "report", "ui"))
