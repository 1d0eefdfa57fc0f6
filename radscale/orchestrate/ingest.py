"""Ray Data pipelines: a trial's nested pretraining subset, and the evaluation images."""
from __future__ import annotations

from typing import AbstractSet, NamedTuple

import numpy as np
import ray.data
from ray.data.expressions import col

from radscale.data.shards import SHARD, SHARD_ROW, attach_image_bytes, parquet_columns
from radscale.data.vocab import Vocabulary
from radscale.train.batches import TrainBatchBuilder

TASK_CPUS = 0.25      # small CPU share per data task so reads/decodes fit beside the training worker


def subset_filter(size: int):
    """subset(n) = the first n images of the seeded pretraining permutation: an Arrow expression filter."""
    return (col("split") == "pretrain") & (col("rank") < size)


def _from_shards(rows_path: str, from_shards: bool | None) -> bool:
    """Rows that point into prepared shards (`data.shards`) carry `shard` + `shard_row`; None = look."""
    return SHARD in parquet_columns(rows_path) if from_shards is None else from_shards


def _train_batch(batch: dict, objective: str, decode_size: int, context_length: int, quarantine_dir: str) -> dict:
    if SHARD in batch:      # fetch the prepared bytes in the same task that decodes them (no extra hop)
        batch = attach_image_bytes(batch)
    return TrainBatchBuilder(objective, decode_size, context_length, Vocabulary(), quarantine_dir)(batch)


def trial_dataset(manifest: str, size: int, objective: str, decode_size: int, context_length: int,
                  quarantine_dir: str, label_columns: list[str], seed: int, *,
                  from_shards: bool | None = None) -> ray.data.Dataset:
    """The nested subset of `size` images as training batches; from prepared shards when the manifest points
    into them (auto-detected unless `from_shards` is given)."""
    cols = ["image_id", "uri"] + ([SHARD, SHARD_ROW] if _from_shards(manifest, from_shards) else [])
    if objective != "dinov2":
        cols += ["report"] + label_columns
    ds = ray.data.read_parquet(manifest, num_cpus=TASK_CPUS)
    ds = ds.filter(expr=subset_filter(size)).select_columns(cols)
    ds = ds.randomize_block_order(seed=seed)
    return ds.map_batches(_train_batch, fn_kwargs=dict(objective=objective, decode_size=decode_size,
                                                       context_length=context_length,
                                                       quarantine_dir=quarantine_dir),
                          batch_size=32, num_cpus=TASK_CPUS)


def decoded_subset_mb(size: int, objective: str, decode_size: int, context_length: int, n_labels: int) -> float:
    """Estimated object-store size of a trial's decoded subset: uint8 squares (+ int64 tokens, int8 labels)."""
    per_row = decode_size * decode_size + (8 * context_length + n_labels if objective != "dinov2" else 0)
    return size * per_row / 2**20


def _eval_batch(batch: dict, size: int, quarantine_dir: str) -> dict:
    if SHARD in batch:      # OOD rows without a shard (null pointer) are read from their uri
        batch = attach_image_bytes(batch)
    images, keep = TrainBatchBuilder("dinov2", size, quarantine_dir=quarantine_dir).decode_batch(batch)
    return {"image_id": np.asarray([str(i) for i in np.asarray(batch["image_id"], dtype=object)[keep]],
                                   dtype=object), "image": images}


def eval_images(rows_path: str, size: int, quarantine_dir: str, *,
                from_shards: bool | None = None) -> ray.data.Dataset:
    """Decoded eval images (materialised once, reused by every trial's extraction)."""
    cols = ["eval_id", "uri"] + ([SHARD, SHARD_ROW] if _from_shards(rows_path, from_shards) else [])
    ds = ray.data.read_parquet(rows_path, num_cpus=TASK_CPUS).select_columns(cols)
    ds = ds.rename_columns({"eval_id": "image_id"})
    ds = ds.map_batches(_eval_batch, fn_kwargs=dict(size=size, quarantine_dir=quarantine_dir), batch_size=64,
                        num_cpus=TASK_CPUS)
    return ds.materialize()


class Extracted(NamedTuple):
    """Frozen features of one pass, rows in `ids` order; lists hold one entry per model."""
    ids: list[str]
    features: list[np.ndarray]               # float32 [N, F]
    patches: list[np.ndarray | None]         # float16 [N, P, D], None without patch tokens
    seg: list[np.ndarray | None]             # float16 [K, P'', D_s] segmentation tokens (extract.py), or None
    seg_ids: list[str]                       # the K rows of `seg`, in its order


def extract_features(images: ray.data.Dataset, models: list[tuple[str, str]], batch_size: int,
                     actors: int, actor_gpus: float, *, n_layers: int = 4, max_patch_grid: int = 16,
                     patch_tokens: bool = True, precision: str = "fp32", seg_stage: int = -1,
                     seg_layers: int = 1, seg_ids: AbstractSet[str] | None = None) -> Extracted:
    """Frozen features of several encoders in one pass through an actor pool (models loaded once per actor);
    see evaluate/extract.py for the columns. seg_stage / seg_layers: the DaViT stage / the ViT blocks of the
    segmentation tokens (-1 / 1 = none beyond the patch tokens). seg_ids: the images whose segmentation tokens
    are kept (those with masks; None = all): they are the largest column (4x the patch tokens for RAD-DINO), and
    the others are dropped batch by batch, so the driver never holds them."""
    from radscale.evaluate.extract import FeatureExtractor

    device = "cuda" if actor_gpus > 0 else "cpu"
    out = images.map_batches(FeatureExtractor, fn_constructor_kwargs=dict(models=models, device=device,
                                                                          threads=0 if actor_gpus else 2,
                                                                          n_layers=n_layers,
                                                                          max_patch_grid=max_patch_grid,
                                                                          patch_tokens=patch_tokens,
                                                                          precision=precision,
                                                                          seg_stage=seg_stage,
                                                                          seg_layers=seg_layers),
                             batch_size=batch_size, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
                             num_gpus=actor_gpus or None, num_cpus=1 if not actor_gpus else None)
    # The extractor decides which columns exist (seg_<i> per model family); take what it returns.
    parts: dict[str, list[np.ndarray]] = {}
    for batch in out.iter_batches(batch_size=None, batch_format="numpy"):   # numpy: tensor columns stay arrays
        ids = np.asarray([str(i) for i in batch["image_id"]], dtype=object)
        keep = slice(None) if seg_ids is None else np.fromiter((i in seg_ids for i in ids), bool, len(ids))
        parts.setdefault("_seg_ids", []).append(ids[keep])
        for n, v in batch.items():
            parts.setdefault(n, []).append(np.asarray(v)[keep] if n.startswith("seg_") else np.asarray(v))
    cat = {n: np.concatenate(parts.pop(n)) for n in list(parts)}      # one column's batches at a time in memory
    empty = np.zeros(0)
    feats = [cat.get(f"features_{i}", empty).astype(np.float32, copy=False) for i in range(len(models))]
    patches = [cat.get(f"patch_{i}", empty) if patch_tokens else None for i in range(len(models))]
    seg = [cat.get(f"seg_{i}") for i in range(len(models))]
    return Extracted([str(i) for i in cat.get("image_id", empty)], feats, patches, seg,
                     list(cat.get("_seg_ids", empty)))
