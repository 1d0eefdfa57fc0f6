"""Evaluation phase: frozen features via a Ray Data actor pool, probes in the driver, one table per trial."""
from __future__ import annotations

from itertools import groupby
from typing import Callable

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


def evaluate_trials(job: JobSpec, trials: list[TrialSpec], data: SweepData, paths: SweepPaths,
                    vocabulary: Vocabulary, on_done: Callable[[TrialSpec, pd.DataFrame], None]) -> None:
    """Trials sharing an input size share one decode and one extraction pass (`eval.models_per_pass` at a time)."""
    meta_all = pd.read_parquet(data.eval_rows)
    size_of = lambda t: get_flavour(t.encoder.name).img_size  # noqa: E731
    for size, group in groupby(sorted(trials, key=size_of), key=size_of):
        images = eval_images(data.eval_rows, size, str(paths.quarantine))
        group = list(group)
        step = job.eval.models_per_pass
        for start in range(0, len(group), step):
            chunk = group[start:start + step]
            ids, feats = extract_features(images, [(t.encoder.name, str(paths.encoder(t.trial_id))) for t in chunk],
                                          job.eval.batch_size, job.eval.actors, job.eval.actor_gpus)
            pos = pd.Series(np.arange(len(ids)), index=pd.Index(ids, name="eval_id"))
            meta = meta_all[meta_all["eval_id"].isin(pos.index)].reset_index(drop=True)  # quarantined rows drop
            rows = pos.loc[meta["eval_id"]].to_numpy()
            for t, f in zip(chunk, feats):
                table = evaluate_classification(f[rows], meta, job.eval, vocabulary)
                table = table.assign(trial_id=t.trial_id, encoder=t.encoder.name, objective=t.encoder.objective,
                                     size=t.size, seed=t.seed, n_eval_images=len(meta))
                on_done(t, table)
