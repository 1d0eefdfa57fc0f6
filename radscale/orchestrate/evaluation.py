"""Evaluation phase: frozen features via a Ray Data actor pool, probes in the driver, one table per trial."""
from __future__ import annotations

import numpy as np
import pandas as pd

from radscale.config.specs import JobSpec
from radscale.config.trial import TrialSpec
from radscale.data.sweep_data import SweepData
from radscale.data.vocab import Vocabulary
from radscale.evaluate.classification import evaluate_classification
from radscale.models.registry import get_flavour
from radscale.orchestrate.ingest import eval_images, extract_features
from radscale.orchestrate.paths import SweepPaths


class EvalImages:
    """Decoded eval images per input size, decoded once per sweep run and shared by all trials."""

    def __init__(self, data: SweepData, paths: SweepPaths):
        self.data, self.paths, self._cache = data, paths, {}

    def get(self, size: int):
        if size not in self._cache:
            self._cache[size] = eval_images(self.data.eval_rows, size, str(self.paths.quarantine))
        return self._cache[size]


def evaluate_trial(job: JobSpec, trial: TrialSpec, data: SweepData, paths: SweepPaths, images: EvalImages,
                   vocabulary: Vocabulary) -> pd.DataFrame:
    size = get_flavour(trial.encoder.name).img_size
    ids, feats = extract_features(images.get(size), trial.encoder.name, str(paths.encoder(trial.trial_id)),
                                  job.eval.batch_size, job.eval.actors, job.eval.actor_gpus)
    meta = pd.read_parquet(data.eval_rows)
    pos = pd.Series(np.arange(len(ids)), index=pd.Index(ids, name="eval_id"))
    meta = meta[meta["eval_id"].isin(pos.index)].reset_index(drop=True)   # quarantined images drop out
    feats = feats[pos.loc[meta["eval_id"]].to_numpy()]
    table = evaluate_classification(feats, meta, job.eval, vocabulary)
    return table.assign(trial_id=trial.trial_id, encoder=trial.encoder.name, objective=trial.encoder.objective,
                        size=trial.size, seed=trial.seed, n_eval_images=len(meta))
