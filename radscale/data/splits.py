"""Patient-level splits and the rank column behind strictly nested subsets.

Both come from a keyed hash of the id, not from row order: the split of a patient and the rank of an image do
not change when rows are shuffled, and subset(n) = {rank < n} is nested for every n by construction.

The hash is vectorised over the Arrow string buffer (4M rows split in ~1.2 CPU-s; the former per-id blake2b
loop took ~8 s): MurmurHash3's 64-bit block mix applied to little-endian 8-byte words of the UTF-8 id,
seeded by blake2b(seed:salt) and the id's byte length, finalised with fmix64. Only explicit uint64 arithmetic
and little-endian reads are used, so results are identical on every platform (pinned in test_splits_fast.py).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from radscale.config.specs import SplitSpec
from radscale.data.manifest import SPLITS

_C1 = np.uint64(0x87C37B91114253D5)          # MurmurHash3 x64 constants
_C2 = np.uint64(0x4CF5AD432745937F)
_C3 = np.uint64(0x52DCE729)
_LENGTH_MUL = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio multiplier: spreads the length over all bits
_FMIX1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX2 = np.uint64(0xC4CEB9FE1A85EC53)
# Byte masks for a final word with 0..8 valid bytes (bytes past the id's end must not count).
_TAIL_MASKS = np.array([0] + [(1 << (8 * k)) - 1 for k in range(1, 8)] + [2**64 - 1], dtype=np.uint64)

IdsLike = Sequence[str] | pa.Array | pa.ChunkedArray | np.ndarray


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * _FMIX1
    h = h ^ (h >> np.uint64(33))
    h = h * _FMIX2
    return h ^ (h >> np.uint64(33))


def _as_string_array(ids: IdsLike) -> pa.Array:
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    if not isinstance(ids, pa.Array):
        ids = pa.array(list(ids) if isinstance(ids, np.ndarray) else ids, pa.string())
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
        ids = pc.cast(ids, pa.string())
    if ids.null_count:
        raise ValueError(f"cannot hash null ids ({ids.null_count} nulls)")
    return ids


def _word_view(data: np.ndarray) -> np.ndarray:
    """A little-endian uint64 at every byte offset of `data` (stride 1): gathering it reads 8 bytes from there."""
    return np.ndarray(shape=(max(0, len(data) - 7),), dtype="<u8", buffer=data, strides=(1,))


def stable_hash64(ids: IdsLike, seed: int, salt: str) -> np.ndarray:
    """A 64-bit keyed hash per id (uint64), independent of order, chunking and platform."""
    key = int.from_bytes(hashlib.blake2b(f"{seed}:{salt}".encode(), digest_size=8).digest(), "little")
    if isinstance(ids, pa.ChunkedArray):    # chunk by chunk: no copy of the id buffer
        parts = [_hash_strings(_as_string_array(c), key) for c in ids.chunks]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)
    return _hash_strings(_as_string_array(ids), key)


def _hash_strings(arr: pa.Array, key: int) -> np.ndarray:
    n = len(arr)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    _, offsets_buf, data_buf = arr.buffers()
    offset_type = "<i8" if pa.types.is_large_string(arr.type) else "<i4"
    offsets = np.frombuffer(offsets_buf, dtype=offset_type)[arr.offset:arr.offset + n + 1].astype(np.int64)
    starts, lengths = offsets[:-1], np.diff(offsets)
    end = int(offsets[-1])
    data = np.frombuffer(data_buf, dtype=np.uint8)[:end] if data_buf is not None else np.zeros(0, np.uint8)
    head = _word_view(data)
    # Words starting in the last 7 bytes would read past the buffer: they come from a zero-padded copy.
    tail_base = max(0, end - 8)
    tail = np.zeros(16, dtype=np.uint8)
    tail[:end - tail_base] = data[tail_base:end]
    tail_words = _word_view(tail)
    h = np.uint64(key) ^ (lengths.astype(np.uint64) * _LENGTH_MUL)
    n_words = (lengths + 7) // 8
    for j in range(int(n_words.max(initial=0))):
        # Ids usually share a length: while every id still has a word j, skip the fancy-index bookkeeping.
        idx = slice(None) if n_words.min() > j else np.flatnonzero(n_words > j)
        pos = starts[idx] + 8 * j
        near_end = pos > end - 8
        if near_end.any():
            word = np.empty(len(pos), dtype=np.uint64)
            word[near_end] = tail_words[pos[near_end] - tail_base]
            word[~near_end] = head[pos[~near_end]]
        else:
            word = head[pos].astype(np.uint64)
        remaining = lengths[idx] - 8 * j
        if remaining.min() < 8:
            word &= _TAIL_MASKS[np.minimum(remaining, 8)]
        word *= _C1
        word = _rotl(word, 31)
        word *= _C2
        hj = h[idx]
        hj ^= word
        hj = _rotl(hj, 27)
        hj *= np.uint64(5)
        hj += _C3
        h[idx] = hj
    return _fmix64(h)


def stable_uniform(ids: IdsLike, seed: int, salt: str) -> np.ndarray:
    """Uniform [0, 1) per id from the top 53 bits of `stable_hash64` (exact in float64)."""
    return (stable_hash64(ids, seed, salt) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def rank_keys(image_ids: IdsLike, seed: int) -> np.ndarray:
    """The key whose ascending order is the nested-subset permutation (shared with `prepare` shard order)."""
    return stable_hash64(image_ids, seed, "rank")


def split_index(patient_ids: IdsLike, spec: SplitSpec) -> np.ndarray:
    """Index into SPLITS per row; hashed once per distinct patient, so splits are patient-disjoint."""
    col = patient_ids
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    elif not isinstance(col, pa.Array):
        col = _as_string_array(col)
    encoded = pc.dictionary_encode(col)
    dictionary, codes = encoded.dictionary, encoded.indices.to_numpy(zero_copy_only=False)
    edges = np.cumsum([spec.pretrain, spec.probe_train, spec.probe_val])
    per_patient = np.searchsorted(edges, stable_uniform(dictionary, spec.seed, "split"), side="right")
    return per_patient.astype(np.int8)[codes]


def assign_splits(table: pa.Table, spec: SplitSpec) -> pa.Table:
    """Add `split` (by patient) and `rank` (0.. within the pretraining pool, -1 elsewhere)."""
    split_idx = split_index(table.column("patient_id"), spec)
    rank = np.full(len(split_idx), -1, dtype=np.int64)
    pool = np.flatnonzero(split_idx == 0)
    if len(pool):
        keys = rank_keys(pc.take(table.column("image_id"), pa.array(pool)), spec.seed)
        order = np.argsort(keys, kind="stable")   # ties (p ~ n^2 / 2^65) fall back to row order
        rank[pool[order]] = np.arange(len(pool))
    split = pc.take(pa.array(SPLITS, pa.string()), pa.array(split_idx))
    for name in ("split", "rank"):
        if name in table.column_names:
            table = table.drop_columns([name])
    return table.append_column("split", split).append_column("rank", pa.array(rank))


def subset_mask(table: pa.Table, n: int) -> pa.ChunkedArray:
    """The nested pretraining subset of size n as a boolean mask (same predicate Ray Data uses)."""
    return pc.and_(pc.equal(table.column("split"), "pretrain"), pc.less(table.column("rank"), n))


def pool_size(table: pa.Table) -> int:
    return int(pc.sum(pc.equal(table.column("split"), "pretrain")).as_py() or 0)
