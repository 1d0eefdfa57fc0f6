"""Prepared shards: every manifest image decoded once, resized, re-encoded, and stored as bytes in Parquet.

Decoding a full-size CXR costs 20-80 ms per core (PERFORMANCE.md); a prepared image decodes 3x (vs JPEG with
draft decoding) to 8x (8-bit PNG) to 24x (16-bit PNG) faster (`radscale bench ingest`), so training and
extraction stream shards instead of source files. Each prepared row keeps all manifest columns and
adds the encoded image (`image_bytes`), its size, and the source's size, format and bit depth.

Encoding: grayscale PNG, 8-bit by default. Training and evaluation quantise to uint8 after the final resize
(`train.batches.square_uint8`), so 8 bits at the prepared size lose nothing they use, while 16-bit PNGs are ~3.5x
larger and decode ~3x slower (PNG8 518 px: ~350-500 img/s per core here; PNG16: ~110-150). `bits=16` keeps the
source depth for users who need it; either form decodes with `images.decode_bytes`. Images smaller than the
target short side are stored as they are (training upscales at decode).

A sweep reads images through pointers: its manifest carries `shard` (the shard's path or URI) and `shard_row`
(the row inside it), and `read_shard_images` fetches only the Parquet row groups holding the rows asked for.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from radscale.data.images import ImageDecodeError, decode_image, encode_png
from radscale.data.quarantine import Quarantine
from radscale.errors import RadscaleError

IMAGE_BYTES = "image_bytes"
SHARD = "shard"
SHARD_ROW = "shard_row"
PREPARED_FIELDS = [
    pa.field("height", pa.int32()), pa.field("width", pa.int32()),
    pa.field("source_height", pa.int32()), pa.field("source_width", pa.int32()),
    pa.field("source_format", pa.string()), pa.field("source_bits", pa.int8()),
    pa.field(IMAGE_BYTES, pa.binary()),
]
RESERVED = tuple(f.name for f in PREPARED_FIELDS) + (SHARD, SHARD_ROW)
ROW_GROUP_ROWS = 32      # small row groups: a pointer read fetches at most 31 unneeded images
DEFAULT_SHORT_SIDE = 518  # the largest model input (RAD-DINO 518 px)
STAGE = "prepare"
# zlib level 4, measured on 518-px noisy CXR-like images: 17% smaller than level 1, 3x faster to encode than
# level 6 at the same size (13 vs 43 ms), and the same decode rate (~430 img/s per core) as either.
PNG_LEVEL = 4


@dataclass(frozen=True)
class PreparedImage:
    """One image in prepared form: encoded bytes plus the sizes a consumer needs without decoding."""

    data: bytes
    height: int
    width: int
    source_height: int
    source_width: int
    source_format: str
    source_bits: int


def prepare_image(uri: str, short_side: int = DEFAULT_SHORT_SIDE, *, bits: int = 8,
                  compress_level: int = PNG_LEVEL) -> PreparedImage:
    """Decode `uri` to canonical form, resize (antialiased) to `short_side`, encode as a grayscale PNG.

    Raises ImageDecodeError for any file that cannot be decoded.
    """
    if bits not in (8, 16):
        raise ValueError(f"prepare: bits must be 8 or 16, got {bits}")
    dec = decode_image(uri, short_side=short_side)
    if not np.isfinite(dec.pixels).all():
        raise ImageDecodeError(uri, "decoded image contains NaN or infinity")
    height, width = dec.pixels.shape
    return PreparedImage(encode_png(dec.pixels, bits, compress_level=compress_level), height, width,
                         dec.source_height, dec.source_width, dec.format, dec.bits)


def without_prepared_columns(table: pa.Table) -> pa.Table:
    """Drop columns prepare (re)computes, e.g. a manifest's own `source_height` or an earlier run's pointers."""
    return table.drop_columns([name for name in RESERVED if name in table.column_names])


def prepare_rows(rows: pa.Table, short_side: int = DEFAULT_SHORT_SIDE, *, bits: int = 8,
                 compress_level: int = PNG_LEVEL) -> tuple[pa.Table, Quarantine]:
    """Prepared rows (manifest columns + PREPARED_FIELDS) and the quarantine of rows that failed to decode."""
    rows = without_prepared_columns(rows)
    quarantine = Quarantine()
    prepared: list[PreparedImage] = []
    keep = np.zeros(rows.num_rows, dtype=bool)
    for i, (image_id, uri) in enumerate(zip(rows.column("image_id").to_pylist(), rows.column("uri").to_pylist())):
        try:
            prepared.append(prepare_image(uri, short_side, bits=bits, compress_level=compress_level))
        except ImageDecodeError as err:
            quarantine.add_error(err, image_id=image_id, stage=STAGE)
            continue
        keep[i] = True
    out = rows.filter(pa.array(keep)) if not keep.all() else rows
    values = {
        "height": [p.height for p in prepared], "width": [p.width for p in prepared],
        "source_height": [p.source_height for p in prepared], "source_width": [p.source_width for p in prepared],
        "source_format": [p.source_format for p in prepared], "source_bits": [p.source_bits for p in prepared],
        IMAGE_BYTES: [p.data for p in prepared],
    }
    for field in PREPARED_FIELDS:
        out = out.append_column(field, pa.array(values[field.name], field.type))
    return out, quarantine


def shard_ranges(n_rows: int, rows_per_shard: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) row ranges; the last shard may be short."""
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
    return [(start, min(start + rows_per_shard, n_rows)) for start in range(0, n_rows, rows_per_shard)]


