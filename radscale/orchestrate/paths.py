"""Where a sweep's outputs live (one root; every trial's things are named by its trial_id)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


def write_json(path: Path, payload: dict) -> None:
    """Written then renamed: a crash mid-write leaves no half marker (the sweep reads these as trial states)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)


@dataclass(frozen=True)
class SweepPaths:
    root: Path                      # <output_dir>/<sweep>

    @property
    def ray_storage(self) -> Path: return self.root / "ray"
    @property
    def quarantine(self) -> Path: return self.root / "quarantine"
    @property
    def results(self) -> Path: return self.root / "results.parquet"
    @property
    def report_dir(self) -> Path: return self.root / "report"

    def trial_dir(self, trial_id: str) -> Path: return self.root / "trials" / trial_id
    def result_json(self, trial_id: str) -> Path: return self.trial_dir(trial_id) / "result.json"
    def encoder(self, trial_id: str) -> Path: return self.trial_dir(trial_id) / "encoder.pt"
    def eval_table(self, trial_id: str) -> Path: return self.trial_dir(trial_id) / "eval.parquet"
    # Markers of a trial without result.json: ended before its budget (resumed next run) / failed (retried).
    def stopped_json(self, trial_id: str) -> Path: return self.trial_dir(trial_id) / "stopped.json"
    def failed_json(self, trial_id: str) -> Path: return self.trial_dir(trial_id) / "failed.json"
