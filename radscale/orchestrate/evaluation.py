"""Evaluation phase: frozen features via a Ray Data actor pool, then every probe family (evaluate/suite.py: linear
and attention probes, segmentation, report generation) as one Ray task per encoder on CPU (in the driver when
it has a GPU), one table per trial."""
from __future__ import annotations

import json
import logging
from itertools import groupby
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import ray
import torch

from radscale.config.specs import EvalSpec, JobSpec
from radscale.config.trial import TrialSpec
from radscale.data.masks import has_mask_uris, load_square_masks
from radscale.data.sweep_data import SweepData
from radscale.data.vocab import Vocabulary
from radscale.evaluate.preflight import check_decoder
from radscale.evaluate.suite import (SegMasks, SuiteResult, annotated_types, evaluate_encoder, extraction_options,
                                    known_masks, needs_patch_tokens)
from radscale.models.registry import get_flavour
from radscale.orchestrate.ingest import eval_images, extract_features
from radscale.orchestrate.paths import SweepPaths

log = logging.getLogger(__name__)
SECONDS_JSON = "eval_seconds.json"      # wall time per evaluation family, next to the trial's eval table


def _masks(meta: pd.DataFrame, size: int, spec: EvalSpec) -> SegMasks | None:
    """Every eval row's mask in the geometry of its image at min(size, seg_mask_size) px (data/masks.py)."""
    if not spec.segmentation:
        return None
    if not has_mask_uris(meta):
        log.info("segmentation skipped: the eval rows carry no mask_uri")
        return None
    masks, failed = load_square_masks(meta["mask_uri"].tolist(), min(size, spec.seg_mask_size))
    if failed:
        log.warning("segmentation: %d mask file(s) unreadable and left out, e.g. %s", len(failed),
                    meta["mask_uri"].iloc[failed[0]])
    return SegMasks(masks, known_masks(meta, failed), annotated_types(meta))


def _stage(x: np.ndarray, device: str):
    """On CPU the suites are Ray tasks: the array goes to the object store now and the driver drops its copy."""
    return ray.put(x) if device == "cpu" else x


def _run_suites(inputs: list[tuple], meta: pd.DataFrame,
                spec: EvalSpec, vocabulary: Vocabulary, masks: SegMasks | None, device: str
                ) -> Iterator[SuiteResult]:
    """The probe suites of one extraction pass, in order. On CPU each encoder's suite is a Ray task of
    `probe_threads` CPUs, so the suites run side by side on the cluster's cores (one at a time left a core of a
    2-core machine idle); with a GPU in the driver they run there, one after another."""
    if device != "cpu":
        for f, p, s in inputs:
            yield evaluate_encoder(f, p, meta, spec, vocabulary, masks, device, s)
        return
    suite = ray.remote(evaluate_encoder).options(num_cpus=max(1, spec.probe_threads))
    shared = [ray.put(x) for x in (meta, spec, vocabulary, masks)]
    futures = [suite.remote(f, p, shared[0], shared[1], shared[2], shared[3], device, s) for f, p, s in inputs]
    for future in futures:
        yield ray.get(future)


def evaluate_trials(job: JobSpec, trials: list[TrialSpec], data: SweepData, paths: SweepPaths,
                    vocabulary: Vocabulary, on_done: Callable[[TrialSpec, pd.DataFrame], None]) -> None:
    """Trials sharing an input size share one decode, one mask load and one extraction pass
    (`eval.models_per_pass` encoders at a time)."""
    spec = job.eval
    check_decoder(spec)
    meta_all = pd.read_parquet(data.eval_rows)
    patch_tokens = needs_patch_tokens(spec)
    device = "cuda" if torch.cuda.is_available() else "cpu"          # driver-side probes
    size_of = lambda t: get_flavour(t.encoder.name).img_size  # noqa: E731
    for size, group in groupby(sorted(trials, key=size_of), key=size_of):
        images = eval_images(data.eval_rows, size, str(paths.quarantine))
        masks_all = _masks(meta_all, size, spec) if patch_tokens else None
        seg_ids = None if masks_all is None else frozenset(meta_all["eval_id"][masks_all.known].astype(str))
        group = list(group)
        step = spec.models_per_pass
        for start in range(0, len(group), step):
            chunk = group[start:start + step]
            ids, feats, patches, segs, seg_order = extract_features(
                images, [(t.encoder.name, str(paths.encoder(t.trial_id))) for t in chunk], spec.batch_size,
                spec.actors, spec.actor_gpus, precision=spec.precision, seg_ids=seg_ids,
                **extraction_options(spec, masks_all is not None))            # None: no segmentation
            pos = pd.Series(np.arange(len(ids)), index=pd.Index(ids, name="eval_id"))
            kept = meta_all["eval_id"].isin(pos.index).to_numpy()            # quarantined rows drop
            meta = meta_all[kept].reset_index(drop=True)
            rows = pos.loc[meta["eval_id"]].to_numpy()
            masks = None if masks_all is None else masks_all.rows(kept)
            # Segmentation tokens: only the rows with a known mask, in meta order (evaluate_encoder's seg_tokens).
            seg_rows = None if masks is None else \
                pd.Series(np.arange(len(seg_order)), index=seg_order).loc[meta["eval_id"][masks.known]].to_numpy()
            inputs = []
            for i in range(len(chunk)):     # one encoder at a time, so the pass never holds three copies
                cols = ((feats[i], rows), (patches[i], rows), (segs[i], seg_rows))
                feats[i] = patches[i] = segs[i] = None
                inputs.append(tuple(None if x is None else _stage(x[at], device) for x, at in cols))
            for t, res in zip(chunk, _run_suites(inputs, meta, spec, vocabulary, masks, device)):
                log.info("%s: evaluation %s", t.trial_id, ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items()))
                (paths.trial_dir(t.trial_id) / SECONDS_JSON).write_text(json.dumps(res.seconds, sort_keys=True))
                table = res.table.assign(trial_id=t.trial_id, encoder=t.encoder.name, objective=t.encoder.objective,
                                         size=t.size, seed=t.seed, n_eval_images=len(meta))
                on_done(t, table)
