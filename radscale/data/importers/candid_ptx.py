"""CANDID-PTX importer (DATA.md "CANDID-PTX"): DICOMs, reports, pneumothorax / rib-fracture / chest-tube labels and
chest-tube masks.

Layout under `root`: `Pneumothorax_reports.csv` (`SOPInstanceUID`, `EncodedPixels`, `Report`, and in the
release a `filename` starting `P<patient>_`), one row per pneumothorax outline (several for one image, "-1" for
none); `chest_tube.csv` and `acute_rib_fracture.csv` (`anon_SOPUID`, `mask_rle`), one row per tube / fracture;
DICOMs named by SOPInstanceUID (`<uid>` or `<uid>.dcm`) in `<root>/dataset/` or `<root>/`. A trailing ".dcm" on an
id is ignored when ids are matched.

Masks use SIIM-ACR run-length encoding: pairs "start length" over the image flattened column-major (down the
first column, then the next: flat index = x * height + y); with `rle="relative"` (SIIM's original, the default)
each start counts from the end of the previous run, with `rle="absolute"` starts are 1-based absolute offsets
(Kaggle's later convention). "-1" is an empty mask. Chest tubes are drawn into the chest_tube bit of a uint8 PNG
(bit k = DEVICE_TYPES[k]) the size of the DICOM (Rows x Columns) in `masks_dir` (default `<manifest stem>-masks/`);
`mask_uri` is set for images with a tube and `mask_devices` = "chest_tube".

Labels (every image was read for all three): pneumothorax = 1 if any outline, else 0; chest_tube_present = 1 if any
tube row, else 0, and support_devices = 1 then (else null: other devices were not annotated); fracture = 1 for an
acute rib fracture, else null (old fractures were not annotated). A file that is absent leaves its columns out.

Ids: image_id = SOPInstanceUID (without ".dcm"); patient_id = `P<n>` from `filename`, else the DICOM PatientID,
else the image id; study_id = the DICOM StudyInstanceUID, else the image id; view = DICOM ViewPosition.
Memory: per-image maps (pneumothorax label, patient, fracture ids) are held: CANDID-PTX has ~19k images.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from radscale.data.importers.base import (
    DEFAULT_CHUNK_ROWS, ImportSummary, ManifestColumns, ManifestWriter, column, csv_columns, dicom_str,
    find_file, load_mask, prepare_masks_dir, read_csv_chunks, read_dicom_header, require_file, save_mask,
)
from radscale.data.vocab import DEVICE_TYPES
from radscale.errors import RadscaleError

SOURCE = "candid-ptx"
RLE_MODES = ("relative", "absolute")
CHEST_TUBE_BIT = DEVICE_TYPES.index("chest_tube")
EXTRAS = (("sop_instance_uid", pa.string()), ("filename", pa.string()))
_PATIENT = re.compile(r"^(P\d+)_")


def decode_rle(text: str, height: int, width: int, mode: str = "relative") -> np.ndarray:
    """SIIM-style run-length string -> bool mask (height, width); column-major; "-1" or "" -> empty."""
    text = text.strip()
    if text in ("", "-1"):
        return np.zeros((height, width), dtype=bool)
    try:
        values = np.array(text.split(), dtype=np.int64)
    except ValueError:
        raise ValueError("mask RLE is not a list of integers") from None
    if len(values) % 2:
        raise ValueError("mask RLE has an odd number of values")
    starts, lengths = values[0::2], values[1::2]
    if mode == "relative":
        starts = np.cumsum(starts + lengths) - lengths  # each start counts from the end of the previous run
    else:
        starts = starts - 1
    ends = starts + lengths
    if (starts < 0).any() or (lengths < 0).any() or (ends > height * width).any():
        raise ValueError(f"mask RLE runs outside a {height}x{width} image")
    edges = np.zeros(height * width + 1, dtype=np.int32)
    np.add.at(edges, starts, 1)
    np.add.at(edges, ends, -1)
    flat = np.cumsum(edges[:-1]) > 0
    return flat.reshape(width, height).T  # column-major: flat index = x * height + y


def _key(uid: str) -> str:
    return uid[:-4] if uid.lower().endswith(".dcm") else uid


def _image(root: Path, uid: str) -> Path | None:
    for folder in (root / "dataset", root):
        for name in (uid, f"{uid}.dcm"):
            if (folder / name).is_file():
                return folder / name
    return None


def _ptx_first_pass(path: Path, chunk_rows: int) -> dict[str, int]:
    """image -> pneumothorax code (1 if any of its rows has an outline)."""
    ptx: dict[str, int] = {}
    for chunk in read_csv_chunks(path, chunk_rows, usecols=["SOPInstanceUID", "EncodedPixels"]):
        for uid, rle in zip(column(chunk, "SOPInstanceUID"), column(chunk, "EncodedPixels")):
            key = _key(uid)
            ptx[key] = max(ptx.get(key, 0), int(rle not in ("", "-1")))
    return ptx


def _ids_with_mask(path: Path, chunk_rows: int) -> set[str]:
    csv_columns(path, required=("anon_SOPUID", "mask_rle"))
    ids: set[str] = set()
    for chunk in read_csv_chunks(path, chunk_rows, usecols=["anon_SOPUID", "mask_rle"]):
        ids.update(_key(u) for u, r in zip(column(chunk, "anon_SOPUID"), column(chunk, "mask_rle"))
                   if r not in ("", "-1"))
    return ids


def _write_tube_masks(path: Path, root: Path, masks: Path, rle: str, chunk_rows: int,
                      writer: ManifestWriter) -> set[str]:
    """Chest-tube masks; returns the images that have one."""
    csv_columns(path, required=("anon_SOPUID", "mask_rle"))
    tubes: set[str] = set()
    for chunk in read_csv_chunks(path, chunk_rows, usecols=["anon_SOPUID", "mask_rle"]):
        frame = pd.DataFrame({"uid": [_key(u) for u in column(chunk, "anon_SOPUID")],
                              "rle": column(chunk, "mask_rle")})
        for uid, rows in frame.groupby("uid", sort=False):
            runs = [r for r in rows["rle"] if r not in ("", "-1")]
            if not runs:
                continue
            tubes.add(uid)
            image = _image(root, uid)
            header = read_dicom_header(image) if image is not None else None
            height = int(header.get("Rows") or 0) if header is not None else 0
            width = int(header.get("Columns") or 0) if header is not None else 0
            if not height or not width:
                writer.skip("chest-tube mask for a missing or unreadable DICOM", len(runs))
                continue
            target = masks / f"{uid}.png"
            is_new, mask = not target.exists(), load_mask(target, (width, height))
            drawn = 0
            for run in runs:
                try:
                    mask |= decode_rle(run, height, width, rle).astype(np.uint8) << np.uint8(CHEST_TUBE_BIT)
                    drawn += 1
                except ValueError:
                    writer.skip("bad chest-tube mask RLE")
            if drawn:
                save_mask(target, mask)
                writer.masks_written += int(is_new)
    return tubes


def import_candid_ptx(root: Path, out: Path, *, rle: str = "relative", masks_dir: Path | None = None,
                      check_files: bool = True, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ImportSummary:
    """Import CANDID-PTX; `rle` is the run-length convention of the mask columns (see module doc)."""
    root = Path(root).expanduser().resolve()
    if rle not in RLE_MODES:
        raise RadscaleError(f"candid-ptx: rle must be one of {RLE_MODES}, got {rle!r}")
    reports = require_file(root, "Pneumothorax_reports.csv", what="CANDID-PTX Pneumothorax_reports.csv")
    names = csv_columns(reports, required=("SOPInstanceUID", "EncodedPixels"))
    tube_csv, fracture_csv = find_file(root, "chest_tube.csv"), find_file(root, "acute_rib_fracture.csv")
    labels = ("fracture",) * bool(fracture_csv) + ("pneumothorax",) + ("support_devices",) * bool(tube_csv)
    labels += ("chest_tube_present",) * bool(tube_csv)
    masks = prepare_masks_dir(Path(out), masks_dir) if tube_csv else None
    ptx = _ptx_first_pass(reports, chunk_rows)
    fractures = _ids_with_mask(fracture_csv, chunk_rows) if fracture_csv else set()
    columns = ManifestColumns(labels, EXTRAS, report=True, masks=bool(tube_csv))
    with ManifestWriter(out, SOURCE, columns) as writer:
        tubes = _write_tube_masks(tube_csv, root, masks, rle, chunk_rows, writer) if tube_csv else set()
        wanted = [c for c in ("SOPInstanceUID", "filename", "Report") if c in names]
        for chunk in read_csv_chunks(reports, chunk_rows, usecols=wanted):
            rows = []
            for uid, filename, report in zip(*(column(chunk, c) for c in ("SOPInstanceUID", "filename", "Report"))):
                key = _key(uid)
                if key not in ptx:
                    continue  # a further outline row of an image already written
                code = ptx.pop(key)
                image = _image(root, key)
                if image is None and check_files:
                    writer.skip("image file not found")
                    continue
                header = read_dicom_header(image) if image is not None else None
                match = _PATIENT.match(filename)
                has_mask = masks is not None and (masks / f"{key}.png").exists()
                rows.append({
                    "image_id": key, "patient_id": match.group(1) if match else dicom_str(header, "PatientID") or key,
                    "study_id": dicom_str(header, "StudyInstanceUID") or key,
                    "uri": str(image or root / "dataset" / f"{key}.dcm"), "view": dicom_str(header, "ViewPosition"),
                    "report": report, "pneumothorax": code, "fracture": 1 if key in fractures else None,
                    "chest_tube_present": int(key in tubes), "support_devices": 1 if key in tubes else None,
                    "mask_uri": str(masks / f"{key}.png") if has_mask else None,
                    "mask_devices": "chest_tube" if has_mask else None,
                    "sop_instance_uid": uid, "filename": filename,
                })
            if rows:
                writer.write({name: [r[name] for r in rows] for name in writer.schema.names if name != "source"})
        return writer.finish()
