"""A Tune function trainable that drives one trial: a Ray Train TorchTrainer with DeepSpeed in its workers.

Train V2 cannot run under `Tuner(TorchTrainer)`; the pattern is this small driver calling `fit()` (RAY.md).
The Train run is named by the trial id, so a re-run after an interruption resumes from its last checkpoint.

A run that ended early (the sweep's stop signal: cost bound reached or a user's request) gets `stopped.json`
instead of `result.json`: it is not done, and the next `radscale sweep` resumes it from its final checkpoint.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import ray.train
from ray.data import DataContext, ExecutionOptions, ExecutionResources
from ray.train import CheckpointConfig, DataConfig, FailureConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from radscale.config.specs import JobSpec
from radscale.orchestrate.cost import StopSignal
from radscale.orchestrate.ingest import decoded_subset_mb, trial_dataset
from radscale.orchestrate.paths import SweepPaths, write_json
from radscale.orchestrate.ray_runtime import train_loop_per_worker


def trial_driver(config: dict, job: dict, trials: dict, manifest: str, label_columns: list, root: str,
                 storage: str, stop_file: str) -> None:
    spec = JobSpec.model_validate(job)
    t = trials[config["trial_id"]]
    paths = SweepPaths(Path(root))
    hw, train = spec.hardware, spec.train
    DataContext.get_current().enable_progress_bars = False
    ds = trial_dataset(manifest, t["size"], t["encoder"]["objective"], spec.data.decode_size,
                       train.clip.context_length, str(paths.quarantine), list(label_columns), t["seed"])
    limits = ExecutionOptions(resource_limits=ExecutionResources(cpu=hw.data_cpus))
    cache_s = 0.0
    if decoded_subset_mb(t["size"], t["encoder"]["objective"], spec.data.decode_size, train.clip.context_length,
                         len(label_columns)) <= spec.data.cache_max_mb:
        t0 = time.monotonic()
        DataContext.get_current().execution_options.resource_limits = limits.resource_limits   # as in training
        ds = ds.materialize()         # decoded once, before the workers start: not training, not the budget
        cache_s = time.monotonic() - t0
    resources = {"CPU": hw.cpus_per_worker}
    if hw.use_gpu:
        resources["GPU"] = hw.gpus_per_worker or 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job, "trial": t, "subset_size": t["size"],
                           "cpu_threads": 0 if hw.use_gpu else hw.torch_threads or math.ceil(hw.cpus_per_worker),
                           "stop_file": stop_file, "stop_poll_s": min(train.report_every_s, 10.0)},
        torch_config=TorchConfig(backend="nccl" if hw.use_gpu else "gloo", timeout_s=600),
        scaling_config=ScalingConfig(num_workers=hw.num_workers, use_gpu=hw.use_gpu,
                                     resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=f"{spec.sweep.name}.{config['trial_id']}", storage_path=storage,
            callbacks=[TuneReportCallback()],
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=hw.max_failures),
            worker_runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu"}} if not hw.use_gpu else None),
        datasets={"train": ds},
        dataset_config=DataConfig(execution_options=limits),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    if result.metrics.get("ended_early"):
        write_trial_stopped(paths, config["trial_id"], result.metrics, StopSignal(stop_file).reason() or "",
                            result.checkpoint)
    else:
        write_trial_result(paths, config["trial_id"], t, {**result.metrics, "data_cache_s": cache_s},
                           result.checkpoint)


def write_trial_stopped(paths: SweepPaths, trial_id: str, metrics: dict, reason: str, checkpoint) -> None:
    """The marker of a trial that ended before its budget; the sweep reports it, a re-run resumes it."""
    clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
    write_json(paths.stopped_json(trial_id), {"trial_id": trial_id, "reason": reason or "stop requested",
                                              "metrics": clean, "checkpoint": checkpoint.path})


def write_trial_result(paths: SweepPaths, trial_id: str, trial: dict, metrics: dict, checkpoint) -> None:
    """Copy the consolidated encoder out of Train storage, then write result.json last (it marks 'done')."""
    tdir = paths.trial_dir(trial_id)
    tdir.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as d:
        shutil.copyfile(Path(d) / "encoder.pt", paths.encoder(trial_id))
        budget = json.loads((Path(d) / "budget.json").read_text())
    clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
    payload = {"trial_id": trial_id, "trial": trial, "metrics": clean, "budget": budget,
               "checkpoint": checkpoint.path}
    write_json(paths.result_json(trial_id), payload)
    paths.stopped_json(trial_id).unlink(missing_ok=True)    # resumed after a stop and now done
