"""RANZCR CLiP importer (DATA.md "RANZCR CLiP"): lines-and-tubes labels plus rasterised line masks.

Layout: `<root>/train.csv` = `StudyInstanceUID`, the 11 labels (0/1), `PatientID`; `<root>/train_annotations.csv`
= `StudyInstanceUID,label,data` with `data` a JSON list of [x, y] pixel points along one line; images at
`<root>/train/<StudyInstanceUID>.jpg`.

Labels map 1:1 onto TUBES (`RANZCR_LABELS`); every image has a 0/1 decision on all 11. support_devices is set to 1
where any tube label is positive and left null otherwise (RANZCR says nothing about other devices, e.g. pacemakers).

Masks: each annotated line is drawn with PIL (width `line_width` px; None = max(1, round(short side / 128)), about
3 mm on a 3000-px film) into bit k of a uint8 PNG the size of its image, k = DEVICE_TYPES.index(device), the device
taken from the label prefix (ETT, NGT, CVC, Swan Ganz). One `<uid>.png` per annotated image goes to `masks_dir`
(default `<manifest stem>-masks/` next to the manifest); `mask_uri` points to it and `mask_devices` names the bits
the source annotates. Images without annotations keep mask_uri null (unknown, not empty). Annotations are streamed
in chunks; an image whose lines span two chunks has its mask re-opened and OR-ed.

Ids: image_id = study_id = StudyInstanceUID (one image per study), patient_id = PatientID.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image, ImageDraw

from radscale.data.importers.base import (
    DEFAULT_CHUNK_ROWS, NULL, ImportSummary, ManifestColumns, ManifestWriter, column, csv_columns, existing,
    load_mask, parse_codes, prepare_masks_dir, read_csv_chunks, require_file, save_mask, select,
)
from radscale.data.vocab import DEVICE_TYPES, TUBES
from radscale.errors import RadscaleError

SOURCE = "ranzcr-clip"
RANZCR_LABELS: dict[str, str] = {
    "ETT - Abnormal": "ett_abnormal", "ETT - Borderline": "ett_borderline", "ETT - Normal": "ett_normal",
    "NGT - Abnormal": "ngt_abnormal", "NGT - Borderline": "ngt_borderline",
    "NGT - Incompletely Imaged": "ngt_incompletely_imaged", "NGT - Normal": "ngt_normal",
    "CVC - Abnormal": "cvc_abnormal", "CVC - Borderline": "cvc_borderline", "CVC - Normal": "cvc_normal",
    "Swan Ganz Catheter Present": "swan_ganz_present",
}
DEVICE_PREFIXES = (("ETT", "ett"), ("NGT", "ngt"), ("CVC", "cvc"), ("Swan Ganz", "swan_ganz"))
MASK_DEVICES = ",".join(d for _, d in DEVICE_PREFIXES)
LABELS = tuple(t for t in TUBES if t in RANZCR_LABELS.values()) + ("support_devices",)
EXTRAS = (("source_split", pa.string()),)


def parse_points(text: str) -> list[tuple[float, float]] | None:
    """A RANZCR `data` cell -> [(x, y), ...]; None unless it is a non-empty list of finite [x, y] pairs."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list) or not value:
        return None
    points = []
    for p in value:
        if not (isinstance(p, (list, tuple)) and len(p) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p)):
            return None
        points.append((float(p[0]), float(p[1])))
    return points


def device_of(label: str) -> str | None:
    return next((device for prefix, device in DEVICE_PREFIXES if label.strip().startswith(prefix)), None)


def draw_line(mask: np.ndarray, points: list[tuple[float, float]], bit: int, width: int) -> None:
    """OR one polyline (pixel coordinates, x right / y down) into bit `bit` of `mask` (in place)."""
    layer = Image.new("L", (mask.shape[1], mask.shape[0]), 0)
    draw = ImageDraw.Draw(layer)
    if len(points) == 1:
        (x, y), r = points[0], width / 2
        draw.ellipse([x - r, y - r, x + r, y + r], fill=1)
    else:
        draw.line(points, fill=1, width=width, joint="curve")
    mask |= np.asarray(layer, dtype=np.uint8) << np.uint8(bit)


