"""Generate the phantom chest X-ray corpus: PNG images, device masks, reports and a radscale manifest.

Deterministic and cached: every patient draws from its own seed stream (seed, profile, patient index), so the
output does not depend on `workers`, and the corpus of n images is a prefix of the corpus of any larger n.
`phantom.json` (params + counts) is written last; a matching one means the corpus is complete.
"""
from __future__ import annotations

import json
import os
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from radscale.data.phantom.anatomy import render_anatomy, sample_anatomy, vary_anatomy
from radscale.data.phantom.canvas import View
from radscale.data.phantom.devices import sample_devices
from radscale.data.phantom.findings import sample_patient, sample_study
from radscale.data.phantom.lesions import adjust_anatomy, draw_findings
from radscale.data.phantom.pngfile import write_png
from radscale.data.phantom.profiles import PROFILES, Profile, acquire
from radscale.data.phantom.reports import study_labels, write_report
from radscale.data.phantom.tubes import draw_devices
from radscale.data.vocab import DEFAULT_VOCABULARY, DEVICE_TYPES

__all__ = ["PROFILES", "generate_phantom"]

GENERATOR_VERSION = 1  # bump when the images, reports or manifest change for the same params
MAX_IMAGES = 10_000_000
PATIENTS_PER_TASK = 8
LABELS = DEFAULT_VOCABULARY.labels


@dataclass(frozen=True)
class _Params:
    n_images: int
    seed: int
    profile: str
    image_size: int

    def as_dict(self) -> dict:
        return {"generator_version": GENERATOR_VERSION, "n_images": self.n_images, "seed": self.seed,
                "profile": self.profile, "image_size": self.image_size}


