"""`radscale sweep`: prepare data, train the missing trials under Ray Tune, evaluate, fit, report, track.

Idempotent: a trial is done when trials/<id>/result.json exists, evaluated when eval.parquet exists; a
re-run does only what is missing (and starts no Ray at all when nothing is). A trial stopped early
(trials/<id>/stopped.json) is not done: the next run resumes it from its checkpoint. A failed trial
(trials/<id>/failed.json) does not hold back the others: they are evaluated and reported, the command exits 1
naming it, and the next run retries it.

While Ray runs, a cost monitor measures spend (node-hours x price) into runs/<sweep>/spend.json; with
`cost.budget_usd` set it refuses trials that no longer fit and ends running ones at the bound (see cost.py).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from radscale.config.rerun import check_rerun
from radscale.config.specs import JobSpec
from radscale.config.trial import TrialSpec, plan_trials
from radscale.data.sweep_data import SweepData, prepare_sweep_data
from radscale.data.vocab import Vocabulary
from radscale.evaluate.preflight import check_evaluation
from radscale.objectives.build import build_task
from radscale.orchestrate.cost import CostPlan, check_cost, over_bound_note, read_spend
from radscale.orchestrate.paths import SweepPaths, write_json
from radscale.tracking.tracker import default_tracking_uri, make_tracker

SPEND_JSON = "spend.json"


@dataclass(frozen=True)
class SweepOutcome:
    root: Path
    report: Path
    trained: list[str]                  # trials that finished their budget in this run
    skipped: list[str]                  # already complete before this run
    evaluated: list[str]
    tracking_uri: str
    over_budget: dict[str, str] = field(default_factory=dict)   # trial id -> why it was not started
    stopped: dict[str, str] = field(default_factory=dict)       # trial id -> why it ended before its budget
    spend: dict = field(default_factory=dict)                   # spend.json
    failed: dict[str, str] = field(default_factory=dict)        # trial id -> why it failed (retried next run)


def storage_location(job: JobSpec, paths: SweepPaths) -> str:
    """Ray Tune/Train storage: `sweep.storage_uri` (a path or s3://, gs:// URI) or <output_dir>/<sweep>/ray."""
    uri = job.sweep.storage_uri
    if not uri:
        return str(paths.ray_storage)
    return uri.rstrip("/") if "://" in uri else str(Path(uri).expanduser().resolve())


def _artifact_root(uri: str, output_dir: str) -> str | None:
    # A tracking server stores artifacts where the server says (e.g. proxied to a bucket); a local file root
    # would put them on the head node's disk.
    return None if uri.startswith(("http://", "https://", "databricks")) else str(Path(output_dir) / "mlartifacts")


class _Cluster:
    """Ray and the cost monitor, started together on first need (a re-run with nothing to do starts neither)."""

    def __init__(self, job: JobSpec, paths: SweepPaths, storage: str, echo: Callable[[str], None], plan: CostPlan):
        self.job, self.paths, self.storage, self.echo, self.plan = job, paths, storage, echo, plan
        self.monitor = None

    def up(self):
        if self.monitor is None:
            from radscale.orchestrate.cost import build_cost_monitor
            from radscale.orchestrate.ray_env import init_ray

            init_ray(self.job.sweep.ray_address)
            self.monitor = build_cost_monitor(self.job, self.storage, self.paths.root / SPEND_JSON, self.echo,
                                              plan=self.plan)
            g = self.monitor.guard
            if g.budget_usd or g.trial.usd_per_hour:
                bound = f"bound ${g.budget_usd:.2f}" if g.budget_usd else "no bound (cost.budget_usd = 0)"
                self.echo(f"radscale: cost: spent ${g.tracker.spent_usd:.2f} so far; a trial projects "
                          f"${g.trial.usd:.2f} ({g.trial.seconds:.0f} s at ${g.trial.usd_per_hour:.2f}/h); {bound}")
            if g.tracker.book.worst_case_usd_per_hour:
                self.echo(f"radscale: cost: {self.job.cost.cluster} at full scale costs at most "
                          f"${g.tracker.book.worst_case_usd_per_hour:.2f}/h (its node caps x prices)")
        return self.monitor


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
    check_rerun(job, paths.root)                                # one folder, one configuration
    cost_plan = check_cost(job)                                 # prices and projection, before Ray starts
    data = prepare_sweep_data(job, paths.root, vocab)           # refuses bad input before any compute
    trials = plan_trials(job)
    check_evaluation(job.eval, [t.encoder.name for t in trials if not paths.eval_table(t.trial_id).exists()],
                     data.eval_rows)                            # ... and an evaluation that cannot run
    paths.root.mkdir(parents=True, exist_ok=True)
    (paths.root / "job.json").write_text(job.model_dump_json(indent=2))
    uri = job.tracking.uri or default_tracking_uri(job.sweep.output_dir)
    tracker = make_tracker(uri, job.tracking.experiment or job.sweep.name,
                           _artifact_root(uri, job.sweep.output_dir))
    parent = tracker.sweep_run(job.sweep.name, job.model_dump(), {"radscale.sweep": job.sweep.name})
    tracker.log_dict(parent, json.loads(job.model_dump_json()), "job.json")
    storage = storage_location(job, paths)
    cluster = _Cluster(job, paths, storage, echo, cost_plan)

    for t in trials:
        if not t.trained and not paths.result_json(t.trial_id).exists():
            save_initial_encoder(job, t, paths)
    todo = [t for t in trials if t.trained and not paths.result_json(t.trial_id).exists()]
    skipped = [t.trial_id for t in trials if t.trained and t not in todo]
    if skipped:
        echo(f"radscale: {len(skipped)} trial(s) already complete, skipped")
    spent = float(read_spend(paths.root / SPEND_JSON).get("spent_usd", 0.0))
    if (note := over_bound_note(job.cost.budget_usd, spent, len(todo), cost_plan.trial)) is not None:
        echo(note)
    over_budget: dict[str, str] = {}
    failed: dict[str, str] = {}
    for t in todo:                                              # retried now: an old failure is history
        paths.failed_json(t.trial_id).unlink(missing_ok=True)
    if todo:
        from radscale.orchestrate.tune_sweep import run_trials
        monitor = cluster.up()

        def skip(trial_id: str, message: str) -> None:
            over_budget[trial_id] = monitor.skipped[trial_id] = message
            echo(f"radscale: {trial_id} {message}")

        resumed = sum(paths.stopped_json(t.trial_id).exists() for t in todo)
        echo(f"radscale: training {len(todo)} trial(s) under Ray Tune"
             + (f" ({resumed} resumed after a stop)" if resumed else ""))
        failed = run_trials(job, todo, data, paths, tracker, parent,
                            {t.trial_id: trial_params(job, t) for t in todo}, {t.trial_id: trial_tags(t) for t in todo},
                            storage=storage, stop_file=monitor.stop.uri, guard=monitor.guard, on_skip=skip)
        _record_failed(job, [t for t in todo if t.trial_id in failed], failed, paths, tracker, parent, echo)
    stopped = _report_stopped(job, [t for t in todo if t.trial_id not in over_budget and t.trial_id not in failed],
                              paths, tracker, parent, echo)
    if cluster.monitor is not None:
        cluster.monitor.stopped.update(stopped)
    for t in trials:
        _log_trial_summary(tracker, parent, job, t, paths)

    to_eval = [t for t in trials if paths.result_json(t.trial_id).exists()
               and not paths.eval_table(t.trial_id).exists()]
    if to_eval:
        from radscale.orchestrate.evaluation import evaluate_trials
        cluster.up()
        echo(f"radscale: evaluating {len(to_eval)} encoder(s) on frozen features")

        def done(t: TrialSpec, table: pd.DataFrame) -> None:
            part = paths.eval_table(t.trial_id).with_suffix(".parquet.tmp")
            table.to_parquet(part)
            part.replace(paths.eval_table(t.trial_id))     # a crash mid-write leaves no "evaluated" trial
            run = tracker.trial_run(parent, t.trial_id, trial_params(job, t), trial_tags(t))   # reopens it
            tracker.log_metrics(run, eval_metrics(table))
            tracker.finish(run)

        evaluate_trials(job, to_eval, data, paths, vocab, done)
    spend = _close_spend(cluster, paths, tracker, parent, echo)
    results = collect_results(trials, paths)
    results.to_parquet(paths.results)

    from radscale.report.build import build_report
    from radscale.report.metrics import summary_metrics
    report = build_report(job, results, paths, data)
    if not results.empty:
        tracker.log_metrics(parent, summary_metrics(results, job))       # scaling fits + cost on the sweep run
    tracker.log_artifact(parent, str(paths.report_dir), "report")
    tracker.log_artifact(parent, str(paths.results))
    # the sweep run ends FAILED as the command exits 1 (the tag is reset by a re-run that retries them)
    tracker.set_tags(parent, {"radscale.failed_trials": ",".join(sorted(failed))[:5000] or "none"})
    tracker.finish(parent, "FAILED" if failed else "FINISHED")
    trained = [t.trial_id for t in todo if paths.result_json(t.trial_id).exists()]
    return SweepOutcome(paths.root, report, trained, skipped, [t.trial_id for t in to_eval], uri, over_budget,
                        stopped, spend, failed)


def _record_failed(job: JobSpec, trials: list[TrialSpec], failed: dict[str, str], paths: SweepPaths, tracker,
                   parent: str, echo: Callable[[str], None]) -> None:
    """trials/<id>/failed.json (read by the report) and the reason on the trial's MLflow run, one per failure."""
    for t in trials:
        why = failed[t.trial_id]
        echo(f"radscale: {t.trial_id} failed: {why}")
        write_json(paths.failed_json(t.trial_id), {"reason": why, "failed_unix": time.time()})
        run = tracker.trial_run(parent, t.trial_id, trial_params(job, t), trial_tags(t))
        tracker.set_tags(run, {"radscale.status": f"failed: {why}"[:5000]})
        tracker.finish(run, "FAILED")


def _report_stopped(job: JobSpec, todo: list[TrialSpec], paths: SweepPaths, tracker, parent: str,
                    echo: Callable[[str], None]) -> dict[str, str]:
    """One line per trial that ended before its budget; its MLflow run is closed as KILLED with the reason."""
    stopped = {}
    for t in todo:
        marker = paths.stopped_json(t.trial_id)
        if paths.result_json(t.trial_id).exists() or not marker.exists():
            continue
        info = json.loads(marker.read_text())
        used = info.get("metrics", {}).get("budget_used", 0.0)
        line = (f"stopped at {used:.4g} of {job.budget.value:g} {job.budget.mode}: {info['reason']}; "
                "a re-run resumes it from its checkpoint")
        stopped[t.trial_id] = line
        echo(f"radscale: {t.trial_id} {line}")
        run = tracker.trial_run(parent, t.trial_id, trial_params(job, t), trial_tags(t))
        tracker.set_tags(run, {"radscale.status": line[:5000]})
        tracker.finish(run, "KILLED")
    return stopped


def _close_spend(cluster: _Cluster, paths: SweepPaths, tracker, parent: str, echo: Callable[[str], None]) -> dict:
    """Final spend.json (earlier runs of the sweep included) and its figures on the sweep's MLflow run."""
    spend = cluster.monitor.close() if cluster.monitor is not None else read_spend(paths.root / SPEND_JSON)
    if not spend:
        return {}
    tracker.log_metrics(parent, {"cost/spent_usd": spend.get("spent_usd", 0.0),
                                 "cost/node_hours": spend.get("node_hours", 0.0),
                                 "cost/budget_usd": spend.get("budget_usd", 0.0),
                                 "cost/trial_projection_usd": spend.get("trial_projection_usd", 0.0),
                                 "cost/trials_skipped": len(spend.get("skipped", {})),
                                 "cost/trials_stopped": len(spend.get("stopped", {}))})
    tags = {f"radscale.cost.{kind}": "; ".join(f"{k}: {v}" for k, v in spend[kind].items())[:5000]
            for kind in ("skipped", "stopped") if spend.get(kind)}
    if tags:
        tracker.set_tags(parent, tags)
    tracker.log_dict(parent, spend, SPEND_JSON)
    if cluster.monitor is not None and (spend.get("spent_usd") or spend.get("budget_usd")):
        bound = f" of ${spend['budget_usd']:.2f}" if spend["budget_usd"] else ""
        echo(f"radscale: cost: spent ${spend['spent_usd']:.2f}{bound} over {spend['node_hours']:.3f} node-hours "
             f"({paths.root / SPEND_JSON})")
    return spend


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
    tracker.set_tags(run, {"init": res.get("init", "continual-pretraining"), "radscale.status": "complete"})
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
    for key in ("train_s", "samples_seen", "epochs", "budget_deviation", "images_per_s", "startup_s",
                "achieved_tflops"):
        df[key] = df["trial_id"].map(lambda tid: budget.get(tid, {}).get(key))
    return df
