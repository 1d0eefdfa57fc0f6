"""Patient-level splits and the rank column behind strictly nested subsets.

Both come from a keyed hash of the id, not from row order: the split of a patient and the rank of an image do
not change when rows are shuffled, and subset(n) = {rank < n} is nested for every n by construction.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from radscale.config.specs import SplitSpec
from radscale.data.manifest import SPLITS


def stable_uniform(ids: list[str], seed: int, salt: str) -> np.ndarray:
    """Uniform [0, 1) per id from blake2b(seed, salt, id): platform- and order-independent."""
    key = f"{seed}:{salt}".encode()
    out = np.empty(len(ids), dtype=np.float64)
    for i, s in enumerate(ids):
        h = hashlib.blake2b(s.encode(), digest_size=8, key=key).digest()
        out[i] = int.from_bytes(h, "little") / 2.0**64
    return out


def assign_splits(table: pa.Table, spec: SplitSpec) -> pa.Table:
    """Add `split` (by patient) and `rank` (0.. within the pretraining pool, -1 elsewhere)."""
    patients = table.column("patient_id").to_pylist()
    uniq = sorted(set(patients))
    u = dict(zip(uniq, stable_uniform(uniq, spec.seed, "split")))
    edges = np.cumsum([spec.pretrain, spec.probe_train, spec.probe_val])
    split_idx = np.searchsorted(edges, np.array([u[p] for p in patients]), side="right")
    split = np.array(SPLITS, dtype=object)[split_idx]
    rank = np.full(len(patients), -1, dtype=np.int64)
    pool = np.flatnonzero(split_idx == 0)
    if len(pool):
        keys = stable_uniform([table.column("image_id")[int(i)].as_py() for i in pool], spec.seed, "rank")
        order = np.argsort(keys, kind="stable")
        rank[pool[order]] = np.arange(len(pool))
    for name in ("split", "rank"):
        if name in table.column_names:
            table = table.drop_columns([name])
    return table.append_column("split", pa.array(split, pa.string())).append_column("rank", pa.array(rank))


def subset_mask(table: pa.Table, n: int) -> pa.ChunkedArray:
    """The nested pretraining subset of size n as a boolean mask (same predicate Ray Data uses)."""
    return pc.and_(pc.equal(table.column("split"), "pretrain"), pc.less(table.column("rank"), n))


def pool_size(table: pa.Table) -> int:
    return int(pc.sum(pc.equal(table.column("split"), "pretrain")).as_py() or 0)
