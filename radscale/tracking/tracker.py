"""The only MLflow user. A small Tracker interface with a no-op twin; runs are found again by tags, so a
re-run or resumed sweep logs into the same runs instead of opening duplicates.

Privacy: only config values, counts, metrics and file artifacts are logged — never report text or pixels.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from radscale.config.load import flatten

SWEEP_TAG, TRIAL_TAG, KIND_TAG = "radscale.sweep", "radscale.trial_id", "radscale.kind"
UPDATED_TAG = "radscale.updated"      # a re-run's new value of an existing (immutable) param


class NullTracker:
    """Same interface, records nothing (tracking switched off)."""
    def sweep_run(self, sweep: str, params: dict, tags: dict) -> str: return ""
    def trial_run(self, parent: str, trial_id: str, params: dict, tags: dict) -> str: return ""
    def log_metrics(self, run_id: str, metrics: dict, step: int | None = None) -> None: ...
    def log_dict(self, run_id: str, data: dict, name: str) -> None: ...
    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None: ...
    def set_tags(self, run_id: str, tags: dict) -> None: ...
    def finish(self, run_id: str, status: str = "FINISHED") -> None: ...
    def runs(self) -> list[dict]: return []


class MLflowTracker:
    def __init__(self, uri: str, experiment: str, artifact_root: str | None = None):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            loc = Path(artifact_root).resolve().as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=loc)
        else:
            self.experiment_id = exp.experiment_id

    def _find(self, **tags: str) -> str | None:
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=where, max_results=1,
                                       order_by=["attributes.start_time DESC"])
        return runs[0].info.run_id if runs else None

    def _params(self, run_id: str, params: dict) -> None:
        """New keys become params; MLflow params are immutable, so a re-run's changed value (e.g. more sizes)
        is kept as the tag `radscale.updated.<key>` instead of being dropped."""
        from mlflow.entities import Param, RunTag

        existing = self.client.get_run(run_id).data.params
        flat = {k: str(v)[:6000] for k, v in flatten(params).items()}
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        for i in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[i:i + 100])
        changed = [RunTag(f"{UPDATED_TAG}.{k}", v) for k, v in flat.items() if k in existing and existing[k] != v]
        for i in range(0, len(changed), 100):
            self.client.log_batch(run_id, tags=changed[i:i + 100])

    def sweep_run(self, sweep: str, params: dict, tags: dict) -> str:
        run_id = self._find(**{SWEEP_TAG + ".parent": sweep})
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=sweep,
                                         tags={SWEEP_TAG + ".parent": sweep, KIND_TAG: "sweep", **tags})
            run_id = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self._params(run_id, params)
        return run_id

    def trial_run(self, parent: str, trial_id: str, params: dict, tags: dict) -> str:
        run_id = self._find(**{TRIAL_TAG: trial_id, "mlflow.parentRunId": parent})   # this sweep's run only
        if run_id is None:
            all_tags = {TRIAL_TAG: trial_id, KIND_TAG: "trial", "mlflow.parentRunId": parent, **tags}
            run_id = self.client.create_run(self.experiment_id, run_name=trial_id, tags=all_tags).info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self._params(run_id, params)
        return run_id

    def log_metrics(self, run_id: str, metrics: dict, step: int | None = None) -> None:
        from mlflow.entities import Metric
        import time

        ts = int(time.time() * 1000)
        ms = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
        for i in range(0, len(ms), 500):
            self.client.log_batch(run_id, metrics=ms[i:i + 500])

    def log_dict(self, run_id: str, data: dict, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / name
            p.write_text(json.dumps(data, indent=2, default=str))
            self.client.log_artifact(run_id, str(p))

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None:
        if Path(path).is_dir():
            self.client.log_artifacts(run_id, path, artifact_path)
        else:
            self.client.log_artifact(run_id, path, artifact_path)

    def set_tags(self, run_id: str, tags: dict) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def runs(self) -> list[dict]:
        out = []
        for r in self.client.search_runs([self.experiment_id], max_results=10000):
            out.append({"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
                        "tags": dict(r.data.tags), "metrics": dict(r.data.metrics),
                        "params": dict(r.data.params)})
        return out


def default_tracking_uri(output_dir: str) -> str:
    return f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


def make_tracker(uri: str, experiment: str, artifact_root: str | None = None):
    if uri == "none":
        return NullTracker()
    return MLflowTracker(uri, experiment, artifact_root)
