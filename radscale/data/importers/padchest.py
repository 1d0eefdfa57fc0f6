"""PadChest importer (DATA.md "PadChest").

Layout: one CSV `PADCHEST_chest_x_ray_images_labels_160K*.csv[.gz]` (or `csv=`) with `ImageID, ImageDir, StudyID,
PatientID, ..., Projection, ..., Report, MethodLabel, Labels, ...`; 16-bit PNGs at `<root>/<ImageDir>/<ImageID>`
(falling back to `<root>/<ImageID>` for a flattened copy). The Spanish `Report` fills `report`.

`Labels` is a Python-list string ("['pleural effusion', 'NSG tube']"). It is parsed with `ast.literal_eval`
(literals only: nothing in the cell is ever executed), capped in length, and must be a list of strings; anything
else skips the row. Terms are compared lower-cased and stripped. A blank cell means the row has no labels (all
null).

Label convention: PadChest lists the findings a report states; its taxonomy covers every finding it reports, so by
default an absent mapped term is 0 (`absent_negative=True`, like NIH); with False it is null (unmentioned).
Mapping (`PADCHEST_LABELS`, a documented subset; unmapped terms such as "normal", "kyphosis", "suboptimal study"
are ignored): see the dict below. Devices: "NSG tube" -> ngt_present, "endotracheal tube" -> ett_present, the
central venous catheter terms -> cvc_present, "chest drain tube" -> chest_tube_present, and every line, tube,
catheter, cardiac device and valve -> support_devices. PadChest does not say where a tube tip lies, so the
position labels (ett_normal, ngt_abnormal, ...) are not written: absent columns read as null for every row.

Ids verbatim: image_id = ImageID, patient_id = PatientID, study_id = StudyID; view = Projection.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from radscale.data.importers.base import (
    DEFAULT_CHUNK_ROWS, NULL, ImportSummary, ManifestColumns, ManifestWriter, codes_from_sets, column,
    csv_columns, existing, label_targets, read_csv_chunks, select,
)
from radscale.data.vocab import FINDINGS
from radscale.errors import RadscaleError

SOURCE = "padchest"
MAX_LABELS_CHARS = 4000  # the longest real cell is a few hundred characters; longer ones are refused unparsed
_SUPPORT = "support_devices"
_CVC = ("cvc_present", _SUPPORT)
PADCHEST_LABELS: dict[str, str | tuple[str, ...]] = {
    "atelectasis": "atelectasis", "laminar atelectasis": "atelectasis", "segmental atelectasis": "atelectasis",
    "lobar atelectasis": "atelectasis", "atelectasis basal": "atelectasis", "round atelectasis": "atelectasis",
    "total atelectasis": "atelectasis",
    "cardiomegaly": "cardiomegaly",
    "consolidation": "consolidation",
    "pulmonary edema": "edema",
    "mediastinal enlargement": "enlarged_cardiomediastinum",
    "superior mediastinal enlargement": "enlarged_cardiomediastinum",
    "fracture": "fracture", "rib fracture": "fracture", "clavicle fracture": "fracture",
    "humeral fracture": "fracture", "vertebral fracture": "fracture", "callus rib fracture": "fracture",
    "nodule": ("nodule", "lung_lesion"), "multiple nodules": ("nodule", "lung_lesion"),
    "mass": ("mass", "lung_lesion"), "pulmonary mass": ("mass", "lung_lesion"), "lung metastasis": "lung_lesion",
    "infiltrates": "lung_opacity", "alveolar pattern": "lung_opacity", "interstitial pattern": "lung_opacity",
    "ground glass pattern": "lung_opacity", "reticular interstitial pattern": "lung_opacity",
    "reticulonodular interstitial pattern": "lung_opacity", "increased density": "lung_opacity",
    "air bronchogram": "lung_opacity", "miliary opacities": "lung_opacity",
    "pleural effusion": "pleural_effusion", "loculated pleural effusion": "pleural_effusion",
    "loculated fissural effusion": "pleural_effusion", "empyema": "pleural_effusion",
    "hydropneumothorax": ("pleural_effusion", "pneumothorax"),
    "pleural thickening": "pleural_other", "apical pleural thickening": "pleural_other",
    "calcified pleural thickening": ("pleural_other", "calcification"), "pleural plaques": "pleural_other",
    "calcified pleural plaques": ("pleural_other", "calcification"),
    "pneumonia": "pneumonia", "atypical pneumonia": "pneumonia",
    "pneumothorax": "pneumothorax",
    "emphysema": "emphysema",  # not "subcutaneous emphysema" (soft tissue)
    "pulmonary fibrosis": "fibrosis",
    "hiatal hernia": "hernia",
    "calcified granuloma": "calcification", "calcified densities": "calcification",
    "calcified adenopathy": "calcification", "calcified mediastinal adenopathy": "calcification",
    "heart valve calcified": "calcification", "aortic atheromatosis": "calcification",
    "nsg tube": ("ngt_present", _SUPPORT),
    "endotracheal tube": ("ett_present", _SUPPORT),
    "central venous catheter": _CVC, "central venous catheter via jugular vein": _CVC,
    "central venous catheter via subclavian vein": _CVC, "central venous catheter via umbilical vein": _CVC,
    "reservoir central venous catheter": _CVC,
    "chest drain tube": ("chest_tube_present", _SUPPORT),
    "tracheostomy tube": _SUPPORT, "catheter": _SUPPORT, "pacemaker": _SUPPORT, "single chamber device": _SUPPORT,
    "dual chamber device": _SUPPORT, "electrical device": _SUPPORT, "ventriculoperitoneal drain tube": _SUPPORT,
    "gastrostomy tube": _SUPPORT, "artificial heart valve": _SUPPORT, "artificial mitral heart valve": _SUPPORT,
    "artificial aortic heart valve": _SUPPORT,
}
DEVICE_PRESENT = ("ett_present", "ngt_present", "cvc_present", "chest_tube_present")
LABELS = label_targets(PADCHEST_LABELS, FINDINGS + DEVICE_PRESENT)
EXTRAS = (("image_dir", pa.string()), ("patient_sex", pa.string()), ("patient_birth", pa.string()),
          ("study_date", pa.string()), ("report_id", pa.string()), ("method_label", pa.string()))
_REQUIRED = ("ImageID", "ImageDir", "StudyID", "PatientID", "Labels")


def parse_label_list(text: str) -> list[str] | None:
    """Terms of one `Labels` cell, lower-cased; [] for a blank cell; None when it is not a list of strings."""
    text = text.strip()
    if not text or text.lower() == "nan":
        return []
    if len(text) > MAX_LABELS_CHARS or not text.startswith("["):
        return None
    try:
        value = ast.literal_eval(text)  # parses literals only; never eval()
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return None
    return [v.strip().lower() for v in value if v.strip()]


def import_padchest(root: Path, out: Path, *, csv: str | None = None, absent_negative: bool = True,
                    check_files: bool = True, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ImportSummary:
    """Import PadChest; `absent_negative` chooses 0 (default) or null for mapped terms a row does not list."""
    root = Path(root).expanduser().resolve()
    path = root / csv if csv else next(iter(sorted(root.glob("PADCHEST_chest_x_ray_images_labels_*.csv*"))), None)
    if path is None or not path.is_file():
        wanted = csv or "PADCHEST_chest_x_ray_images_labels_*.csv"
        raise RadscaleError(f"{root}: PadChest CSV not found (looked for {wanted})")
    csv_columns(path, required=_REQUIRED)
    absent = 0 if absent_negative else int(NULL)
    with ManifestWriter(out, SOURCE, ManifestColumns(LABELS, EXTRAS, report=True)) as writer:
        for chunk in read_csv_chunks(path, chunk_rows):
            _write_chunk(writer, chunk, root, absent, check_files)
        return writer.finish()


def _write_chunk(writer: ManifestWriter, chunk: pd.DataFrame, root: Path, absent: int, check_files: bool) -> None:
    image, image_dir = column(chunk, "ImageID"), column(chunk, "ImageDir")
    parsed = [parse_label_list(t) for t in column(chunk, "Labels")]
    bad = np.array([p is None for p in parsed], dtype=bool)
    terms = [p if p else None for p in parsed]  # blank (or unparsable) -> no labels
    uri = np.array([str(root / d / i) for d, i in zip(image_dir, image)], dtype=object)
    data = {
        "image_id": image, "patient_id": column(chunk, "PatientID"), "study_id": column(chunk, "StudyID"),
        "uri": uri, "view": column(chunk, "Projection"), "report": column(chunk, "Report"),
        **codes_from_sets(terms, PADCHEST_LABELS, LABELS, absent=absent),
        "image_dir": image_dir, "patient_sex": column(chunk, "PatientSex_DICOM"),
        "patient_birth": column(chunk, "PatientBirth"), "study_date": column(chunk, "StudyDate_DICOM"),
        "report_id": column(chunk, "ReportID"), "method_label": column(chunk, "MethodLabel"),
    }
    writer.skip("unparsable Labels list", int(bad.sum()))
    keep = ~bad
    if check_files:
        found = existing(uri) | ~keep
        for i in np.flatnonzero(~found):  # a flattened copy: <root>/<ImageID>
            flat = str(root / image[i])
            if image[i] and existing([flat])[0]:
                uri[i], found[i] = flat, True
        writer.skip("image file not found", int((~found).sum()))
        keep &= found
    writer.write(select(data, keep))
