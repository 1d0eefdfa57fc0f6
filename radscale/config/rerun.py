"""One sweep folder, one configuration: a re-run may add sizes, seeds or encoders (and change tracking, cost or
scheduling), never what a finished trial's result depends on, or old and new results would mix in one table.

Trial ids are `encoder.objective.nSIZE.sSEED` and a trial with a result.json is skipped, so without this check a
re-run with another budget, data or train setting would keep the old results and add new ones beside them.
A setting the earlier run's job.json does not hold at all (added to radscale since) counts as changed: its
default may not be what that run did.
"""
from __future__ import annotations

import copy
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


_NEW = " (new since that run)"


def _diff(a: dict, b: dict, prefix: str) -> list[str]:
    """Keys whose values differ; a key `a` does not hold at all is marked new (its default may not be what ran)."""
    fa, fb = flatten(a, prefix + "."), flatten(b, prefix + ".")
    return sorted(k + ("" if k in fa else _NEW) for k in set(fa) | set(fb)
                  if k not in fa or k not in fb or fa[k] != fb[k])


def _without_free(d: dict) -> dict:
    for section, keys in FREE.items():
        for k in keys:
            d.get(section, {}).pop(k, None)
    return d


def changed_settings(old: JobSpec, new: JobSpec, recorded: dict | None = None) -> tuple[list[str], list[str]]:
    """(keys that change what training computes, keys that change what evaluation computes). `recorded` is the
    earlier run's job.json as written, when at hand: keys it lacks count as changed, even at today's default."""
    a = _without_free(copy.deepcopy(recorded) if recorded is not None else old.model_dump(mode="json"))
    b = _without_free(new.model_dump(mode="json"))
    training = [k for sec in TRAINING for k in _diff(a.get(sec) or {}, b[sec], sec)]
    before = dict(zip((e.key for e in old.encoders), a.get("encoders") or []))
    for e in new.encoders:
        if e.key in before:
            training += _diff(before[e.key], e.model_dump(mode="json"), f"encoders[{e.key}]")
    return training, _diff(a.get("eval") or {}, b["eval"], "eval")


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
    training, evaluation = changed_settings(old, job, raw)
    if training:
        raise RadscaleError(f"{path}: this sweep was run with other settings ({_shown(training)}); new results "
                            "would mix with the old ones: use a new sweep.name (or output_dir)")
    if evaluation and any((Path(root) / "trials").glob("*/eval.parquet")):
        raise RadscaleError(f"{path}: this sweep was evaluated with other settings ({_shown(evaluation)}); "
                            f"delete {Path(root) / 'trials'}/*/eval.parquet to re-evaluate every trial with them, "
                            "or use a new sweep.name")