def _check(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"generate_phantom: {name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def _stream(p: _Params, *key: int) -> np.random.Generator:
    return np.random.default_rng([p.seed, zlib.crc32(p.profile.encode()), *key])


def _plan(p: _Params, profile: Profile) -> list[int]:
    """Studies per patient (1-4), patient after patient, until n_images; the last patient may be cut short."""
    counts, total, index = [], 0, 0
    while total < p.n_images:
        n = 1 + int(_stream(p, 0, index).choice(4, p=profile.studies))
        counts.append(min(n, p.n_images - total))
        total += counts[-1]
        index += 1
    return counts


def _render_patients(task: tuple[_Params, str, int, list[int]]) -> list[dict]:
    """Render, write and describe the studies of a run of consecutive patients (one process-pool task)."""
    p, out_dir, first, counts = task
    profile = PROFILES[p.profile]
    # glibc serves a freed-and-reallocated block of exactly the image size from fresh mmap pages every time
    # (page faults on each temporary); freeing one larger block first raises its mmap threshold above that.
    np.ones(32 * p.image_size * p.image_size, dtype=np.uint8)
    rows = []
    for index, n_studies in enumerate(counts, start=first):
        rows.extend(_render_patient(p, profile, Path(out_dir), index, n_studies))
    return rows


def _render_patient(p: _Params, profile: Profile, out_dir: Path, index: int, n_studies: int) -> list[dict]:
    rng = _stream(p, 1, index)
    anatomy = sample_anatomy(rng)
    patient = sample_patient(profile.rates, profile.icu_fraction, rng)
    patient_id = f"{profile.id_prefix}{index:06d}"
    (out_dir / "images" / patient_id).mkdir(parents=True, exist_ok=True)
    rows, findings, devices = [], None, None
    for k in range(n_studies):
        findings = sample_study(patient, findings, profile.rates, profile.icu_fraction, rng)
        ptx = findings["pneumothorax"]
        devices = sample_devices(profile.device_rates, patient.icu, devices, ptx.side if ptx.label == 1 else "", rng)
        view_name = "AP" if (rng.random() < 0.9) == patient.icu else "PA"
        tilt = 2.5 if view_name == "AP" else 1.2
        view = View(size=p.image_size, fov_cm=profile.fov_cm, center_x=profile.center[0] + rng.normal(0, 0.7),
                     center_y=profile.center[1] + rng.normal(0, 0.7), angle_deg=float(rng.normal(0, tilt)))
        scene = render_anatomy(adjust_anatomy(vary_anatomy(anatomy, rng), findings), view)
        draw_findings(scene, findings)
        mask = draw_devices(scene, devices)
        pixels = acquire(scene.att, profile, view, _stream(p, 2, index, k))
        report = write_report(findings, devices, view_name, k > 0, rng)
        study_id = f"{patient_id}-S{k + 1:02d}"
        image_id = f"{study_id}-{view_name}"
        uri = out_dir / "images" / patient_id / f"{image_id}.png"
        write_png(uri, pixels)
        mask_uri = None
        if devices.present:
            mask_uri = out_dir / "masks" / patient_id / f"{image_id}.png"
            mask_uri.parent.mkdir(parents=True, exist_ok=True)
            write_png(mask_uri, mask)
        rows.append({"image_id": image_id, "patient_id": patient_id, "study_id": study_id, "uri": str(uri),
                     "view": view_name, "report": report, "mask_uri": None if mask_uri is None else str(mask_uri),
                     "labels": study_labels(findings, devices, LABELS), "devices": sorted(devices.present)})
    return rows


def _manifest(rows: list[dict], size: int) -> pa.Table:
    cols: dict[str, pa.Array] = {}
    for name in ("image_id", "patient_id", "study_id", "uri", "view", "report", "mask_uri"):
        cols[name] = pa.array([r[name] for r in rows], type=pa.string())
    for label in LABELS:
        cols[label] = pa.array([r["labels"][label] for r in rows], type=pa.int8())
    for name in ("source_height", "source_width"):
        cols[name] = pa.array(np.full(len(rows), size, dtype=np.int32))
    return pa.table(cols)


def _counts(rows: list[dict]) -> dict:
    return {
        "n_images": len(rows), "n_patients": len({r["patient_id"] for r in rows}),
        "n_with_devices": sum(1 for r in rows if r["devices"]),
        "devices": {k: sum(1 for r in rows if k in r["devices"]) for k in DEVICE_TYPES},
        "positive": {k: sum(1 for r in rows if r["labels"][k] == 1) for k in LABELS},
        "uncertain": {k: sum(1 for r in rows if r["labels"][k] == -1) for k in LABELS},
    }


def _recorded_params(meta: Path) -> dict | None:
    """The parameters an earlier run recorded, or None (absent or unreadable metadata: regenerate)."""
    try:
        return json.loads(meta.read_text()).get("params")
    except (OSError, ValueError):
        return None


def generate_phantom(out_dir: Path, n_images: int, seed: int = 0, profile: str = "default", image_size: int = 256,
                     workers: int = 1) -> Path:
    """Write (or reuse) a phantom corpus of `n_images` chest X-rays under `out_dir`; returns its manifest path.

    Layout: `images/<patient>/<image_id>.png`, `masks/<patient>/<image_id>.png` (studies with devices only),
    `manifest.parquet`, `phantom.json`. Same params give byte-identical files whatever `workers` is; workers > 1
    uses a spawn-started process pool, so a calling script needs the usual `if __name__ == "__main__":` guard.
    """
    if profile not in PROFILES:
        raise ValueError(f"generate_phantom: unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    p = _Params(n_images=_check("n_images", n_images, 1, MAX_IMAGES), seed=_check("seed", seed, 0, 2**63 - 1),
                profile=profile, image_size=_check("image_size", image_size, 32, 4096))
    workers = _check("workers", workers, 1, 256)
    if not isinstance(out_dir, (str, os.PathLike)) or Path(out_dir).is_file():
        raise ValueError(f"generate_phantom: out_dir must be a directory path, got {out_dir!r}")
    out_dir = Path(out_dir).resolve()
    manifest, meta, partial = out_dir / "manifest.parquet", out_dir / "phantom.json", out_dir / "phantom.partial"
    if manifest.exists() and _recorded_params(meta) == p.as_dict():
        return manifest
    out_dir.mkdir(parents=True, exist_ok=True)
    if meta.exists() or partial.exists():  # our own earlier corpus: clear its files so none go stale
        meta.unlink(missing_ok=True)
        for sub in ("images", "masks"):
            shutil.rmtree(out_dir / sub, ignore_errors=True)
    partial.write_text(json.dumps(p.as_dict()))
    counts = _plan(p, PROFILES[profile])
    tasks = [(p, str(out_dir), i, counts[i:i + PATIENTS_PER_TASK]) for i in range(0, len(counts), PATIENTS_PER_TASK)]
    if workers == 1 or len(tasks) == 1:
        chunks = [_render_patients(t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=get_context("spawn")) as pool:
            chunks = list(pool.map(_render_patients, tasks))
    rows = [r for chunk in chunks for r in chunk]
    tmp = out_dir / "manifest.parquet.tmp"
    pq.write_table(_manifest(rows, p.image_size), tmp, compression="zstd")
    os.replace(tmp, manifest)
    tmp = out_dir / "phantom.json.tmp"
    tmp.write_text(json.dumps({"params": p.as_dict(), "counts": _counts(rows)}, indent=1, sort_keys=True))
    os.replace(tmp, meta)
    partial.unlink()
    return manifest
