"""scripts/device_checks.sh — the one-call GPU check script — in its CPU smoke mode, on an interpreter where ray
and mlflow cannot be imported (as on the bare GPU box): every check must print its JSON line, none an error."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts/device_checks.sh"
CHECKS = ["train-rad-dino", "train-mi2-clip", "extract-rad-dino", "extract-mi2", "train-rad-dino-compiled",
          "train-rad-dino-zero2"]

BLOCKER = '''
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "mlflow"):
            raise ImportError(f"{name} is not installed on the GPU box")
        return None
sys.meta_path.insert(0, _Blocked())
'''


def _run(tmp_path: Path, **env) -> tuple[subprocess.CompletedProcess, list[dict]]:
    (tmp_path / "site").mkdir(exist_ok=True)
    (tmp_path / "site/sitecustomize.py").write_text(BLOCKER)
    full = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHONPATH": str(tmp_path / "site"),
            "DEVICE_CHECKS_SMOKE": "1", "DEVICE_CHECKS_PYTHON": sys.executable, "DS_ACCELERATOR": "cpu", **env}
    proc = subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True, timeout=600)
    lines = (tmp_path / "out/device_checks.jsonl").read_text().splitlines()
    return proc, [json.loads(line) for line in lines]


def test_blocker_really_blocks(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    r = subprocess.run([sys.executable, "-c", "import ray"], env={**os.environ, "PYTHONPATH": str(tmp_path)},
                       capture_output=True, text=True)
    assert r.returncode != 0 and "not installed on the GPU box" in r.stderr


def test_smoke_run_gives_every_check_without_ray_or_mlflow(tmp_path):
    proc, rows = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["check"] for r in rows] == CHECKS
    assert [r for r in rows if "error" in r] == [], (tmp_path / "out/device_checks.log").read_text()[-3000:]
    train = {r["check"]: r for r in rows if r["bench"] == "train"}
    assert train["train-rad-dino-compiled"]["compile"] is True and train["train-rad-dino"]["compile"] is False
    assert train["train-mi2-clip"]["encoder"] == "mi2-tiny" and train["train-mi2-clip"]["objective"] == "clip"
    assert train.pop("train-rad-dino-zero2")["zero_stage"] == 2
    assert {r["zero_stage"] for r in train.values()} == {0}             # one GPU per trial: nothing to partition
    assert all(r["radscale_host_reads_per_step"] == 0 for r in train.values())
    for r in rows:
        assert r["radscale_images_per_s"] > 0 and r["ratio"] == r["radscale_images_per_s"] / r["bare_images_per_s"]
        if r["bench"] == "extract":
            assert r["radscale_path"] == "feature-extractor" and r["features_max_abs_diff"] == 0.0


def test_failures_and_the_time_cap_are_reported_not_hidden(tmp_path):
    proc, rows = _run(tmp_path, DEVICE_CHECKS_PYTHON="false")
    assert proc.returncode == 0 and [r["check"] for r in rows] == CHECKS
    assert all(r["rc"] == 1 and r["error"] for r in rows)
    proc, rows = _run(tmp_path, DEVICE_CHECKS_MAX_S="-1")
    assert all(r["error"].startswith("skipped: past DEVICE_CHECKS_MAX_S") for r in rows)


def test_a_check_is_cut_to_what_is_left_of_the_whole_budget(tmp_path):
    """A hung check cannot carry the call past DEVICE_CHECKS_MAX_S: its timeout is what is left, and what follows
    is skipped, so the device call ends inside its timeout_s."""
    fake = tmp_path / "hang"
    fake.write_text("#!/bin/sh\nsleep 60\n")
    fake.chmod(0o755)
    proc, rows = _run(tmp_path, DEVICE_CHECKS_PYTHON=str(fake), DEVICE_CHECKS_MAX_S="3", DEVICE_CHECKS_MIN_S="1")
    assert proc.returncode == 0 and [r["check"] for r in rows] == CHECKS
    assert rows[0]["rc"] == 124 and rows[0]["wall_s"] <= 4
    assert all(r["error"].startswith("skipped: past DEVICE_CHECKS_MAX_S") for r in rows[1:])
