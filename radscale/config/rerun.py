"""One sweep folder, one configuration: a re-run may add sizes, seeds or encoders (and change tracking, cost or
scheduling), never what a finished trial's result depends on, or old and new results would mix in one table.

Trial ids are `encoder.objective.nSIZE.sSEED` and a trial with a result.json is skipped, so without this check a
re-run with another budget, data or train setting would keep the old results and add new ones beside them.
A setting the earlier run's job.json does not hold at all (added to radscale since) counts as changed: its
default may not be what that run did.
"""
from __future__ import annotations

import json
from pathlib import Path

from radscale.config.load import flatten, validate_job
from radscale.config.specs import JobSpec
from radscale.errors import RadscaleError

TRAINING = ("data", "budget", "train", "hardware")
# Settings that change cost, scheduling, I/O or fault handling, not what a trial computes (the budget clock is
# paused while reports and checkpoints are written).
FREE = {"hardware": ("node_price_per_hour", "max_failures", "peak_tflops"),
        "train": ("report_every_s", "checkpoint_every_s")}


def _diff(a: dict, b: dict, prefix: str) -> list[str]:
    fa, fb = flatten(a, prefix + "."), flatten(b, prefix + ".")
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))


def _without_free(d: dict) -> dict:
    for section, keys in FREE.items():
        for k in keys:
            d.get(section, {}).pop(k, None)
    return d


def changed_settings(old: JobSpec, new: JobSpec) -> tuple[list[str], list[str]]:
    """(keys that change what training computes, keys that change what evaluation computes)."""
    a, b = _without_free(old.model_dump(mode="json")), _without_free(new.model_dump(mode="json"))
    training = [k for sec in TRAINING for k in _diff(a[sec], b[sec], sec)]
    before = {e.key: e for e in old.encoders}
    for e in new.encoders:
        if e.key in before:
            training += _diff(before[e.key].model_dump(mode="json"), e.model_dump(mode="json"), f"encoders[{e.key}]")
    return training, _diff(a["eval"], b["eval"], "eval")


def unrecorded_settings(raw: dict, old: JobSpec, new: JobSpec) -> tuple[list[str], list[str]]:
    """Keys of `new` (training, evaluation) that the earlier run's job.json `raw` lacks."""
    b = _without_free(new.model_dump(mode="json"))

    def missing(recorded, now: dict, prefix: str) -> list[str]:
        have = flatten(recorded if isinstance(recorded, dict) else {}, prefix + ".")
        return sorted(set(flatten(now, prefix + ".")) - set(have))

    training = [k for sec in TRAINING for k in missing(raw.get(sec), b[sec], sec)]
    recorded = {e.key: r for e, r in zip(old.encoders, raw.get("encoders") or [])}
    for e in new.encoders:
        if e.key in recorded:
            training += missing(recorded[e.key], e.model_dump(mode="json"), f"encoders[{e.key}]")
    return training, missing(raw.get("eval"), b["eval"], "eval")


def _shown(keys: list[str]) -> str:
    return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def check_rerun(job: JobSpec, root: Path) -> None:
    """Refuse, before any compute, a run whose settings differ from the earlier run of the same sweep folder in
    what its existing results depend on."""
    path = Path(root) / "job.json"
    if not path.exists():
        return
    try:
        raw = json.loads(path.read_text())
        old = validate_job(raw, str(path))
    except (ValueError, RadscaleError) as e:
        raise RadscaleError(f"{path}: the earlier run's settings cannot be read ({str(e).splitlines()[0][:120]}); "
                            "use a new sweep.name") from None
    training, evaluation = changed_settings(old, job)
    new_training, new_evaluation = unrecorded_settings(raw, old, job)
    training += [f"{k} (new since that run)" for k in new_training if k not in training]
    evaluation += [f"{k} (new since that run)" for k in new_evaluation if k not in evaluation]
    if training:
        raise RadscaleError(f"{path}: this sweep was run with other settings ({_shown(training)}); new results "
                            "would mix with the old ones: use a new sweep.name (or output_dir)")
    if evaluation and any((Path(root) / "trials").glob("*/eval.parquet")):
        raise RadscaleError(f"{path}: this sweep was evaluated with other settings ({_shown(evaluation)}); "
                            f"delete {Path(root) / 'trials'}/*/eval.parquet to re-evaluate every trial with them, "
                            "or use a new sweep.name")
