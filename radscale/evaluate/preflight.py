"""Checks of the evaluation phase that run before any training (`radscale validate`, `run_sweep`): an
evaluation that cannot run would otherwise fail only after every trial has spent its budget."""
from __future__ import annotations

import os
from itertools import groupby
from pathlib import Path

import pyarrow.parquet as pq

from radscale.config.specs import EvalSpec
from radscale.data.masks import has_mask_uris
from radscale.errors import RadscaleError
from radscale.evaluate.extract import bytes_per_image
from radscale.evaluate.suite import annotated_types, extraction_options, known_masks
from radscale.models.registry import get_flavour

# evaluate_trials holds a pass's columns and, while it reorders them, the reordered copies (on a CPU driver in
# Ray's object store, the local copy dropped: orchestrate/evaluation.py `_stage`).
COPIES = 2


def check_decoder(spec: EvalSpec) -> None:
    if spec.report_generation and spec.report_decoder != "small" and not Path(spec.report_decoder).is_dir():
        raise RadscaleError(f"eval.report_decoder: {spec.report_decoder!r} is neither 'small' nor a local folder "
                            f"with a Hugging Face causal LM")


def host_memory_bytes() -> int:
    """This host's memory, or the container's limit when lower (cgroup v2, then v1)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(f).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return min(total, int(text))
    return total


def memory_limit_bytes(spec: EvalSpec) -> float:
    """`eval.max_feature_gb`, or 80 % of this host's memory when 0."""
    return spec.max_feature_gb * 1e9 if spec.max_feature_gb else 0.8 * host_memory_bytes()


def feature_memory_bytes(spec: EvalSpec, encoders: list[str], n_rows: int, n_seg_rows: int) -> int:
    """Driver memory of the largest extraction pass: encoders of one input size share a pass, `models_per_pass`
    at a time (orchestrate/evaluation.py `evaluate_trials`); bounded by the largest ones, whichever trials are
    left by then. Plus the pass's decoded images (uint8, in Ray's object store). n_seg_rows: the rows with a
    known mask, the only ones whose segmentation tokens are kept (0: no masks, none)."""
    options = extraction_options(spec, n_seg_rows > 0)
    without_seg = dict(options, seg_stage=-1, seg_layers=1)
    per = {}
    for name in set(encoders):
        base = bytes_per_image(name, **without_seg)
        per[name] = n_rows * base + n_seg_rows * (bytes_per_image(name, **options) - base)
    size_of = lambda name: get_flavour(name).img_size       # noqa: E731
    worst = 0
    for size, group in groupby(sorted(encoders, key=size_of), key=size_of):
        largest = sorted((per[n] for n in group), reverse=True)[:spec.models_per_pass]
        worst = max(worst, COPIES * sum(largest) + n_rows * size * size)
    return worst


def check_evaluation(spec: EvalSpec, encoders: list[str], eval_rows: str, *, on_this_host: bool = True) -> int:
    """Refuses an evaluation whose decoder is missing, whose mask_devices name an unknown device type, or whose
    features would not fit the driver's memory (`eval.max_feature_gb`, default 80 % of this host's); returns the
    estimated bytes of the largest pass.
    encoders: the encoder name of every trial still to evaluate. on_this_host=False (`radscale validate`, maybe
    not on the cluster): without an explicit max_feature_gb nothing is refused for its size."""
    check_decoder(spec)
    names = pq.read_schema(eval_rows).names
    cols = [c for c in ("mask_uri", "mask_devices", "support_devices") if c in names]
    meta = pq.read_table(eval_rows, columns=cols).to_pandas()
    try:
        annotated_types(meta)
    except ValueError as e:
        raise RadscaleError(f"{eval_rows}: {e}") from None
    n_seg = int(known_masks(meta).sum()) if has_mask_uris(meta) else 0
    need = feature_memory_bytes(spec, encoders, len(meta), n_seg)
    if not spec.max_feature_gb and not on_this_host:
        return need
    limit = memory_limit_bytes(spec)
    if need > limit:
        raise RadscaleError(
            f"eval: frozen features of {len(meta):,} eval images would hold ~{need / 1e9:.3g} GB on "
            f"the driver, over eval.max_feature_gb ({limit / 1e9:.3g} GB); lower data.max_eval_images, "
            f"eval.models_per_pass, eval.max_patch_grid or eval.seg_layers")
    return need
