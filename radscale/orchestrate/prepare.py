"""`radscale prepare`: a Ray Data job that decodes every manifest image once and writes prepared shards.

Layout of the output folder (local path or bucket URI):
  prepare.json          settings; a folder prepared with other settings is refused, never mixed
  rows.parquet          the manifest in shard order, one row group per shard (what each task reads)
  shards/part-<start>-<end>.parquet   prepared rows [start, end) (`data.shards`), 32-row row groups
  shards/part-<start>-<end>.done      completion marker: rows digest, settings, counts, quarantine records
  quarantine.parquet    rows that failed to decode, with the reason
  manifest.parquet      every prepared row without the image bytes, plus `shard` and `shard_row`: the
                        manifest a sweep reads (`data.shards = <folder>`); its manifest columns come from the
                        current source manifest, the image columns from the shards
  prepared.json         the summary and the source rows' digest, written last

Rows are ordered by the nested-subset key of `order_seed` (splits.rank_keys), so with the sweep's split seed
equal to it, subset(n) lives in the first ~n / pretrain-fraction rows: a small subset reads few shards. The run
is idempotent and resumable: a shard whose file and matching marker exist is skipped. A shard is re-decoded only
when its images change (image_id, uri); a change to any other column (labels, patient_id, report, a new
column) rewrites manifest.parquet alone.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data
from pyarrow import fs as pafs

from radscale.data.manifest import read_manifest
from radscale.data.quarantine import Quarantine, QuarantineRecord
from radscale.data.shards import (DEFAULT_SHORT_SIDE, IMAGE_BYTES, PNG_LEVEL, PREPARED_FIELDS, ROW_GROUP_ROWS,
                                  SHARD, SHARD_ROW, filesystem, prepare_rows, shard_name, shard_ranges,
                                  without_prepared_columns)
from radscale.data.splits import rank_keys
from radscale.data.vocab import Vocabulary
from radscale.errors import RadscaleError

PREPARE_VERSION = 1
TASK_CPUS = 1.0


@dataclass(frozen=True)
class PrepareSummary:
    out_dir: str
    manifest: str            # the prepared manifest a sweep reads (no image bytes)
    rows: int                # rows of the source manifest
    shards: int
    shards_written: int      # by this run
    shards_skipped: int      # finished earlier (file + matching marker)
    images: int              # prepared images in all shards
    images_written: int      # by this run
    quarantined: int         # rows that failed to decode, over all shards
    seconds: float           # wall clock of this run's shard writing
    images_per_s: float      # rows this run processed / seconds (0 when nothing was pending)
    images_per_cpu_s: float  # the same per CPU-second of the prepare tasks: per-core rate, robust to contention
    short_side: int
    bits: int

    def as_dict(self) -> dict:
        return asdict(self)


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def _read_json(fs, path: str) -> dict | None:
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())
    except (FileNotFoundError, OSError, ValueError):
        return None


def _write(fs, path: str, write: Callable) -> None:
    """Write then rename on local disks (no half-written file survives a crash); object puts are atomic."""
    tmp = f"{path}.tmp" if isinstance(fs, pafs.LocalFileSystem) else path
    with fs.open_output_stream(tmp) as f:
        write(f)
    if tmp != path:
        fs.move(tmp, path)


def _write_bytes(fs, path: str, data: bytes) -> None:
    _write(fs, path, lambda f: f.write(data))


def _write_table(fs, path: str, table: pa.Table, row_group_size: int) -> None:
    _write(fs, path, lambda f: pq.write_table(table, f, row_group_size=max(1, row_group_size)))


def _digest(rows: pa.Table) -> str:
    """Identity of a shard's images: a changed image_id or uri re-prepares the shards it touches."""
    h = hashlib.blake2b(digest_size=16)
    for name in ("image_id", "uri"):
        h.update("\n".join(rows.column(name).to_pylist()).encode())
        h.update(b"\0")
    return h.hexdigest()


