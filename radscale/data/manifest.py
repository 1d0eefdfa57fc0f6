"""The radscale manifest: one Parquet row per image. Validation names the row and column of the first problem."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from radscale.data.vocab import Vocabulary
from radscale.errors import RadscaleError

REQUIRED = ("image_id", "patient_id", "study_id", "uri")
OPTIONAL_STR = ("view", "report", "mask_uri")
SPLITS = ("pretrain", "probe_train", "probe_val", "test")


def read_manifest(path: str | Path, vocabulary: Vocabulary | None = None) -> pa.Table:
    """Read and validate; raises RadscaleError('<path>: row R column C: ...') on the first problem."""
    path = str(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise RadscaleError(f"{path}: manifest not found") from None
    except (pa.ArrowInvalid, OSError) as err:
        raise RadscaleError(f"{path}: not a readable Parquet file ({type(err).__name__})") from None
    validate_manifest(table, path, vocabulary)
    return absolute_uris(table, path)


def absolute_uris(table: pa.Table, manifest: str) -> pa.Table:
    """Relative `uri` / `mask_uri` values made relative to the manifest's folder (or URI prefix), not to the
    cwd of whichever process opens them: Ray workers and job drivers each run in a folder of their own."""
    if "://" in manifest:
        root = manifest.rsplit("/", 1)[0]
    else:
        root = str(Path(manifest).resolve().parent)
    for name in ("uri", "mask_uri"):
        if name not in table.column_names or pa.types.is_null(table.column(name).type):
            continue
        col = table.column(name)
        relative = pc.and_(pc.and_(pc.invert(pc.starts_with(col, "/")), pc.invert(pc.match_substring(col, "://"))),
                           pc.greater(pc.utf8_length(col), 0))          # "" (no mask) stays as it is
        if not pc.any(relative).as_py():
            continue
        joined = pc.binary_join_element_wise(pa.scalar(root, col.type), col, pa.scalar("/", col.type))
        table = table.set_column(table.column_names.index(name), name, pc.if_else(relative, joined, col))
    return table


def _first_row(mask: pa.Array) -> int:
    return int(np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))[0])


def validate_manifest(table: pa.Table, where: str, vocabulary: Vocabulary | None = None) -> None:
    for name in REQUIRED:
        if name not in table.column_names:
            raise RadscaleError(f"{where}: missing required column {name!r}")
        col = table.column(name)
        if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
            raise RadscaleError(f"{where}: column {name!r} must be string (got {col.type})")
        if col.null_count:
            raise RadscaleError(f"{where}: row {_first_row(pc.is_null(col).combine_chunks())} column {name!r}: null")
        empty = pc.equal(pc.utf8_length(col), 0).combine_chunks()
        if pc.any(empty).as_py():
            raise RadscaleError(f"{where}: row {_first_row(empty)} column {name!r}: empty string")
    # Counted over the chunks as read: combining 4M ids first costs a copy and ~2x the hash-table peak.
    if pc.count_distinct(table.column("image_id")).as_py() != table.num_rows:
        ids = table.column("image_id").combine_chunks()
        counts = pc.value_counts(ids)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        rows = np.flatnonzero(pc.equal(ids, dup).to_numpy(zero_copy_only=False))
        raise RadscaleError(f"{where}: row {rows[1]} column 'image_id': duplicate id {dup!r} (first at row {rows[0]})")
    for name in OPTIONAL_STR:
        if name in table.column_names:
            t = table.column(name).type
            if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
                raise RadscaleError(f"{where}: column {name!r} must be string (got {t})")
    for name in label_columns(table, vocabulary):
        col = table.column(name)
        if not pa.types.is_integer(col.type) and not pa.types.is_floating(col.type):
            raise RadscaleError(f"{where}: label column {name!r} must be integer (got {col.type})")
        wide = pc.cast(col, pa.float64(), safe=False)        # any int/float width, unsigned included
        bad = pc.and_(pc.is_valid(col), pc.invert(pc.is_in(wide, pa.array([1.0, 0.0, -1.0])))).combine_chunks()
        if pc.any(bad).as_py():
            row = _first_row(bad)
            raise RadscaleError(f"{where}: row {row} column {name!r}: label must be 1, 0, -1 or null "
                                f"(got {col[row].as_py()!r})")
    if "split" in table.column_names:
        bad = pc.invert(pc.is_in(table.column("split"), pa.array(SPLITS))).combine_chunks()
        if pc.any(bad).as_py():
            raise RadscaleError(f"{where}: row {_first_row(bad)} column 'split': must be one of {SPLITS}")


def label_columns(table: pa.Table, vocabulary: Vocabulary | None = None) -> list[str]:
    vocab = vocabulary or Vocabulary()
    return [name for name in vocab.labels if name in table.column_names]


def check_images_exist(table: pa.Table, where: str) -> list[int]:
    """Rows whose local image file is missing (remote URIs are checked when read)."""
    missing = []
    for i, uri in enumerate(table.column("uri").to_pylist()):
        if "://" in uri and not uri.startswith("file://"):
            continue
        if not os.path.exists(uri.removeprefix("file://")):
            missing.append(i)
    return missing


def require_images(table: pa.Table, where: str) -> None:
    missing = check_images_exist(table, where)
    if missing:
        row = missing[0]
        image_id = table.column("image_id")[row].as_py()
        uri = table.column("uri")[row].as_py()
        more = f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise RadscaleError(f"{where}: row {row} (image_id={image_id}): image file not found: {uri}{more}")