def _auto_width(size: tuple[int, int]) -> int:
    return max(1, round(min(size) / 128))


def _write_masks(path: Path, root: Path, masks: Path, line_width: int | None, chunk_rows: int,
                 writer: ManifestWriter) -> None:
    csv_columns(path, required=("StudyInstanceUID", "label", "data"))
    for chunk in read_csv_chunks(path, chunk_rows):
        frame = pd.DataFrame({c: column(chunk, c) for c in ("StudyInstanceUID", "label", "data")})
        for uid, rows in frame.groupby("StudyInstanceUID", sort=False):
            image = root / "train" / f"{uid}.jpg"
            if not uid or not image.is_file():
                writer.skip("annotation for a missing image", len(rows))
                continue
            try:
                with Image.open(image) as img:
                    size = img.size
            except (OSError, ValueError, SyntaxError):   # the image row stays; decoding quarantines it later
                writer.skip("annotation for an unreadable image", len(rows))
                continue
            target = masks / f"{uid}.png"
            is_new = not target.exists()
            mask, drawn = load_mask(target, size), 0
            width = line_width or _auto_width(size)
            for label, data in zip(rows["label"], rows["data"]):
                device, points = device_of(label), parse_points(data)
                if device is None:
                    writer.skip("unknown annotation label")
                elif points is None:
                    writer.skip("bad annotation data")
                else:
                    draw_line(mask, points, DEVICE_TYPES.index(device), width)
                    drawn += 1
            if drawn:
                save_mask(target, mask)
                writer.masks_written += int(is_new)


def import_ranzcr(root: Path, out: Path, *, line_width: int | None = None, masks_dir: Path | None = None,
                  check_files: bool = True, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ImportSummary:
    """Import RANZCR CLiP train.csv and rasterise train_annotations.csv (if present) into device masks."""
    root = Path(root).expanduser().resolve()
    if line_width is not None and int(line_width) < 1:
        raise RadscaleError(f"ranzcr: line_width must be >= 1 pixel, got {line_width}")
    labels_csv = require_file(root, "train.csv", what="RANZCR CLiP train.csv")
    csv_columns(labels_csv, required=("StudyInstanceUID", "PatientID", *RANZCR_LABELS))
    annotations = root / "train_annotations.csv"
    masks = prepare_masks_dir(Path(out), masks_dir)
    columns = ManifestColumns(LABELS, EXTRAS, masks=True)
    with ManifestWriter(out, SOURCE, columns) as writer:
        if annotations.is_file():
            _write_masks(annotations, root, masks, None if line_width is None else int(line_width), chunk_rows,
                         writer)
        for chunk in read_csv_chunks(labels_csv, chunk_rows):
            uid = column(chunk, "StudyInstanceUID")
            uri = np.array([str(root / "train" / f"{u}.jpg") for u in uid], dtype=object)
            bad = np.zeros(len(chunk), bool)
            data: dict[str, object] = {"image_id": uid, "patient_id": column(chunk, "PatientID"), "study_id": uid,
                                       "uri": uri, "source_split": "train"}
            for src, target in RANZCR_LABELS.items():
                data[target], wrong = parse_codes(chunk[src])
                bad |= wrong | (data[target] == -1) | (data[target] == NULL)
            any_tube = np.any([data[t] == 1 for t in RANZCR_LABELS.values()], axis=0)
            data["support_devices"] = np.where(any_tube, 1, NULL).astype(np.int8)
            mask_paths = [str(masks / f"{u}.png") for u in uid]
            has_mask = existing(mask_paths)
            data["mask_uri"] = np.where(has_mask, np.array(mask_paths, dtype=object), None)
            data["mask_devices"] = np.where(has_mask, MASK_DEVICES, None).astype(object)
            writer.skip("bad label value", int(bad.sum()))
            keep = ~bad
            if check_files:
                found = existing(uri) | ~keep
                writer.skip("image file not found", int((~found).sum()))
                keep &= found
            writer.write(select(data, keep))
        return writer.finish()
