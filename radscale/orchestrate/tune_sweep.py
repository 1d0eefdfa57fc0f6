"""Ray Tune over the trials still to train: one function-trainable driver per trial.

Trials come from `GuardedQueue`, a Tune searcher that asks the cost guard before suggesting each one, so the
decision "may one more trial start" is made in the sweep driver, where the spend is measured, exactly when Tune
has a free slot. Refused trials never start; they are reported with a one-line reason.
"""
from __future__ import annotations

import json
import re
from typing import Callable

import torch
from ray import tune
from ray.exceptions import (NodeDiedError, ObjectLostError, ObjectStoreFullError, RayActorError, RaySystemError,
                            WorkerCrashedError)
from ray.exceptions import OutOfMemoryError as RayOutOfMemoryError
from ray.tune.search import Searcher

from radscale.config.specs import JobSpec
from radscale.config.trial import TrialSpec
from radscale.data.sweep_data import SweepData
from radscale.errors import RadscaleError
from radscale.orchestrate.cost import CostGuard
from radscale.orchestrate.mlflow_callback import TrialTrackingCallback
from radscale.orchestrate.paths import SweepPaths
from radscale.orchestrate.ray_env import init_ray
from radscale.orchestrate.trial_driver import trial_driver

HEAD_RESOURCE = "node:__internal_head__"   # Ray puts it on the head node only
_ANSI = re.compile(r"\x1b\[[0-9;]*m")        # Ray colours its process headers
# Errors whose first line holds no data: radscale's own, Ray's system failures, out-of-memory. Not task or
# user-code errors (their text is the user's exception, which may quote a table cell).
_SAFE_MESSAGES = (RadscaleError, RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError, RaySystemError,
                  RayOutOfMemoryError, ObjectStoreFullError, MemoryError, torch.OutOfMemoryError)


class GuardedQueue(Searcher):
    """Suggests the sweep's trial ids in order; the guard admits each one or refuses the rest."""

    def __init__(self, trial_ids: list[str], guard: CostGuard | None,
                 on_skip: Callable[[str, str], None] = lambda tid, msg: None):
        super().__init__()
        self._queue = list(trial_ids)
        self._guard = guard
        self._on_skip = on_skip
        self._started: dict[str, str] = {}       # Tune's trial id -> ours

    def suggest(self, trial_id: str):
        if not self._queue:
            return Searcher.FINISHED
        ours = self._queue[0]
        if self._guard is not None:
            verdict = self._guard.admit(ours)
            if not verdict.admitted:
                if not verdict.final:
                    return None                  # a running trial may still free room: ask again later
                for tid in self._queue:
                    self._on_skip(tid, verdict.message)
                self._queue.clear()
                return Searcher.FINISHED
        self._queue.pop(0)
        self._started[trial_id] = ours
        return {"trial_id": ours}

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        ours = self._started.pop(trial_id, None)
        if ours is not None and self._guard is not None:
            self._guard.release(ours)

    def __getstate__(self) -> dict:
        # Tune pickles its config into the experiment folder; the guard (locks, the live tracker) stays behind.
        state = dict(self.__dict__)
        state.update(_guard=None, _on_skip=None)
        return state

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump({"queue": self._queue}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self._queue = json.load(f)["queue"]


def run_trials(job: JobSpec, todo: list[TrialSpec], data: SweepData, paths: SweepPaths, tracker, parent: str,
               params: dict, tags: dict, *, storage: str, stop_file: str, guard: CostGuard | None = None,
               on_skip: Callable[[str, str], None] = lambda tid, msg: None) -> dict[str, str]:
    """Train `todo` under Tune; returns {trial id: one-line reason} for the trials that failed."""
    init_ray(job.sweep.ray_address)
    trials = {t.trial_id: {"sweep": t.sweep, "encoder": t.encoder.model_dump(), "size": t.size, "seed": t.seed}
              for t in todo}
    job_dict = json.loads(job.model_dump_json())
    driver = tune.with_parameters(trial_driver, job=job_dict, trials=trials, manifest=data.manifest,
                                  label_columns=list(data.label_columns), root=str(paths.root),
                                  storage=storage, stop_file=stop_file)
    # The driver only waits on fit(): a tiny CPU share, so drivers never starve the Train workers (RAY.md). It
    # runs on the head, beside the sweep driver, because it writes trials/<id>/ there (a job's driver stays on
    # the head when `ray job submit` is given no entrypoint resources).
    driver = tune.with_resources(driver, {"cpu": 0.01, HEAD_RESOURCE: 0.001})
    tuner = tune.Tuner(
        driver,
        tune_config=tune.TuneConfig(search_alg=GuardedQueue([t.trial_id for t in todo], guard, on_skip),
                                    num_samples=len(todo), max_concurrent_trials=job.sweep.max_concurrent_trials),
        run_config=tune.RunConfig(name=f"tune-{job.sweep.name}", storage_path=storage,
                                  callbacks=[TrialTrackingCallback(tracker, parent, params, tags)],
                                  failure_config=tune.FailureConfig(max_failures=0), verbose=0),
    )
    grid = tuner.fit()
    # One failed trial must not hold back the others: the sweep evaluates and reports what finished and
    # names the failures (a deterministic failure would otherwise block every evaluation at every re-run).
    return {r.config["trial_id"]: failure_line(r.error, storage) for r in grid if r.error is not None}


def failure_line(error: BaseException, storage: str) -> str:
    """`[rank R: ]Type[: first line]` of the innermost cause, for the console, failed.json, MLflow and the report.

    Ray wraps a trial's error in its own (RayTaskError.cause, WorkerGroupError.worker_failures,
    ControllerError.controller_failure, __cause__). The message is kept only for errors whose text is known
    to hold no data (radscale's own, Ray's system errors, out-of-memory): a library error may quote a table
    cell, i.e. report text, so for those the type stands alone and the message stays in the Ray logs.
    """
    rank = ""
    for _ in range(10):                        # bounded: a cause chain may loop
        failures = getattr(error, "worker_failures", None)
        if isinstance(failures, dict) and failures:
            first_rank = min(failures)
            rank, inner = f"rank {first_rank}: ", failures[first_rank]
        elif isinstance(getattr(error, "cause", None), BaseException):
            inner = error.cause
        elif isinstance(getattr(error, "controller_failure", None), BaseException):
            inner = error.controller_failure
        elif error.__cause__ is not None:
            inner = error.__cause__
        else:
            break
        error = inner
    where = f"logs under {storage}"
    if not isinstance(error, _SAFE_MESSAGES):
        return f"{rank}{type(error).__name__} (message not recorded: it may quote data; {where})"
    lines = (_ANSI.sub("", line).strip() for line in str(error).splitlines())
    first = next((line for line in lines if line and not line.startswith(("Traceback", "ray::", "File "))), "")
    return f"{rank}{type(error).__name__}{': ' + first[:300] if first else ''} ({where})"
