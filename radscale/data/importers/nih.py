"""NIH ChestX-ray14 importer (DATA.md "NIH ChestX-ray14").

Layout: `<root>/Data_Entry_2017*.csv` (or `csv=`), PNGs in `<root>/images/` or, as Kaggle ships them, in
`<root>/images_001/images/` ... `images_012/images/`; optional official split lists `test_list.txt` /
`train_val_list.txt` (-> `source_split` "test" / "train_val", by patient: the official split is patient-wise).

Header quirk: `OriginalImage[Width,Height]` and `OriginalImagePixelSpacing[x,y]` contain commas, so the header
has 11 comma-separated fields (12 with the trailing comma some copies carry) naming 9 columns, and every row has
11 values. The header is parsed here explicitly: a comma inside [...] does not end a name, and each bracketed name
becomes one column per bracketed part (`OriginalImage[Width]`, `OriginalImage[Height]`, ...), so values align
with names by construction; a row with more values than that is a malformed file. Newer releases say
`Patient Sex` where older ones say `Patient Gender`; both land in `patient_sex`.

Ids: image_id = `Image Index` (`00000001_000.png`), patient_id = `Patient ID` verbatim, study_id = the image stem
(each image is its own visit, `Follow-up #`).

Labels: `Finding Labels` is `|`-separated with a literal `No Finding`. Every image has a decision on all 14 labels,
so an absent label is 0, not null. Effusion -> pleural_effusion, Pleural_Thickening -> pleural_other,
Infiltration -> lung_opacity (NIH's "infiltration" is the radiographic opacity CheXpert calls Lung Opacity; no
hierarchy is propagated, so consolidation without infiltration keeps lung_opacity 0), the other eleven by name.
A label name outside these 14 skips the row.

Memory: the metadata CSV is streamed; the set of test patients is held.
"""
from __future__ import annotations

import csv as csvlib
import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from radscale.data.importers.base import (
    DEFAULT_CHUNK_ROWS, ImportSummary, ManifestColumns, ManifestWriter, codes_from_sets, column, label_targets,
    parse_int, read_csv_chunks, select,
)
from radscale.data.vocab import FINDINGS
from radscale.errors import RadscaleError

SOURCE = "nih-cxr14"
NIH_LABELS: dict[str, str] = {
    "Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly", "Effusion": "pleural_effusion",
    "Infiltration": "lung_opacity", "Mass": "mass", "Nodule": "nodule", "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax", "Consolidation": "consolidation", "Edema": "edema", "Emphysema": "emphysema",
    "Fibrosis": "fibrosis", "Pleural_Thickening": "pleural_other", "Hernia": "hernia",
}
NO_FINDING = "No Finding"
LABELS = label_targets(NIH_LABELS, FINDINGS)
# Physical header name -> manifest extra column.
_EXTRA_SOURCES = {
    "Follow-up #": "follow_up", "Patient Age": "patient_age", "Patient Gender": "patient_sex",
    "Patient Sex": "patient_sex", "View Position": "view",
    "OriginalImage[Width]": "original_width", "OriginalImage[Height]": "original_height",
    "OriginalImagePixelSpacing[x]": "pixel_spacing_x", "OriginalImagePixelSpacing[y]": "pixel_spacing_y",
}
EXTRAS = (("finding_labels", pa.string()), ("follow_up", pa.int16()), ("patient_age", pa.int16()),
          ("patient_sex", pa.string()), ("original_width", pa.int32()), ("original_height", pa.int32()),
          ("pixel_spacing_x", pa.float32()), ("pixel_spacing_y", pa.float32()), ("source_split", pa.string()))
_REQUIRED = ("Image Index", "Finding Labels", "Patient ID")


