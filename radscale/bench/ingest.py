"""`radscale bench ingest`: host decode rate per core, prepared shards vs raw PNG/JPEG, side by side in one run.

Every path produces what a trial consumes, a uint8 square of `decode_size` (TrainBatchBuilder.decode_square):
  raw_<fmt>    full-size source file -> decode, antialiased resize, crop (the uri path)
  prepared     prepared PNG bytes in memory -> decode, resize, crop
  shard        the same, plus fetching the bytes through (shard, shard_row) pointers from a Parquet shard
  canonical    prepared bytes -> the stored 518-px canonical image, no resize (for device-side augmentation)
  prepare_<fmt>  the one-off prepare cost per source image (decode + resize + PNG encode)
Sources are synthetic CXR-like images (smooth anatomy + Gaussian noise; noise 0.012 gives ~5 bits/pixel as
8-bit PNG, close to NIH ChestX-ray14 files). Rates are images per CPU-second of this single process (one
core; PIL decodes on the calling thread), the best of `repeats` passes; wall-clock rates are reported too.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from radscale.data.images import decode_bytes, encode_png
from radscale.data.shards import DEFAULT_SHORT_SIDE, IMAGE_BYTES, ROW_GROUP_ROWS, prepare_image, read_shard_images
from radscale.train.batches import TrainBatchBuilder

FORMATS = ("png8", "png16", "jpeg")


def synthetic_cxr(size: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """A float image in [0, 1]: bright body and mediastinum, dark lungs, rib bands, quantum-like noise."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)
    body = np.exp(-(((x - 0.5) / 0.42) ** 4 + ((y - 0.55) / 0.5) ** 4))
    lungs = sum(np.exp(-(((x - cx) / 0.15) ** 2 + ((y - 0.45) / 0.25) ** 2)) for cx in (0.32, 0.68))
    ribs = 0.06 * np.sin(2 * np.pi * (y * 9 + 0.3 * np.abs(x - 0.5) + rng.random()))
    img = 0.15 + 0.7 * body - 0.35 * lungs + ribs * lungs
    img = img + rng.normal(0.0, noise, img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _source_bytes(pixels: np.ndarray, fmt: str) -> bytes:
    if fmt == "png8":
        return encode_png(pixels, 8)
    if fmt == "png16":
        return encode_png(pixels, 16)
    buf = io.BytesIO()
    Image.fromarray(np.rint(pixels * 255).astype(np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _rate(fn: Callable[[], object], n: int, repeats: int) -> tuple[float, float]:
    """(images per CPU-second, images per wall-second), each the best of `repeats` passes over n images."""
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return round(n / max(min(cpu), 1e-9), 1), round(n / max(min(wall), 1e-9), 1)


def bench_ingest(images: int = 16, source_size: int = 2048, short_side: int = DEFAULT_SHORT_SIDE,
                 decode_size: int = 224, repeats: int = 3, noise: float = 0.012, seed: int = 0) -> dict:
    """Decode rates per core for raw sources and prepared shards; one flat dict of results."""
    rng = np.random.default_rng(seed)
    builder = TrainBatchBuilder("dinov2", decode_size)
    result: dict = {"bench": "ingest", "images": images, "source_size": source_size, "short_side": short_side,
                    "decode_size": decode_size, "noise": noise, "repeats": repeats}
    with tempfile.TemporaryDirectory(prefix="radscale-bench-") as tmp:
        uris: dict[str, list[str]] = {fmt: [] for fmt in FORMATS}
        for i in range(images):
            pixels = synthetic_cxr(source_size, rng, noise)
            for fmt in FORMATS:
                path = Path(tmp) / f"{i:04d}.{fmt}"
                path.write_bytes(_source_bytes(pixels, fmt))
                uris[fmt].append(str(path))
        prepared: dict[str, list[bytes]] = {}

        def prepare_all(fmt: str) -> None:
            prepared[fmt] = [prepare_image(u, short_side).data for u in uris[fmt]]

        for fmt in FORMATS:
            result[f"source_{fmt}_kb"] = round(np.mean([os.path.getsize(u) for u in uris[fmt]]) / 1024, 1)
            result[f"raw_{fmt}_img_s"], result[f"raw_{fmt}_img_s_wall"] = _rate(
                lambda f=fmt: [builder.decode_square(u) for u in uris[f]], images, repeats)
            result[f"prepare_{fmt}_img_s"], _ = _rate(lambda f=fmt: prepare_all(f), images, 1)
        blobs = prepared["png16"]                   # prepared from the highest-fidelity originals
        result["prepared_kb"] = round(np.mean([len(b) for b in blobs]) / 1024, 1)
        result["prepared_img_s"], result["prepared_img_s_wall"] = _rate(
            lambda: [builder.decode_square("mem", b) for b in blobs], images, repeats)
        result["canonical_img_s"], result["canonical_img_s_wall"] = _rate(
            lambda: [decode_bytes(b, uri_for_errors="mem") for b in blobs], images, repeats)
        shard = str(Path(tmp) / "shard.parquet")
        pq.write_table(pa.table({"image_id": [str(i) for i in range(images)], IMAGE_BYTES: blobs}), shard,
                       row_group_size=ROW_GROUP_ROWS)
        rows = np.random.default_rng(seed).permutation(images)
        result["shard_img_s"], result["shard_img_s_wall"] = _rate(
            lambda: [builder.decode_square("mem", b) for b in read_shard_images([shard] * images, rows)],
            images, repeats)
    for fmt in FORMATS:
        result[f"speedup_vs_raw_{fmt}"] = round(result["shard_img_s"] / result[f"raw_{fmt}_img_s"], 2)
    result.update({"cpus": os.cpu_count(), "python": platform.python_version(), "pillow": Image.__version__,
                   "numpy": np.__version__})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radscale.bench.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--source-size", type=int, default=2048)
    parser.add_argument("--short-side", type=int, default=DEFAULT_SHORT_SIDE)
    parser.add_argument("--decode-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.012)
    args = parser.parse_args(argv)
    print(json.dumps(bench_ingest(args.images, args.source_size, args.short_side, args.decode_size, args.repeats,
                                  args.noise)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
