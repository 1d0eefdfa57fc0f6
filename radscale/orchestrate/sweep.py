"""`radscale sweep`: prepare data, train the missing trials under Ray Tune, evaluate, fit, report, track.

Idempotent: a trial is done when trials/<id>/result.json exists, evaluated when eval.parquet exists; a
re-run does only what is missing (and starts no Ray at all when nothing is).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from radscale.config.specs import JobSpec
from radscale.config.trial import TrialSpec, plan_trials
from radscale.data.sweep_data import SweepData, prepare_sweep_data
from radscale.data.vocab import Vocabulary
from radscale.objectives.build import build_task
from radscale.orchestrate.paths import SweepPaths
from radscale.tracking.tracker import default_tracking_uri, make_tracker


@dataclass(frozen=True)
class SweepOutcome:
    root: Path
    report: Path
    trained: list[str]
    skipped: list[str]
    evaluated: list[str]
    tracking_uri: str


def trial_tags(t: TrialSpec) -> dict:
    return {"encoder": t.encoder.name, "objective": t.encoder.objective, "variant": t.encoder.key,
            "size": str(t.size), "seed": str(t.seed), "radscale.sweep": t.sweep}


def trial_params(job: JobSpec, t: TrialSpec) -> dict:
    return {"trial_id": t.trial_id, "encoder": t.encoder.model_dump(), "size": t.size, "seed": t.seed,
            "budget": job.budget.model_dump(), "train": job.train.model_dump(), "hardware": job.hardware.model_dump()}


def save_initial_encoder(job: JobSpec, t: TrialSpec, paths: SweepPaths) -> None:
    """Size 0 = the open-weights (or, without weights, the seeded random-init) encoder, evaluated untrained."""
    task = build_task(t.encoder, job.train, t.seed)
    paths.trial_dir(t.trial_id).mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in task.eval_encoder().state_dict().items()},
               paths.encoder(t.trial_id))
    payload = {"trial_id": t.trial_id, "trial": {"size": 0, "seed": t.seed, "encoder": t.encoder.model_dump()},
               "metrics": {}, "budget": {}, "init": "open-weights" if t.encoder.weights else "random-init"}
    paths.result_json(t.trial_id).write_text(json.dumps(payload, indent=2))


def run_sweep(job: JobSpec, echo: Callable[[str], None] = print) -> SweepOutcome:
    vocab = Vocabulary()
    paths = SweepPaths(Path(job.sweep.output_dir) / job.sweep.name)
    data = prepare_sweep_data(job, paths.root, vocab)           # refuses bad input before any compute
    paths.root.mkdir(parents=True, exist_ok=True)
    (paths.root / "job.json").write_text(job.model_dump_json(indent=2))
    trials = plan_trials(job)
    uri = job.tracking.uri or default_tracking_uri(job.sweep.output_dir)
    tracker = make_tracker(uri, job.tracking.experiment or job.sweep.name,
                           str(Path(job.sweep.output_dir) / "mlartifacts"))
    parent = tracker.sweep_run(job.sweep.name, job.model_dump(), {"radscale.sweep": job.sweep.name})
    tracker.log_dict(parent, json.loads(job.model_dump_json()), "job.json")

    for t in trials:
        if not t.trained and not paths.result_json(t.trial_id).exists():
            save_initial_encoder(job, t, paths)
    todo = [t for t in trials if t.trained and not paths.result_json(t.trial_id).exists()]
    skipped = [t.trial_id for t in trials if t.trained and t not in todo]
    if skipped:
        echo(f"radscale: {len(skipped)} trial(s) already complete, skipped")
    if todo:
        from radscale.orchestrate.tune_sweep import run_trials
        echo(f"radscale: training {len(todo)} trial(s) under Ray Tune")
        run_trials(job, todo, data, paths, tracker, parent, {t.trial_id: trial_params(job, t) for t in todo},
                   {t.trial_id: trial_tags(t) for t in todo})
    for t in trials:
        _log_trial_summary(tracker, parent, job, t, paths)

    to_eval = [t for t in trials if not paths.eval_table(t.trial_id).exists()]
    if to_eval:
        from radscale.orchestrate.evaluation import evaluate_trials
        from radscale.orchestrate.ray_env import init_ray
        init_ray(job.sweep.ray_address)
        echo(f"radscale: evaluating {len(to_eval)} encoder(s) on frozen features")

        def done(t: TrialSpec, table: pd.DataFrame) -> None:
            table.to_parquet(paths.eval_table(t.trial_id))
            run = tracker.trial_run(parent, t.trial_id, trial_params(job, t), trial_tags(t))
            tracker.log_metrics(run, eval_metrics(table))

        evaluate_trials(job, to_eval, data, paths, vocab, done)
    results = collect_results(trials, paths)
    results.to_parquet(paths.results)

    from radscale.report.build import build_report
    report = build_report(job, results, paths, data)
    tracker.log_artifact(parent, str(paths.report_dir), "report")
    tracker.log_artifact(parent, str(paths.results))
    tracker.finish(parent)
    return SweepOutcome(paths.root, report, [t.trial_id for t in todo], skipped,
                        [t.trial_id for t in to_eval], uri)


def eval_metrics(table: pd.DataFrame) -> dict:
    out = {}
    for r in table.itertuples():
        key = f"eval/{r.task}/{r.domain}/{r.metric}" + ("" if r.label == "macro" else f"/{r.label}")
        out[key] = r.value
        if r.label == "macro":
            out[key + "_ci_lo"], out[key + "_ci_hi"] = r.ci_lo, r.ci_hi
    return out


def _log_trial_summary(tracker, parent: str, job: JobSpec, t: TrialSpec, paths: SweepPaths) -> None:
    marker = paths.trial_dir(t.trial_id) / ".tracked"
    if marker.exists() or not paths.result_json(t.trial_id).exists():
        return
    res = json.loads(paths.result_json(t.trial_id).read_text())
    run = tracker.trial_run(parent, t.trial_id, trial_params(job, t), trial_tags(t))
    tracker.log_metrics(run, {f"summary/{k}": v for k, v in res.get("metrics", {}).items()})
    tracker.log_dict(run, res, "result.json")
    tracker.set_tags(run, {"init": res.get("init", "continual-pretraining")})
    tracker.finish(run)
    marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))


def collect_results(trials: list[TrialSpec], paths: SweepPaths) -> pd.DataFrame:
    frames = [pd.read_parquet(paths.eval_table(t.trial_id)) for t in trials if paths.eval_table(t.trial_id).exists()]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    budget = {}
    for t in trials:
        if paths.result_json(t.trial_id).exists():
            m = json.loads(paths.result_json(t.trial_id).read_text()).get("metrics", {})
            budget[t.trial_id] = m
    for key in ("train_s", "samples_seen", "epochs", "budget_deviation", "images_per_s", "startup_s"):
        df[key] = df["trial_id"].map(lambda tid: budget.get(tid, {}).get(key))
    return df
