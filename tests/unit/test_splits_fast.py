"""The vectorised split/rank hash: equal to a scalar reference, independent of layout, pinned, nested."""
import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from radscale.config.specs import SplitSpec
from radscale.data.manifest import SPLITS
from radscale.data.splits import (assign_splits, pool_size, rank_keys, split_index, stable_hash64, stable_uniform,
                                  subset_mask)

M64 = (1 << 64) - 1


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & M64


def reference_hash64(s: str, seed: int, salt: str) -> int:
    """Scalar, pure-int restatement of the documented algorithm (MurmurHash3 x64 block mix + fmix64)."""
    data = s.encode()
    h = int.from_bytes(hashlib.blake2b(f"{seed}:{salt}".encode(), digest_size=8).digest(), "little")
    h ^= (len(data) * 0x9E3779B97F4A7C15) & M64
    for i in range(0, len(data), 8):
        k = int.from_bytes(data[i:i + 8], "little")          # short last word: zero-filled high bytes
        k = (_rotl((k * 0x87C37B91114253D5) & M64, 31) * 0x4CF5AD432745937F) & M64
        h = (_rotl(h ^ k, 27) * 5 + 0x52DCE729) & M64
    for mul in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        h = ((h ^ (h >> 33)) * mul) & M64
    return h ^ (h >> 33)


IDS = ["", "a", "ab", "I00000", "1234567", "12345678", "123456789", "patient-00042", "héllo wörld", "x" * 40,
       "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg", "日本語のID"]


def test_vectorised_hash_equals_the_scalar_reference():
    for seed, salt in ((0, "rank"), (7, "split"), (123456789, "x")):
        got = stable_hash64(IDS, seed, salt)
        assert got.dtype == np.uint64
        assert [int(v) for v in got] == [reference_hash64(s, seed, salt) for s in IDS]
    for tiny in (["", "a", "bc"], ["1234567"], ["12345678"], [""]):    # whole buffer shorter than one word
        assert [int(v) for v in stable_hash64(tiny, 0, "rank")] == [reference_hash64(s, 0, "rank") for s in tiny]


def test_hash_is_pinned_so_platform_or_library_changes_are_caught():
    ids = ["", "a", "I00000", "patient-00042", "héllo wörld", "x" * 40]
    assert [int(v) for v in stable_hash64(ids, 0, "rank")] == [
        17900006047734757312, 11087812895325427932, 8714727159803532192, 10173475061489844406,
        1112533948854422566, 10048627440814060394]
    assert split_index([f"P{i:05d}" for i in range(12)], SplitSpec()).tolist() == [1, 2, 0, 1, 0, 3, 0, 0, 3, 0, 0, 0]
    t = pa.table({"image_id": [f"I{i:03d}" for i in range(12)], "patient_id": [f"P{i // 2:02d}" for i in range(12)]})
    t = assign_splits(t, SplitSpec(seed=1))
    assert t.column("split").to_pylist() == ["probe_val"] * 2 + ["pretrain"] * 8 + ["probe_val"] * 2
    assert t.column("rank").to_pylist() == [-1, -1, 4, 1, 2, 0, 6, 5, 7, 3, -1, -1]


def test_same_hash_whatever_the_arrow_layout():
    expected = stable_hash64(IDS, 3, "rank")
    arr = pa.array(IDS, pa.string())
    chunked = pa.chunked_array([pa.array(IDS[:5]), pa.array(IDS[5:])])
    padded = pa.array(["junk"] + IDS + ["more"], pa.string()).slice(1, len(IDS))   # non-zero offset
    for layout in (arr, pc.cast(arr, pa.large_string()), chunked, padded, np.array(IDS, dtype=object)):
        np.testing.assert_array_equal(stable_hash64(layout, 3, "rank"), expected)
    assert stable_hash64([], 0, "rank").shape == (0,)
    with pytest.raises(ValueError, match="null"):
        stable_hash64(pa.array(["a", None]), 0, "rank")


def test_seed_and_salt_change_the_hash_and_uniform_is_uniform():
    ids = [f"IMG{i:07d}" for i in range(50_000)]
    a, b, c = stable_hash64(ids, 0, "rank"), stable_hash64(ids, 1, "rank"), stable_hash64(ids, 0, "split")
    assert (a != b).mean() > 0.999 and (a != c).mean() > 0.999
    u = stable_uniform(ids, 0, "rank")
    assert u.min() >= 0.0 and u.max() < 1.0
    counts, _ = np.histogram(u, bins=20, range=(0, 1))
    expected = len(ids) / 20
    assert ((counts - expected) ** 2 / expected).sum() < 60   # chi-square, 19 dof: p ~ 1e-6 to exceed
    # Bits are independent of the low-entropy id suffix: low bits are balanced too.
    assert abs(float((a & np.uint64(1)).mean()) - 0.5) < 0.01


def test_split_fractions_are_patient_level_and_close_to_the_spec():
    spec = SplitSpec(pretrain=0.6, probe_train=0.2, probe_val=0.1, test=0.1, seed=5)
    patients = [f"P{i:06d}" for i in range(40_000)]
    idx = split_index(patients, spec)
    frac = np.bincount(idx, minlength=4) / len(idx)
    np.testing.assert_allclose(frac, [0.6, 0.2, 0.1, 0.1], atol=0.01)
    images = pa.array([p for p in patients[:1000] for _ in range(3)])
    per_image = split_index(images, spec)
    np.testing.assert_array_equal(per_image.reshape(-1, 3), np.repeat(idx[:1000, None], 3, axis=1))


def _table(n: int, patients: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"image_id": [f"I{i:06d}" for i in range(n)],
                     "patient_id": [f"P{p:05d}" for p in rng.integers(0, patients, n)]})


def test_assign_splits_is_nested_order_and_chunk_invariant():
    t = assign_splits(_table(20_000, 4000), SplitSpec(seed=2))
    n_pool = pool_size(t)
    ids = [set(t.filter(subset_mask(t, n)).column("image_id").to_pylist()) for n in (30, 300, 3000, n_pool)]
    assert [len(s) for s in ids] == [30, 300, 3000, n_pool]
    assert ids[0] < ids[1] < ids[2] < ids[3]
    pool = t.filter(pc.equal(t.column("split"), "pretrain"))
    assert sorted(pool.column("rank").to_pylist()) == list(range(n_pool))
    # rank order = ascending rank_keys: the order `prepare` writes shards in
    keys = rank_keys(pool.column("image_id"), 2)
    assert (np.diff(keys[np.argsort(pool.column("rank").to_numpy())].astype(np.float64)) >= 0).all()
    perm = np.random.default_rng(9).permutation(t.num_rows)
    shuffled = _table(20_000, 4000).take(pa.array(perm))
    rechunked = pa.Table.from_batches(shuffled.to_batches(max_chunksize=777))
    t2 = assign_splits(rechunked, SplitSpec(seed=2))
    key = lambda tab: dict(zip(tab.column("image_id").to_pylist(),  # noqa: E731
                               zip(tab.column("split").to_pylist(), tab.column("rank").to_pylist())))
    assert key(t) == key(t2)
    assert set(t.column("split").to_pylist()) <= set(SPLITS)
