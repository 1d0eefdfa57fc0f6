"""Generic folder importer: DICOM / PNG / JPEG files found recursively under `root` (DATA.md "A folder of images").

Files: extensions .dcm .dicom .dic .png .jpg .jpeg (any case), and extension-less files carrying the DICOM magic
("DICM" at byte 128); hidden files and folders are skipped; the walk is sorted, so the manifest is deterministic.
Report: a sidecar text file next to the image, `<stem>.txt` (img.png -> img.txt) or `<name>.txt` (img.png.txt).

Ids: image_id = the path relative to root (posix, extension kept: a.png next to a.dcm stay distinct).
`patient_from`: "auto" (default) = the DICOM PatientID, else the folder `patient_depth` levels up (1 = parent
folder), decided per patient folder, never per file, so one patient never gets two ids: a folder whose DICOMs
carry one PatientID gives it to all its files (PNGs and ID-less DICOMs included); a folder with none uses its
name; a folder with several keeps each DICOM's own and skips (counts) the files without one, which cannot be
placed. "dicom" = PatientID only (files without one are skipped); "folder" = the folder only. A file shallower
than `patient_depth` takes its top folder; a file at the root is its own patient. study_id = the DICOM
StudyInstanceUID, else the relative path of the image's folder (the image id at the root). view = DICOM
ViewPosition. DICOM headers are read without pixel data; an unreadable one skips the file.

`label_reports=True` labels the reports with radscale's rule labeler (every vocabulary label; no report -> null);
otherwise no label columns are written. `source` names the dataset in the `source` column.
Memory: one chunk of rows, plus one patient folder's rows (the walk visits a folder's files together).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from radscale.data.importers.base import (
    DEFAULT_CHUNK_ROWS, ImportSummary, ManifestColumns, ManifestWriter, dicom_str, label_reports, patient_from_folder,
    read_dicom_header, read_text,
)
from radscale.data.vocab import DEFAULT_VOCABULARY
from radscale.errors import RadscaleError

PATIENT_SOURCES = ("auto", "dicom", "folder")
IMAGE_EXTENSIONS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".dcm": "dicom", ".dicom": "dicom",
                    ".dic": "dicom"}
EXTRAS = (("format", pa.string()), ("sop_instance_uid", pa.string()))


def _is_dicom_without_extension(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def find_images(root: Path) -> Iterator[tuple[Path, str]]:
    """(path, format) of every image under root, in sorted walk order."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            ext = os.path.splitext(name)[1].lower()
            if ext in IMAGE_EXTENSIONS:
                yield Path(path), IMAGE_EXTENSIONS[ext]
            elif ext == "" and _is_dicom_without_extension(path):
                yield Path(path), "dicom"


def _sidecar(path: Path) -> str | None:
    return read_text(path.with_suffix(".txt")) or read_text(path.with_name(path.name + ".txt"))


def import_folder(root: Path, out: Path, *, patient_from: str = "auto", patient_depth: int = 1,
                  label_reports: bool = False, source: str = "folder",
                  chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ImportSummary:
    """Import every image under `root`; see the module doc for the id rules and options."""
    root = Path(root).expanduser().resolve()
    if patient_from not in PATIENT_SOURCES:
        raise RadscaleError(f"folder: patient_from must be one of {PATIENT_SOURCES}, got {patient_from!r}")
    if int(patient_depth) < 1:
        raise RadscaleError(f"folder: patient_depth must be >= 1, got {patient_depth}")
    labels = DEFAULT_VOCABULARY.labels if label_reports else ()
    labeler = None
    if label_reports:
        from radscale.data.labels.rules import RuleLabeler

        labeler = RuleLabeler(DEFAULT_VOCABULARY)
    with ManifestWriter(out, source, ManifestColumns(labels, EXTRAS, report=True)) as writer:
        rows: list[dict] = []
        group: list[dict] = []
        for path, fmt in find_images(root):
            row = _row(root, path, fmt, patient_from, int(patient_depth), writer)
            if row is None:
                continue
            if group and (row["_folder"] != group[0]["_folder"] or not row["_folder"]):
                rows += _one_patient_id(group, writer)
                group = []
            group.append(row)
            if len(rows) >= chunk_rows:
                _flush(writer, rows, labeler)
                rows = []
        _flush(writer, rows + _one_patient_id(group, writer), labeler)
        return writer.finish()


def _one_patient_id(group: list[dict], writer: ManifestWriter) -> list[dict]:
    """The rows of one patient folder with one patient id rule for all of them (module doc, `patient_from`)."""
    ids = {r["_dicom_patient"] for r in group if r["_dicom_patient"]}
    out = []
    for r in group:
        dicom_id, r["patient_id"] = r.pop("_dicom_patient"), r.pop("_folder_patient")
        del r["_folder"]
        if len(ids) == 1:
            r["patient_id"] = next(iter(ids))
        elif ids:
            if not dicom_id:
                writer.skip("no PatientID in a folder of several DICOM patients")
                continue
            r["patient_id"] = dicom_id
        out.append(r)
    return out


def _row(root: Path, path: Path, fmt: str, patient_from: str, depth: int, writer: ManifestWriter) -> dict | None:
    rel = path.relative_to(root).as_posix()
    parts = rel.split("/")
    header = None
    if fmt == "dicom":
        header = read_dicom_header(path)
        if header is None or "SOPClassUID" not in header and "Rows" not in header:
            writer.skip("unreadable DICOM header")
            return None
    patient = dicom_str(header, "PatientID") if patient_from in ("auto", "dicom") else ""
    if not patient and patient_from == "dicom":
        writer.skip("no DICOM PatientID")
        return None
    folder = "/".join(parts[:-1])
    return {"_dicom_patient": patient, "_folder_patient": patient_from_folder(parts, depth) or rel,
            "_folder": _patient_folder(parts, depth),
            "image_id": rel, "study_id": dicom_str(header, "StudyInstanceUID") or folder or rel,
            "uri": str(path), "view": dicom_str(header, "ViewPosition"), "report": _sidecar(path),
            "format": fmt, "sop_instance_uid": dicom_str(header, "SOPInstanceUID")}


def _patient_folder(parts: list[str], depth: int) -> str:
    """Path of the folder `patient_from_folder` names ('' for a file at the root: its own patient)."""
    folders = parts[:-1]
    if not folders:
        return ""
    return "/".join(folders[:len(folders) - depth + 1 if 1 <= depth <= len(folders) else 1])


def _flush(writer: ManifestWriter, rows: list[dict], labeler) -> None:
    if not rows:
        return
    data = {name: [r[name] for r in rows] for name in rows[0]}
    if labeler is not None:
        data.update(label_reports(data["image_id"], data["report"], DEFAULT_VOCABULARY, labeler))
    writer.write(data)
