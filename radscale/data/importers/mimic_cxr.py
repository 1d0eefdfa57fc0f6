"""MIMIC-CXR-JPG importer (DATA.md "MIMIC-CXR-JPG").

Layout under `root`: `mimic-cxr-2.0.0-metadata.csv[.gz]` (one row per image), `-chexpert.csv` / `-negbio.csv`
(one row per *study*: `subject_id,study_id` + the 14 CheXpert labels), `-split.csv` (`dicom_id,study_id,
subject_id,split`), images at `files/p<first two digits of subject>/p<subject>/s<study>/<dicom_id>.jpg`.
Reports come from MIMIC-CXR proper: `<reports_root>/files/pXX/p<subject>/s<study>.txt` (reports_root defaults to
root); present ones fill `report`, absent ones leave it null.

Ids are the source's: image_id = dicom_id, patient_id = subject_id, study_id = study_id; dicom_id and subject_id
are kept again under their own names and the official split (train/validate/test) as `source_split`.

`labels`: "chexpert" (default) or "negbio" read that study CSV (1.0/0.0/-1.0/blank is the radscale convention,
"No Finding" goes to the extra column `no_finding`; a study absent from it gets null labels); "reports" labels
the report text with radscale's rule labeler (every vocabulary label, tube positions included); "none" writes no
label columns. A study row with a value outside the convention skips that study's images.

Memory: the study label table (~230k studies x 14 int8) and subject -> split (~65k patients; the official split
is patient-disjoint) are held; the metadata CSV is streamed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from radscale.data.importers.base import (
    DEFAULT_CHUNK_ROWS, NULL, ImportSummary, ManifestColumns, ManifestWriter, column, csv_columns, existing,
    label_reports, read_csv_chunks, read_text, require_file, find_file, select,
)
from radscale.data.importers.chexpert import LABELS as CHEXPERT_FINDINGS, chexpert_codes
from radscale.data.vocab import DEFAULT_VOCABULARY
from radscale.errors import RadscaleError

SOURCE = "mimic-cxr-jpg"
PREFIX = "mimic-cxr-2.0.0"
LABEL_SOURCES = ("chexpert", "negbio", "reports", "none")
EXTRAS = (("dicom_id", pa.string()), ("subject_id", pa.string()), ("study_date", pa.string()),
          ("procedure", pa.string()), ("source_split", pa.string()))


class StudyLabels:
    """study_id -> CheXpert codes (13 findings + No Finding) from a per-study label CSV."""

    def __init__(self, path: Path, chunk_rows: int):
        csv_columns(path, required=("study_id",))
        self.index: dict[str, int] = {}
        blocks, bad = [], []
        for chunk in read_csv_chunks(path, chunk_rows):
            codes, no_finding, wrong = chexpert_codes(chunk)
            offset = sum(len(b) for b in blocks)
            blocks.append(np.stack([codes[t] for t in CHEXPERT_FINDINGS] + [no_finding], axis=1))
            bad.append(wrong)
            for i, study in enumerate(column(chunk, "study_id")):
                self.index[study] = offset + i
        width = len(CHEXPERT_FINDINGS) + 1
        self.codes = np.concatenate(blocks) if blocks else np.zeros((0, width), np.int8)
        self.bad = np.concatenate(bad) if bad else np.zeros(0, bool)

    def lookup(self, studies: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Per image: label columns (NULL for unlabelled studies) and whether its study row was bad."""
        idx = np.fromiter((self.index.get(s, -1) for s in studies), dtype=np.int64, count=len(studies))
        found = idx >= 0
        rows = np.full((len(studies), self.codes.shape[1]), NULL, np.int8)
        rows[found] = self.codes[idx[found]]
        bad = np.zeros(len(studies), bool)
        bad[found] = self.bad[idx[found]]
        out = {t: rows[:, j] for j, t in enumerate(CHEXPERT_FINDINGS)}
        out["no_finding"] = rows[:, -1]
        return out, bad


def _splits(root: Path, chunk_rows: int) -> dict[str, str]:
    path = find_file(root, f"{PREFIX}-split.csv")
    if path is None:
        return {}
    csv_columns(path, required=("subject_id", "split"))
    split: dict[str, str] = {}
    for chunk in read_csv_chunks(path, chunk_rows, usecols=["subject_id", "split"]):
        split.update(zip(column(chunk, "subject_id"), column(chunk, "split")))
    return split


def import_mimic_cxr(root: Path, out: Path, *, labels: str = "chexpert", reports_root: Path | None = None,
                     check_files: bool = True, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ImportSummary:
    """Import MIMIC-CXR-JPG; see the module docstring for `labels` and `reports_root`."""
    root = Path(root).expanduser().resolve()
    if labels not in LABEL_SOURCES:
        raise RadscaleError(f"mimic-cxr: labels must be one of {LABEL_SOURCES}, got {labels!r}")
    metadata = require_file(root, f"{PREFIX}-metadata.csv", what="MIMIC-CXR-JPG metadata CSV")
    csv_columns(metadata, required=("dicom_id", "subject_id", "study_id"))
    study_labels = None
    if labels in ("chexpert", "negbio"):
        study_labels = StudyLabels(require_file(root, f"{PREFIX}-{labels}.csv", what=f"{labels} label CSV"),
                                   chunk_rows)
    label_names = {"chexpert": CHEXPERT_FINDINGS, "negbio": CHEXPERT_FINDINGS, "reports": DEFAULT_VOCABULARY.labels,
                   "none": ()}[labels]
    extras = EXTRAS + ((("no_finding", pa.int8()),) if study_labels is not None else ())
    splits = _splits(root, chunk_rows)
    reports = Path(reports_root) if reports_root is not None else root
    labeler = None
    if labels == "reports":
        from radscale.data.labels.rules import RuleLabeler

        labeler = RuleLabeler(DEFAULT_VOCABULARY)
    with ManifestWriter(out, SOURCE, ManifestColumns(label_names, extras, report=True)) as writer:
        for chunk in read_csv_chunks(metadata, chunk_rows):
            dicom, subject, study = column(chunk, "dicom_id"), column(chunk, "subject_id"), column(chunk, "study_id")
            uri = np.array([str(root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}" / f"{d}.jpg")
                            for d, s, st in zip(dicom, subject, study)], dtype=object)
            data: dict[str, object] = {
                "image_id": dicom, "patient_id": subject, "study_id": study, "uri": uri,
                "view": column(chunk, "ViewPosition"), "dicom_id": dicom, "subject_id": subject,
                "study_date": column(chunk, "StudyDate"),
                "procedure": column(chunk, "PerformedProcedureStepDescription"),
                "source_split": np.array([splits.get(s, "") for s in subject], dtype=object),
            }
            keep = np.ones(len(chunk), bool)
            if study_labels is not None:
                codes, bad = study_labels.lookup(study)
                data.update(codes)
                writer.skip("bad label value", int(bad.sum()))
                keep &= ~bad
            if check_files:
                found = existing(uri) | ~keep
                writer.skip("image file not found", int((~found).sum()))
                keep &= found
            data = select(data, keep)
            texts: dict[tuple[str, str], str | None] = {}
            for s, st in zip(data["subject_id"], data["study_id"]):
                if (s, st) not in texts:
                    texts[(s, st)] = read_text(reports / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}.txt")
            data["report"] = [texts[(s, st)] for s, st in zip(data["subject_id"], data["study_id"])]
            if labeler is not None:
                data.update(label_reports(data["image_id"], data["report"], DEFAULT_VOCABULARY, labeler))
            writer.write(data)
        return writer.finish()
