"""Tune callback that streams each trial's reports into its MLflow run (from the sweep driver process only,
so the sqlite store has a single writer)."""
from __future__ import annotations

from ray.tune import Callback

from radscale.tracking.tracker import TRIAL_TAG


class TrialTrackingCallback(Callback):
    def __init__(self, tracker, parent_run: str, trial_params: dict[str, dict], trial_tags: dict[str, dict]):
        self.tracker = tracker
        self.parent = parent_run
        self.params = trial_params
        self.tags = trial_tags
        self.run_ids: dict[str, str] = {}

    def _run(self, trial) -> str:
        tid = trial.config["trial_id"]
        if tid not in self.run_ids:
            self.run_ids[tid] = self.tracker.trial_run(self.parent, tid, self.params[tid],
                                                       {TRIAL_TAG: tid, **self.tags[tid]})
        return self.run_ids[tid]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = {f"train/{k}": v for k, v in result.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith(
                       ("time_", "timestamp", "training_iteration", "pid", "done", "iterations_since"))}
        self.tracker.log_metrics(self._run(trial), metrics, step=int(result.get("steps", 0)))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.tracker.finish(self._run(trial), "FAILED")