def shard_name(start: int, end: int) -> str:
    """Deterministic file name of the shard holding rows [start, end) of the ordered manifest."""
    return f"part-{start:010d}-{end:010d}.parquet"


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a local path or an s3:// / gs:// / file:// URI."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def parquet_columns(path: str) -> list[str]:
    """Column names of a Parquet file (reads only its footer)."""
    fs, inner = filesystem(path)
    with fs.open_input_file(inner) as f:
        return pq.read_schema(f).names


def read_shard_images(shards: Sequence, rows: Sequence) -> list[bytes | None]:
    """Encoded images for (shard, shard_row) pointers; a null shard (e.g. an OOD row) gives None."""
    shards = np.asarray(shards, dtype=object)
    rows = np.asarray(rows, dtype=object)
    out: list[bytes | None] = [None] * len(shards)
    present = np.flatnonzero([isinstance(s, str) for s in shards])   # null pointers arrive as None or NaN
    if not len(present):
        return out
    names, which = np.unique(shards[present].astype(str), return_inverse=True)
    for k, path in enumerate(names):
        members = present[which == k]
        wanted = np.asarray(rows[members], dtype=np.int64)
        for member, blob in zip(members, _read_rows(path, wanted)):
            out[member] = blob
    return out


def _read_rows(path: str, wanted: np.ndarray) -> list[bytes]:
    fs, inner = filesystem(path)
    try:
        f = fs.open_input_file(inner)
    except (FileNotFoundError, OSError) as err:
        raise RadscaleError(f"{path}: prepared shard cannot be opened ({type(err).__name__}); "
                            "was the prepared folder moved?") from None
    with f:
        pf = pq.ParquetFile(f)
        sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        bad = wanted[(wanted < 0) | (wanted >= bounds[-1])]
        if len(bad):
            raise RadscaleError(f"{path}: shard_row {int(bad[0])} outside the shard's {bounds[-1]} rows")
        groups = np.unique(np.searchsorted(bounds, wanted, side="right") - 1)
        table = pf.read_row_groups(groups.tolist(), columns=[IMAGE_BYTES])
    # Position of each wanted row inside the concatenation of the row groups read.
    group_start = np.concatenate([[0], np.cumsum([sizes[g] for g in groups])])
    slot = np.searchsorted(groups, np.searchsorted(bounds, wanted, side="right") - 1)
    local = group_start[slot] + (wanted - bounds[groups[slot]])
    return table.column(IMAGE_BYTES).take(pa.array(local)).to_pylist()


def attach_image_bytes(batch: dict) -> dict:
    """A pointer batch (dict of columns) with `image_bytes` added and the pointer columns dropped."""
    out = {k: v for k, v in batch.items() if k not in (SHARD, SHARD_ROW)}
    blobs = read_shard_images(batch[SHARD], batch[SHARD_ROW])
    out[IMAGE_BYTES] = np.empty(len(blobs), dtype=object)
    out[IMAGE_BYTES][:] = blobs
    return out