def _rows_digest(table: pa.Table) -> str:
    """Identity of every source column (schema and values): a change rewrites manifest.parquet."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(table.schema.remove_metadata()).encode())
    for batch in table.to_batches(max_chunksize=1 << 16):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema.remove_metadata()) as w:
            w.write_batch(batch)
        h.update(sink.getvalue())
    return h.hexdigest()


def _read_range(fs, rows_path: str, start: int, end: int) -> pa.Table:
    with fs.open_input_file(rows_path) as f:
        pf = pq.ParquetFile(f)
        bounds = np.concatenate([[0], np.cumsum([pf.metadata.row_group(i).num_rows
                                                 for i in range(pf.metadata.num_row_groups)])])
        groups = [g for g in range(len(bounds) - 1) if bounds[g] < end and bounds[g + 1] > start]
        table = pf.read_row_groups(groups)
    return table.slice(start - int(bounds[groups[0]]), end - start)


def _write_shards(batch: dict, out_dir: str, settings: dict) -> dict:
    """Ray Data task: prepare and write the shards named in `batch` (one per task by construction)."""
    fs, root = filesystem(out_dir)
    stats: dict[str, list] = {"start": [], "images": [], "quarantined": []}
    for start, end, digest in zip(batch["start"], batch["end"], batch["digest"]):
        start, end = int(start), int(end)
        t0, c0 = time.perf_counter(), time.process_time()
        rows = _read_range(fs, _join(root, "rows.parquet"), start, end)
        prepared, quarantine = prepare_rows(rows, settings["short_side"], bits=settings["bits"],
                                            compress_level=settings["compress_level"])
        base = _join(root, "shards", shard_name(start, end))
        _write_table(fs, base, prepared, ROW_GROUP_ROWS)
        marker = {"digest": str(digest), "settings": settings, "rows": end - start, "images": prepared.num_rows,
                  "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                  "quarantine": [asdict(r) for r in quarantine.records]}
        _write_bytes(fs, base.removesuffix(".parquet") + ".done", json.dumps(marker).encode())
        stats["start"].append(start)
        stats["images"].append(prepared.num_rows)
        stats["quarantined"].append(quarantine.count)
    return {k: np.asarray(v, dtype=np.int64) for k, v in stats.items()}


def _settings(short_side: int, bits: int, compress_level: int, rows_per_shard: int, order_seed: int | None) -> dict:
    if short_side < 1:
        raise RadscaleError(f"prepare: short_side must be >= 1, got {short_side}")
    if bits not in (8, 16):
        raise RadscaleError(f"prepare: bits must be 8 or 16, got {bits}")
    if not 0 <= compress_level <= 9:
        raise RadscaleError(f"prepare: compress_level must be in 0..9, got {compress_level}")
    if rows_per_shard < 1:
        raise RadscaleError(f"prepare: rows_per_shard must be >= 1, got {rows_per_shard}")
    return {"version": PREPARE_VERSION, "short_side": short_side, "bits": bits, "compress_level": compress_level,
            "rows_per_shard": rows_per_shard, "order_seed": order_seed, "encoding": "png"}


def _claim(fs, root: str, settings: dict) -> None:
    """Record the settings in a new folder; refuse a folder prepared differently (shards would mix)."""
    path = _join(root, "prepare.json")
    existing = _read_json(fs, path)
    if existing is not None and existing != settings:
        diff = sorted(k for k in set(existing) | set(settings) if existing.get(k) != settings.get(k))
        raise RadscaleError(f"{root}: already prepared with other settings ({', '.join(diff)}); "
                            "use a new output folder")
    if existing is None:
        _write_bytes(fs, path, json.dumps(settings, indent=1).encode())


def _prepared_manifest(fs, root: str, ranges: list[tuple[int, int]], table: pa.Table) -> pa.Table:
    """Every prepared row: the current source columns (never a shard's copy, which may predate a relabel), the
    shards' image columns without the bytes, `shard` (relative path) and `shard_row`."""
    image_cols = [f.name for f in PREPARED_FIELDS if f.name != IMAGE_BYTES]
    parts = []
    for start, end in ranges:
        name = _join("shards", shard_name(start, end))
        with fs.open_input_file(_join(root, name)) as f:
            t = pq.ParquetFile(f).read(columns=["image_id", *image_cols])
        rows = table.slice(start, end - start)
        at = {i: k for k, i in enumerate(rows.column("image_id").to_pylist())}
        out = rows.take(pa.array([at[i] for i in t.column("image_id").to_pylist()], pa.int64()))
        for c in image_cols:
            out = out.append_column(t.schema.field(c), t.column(c))
        out = out.append_column(SHARD, pa.array([name] * t.num_rows, pa.string()))
        parts.append(out.append_column(SHARD_ROW, pa.array(np.arange(t.num_rows, dtype=np.int32))))
    if parts:
        return pa.concat_tables(parts)
    fields = list(table.schema) + [f for f in PREPARED_FIELDS if f.name != IMAGE_BYTES]
    return pa.schema(fields + [pa.field(SHARD, pa.string()), pa.field(SHARD_ROW, pa.int32())]).empty_table()


def _marker_path(root: str, start: int, end: int) -> str:
    return _join(root, "shards", shard_name(start, end).removesuffix(".parquet") + ".done")


def _pending(fs, root: str, table: pa.Table, ranges: list[tuple[int, int]], settings: dict) -> list[dict]:
    """Shards without a file and a marker matching their rows' digest and the settings."""
    digests = [_digest(table.slice(s, e - s)) for s, e in ranges]
    markers = [_read_json(fs, _marker_path(root, s, e)) for s, e in ranges]
    infos = fs.get_file_info([_join(root, "shards", shard_name(s, e)) for s, e in ranges])
    return [{"start": s, "end": e, "digest": d} for (s, e), d, m, info in zip(ranges, digests, markers, infos)
            if not (m is not None and m.get("digest") == d and m.get("settings") == settings
                    and info.type == pafs.FileType.File)]


def _remove_stale(fs, root: str, ranges: list[tuple[int, int]]) -> None:
    """Delete shard files of an earlier, differently sized manifest: no reader may ever see them."""
    keep = {shard_name(s, e).removesuffix(".parquet") for s, e in ranges}
    for info in fs.get_file_info(pafs.FileSelector(_join(root, "shards"), allow_not_found=True)):
        if info.type == pafs.FileType.File and info.base_name.split(".")[0] not in keep:
            fs.delete_file(info.path)


def prepare_shards(manifest: str, out_dir: str, short_side: int = DEFAULT_SHORT_SIDE, rows_per_shard: int = 1024,
                   *, bits: int = 8, compress_level: int = PNG_LEVEL, order_seed: int | None = 0,
                   task_cpus: float = TASK_CPUS, vocabulary: Vocabulary | None = None,
                   echo: Callable[[str], None] | None = None) -> PrepareSummary:
    """Prepare every row of `manifest` into shards under `out_dir` (Ray must be initialised or initialisable).

    order_seed: shard order follows the nested-subset key of this split seed; None keeps the manifest order.
    """
    say = echo or (lambda _m: None)
    settings = _settings(short_side, bits, compress_level, rows_per_shard, order_seed)
    table = without_prepared_columns(read_manifest(manifest, vocabulary))
    if order_seed is not None:
        table = table.take(pa.array(np.argsort(rank_keys(table.column("image_id"), order_seed), kind="stable")))
    fs, root = filesystem(out_dir)
    fs.create_dir(_join(root, "shards"), recursive=True)
    _claim(fs, root, settings)
    ranges = shard_ranges(table.num_rows, rows_per_shard)
    pending = _pending(fs, root, table, ranges, settings)
    say(f"prepare: {table.num_rows} rows in {len(ranges)} shards, {len(ranges) - len(pending)} already done")

    t0 = time.perf_counter()
    digest = _rows_digest(table)
    done = _read_json(fs, _join(root, "prepared.json"))
    if pending or done is None or done.get("rows_digest") != digest:
        # Until prepared.json is rewritten, sweeps refuse the folder: old pointers may name rewritten rows.
        for name in ("prepared.json", "manifest.parquet"):
            if fs.get_file_info(_join(root, name)).type == pafs.FileType.File:
                fs.delete_file(_join(root, name))
        _remove_stale(fs, root, ranges)
        if pending:
            _write_table(fs, _join(root, "rows.parquet"), table, rows_per_shard)
            ds = ray.data.from_items(pending, override_num_blocks=len(pending))
            ds = ds.map_batches(_write_shards, fn_kwargs=dict(out_dir=out_dir, settings=settings), batch_size=1,
                                num_cpus=task_cpus)
            ds.take_all()
    seconds = time.perf_counter() - t0
    summary = _finish(fs, root, out_dir, table, ranges, pending, seconds, settings, digest)
    say(f"prepare: wrote {summary.shards_written} shards ({summary.images_written} images, "
        f"{summary.images_per_s} img/s), {summary.quarantined} quarantined")
    return summary


def _finish(fs, root: str, out_dir: str, table: pa.Table, ranges: list[tuple[int, int]], pending: list[dict],
            seconds: float, settings: dict, digest: str) -> PrepareSummary:
    """Quarantine, prepared manifest and summary from the markers; prepared.json goes last (marks 'complete')."""
    markers = [_read_json(fs, _marker_path(root, s, e)) for s, e in ranges]
    missing = [shard_name(s, e) for (s, e), m in zip(ranges, markers) if m is None]
    if missing:
        raise RadscaleError(f"{root}: shard {missing[0]} has no completion marker after the run")
    public = out_dir.rstrip("/") if "://" in out_dir else root   # what users and sweeps are told
    written = {p["start"] for p in pending}
    rows_done = sum(p["end"] - p["start"] for p in pending)
    cpu = sum(m.get("cpu_seconds", 0.0) for (s, _), m in zip(ranges, markers) if s in written)
    summary = PrepareSummary(
        out_dir=public, manifest=_join(public, "manifest.parquet"), rows=table.num_rows, shards=len(ranges),
        shards_written=len(pending), shards_skipped=len(ranges) - len(pending),
        images=sum(m["images"] for m in markers),
        images_written=sum(m["images"] for (s, _), m in zip(ranges, markers) if s in written),
        quarantined=sum(len(m["quarantine"]) for m in markers), seconds=round(seconds, 3),
        images_per_s=round(rows_done / seconds, 2) if pending else 0.0,
        images_per_cpu_s=round(rows_done / cpu, 2) if pending and cpu > 0 else 0.0,
        short_side=settings["short_side"], bits=settings["bits"])
    if fs.get_file_info(_join(root, "prepared.json")).type == pafs.FileType.File:
        return summary                      # nothing changed since the last complete run
    quarantine = Quarantine(QuarantineRecord(**r) for m in markers for r in m["quarantine"])
    _write_table(fs, _join(root, "quarantine.parquet"), quarantine.to_table(), 1 << 20)
    _write_table(fs, _join(root, "manifest.parquet"), _prepared_manifest(fs, root, ranges, table), 1 << 20)
    _write_bytes(fs, _join(root, "prepared.json"),
                 json.dumps({**summary.as_dict(), "rows_digest": digest}, indent=1).encode())
    return summary


def run_prepare(manifest: str, out: str, short_side: int = DEFAULT_SHORT_SIDE, rows_per_shard: int = 1024, *,
                bits: int = 8, compress_level: int = PNG_LEVEL, order_seed: int | None = 0, address: str = "",
                num_cpus: int | None = None, echo: Callable[[str], None] | None = None) -> PrepareSummary:
    """CLI entry: start or join Ray (see ray_env.init_ray), then `prepare_shards`."""
    from radscale.orchestrate.ray_env import init_ray

    init_ray(address, num_cpus)
    return prepare_shards(manifest, out, short_side, rows_per_shard, bits=bits, compress_level=compress_level,
                          order_seed=order_seed, echo=echo)
