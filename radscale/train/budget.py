"""The equal budget: what a trial may spend, and a clock that survives restarts.

The clock counts training-loop wall time *including data stalls*; process start, model load and the first
(warm-up) step are excluded and recorded as startup_s. The elapsed amounts live in `BudgetState`, which is saved
in every checkpoint, so a restarted trial continues its clock instead of resetting it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

from radscale.config.specs import BudgetSpec


@dataclass
class BudgetState:
    elapsed_s: float = 0.0
    samples: int = 0          # global (all ranks)
    steps: int = 0
    flops: float = 0.0        # global training FLOPs
    stall_s: float = 0.0      # time waiting for data (part of elapsed_s)
    startup_s: float = 0.0    # summed over (re)starts, excluded from elapsed_s
    warmup_samples: int = 0   # samples of warm-up steps: trained on, but outside the clock
    restarts: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BudgetState":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class BudgetClock:
    """Tracks budget use; `progress` in [0, ~1] drives every schedule, `spent` ends the loop."""

    def __init__(self, spec: BudgetSpec, state: BudgetState | None = None, *, devices: int = 1,
                 clock: Callable[[], float] = time.monotonic):
        self.spec = spec
        self.state = state or BudgetState()
        self.devices = devices
        self._clock = clock
        self._t0: float | None = None
        self._base = self.state.elapsed_s

    def start(self) -> None:
        self._t0 = self._clock()
        self._base = self.state.elapsed_s

    @property
    def running(self) -> bool:
        return self._t0 is not None

    def now_elapsed(self) -> float:
        return self._base + (self._clock() - self._t0) if self._t0 is not None else self.state.elapsed_s

    def sync(self) -> None:
        self.state.elapsed_s = self.now_elapsed()

    def used(self, elapsed_s: float | None = None) -> float:
        """Budget used in the budget's own unit."""
        e = self.now_elapsed() if elapsed_s is None else elapsed_s
        mode = self.spec.mode
        if mode == "seconds":
            return e
        if mode == "samples":
            return float(self.state.samples)
        if mode == "gpu_hours":
            return e * self.devices / 3600.0
        return self.state.flops

    def progress(self, elapsed_s: float | None = None) -> float:
        return self.used(elapsed_s) / self.spec.value

    def should_stop(self, expected_step_s: float = 0.0, expected_step_samples: int = 0,
                    expected_step_flops: float = 0.0) -> bool:
        """Stop before the next step when it would overshoot the target by more than it would undershoot.

        Checking only `used >= target` overshoots by up to one step; comparing the midpoint of the next step
        bounds the deviation by half a step in either direction.
        """
        mode = self.spec.mode
        half = {"seconds": expected_step_s, "gpu_hours": expected_step_s * self.devices / 3600.0,
                "samples": expected_step_samples, "flops": expected_step_flops}[mode] / 2.0
        return self.used() + half >= self.spec.value

    def deviation(self) -> float:
        """Relative deviation of the budget used from the target (0.01 = 1% over)."""
        return self.used(self.state.elapsed_s) / self.spec.value - 1.0
