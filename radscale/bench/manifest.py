"""`radscale bench manifest`: validation, splits and nested-subset selection on an N-row synthetic manifest.

The paper's corpus is ~4M images, so the default is 4M rows shaped like MIMIC-CXR: 44-char DICOM ids, ~6 images
per patient, `files/pXX/p<subject>/s<study>/<id>.jpg` uris, all 30 label columns (mostly unmentioned). Targets
(issue "Fast and fair trials"): validation + splits + subsets <= 10 s and <= 2 GB peak RSS on one node.
Wall and CPU seconds are both reported: shared machines make wall clock noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from radscale.bench.memory import peak_rss_mb, reset_peak_rss
from radscale.config.specs import SplitSpec
from radscale.data.manifest import validate_manifest
from radscale.data.splits import assign_splits, pool_size, subset_mask
from radscale.data.vocab import Vocabulary

PAPER_SIZES = (30_000, 100_000, 300_000, 1_000_000, 3_500_000)   # arXiv 2509.12818 subset ladder
IMAGES_PER_PATIENT = 6.0                                          # MIMIC-CXR: 377k images / 65k patients
LABEL_P = (0.10, 0.15, 0.03)                                      # positive, negative, uncertain; rest null


def _hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    """DICOM-style ids 'xxxxxxxx-xxxxxxxx-xxxxxxxx-xxxxxxxx-xxxxxxxx' built straight into one Arrow buffer."""
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[rng.integers(0, 16, (n, 40), dtype=np.uint8)]
    chars = np.full((n, 44), ord("-"), dtype=np.uint8)
    for k in range(5):
        chars[:, 9 * k:9 * k + 8] = digits[:, 8 * k:8 * k + 8]
    offsets = np.arange(n + 1, dtype=np.int64) * 44
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def _prefixed(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def synthetic_manifest(rows: int, seed: int = 0, vocabulary: Vocabulary | None = None) -> pa.Table:
    """A valid radscale manifest of `rows` images (vectorised: ~10 s for 4M rows)."""
    rng = np.random.default_rng(seed)
    n_patients = max(1, int(rows / IMAGES_PER_PATIENT))
    patient = np.sort(rng.integers(0, n_patients, rows)) + 10_000_000
    study = patient * 10 + rng.integers(0, 10, rows) + 50_000_000_000
    image_id = pc.cast(_hex_ids(rng, rows), pa.string())
    patient_id, study_id = _prefixed("p", patient), _prefixed("s", study)
    group = pc.binary_join_element_wise("p", pc.cast(pa.array(patient // 1_000_000), pa.string()), "")
    uri = pc.binary_join_element_wise("files/", group, "/", patient_id, "/", study_id, "/", image_id, ".jpg", "")
    columns = {"image_id": image_id, "patient_id": patient_id, "study_id": study_id,
               "uri": pc.cast(uri, pa.string()),
               "view": pc.take(pa.array(["PA", "AP", "LATERAL"]), pa.array(rng.integers(0, 3, rows)))}
    edges = np.cumsum(LABEL_P)
    for name in (vocabulary or Vocabulary()).labels:
        u = rng.random(rows, dtype=np.float32)
        values = np.select([u < edges[0], u < edges[1], u < edges[2]], [1, 0, -1], 0).astype(np.int8)
        columns[name] = pa.array(values, pa.int8(), mask=u >= edges[2])
    return pa.table(columns)


def _phase(fn: Callable[[], object], resettable: bool) -> tuple[object, dict]:
    pa.default_memory_pool().release_unused()   # Arrow keeps freed pages; without this a phase inherits them
    if resettable:
        reset_peak_rss()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, {"s": round(time.perf_counter() - wall, 3), "cpu_s": round(time.process_time() - cpu, 3),
                 "peak_rss_mb": round(peak_rss_mb(), 1)}


def bench_manifest(rows: int = 4_000_000, sizes: tuple[int, ...] = PAPER_SIZES, seed: int = 0) -> dict:
    """Time validation, splits and nested-subset selection on a synthetic manifest; one flat dict of results."""
    resettable = reset_peak_rss()
    table, gen = _phase(lambda: synthetic_manifest(rows, seed), resettable)
    _, val = _phase(lambda: validate_manifest(table, "synthetic"), resettable)
    split_table, spl = _phase(lambda: assign_splits(table, SplitSpec(seed=seed)), resettable)
    pool = pool_size(split_table)
    chosen = [n for n in sizes if n <= pool] or [pool]
    counts, sub = _phase(lambda: [split_table.filter(subset_mask(split_table, n)).num_rows for n in chosen],
                         resettable)
    if counts != chosen:
        raise RuntimeError(f"nested subsets returned {counts} rows for sizes {chosen}")
    phases = {"validate": val, "splits": spl, "subsets": sub}
    return {
        "bench": "manifest", "rows": rows, "patients": int(pc.count_distinct(table.column("patient_id")).as_py()),
        "label_columns": len(Vocabulary().labels), "pool": pool, "sizes": chosen,
        "generate_s": gen["s"], **{f"{k}_{m}": v[m] for k, v in phases.items() for m in ("s", "cpu_s")},
        "total_s": round(sum(v["s"] for v in phases.values()), 3),
        "total_cpu_s": round(sum(v["cpu_s"] for v in phases.values()), 3),
        "peak_rss_mb": max(v["peak_rss_mb"] for v in (gen, *phases.values())),
        **{f"{k}_peak_rss_mb": v["peak_rss_mb"] for k, v in phases.items()},
        "table_mb": round(table.nbytes / 2**20, 1), "rss_resettable": resettable,
        "cpus": os.cpu_count(), "python": platform.python_version(), "pyarrow": pa.__version__,
        "numpy": np.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radscale.bench.manifest", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(bench_manifest(args.rows, seed=args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
