"""TrialSpec: one (encoder, objective, subset size, seed) of a sweep, and its deterministic id."""
from __future__ import annotations

from dataclasses import dataclass

from radscale.config.specs import EncoderSpec, JobSpec


@dataclass(frozen=True)
class TrialSpec:
    sweep: str
    encoder: EncoderSpec
    size: int            # 0 = the initial/open-weights checkpoint, evaluated but not trained
    seed: int

    @property
    def trial_id(self) -> str:
        return f"{self.encoder.name}.{self.encoder.objective}.n{self.size}.s{self.seed}"

    @property
    def trained(self) -> bool:
        return self.size > 0


def plan_trials(job: JobSpec) -> list[TrialSpec]:
    """Every trial of the job: baselines (size 0, seed 0) first, then the grid, encoder-major."""
    trials: list[TrialSpec] = []
    for enc in job.encoders:
        trials.append(TrialSpec(job.sweep.name, enc, 0, 0))
        for size in job.sizes:
            for seed in job.sweep.seeds:
                trials.append(TrialSpec(job.sweep.name, enc, size, seed))
    return trials
