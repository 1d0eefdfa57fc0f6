"""CheXpert importer: `train.csv` / `valid.csv` -> radscale manifest (DATA.md "CheXpert").

Layout: `<root>/train.csv`, `<root>/valid.csv` with `Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,<13 labels>`.
`Path` is `CheXpert-v1.0[-small]/train/patient00001/study1/view1_frontal.jpg`: its first component names the
dataset folder itself, so it is dropped and the rest joined to `root` (a Path without that component is joined
as it is).

Ids: there is no patient column; `patient_id` is the `patientNNNNN` component of Path (valid and train patients
are disjoint), `study_id` = `patientNNNNN/studyK`, `image_id` = Path without the dataset folder and extension
(`train/patient00001/study1/view1_frontal`). Path itself is kept verbatim in `path`.

Labels: 1.0 / 0.0 / -1.0 / blank are already the radscale convention (1 / 0 / -1 / null). "No Finding" is not a
finding label; it is kept as the extra int8 column `no_finding`. A cell with any other value skips the row.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from radscale.data.importers.base import (
    DEFAULT_CHUNK_ROWS, NULL, ImportSummary, ManifestColumns, ManifestWriter, column, csv_columns, existing,
    join_under, parse_codes, parse_int, patient_from_path, read_csv_chunks, select,
)
from radscale.data.vocab import FINDINGS
from radscale.errors import RadscaleError

SOURCE = "chexpert"
# The CheXpert labeler's 13 observations (shared by MIMIC-CXR-JPG's chexpert.csv / negbio.csv) -> radscale findings.
CHEXPERT_LABELS: dict[str, str] = {
    "Enlarged Cardiomediastinum": "enlarged_cardiomediastinum",
    "Cardiomegaly": "cardiomegaly",
    "Lung Opacity": "lung_opacity",
    "Lung Lesion": "lung_lesion",
    "Edema": "edema",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis",
    "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "pleural_effusion",
    "Pleural Other": "pleural_other",
    "Fracture": "fracture",
    "Support Devices": "support_devices",
}
NO_FINDING = "No Finding"
LABELS: tuple[str, ...] = tuple(t for t in FINDINGS if t in CHEXPERT_LABELS.values())
_PATIENT = re.compile(r"(?:^|/)(patient\d+)(?:/|$)")
_STUDY = re.compile(r"(?:^|/)(patient\d+/study\d+)(?:/|$)")
EXTRAS = (("path", pa.string()), ("no_finding", pa.int8()), ("sex", pa.string()), ("age", pa.int16()),
          ("frontal_lateral", pa.string()), ("ap_pa", pa.string()), ("source_split", pa.string()))


def chexpert_codes(chunk: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The 13 label columns (radscale names) and `No Finding` as int8 codes, plus the rows with a bad cell."""
    bad = np.zeros(len(chunk), dtype=bool)
    codes: dict[str, np.ndarray] = {}
    for src, target in [*CHEXPERT_LABELS.items(), (NO_FINDING, NO_FINDING)]:
        if src in chunk.columns:
            codes[target], wrong = parse_codes(chunk[src])
            bad |= wrong
        else:
            codes[target] = np.full(len(chunk), NULL, np.int8)
    return codes, codes.pop(NO_FINDING), bad


def _relative(path: str) -> str:
    parts = path.replace("\\", "/").lstrip("/").split("/")
    return "/".join(parts[1:] if parts[0].lower().startswith("chexpert") else parts)


def import_chexpert(root: Path, out: Path, *, csvs: Sequence[str] = ("train.csv", "valid.csv"),
                    check_files: bool = True, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ImportSummary:
    """Import the CheXpert CSVs named in `csvs` (those present; at least one must be)."""
    root = Path(root).expanduser().resolve()
    files = [root / name for name in csvs if (root / name).is_file()]
    if not files:
        raise RadscaleError(f"{root}: no CheXpert CSV found (looked for {', '.join(csvs)})")
    columns = ManifestColumns(labels=LABELS, extras=EXTRAS)
    with ManifestWriter(out, SOURCE, columns) as writer:
        for csv_path in files:
            split = csv_path.name.split(".")[0]
            csv_columns(csv_path, required=("Path",) + tuple(CHEXPERT_LABELS))
            for chunk in read_csv_chunks(csv_path, chunk_rows):
                _write_chunk(writer, chunk, root, split, check_files)
        return writer.finish()


def _write_chunk(writer: ManifestWriter, chunk: pd.DataFrame, root: Path, split: str, check_files: bool) -> None:
    paths = column(chunk, "Path")
    rel = [_relative(p) for p in paths]
    codes, no_finding, bad = chexpert_codes(chunk)
    ap_pa, frontal = column(chunk, "AP/PA"), column(chunk, "Frontal/Lateral")
    view = np.where(ap_pa != "", ap_pa, np.where(np.char.lower(frontal.astype(str)) == "lateral", "LATERAL", ""))
    data = {
        "image_id": [r.rsplit(".", 1)[0] for r in rel],
        "patient_id": [patient_from_path(r, _PATIENT) for r in rel],
        "study_id": [patient_from_path(r, _STUDY) for r in rel],
        "uri": join_under(root, rel),
        "view": view.astype(object), **codes,
        "path": paths, "no_finding": no_finding, "sex": column(chunk, "Sex"),
        "age": parse_int(column(chunk, "Age")), "frontal_lateral": frontal, "ap_pa": ap_pa, "source_split": split,
    }
    keep = ~bad
    writer.skip("bad label value", int(bad.sum()))
    if check_files:
        found = existing(data["uri"]) | ~keep
        writer.skip("image file not found", int((~found).sum()))
        keep &= found
    writer.write(select(data, keep))