def header_columns(path: Path) -> list[str]:
    """Physical column names of a Data_Entry CSV: bracketed names expanded, e.g. `OriginalImage[Width]`."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            first = next(csvlib.reader(f), [])
    except (OSError, UnicodeDecodeError, EOFError):
        raise RadscaleError(f"{path}: unreadable header") from None
    logical, pending = [], None
    for token in first:
        pending = token if pending is None else f"{pending},{token}"
        if pending.count("[") == pending.count("]"):
            logical.append(pending.strip())
            pending = None
    if pending is not None:
        raise RadscaleError(f"{path}: line 1: unbalanced '[' in header")
    physical = []
    for i, name in enumerate(logical):
        if "[" in name:
            base, inner = name.split("[", 1)
            physical += [f"{base}[{part.strip()}]" for part in inner.rstrip("]").split(",")]
        else:
            physical.append(name or f"_unnamed_{i}")
    for name in _REQUIRED:
        if name not in physical:
            raise RadscaleError(f"{path}: line 1: missing column {name!r}")
    return physical


class _ImageLocator:
    """Finds `<name>` in the image folders, trying the folder of the previous hit first (the CSV is sorted and the
    Kaggle folders hold contiguous ranges, so that is nearly always one stat per image)."""

    def __init__(self, root: Path):
        dirs = [root / "images", *sorted(root.glob("images_*/images")), *sorted(root.glob("images_*")), root]
        self.dirs = [d for d in dict.fromkeys(dirs) if d.is_dir()] or [root / "images"]
        self.last = 0

    def find(self, name: str) -> str | None:
        order = [self.last] + [i for i in range(len(self.dirs)) if i != self.last]
        for i in order:
            path = os.path.join(self.dirs[i], name)
            if os.path.isfile(path):
                self.last = i
                return path
        return None


def _test_patients(root: Path) -> set[int] | None:
    path = root / "test_list.txt"
    if not path.is_file():
        return None
    names = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return {int(n.split("_")[0]) for n in names if n.split("_")[0].isdigit()}


def _patient_int(pid: str) -> int | None:
    return int(pid) if pid.isdigit() else None


def import_nih(root: Path, out: Path, *, csv: str | None = None, check_files: bool = True,
               chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ImportSummary:
    """Import NIH ChestX-ray14 (`csv` names the Data_Entry file when it is not `Data_Entry_2017*.csv`)."""
    root = Path(root).expanduser().resolve()
    path = root / csv if csv else next(iter(sorted(root.glob("Data_Entry_2017*.csv*"))), None)
    if path is None or not path.is_file():
        raise RadscaleError(f"{root}: NIH metadata CSV not found (looked for {csv or 'Data_Entry_2017*.csv'})")
    names = header_columns(path)
    locator, test = _ImageLocator(root), _test_patients(root)
    with ManifestWriter(out, SOURCE, ManifestColumns(LABELS, EXTRAS)) as writer:
        for chunk in read_csv_chunks(path, chunk_rows, header=None, skiprows=1, names=names):
            _write_chunk(writer, chunk, locator, test, check_files)
        return writer.finish()


def _write_chunk(writer: ManifestWriter, chunk: pd.DataFrame, locator: _ImageLocator, test: set[int] | None,
                 check_files: bool) -> None:
    image, findings, patient = (column(chunk, n) for n in _REQUIRED)
    terms: list[list[str] | None] = []
    unknown = np.zeros(len(chunk), bool)
    for i, text in enumerate(findings):
        names = [t.strip() for t in text.split("|") if t.strip() and t.strip() != NO_FINDING]
        unknown[i] = any(n not in NIH_LABELS for n in names)
        terms.append(names if text else None)
    data: dict[str, object] = {
        "image_id": image, "patient_id": patient, "study_id": [n.rsplit(".", 1)[0] for n in image],
        "finding_labels": findings, **codes_from_sets(terms, NIH_LABELS, LABELS, absent=0),
    }
    for src, dst in _EXTRA_SOURCES.items():
        if src in chunk.columns:
            values = column(chunk, src)
            if dst.startswith("pixel_spacing"):
                values = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy()
            elif dst in ("follow_up", "patient_age", "original_width", "original_height"):
                values = parse_int(values)
            data[dst] = values
    if test is not None:
        data["source_split"] = ["test" if _patient_int(p) in test else "train_val" for p in patient]
    writer.skip("unknown finding label", int(unknown.sum()))
    keep = ~unknown
    uris = [locator.find(n) if (check_files and k and n) else None for n, k in zip(image, keep)]
    if check_files:
        found = np.array([u is not None for u in uris]) | ~keep
        writer.skip("image file not found", int((~found).sum()))
        keep &= found
    else:
        uris = [str(locator.dirs[0] / n) for n in image]
    data["uri"] = uris
    writer.write(select(data, keep))
