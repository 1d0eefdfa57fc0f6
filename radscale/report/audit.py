"""Cost and budget audit: what each trial spent against the equal budget, and what the sweep cost.

worker-hours = num_workers × (train_s + startup_s) / 3600 (the budget clock excludes startup, the bill does
not); cost = node_price_per_hour × worker-hours (the price is per worker's share, config/specs.py);
GPU-hours = worker-hours × gpus_per_worker on GPU workers. Evaluation and idle time are not included.
A trial whose budget deviation (used/target − 1, train/budget.py) is outside ±DEVIATION_TOLERANCE is flagged:
the equal-budget premise of the comparison does not hold for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from radscale.config.specs import BudgetSpec, HardwareSpec
from radscale.report.tables import md_table, num

DEVIATION_TOLERANCE = 0.01
_COLS = ("train_s", "startup_s", "budget_deviation", "images_per_s", "epochs", "samples_seen")


@dataclass(frozen=True)
class TrialCost:
    trial_id: str
    size: int
    seed: int
    train_s: float
    startup_s: float
    budget_deviation: float
    images_per_s: float
    epochs: float
    samples_seen: float
    mfu: float               # achieved TFLOP/s / (hardware.peak_tflops x workers); NaN without a peak
    worker_hours: float      # NaN for size 0 (not trained) and for a trial without a budget record
    cost_usd: float
    flag: str                # "" when within tolerance


@dataclass(frozen=True)
class Audit:
    trials: tuple[TrialCost, ...]
    num_workers: int
    price_per_hour: float
    gpus_per_worker: float   # 0 on CPU workers
    tolerance: float
    worker_hours: float
    gpu_hours: float
    cost_usd: float

    @property
    def flagged(self) -> tuple[TrialCost, ...]:
        return tuple(t for t in self.trials if t.flag)

    @property
    def max_abs_deviation(self) -> float:
        devs = [abs(t.budget_deviation) for t in self.trials if math.isfinite(t.budget_deviation)]
        return max(devs) if devs else float("nan")


def _f(v) -> float:
    try:
        return float(v) if v is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def audit_trials(results: pd.DataFrame, hardware: HardwareSpec, tolerance: float = DEVIATION_TOLERANCE) -> Audit:
    """One TrialCost per trial_id in results (by encoder key, size, seed), and the sweep totals over trained trials."""
    gpus = hardware.gpus_per_worker if hardware.use_gpu else 0.0
    # MFU from the current peak (a free setting on re-runs), so every row is against the same peak
    peak = hardware.peak_tflops * hardware.num_workers
    rows = []
    if results is not None and not results.empty:
        first = results.drop_duplicates("trial_id").sort_values(["encoder", "objective", "size", "seed", "trial_id"],
                                                                 kind="stable")
        for r in first.to_dict("records"):
            v = {c: _f(r.get(c)) for c in _COLS}
            v["mfu"] = _f(r.get("achieved_tflops")) / peak if peak > 0 else float("nan")
            size = int(r["size"])
            hours, flag = float("nan"), ""
            if size > 0:
                if math.isfinite(v["train_s"]):
                    hours = hardware.num_workers * (v["train_s"] + (v["startup_s"] if math.isfinite(v["startup_s"])
                                                                    else 0.0)) / 3600.0
                dev = v["budget_deviation"]
                if not math.isfinite(dev):
                    flag = "no budget record"
                elif abs(dev) > tolerance:
                    flag = f"outside ±{tolerance:.0%}"
            rows.append(TrialCost(trial_id=str(r["trial_id"]), size=size, seed=int(r.get("seed", 0)),
                                  worker_hours=hours, cost_usd=hours * hardware.node_price_per_hour, flag=flag, **v))
    wh = sum(t.worker_hours for t in rows if math.isfinite(t.worker_hours))
    return Audit(trials=tuple(rows), num_workers=hardware.num_workers, price_per_hour=hardware.node_price_per_hour,
                 gpus_per_worker=gpus, tolerance=tolerance, worker_hours=wh, gpu_hours=wh * gpus,
                 cost_usd=wh * hardware.node_price_per_hour)


def render_audit(audit: Audit, budget: BudgetSpec) -> list[str]:
    rows = []
    for t in audit.trials:
        trained = t.size > 0
        rows.append([t.trial_id, str(t.size), num(t.train_s, 1, "f"), num(t.startup_s, 1, "f"),
                     num(t.budget_deviation, 2, "f", 100, "%"), f"⚠ {t.flag}" if t.flag else ("ok" if trained else
                                                                                          "size 0: not trained"),
                     num(t.images_per_s, 1, "f"), num(t.mfu, 1, "f", 100, "%"), num(t.epochs, 2, "f"),
                     num(t.samples_seen, 0, "f"), num(t.worker_hours, 4, "f"), num(t.cost_usd, 2, "f")])
    head = ["trial", "N", "train s", "startup s", "budget dev.", "flag", "img/s", "MFU", "epochs", "samples",
            "worker-h", "cost $"]
    price = f"${audit.price_per_hour:g}/h per worker" if audit.price_per_hour > 0 else \
        "no price set (hardware.node_price_per_hour = 0)"
    gpu = f"{audit.gpu_hours:.4f} GPU-hours" if audit.gpus_per_worker > 0 else "CPU workers (0 GPU-hours)"
    n_flag = len(audit.flagged)
    return ["## Cost and budget audit", "",
            f"Budget per trial: {budget.value:g} {budget.mode} (training loop incl. data stalls; startup excluded "
            f"from the budget, included in the bill). {audit.num_workers} worker(s) per trial, {price}. "
            f"worker-hours = workers × (train s + startup s)/3600; cost = price × worker-hours; evaluation not "
            f"included.", "",
            *md_table(head, rows), "",
            f"- total: {audit.worker_hours:.4f} worker-hours, {gpu}, cost ${audit.cost_usd:.2f}",
            f"- budget deviation = budget used / target − 1; {n_flag} trained trial(s) flagged outside "
            f"±{audit.tolerance:.0%} (max |deviation| {num(audit.max_abs_deviation, 2, 'f', 100, '%')})"
            + ("" if not n_flag else ": " + ", ".join(t.trial_id for t in audit.flagged)),
            "- MFU = FLOPs of the budgeted steps (FlopCounterMode, once per trial) / train s / (hardware.peak_tflops "
            "× workers); — where peak_tflops is 0 (unknown)", ""]
