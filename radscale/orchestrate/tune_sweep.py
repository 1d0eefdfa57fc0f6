"""Ray Tune over the trials still to train: one function-trainable driver per trial."""
from __future__ import annotations

import json

from ray import tune

from radscale.config.specs import JobSpec
from radscale.config.trial import TrialSpec
from radscale.data.sweep_data import SweepData
from radscale.errors import RadscaleError
from radscale.orchestrate.mlflow_callback import TrialTrackingCallback
from radscale.orchestrate.paths import SweepPaths
from radscale.orchestrate.ray_env import init_ray
from radscale.orchestrate.trial_driver import trial_driver


def run_trials(job: JobSpec, todo: list[TrialSpec], data: SweepData, paths: SweepPaths, tracker, parent: str,
               params: dict, tags: dict) -> None:
    init_ray(job.sweep.ray_address)
    trials = {t.trial_id: {"sweep": t.sweep, "encoder": t.encoder.model_dump(), "size": t.size, "seed": t.seed}
              for t in todo}
    job_dict = json.loads(job.model_dump_json())
    driver = tune.with_parameters(trial_driver, job=job_dict, trials=trials, manifest=data.manifest,
                                  label_columns=list(data.label_columns), root=str(paths.root))
    # The driver only waits on fit(): a tiny CPU share, so drivers never starve the Train workers (RAY.md).
    driver = tune.with_resources(driver, {"cpu": 0.01})
    tuner = tune.Tuner(
        driver,
        param_space={"trial_id": tune.grid_search([t.trial_id for t in todo])},
        tune_config=tune.TuneConfig(max_concurrent_trials=job.sweep.max_concurrent_trials),
        run_config=tune.RunConfig(name=f"tune-{job.sweep.name}", storage_path=str(paths.ray_storage),
                                  callbacks=[TrialTrackingCallback(tracker, parent, params, tags)],
                                  failure_config=tune.FailureConfig(max_failures=0), verbose=0),
    )
    grid = tuner.fit()
    failed = [r for r in grid if r.error is not None]
    if failed:
        first = failed[0]
        raise RadscaleError(f"{len(failed)} trial(s) failed; first: {first.config.get('trial_id')}: "
                            f"{type(first.error).__name__}: {str(first.error).splitlines()[0][:300]} "
                            f"(logs under {paths.ray_storage})")
