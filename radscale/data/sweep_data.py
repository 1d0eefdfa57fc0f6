"""A sweep's data, prepared once before any compute: validated manifest + splits + rank, eval rows, OOD sets.

Everything that can be refused (bad manifest, missing images, sizes larger than the pool) is refused here.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from radscale.config.specs import JobSpec
from radscale.data.manifest import label_columns, read_manifest, require_images
from radscale.data.shards import SHARD, SHARD_ROW
from radscale.data.splits import assign_splits, pool_size
from radscale.data.vocab import Vocabulary
from radscale.errors import RadscaleError

EVAL_SPLITS = ("probe_train", "probe_val", "test")
# Bump when the prepared tables gain or lose columns, so a cache written by an older radscale is rebuilt
# (2: eval rows carry mask_uri and report for segmentation and report generation; 3: and mask_devices;
# 4: relative uris resolved against the manifest's folder).
DATA_LAYOUT = 4


@dataclass(frozen=True)
class SweepData:
    manifest: str               # with split and rank columns (+ shard, shard_row when trained from prepared shards)
    eval_rows: str              # eval images of every domain: image_id, uri, patient_id, split, domain, labels
    pool_size: int
    label_columns: tuple[str, ...]
    domains: tuple[str, ...]
    sources: dict = field(default_factory=dict)


def phantom_dir(job: JobSpec, profile: str, seed_offset: int = 0) -> Path:
    p = job.data.phantom
    return Path(job.sweep.output_dir) / "_phantom" / f"{profile}-n{p.n_images}-s{p.seed + seed_offset}-px{p.image_size}"


def _phantom(job: JobSpec, profile: str, seed_offset: int = 0) -> str:
    from radscale.data.phantom.generate import generate_phantom

    p = job.data.phantom
    return str(generate_phantom(phantom_dir(job, profile, seed_offset), p.n_images, seed=p.seed + seed_offset,
                                profile=profile, image_size=p.image_size))


def _fingerprint(path: str, extra: dict) -> str:
    if "://" in path:   # object store: size and modification time, as for a local file (prepare may rewrite it)
        from pyarrow import fs as pafs

        try:
            filesystem, inner = pafs.FileSystem.from_uri(path)
            info = filesystem.get_file_info(inner)
        except (OSError, ValueError) as e:
            raise RadscaleError(f"{path}: manifest not readable ({type(e).__name__})") from None
        if info.type == pafs.FileType.NotFound:
            raise RadscaleError(f"{path}: manifest not found")
        ident = {"path": path, "size": info.size, "mtime": info.mtime_ns}
    else:
        if not Path(path).exists():
            raise RadscaleError(f"{path}: manifest not found")
        st = Path(path).stat()
        ident = {"path": str(Path(path).resolve()), "size": st.st_size, "mtime": st.st_mtime_ns}
    blob = json.dumps({**ident, **extra}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load(path: str, allow_missing: bool, vocab: Vocabulary) -> pa.Table:
    table = read_manifest(path, vocab)
    if SHARD in table.column_names:     # written by `radscale prepare`: images come from its shards
        return _absolute_shards(table, path)
    if not allow_missing:
        require_images(table, path)
    return table


def _shards_manifest(shards: str) -> str:
    """The manifest `radscale prepare` wrote; refused until the preparation has finished (prepared.json)."""
    root = shards.rstrip("/") if "://" in shards else str(Path(shards).resolve())
    if "://" not in root and not (Path(root) / "prepared.json").exists():
        raise RadscaleError(f"{shards}: not a finished prepared folder (no prepared.json; run `radscale prepare`)")
    return f"{root}/manifest.parquet"


def _absolute_shards(table: pa.Table, path: str) -> pa.Table:
    """`shard` made absolute (it is relative to the prepared folder), so Ray Data tasks open it from anywhere."""
    if SHARD_ROW not in table.column_names:
        raise RadscaleError(f"{path}: column {SHARD!r} without {SHARD_ROW!r} (not written by `radscale prepare`)")
    root = path.rsplit("/", 1)[0] if "/" in path else "."
    absolute = pc.binary_join_element_wise(root, table.column(SHARD), "/")
    return table.set_column(table.column_names.index(SHARD), SHARD, absolute)


def _eval_table(table: pa.Table, domain: str, labels: list[str], cap: int) -> pa.Table:
    pointers = [c for c in (SHARD, SHARD_ROW) if c in table.column_names]
    extras = [c for c in ("mask_uri", "mask_devices", "report") if c in table.column_names]  # seg, report gen
    keep = ["image_id", "uri", "patient_id", "split"] + labels + pointers + extras
    t = table.select([c for c in keep if c in table.column_names])
    if cap:
        parts = [t.filter(pc.equal(t.column("split"), s)).slice(0, cap) for s in EVAL_SPLITS]
        t = pa.concat_tables(parts)
    t = t.append_column("domain", pa.array([domain] * len(t), pa.string()))
    # eval_id is unique across domains (an OOD manifest may reuse image ids).
    t = t.append_column("eval_id", pc.binary_join_element_wise(t.column("domain"), t.column("image_id"), "/"))
    for lab in labels:                      # OOD manifests may lack some labels
        if lab not in t.column_names:
            t = t.append_column(lab, pa.nulls(len(t), pa.int8()))
        else:
            t = t.set_column(t.column_names.index(lab), lab, pc.cast(t.column(lab), pa.int8()))
    return t.select(["eval_id", "image_id", "uri", "patient_id", "split", "domain"] + labels + pointers + extras)


def prepare_sweep_data(job: JobSpec, sweep_dir: Path, vocabulary: Vocabulary | None = None) -> SweepData:
    vocab = vocabulary or Vocabulary()
    data = job.data
    source = _shards_manifest(data.shards) if data.shards else data.manifest or _phantom(job, data.phantom.profile)
    out = sweep_dir / "data"
    out.mkdir(parents=True, exist_ok=True)
    manifest_out, eval_out, meta_out = out / "manifest.parquet", out / "eval.parquet", out / "data.json"

    ood_sources = dict(data.ood_manifests)
    if data.ood_phantom_profile:
        ood_sources[f"phantom-{data.ood_phantom_profile}"] = _phantom(job, data.ood_phantom_profile, 1)
    fp = {"layout": DATA_LAYOUT, "source": _fingerprint(source, {"splits": data.splits.model_dump(), "cap": data.max_eval_images,
                                          "allow_missing": data.allow_missing_images}),
          "ood": {k: _fingerprint(v, {}) for k, v in sorted(ood_sources.items())}}
    if meta_out.exists() and manifest_out.exists() and eval_out.exists():
        meta = json.loads(meta_out.read_text())
        if meta.get("fingerprint") == fp:
            result = SweepData(str(manifest_out), str(eval_out), meta["pool_size"], tuple(meta["labels"]),
                               tuple(meta["domains"]), meta["sources"])
            _check_sizes(job, result, source)
            return result

    table = assign_splits(_load(source, data.allow_missing_images, vocab), data.splits)
    labels = label_columns(table, vocab)
    pq.write_table(table, manifest_out)
    parts = [_eval_table(table.filter(pc.is_in(table.column("split"), pa.array(EVAL_SPLITS))), "in-domain",
                         labels, data.max_eval_images)]
    for name, path in sorted(ood_sources.items()):
        ood = _load(path, data.allow_missing_images, vocab)
        ood = ood.append_column("split", pa.array(["test"] * len(ood), pa.string())) \
            if "split" not in ood.column_names else ood.set_column(ood.column_names.index("split"), "split",
                                                                   pa.array(["test"] * len(ood), pa.string()))
        parts.append(_eval_table(ood, name, labels, data.max_eval_images))
    pq.write_table(pa.concat_tables(parts, promote_options="default"), eval_out)  # OOD rows: null shard
    result = SweepData(str(manifest_out), str(eval_out), pool_size(table), tuple(labels),
                       ("in-domain",) + tuple(sorted(ood_sources)),
                       {"manifest": source, **{f"ood.{k}": v for k, v in ood_sources.items()}})
    meta_out.write_text(json.dumps({"fingerprint": fp, "pool_size": result.pool_size, "labels": labels,
                                    "domains": list(result.domains), "sources": result.sources}))
    _check_sizes(job, result, source)
    return result


def _check_sizes(job: JobSpec, data: SweepData, source: str) -> None:
    text = sorted({e.key for e in job.encoders if e.objective in ("clip", "unicl")})
    if text and "report" not in pq.read_schema(data.manifest).names:
        raise RadscaleError(f"{source}: no 'report' column, which {', '.join(text)} train on (image-report pairs); "
                            "import the reports or use objective dinov2")
    too_big = [n for n in job.sizes if n > data.pool_size]
    if too_big:
        raise RadscaleError(f"sizes {too_big} exceed the pretraining pool of {data.pool_size} images "
                            f"(manifest {source}, split fraction pretrain={job.data.splits.pretrain})")
