"""VinDr-CXR importer (DATA.md "VinDr-CXR"); DICOMs (`.dicom`), decoded later by radscale.data.dicom.

Two layouts (`variant="auto"` picks by the files present):
- PhysioNet: `[annotations/]image_labels_train.csv` = `image_id, rad_id` (or `rad_ID`) + 28 binary labels, one row
  per reader (3 per training image); `image_labels_test.csv` = the 5-reader consensus, one row per image. Images at
  `<root>/train/<image_id>.dicom` and `<root>/test/<image_id>.dicom`.
- Kaggle (VinBigData): `train.csv` = `image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max`, one row per box
  (a reader may draw several), class 14 "No finding" marks a reader who found nothing. Images at
  `<root>/train/<image_id>.dicom`. Boxes are not imported.

Reader aggregation (`readers`), per image and source label with k of n readers positive:
  "majority" (default): 1 if 2k > n else 0 (2 of 3 readers);  "any": 1 if k >= 1 else 0;
  "uncertain": 1 if 2k > n, -1 if a minority (0 < 2k <= n), 0 if none.
A consensus row (test) is one reader. Each reader labels every class, so no positive is a 0.

Mapping (`VINDR_LABELS`): several VinDr labels may feed one finding (Rib/Clavicle fracture -> fracture,
Infiltration/Lung Opacity -> lung_opacity, Nodule/Mass/Lung tumor -> lung_lesion; Nodule/Mass is one class, so it
cannot be split into nodule vs mass). Aortic enlargement, Enlarged PA, ILD, Lung cavity, Lung cyst, Mediastinal
shift, Other lesion, COPD, Tuberculosis, Other disease(s) and No finding are not mapped.

VinDr has no patient ids (de-identified without linkage): patient_id = study_id = image_id, so a patient-level
split is an image-level one. Memory: readers' votes per image are held until the file ends (rows are not grouped
by image); VinDr has ~18k images, each its own "patient".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from radscale.data.importers.base import (
    DEFAULT_CHUNK_ROWS, ImportSummary, ManifestColumns, ManifestWriter, codes_from_columns, column, csv_columns,
    existing, find_file, label_targets, parse_codes, read_csv_chunks,
)
from radscale.data.vocab import FINDINGS
from radscale.errors import RadscaleError

SOURCE = "vindr-cxr"
VINDR_LABELS: dict[str, str] = {
    "Atelectasis": "atelectasis", "Calcification": "calcification", "Cardiomegaly": "cardiomegaly",
    "Clavicle fracture": "fracture", "Rib fracture": "fracture", "Consolidation": "consolidation",
    "Edema": "edema", "Emphysema": "emphysema", "Infiltration": "lung_opacity", "Lung Opacity": "lung_opacity",
    "Nodule/Mass": "lung_lesion", "Lung tumor": "lung_lesion", "Pleural effusion": "pleural_effusion",
    "Pleural thickening": "pleural_other", "Pneumothorax": "pneumothorax", "Pulmonary fibrosis": "fibrosis",
    "Pneumonia": "pneumonia",
}
KAGGLE_CLASSES = ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
                  "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
                  "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "No finding")
POLICIES = ("majority", "any", "uncertain")
VARIANTS = ("auto", "physionet", "kaggle")
EXTRAS = (("readers", pa.int8()), ("source_split", pa.string()))
_BY_LOWER = {k.lower(): k for k in VINDR_LABELS}


def aggregate(positive: np.ndarray, readers: int, policy: str) -> np.ndarray:
    """k positive readers (per label) of n -> one int8 code per label under `policy`."""
    majority = 2 * positive > readers
    if policy == "any":
        return (positive > 0).astype(np.int8)
    if policy == "uncertain":
        return np.where(majority, 1, np.where(positive > 0, -1, 0)).astype(np.int8)
    return majority.astype(np.int8)


class _Votes:
    """image_id -> reader -> bool vector over `sources` (a reader's duplicate rows or boxes count once)."""

    def __init__(self, sources: list[str]):
        self.sources = sources
        self.images: dict[str, dict[str, np.ndarray]] = {}

    def add(self, image: str, reader: str, positive: np.ndarray) -> None:
        votes = self.images.setdefault(image, {})
        votes[reader] = votes.get(reader, np.zeros(len(self.sources), bool)) | positive


def _physionet_votes(path: Path, chunk_rows: int, writer: ManifestWriter) -> _Votes:
    names = csv_columns(path, required=("image_id",))
    reader_col = next((c for c in names if c.lower() == "rad_id"), None)
    sources = [c for c in names if c.lower() in _BY_LOWER]
    votes = _Votes([_BY_LOWER[c.lower()] for c in sources])
    for start, chunk in enumerate(read_csv_chunks(path, chunk_rows)):
        coded = [parse_codes(chunk[c]) for c in sources]
        bad = np.any([b | (c == -1) for c, b in coded], axis=0) if coded else np.zeros(len(chunk), bool)
        matrix = np.stack([c == 1 for c, _ in coded], axis=1) if coded else np.zeros((len(chunk), 0), bool)
        readers = column(chunk, reader_col) if reader_col else [f"row{start}-{i}" for i in range(len(chunk))]
        writer.skip("bad label value", int(bad.sum()))
        for image, reader, row, is_bad in zip(column(chunk, "image_id"), readers, matrix, bad):
            if not is_bad:
                votes.add(image, reader, row)
    return votes


def _kaggle_votes(path: Path, chunk_rows: int, writer: ManifestWriter) -> _Votes:
    csv_columns(path, required=("image_id", "class_name", "rad_id"))
    sources = [c for c in KAGGLE_CLASSES if c in VINDR_LABELS]
    votes, index = _Votes(sources), {c.lower(): i for i, c in enumerate(sources)}
    known = {c.lower() for c in KAGGLE_CLASSES}
    for chunk in read_csv_chunks(path, chunk_rows, usecols=["image_id", "class_name", "rad_id"]):
        for image, name, reader in zip(*(column(chunk, c) for c in ("image_id", "class_name", "rad_id"))):
            if name.lower() not in known:
                writer.skip("unknown class_name")
                continue
            positive = np.zeros(len(sources), bool)
            if name.lower() in index:
                positive[index[name.lower()]] = True
            votes.add(image, reader, positive)
    return votes


def _image_path(root: Path, split: str, image: str, check_files: bool) -> str | None:
    for ext in (".dicom", ".dcm"):
        path = root / split / f"{image}{ext}"
        if not check_files:
            return str(path)
        if existing([str(path)])[0]:
            return str(path)
    return None


def _write_votes(writer: ManifestWriter, votes: _Votes, root: Path, split: str, policy: str, check_files: bool,
                 chunk_rows: int) -> None:
    images = sorted(votes.images)
    for start in range(0, len(images), chunk_rows):
        batch = images[start:start + chunk_rows]
        uris = [_image_path(root, split, image, check_files) for image in batch]
        keep = [u is not None for u in uris]
        writer.skip("image file not found", len(batch) - sum(keep))
        batch = [b for b, k in zip(batch, keep) if k]
        decided = [aggregate(np.sum(list(votes.images[i].values()), axis=0), len(votes.images[i]), policy)
                   for i in batch]
        matrix = np.array(decided, dtype=np.int8).reshape(len(batch), len(votes.sources))
        sources = {s: matrix[:, j] for j, s in enumerate(votes.sources)}
        ids = np.array(batch, dtype=object)
        writer.write({"image_id": ids, "patient_id": ids, "study_id": ids, "uri": [u for u in uris if u],
                      **codes_from_columns(sources, VINDR_LABELS, writer.columns.labels, len(batch)),
                      "readers": [len(votes.images[i]) for i in batch], "source_split": split})


def import_vindr(root: Path, out: Path, *, readers: str = "majority", variant: str = "auto",
                 check_files: bool = True, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ImportSummary:
    """Import VinDr-CXR; `readers` is the reader aggregation policy, `variant` the layout (see module doc)."""
    root = Path(root).expanduser().resolve()
    if readers not in POLICIES:
        raise RadscaleError(f"vindr: readers must be one of {POLICIES}, got {readers!r}")
    if variant not in VARIANTS:
        raise RadscaleError(f"vindr: variant must be one of {VARIANTS}, got {variant!r}")
    files = {split: find_file(root / "annotations", f"image_labels_{split}.csv")
             or find_file(root, f"image_labels_{split}.csv") for split in ("train", "test")}
    kaggle = find_file(root, "train.csv")
    if variant == "auto":
        variant = "physionet" if any(files.values()) else "kaggle"
    if variant == "kaggle" and kaggle is None or variant == "physionet" and not any(files.values()):
        raise RadscaleError(f"{root}: no VinDr-CXR labels found (image_labels_train.csv / image_labels_test.csv, "
                            f"or Kaggle train.csv)")
    if variant == "kaggle":
        sources = [c for c in KAGGLE_CLASSES if c in VINDR_LABELS]
    else:
        header = set()
        for path in (p for p in files.values() if p):
            header |= {c.lower() for c in csv_columns(path)}
        sources = [s for s in VINDR_LABELS if s.lower() in header]
    labels = label_targets({s: VINDR_LABELS[s] for s in sources}, FINDINGS)
    with ManifestWriter(out, SOURCE, ManifestColumns(labels, EXTRAS)) as writer:
        if variant == "kaggle":
            _write_votes(writer, _kaggle_votes(kaggle, chunk_rows, writer), root, "train", readers, check_files,
                         chunk_rows)
        for split, path in files.items():
            if variant == "physionet" and path is not None:
                _write_votes(writer, _physionet_votes(path, chunk_rows, writer), root, split, readers, check_files,
                             chunk_rows)
        return writer.finish()
