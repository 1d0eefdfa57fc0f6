"""Shared importer machinery: the manifest schema, label-convention helpers, streaming CSV reads, Parquet writes.

Memory stays bounded: importers read their CSVs in chunks of `chunk_rows` rows (every column as its verbatim
string) and hand each chunk to `ManifestWriter`, which writes it as one Parquet row group. What outlives a chunk
is what each importer documents (per-patient or per-study maps) plus, here, an 8-byte hash per image id (to refuse
duplicates) and the patient/study id sets behind the summary counts.

Label codes inside importers are int8 numpy arrays in the radscale convention (1 positive, 0 negative,
-1 uncertain) with NULL (-128) for "not mentioned"; the writer turns NULL into a Parquet null.

Policy for rows (documented once, used everywhere): a row whose image file is missing, whose label value is not
in the source's convention, or whose required id is empty is skipped and counted under a short reason; the run
goes on. `check_files=False` keeps rows without looking at the disk (a manifest written before the images
arrive); `radscale.data.manifest.require_images` then refuses missing files when the manifest is used. A file
that cannot be used at all (not found, missing a required column, malformed CSV structure) is a one-line
RadscaleError naming the file (and line). Report text never enters a reason, an error or a log.
"""
from __future__ import annotations

import os
import re
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from radscale.data.manifest import REQUIRED, validate_manifest
from radscale.errors import RadscaleError

NULL = np.int8(-128)
DEFAULT_CHUNK_ROWS = 50_000
MASK_MARKER = ".radscale-masks"
# Combining several source labels into one target (e.g. two fracture labels -> "fracture"):
# positive beats uncertain beats negative beats not mentioned.
_CODES_BY_RANK = np.array([NULL, 0, -1, 1], dtype=np.int8)


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote: counts only (ids and report text stay in the manifest)."""

    source: str
    out: str
    rows: int
    patients: int
    studies: int
    with_report: int
    masks_written: int
    skipped: Mapping[str, int] = field(default_factory=dict)  # reason -> number of rows (or annotations)
    label_columns: tuple[str, ...] = ()

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


@dataclass(frozen=True)
class ManifestColumns:
    """The columns one importer writes, in order: ids, uri, view, [report], [mask_uri, mask_devices], labels,
    source, then the source's own columns (`extras`, verbatim)."""

    labels: tuple[str, ...]
    extras: tuple[tuple[str, pa.DataType], ...] = ()
    report: bool = False
    masks: bool = False

    def schema(self) -> pa.Schema:
        names = list(REQUIRED) + ["view"] + (["report"] if self.report else [])
        names += ["mask_uri", "mask_devices"] if self.masks else []
        fields = [pa.field(n, pa.string()) for n in names]
        fields += [pa.field(n, pa.int8()) for n in self.labels] + [pa.field("source", pa.string())]
        return pa.schema(fields + [pa.field(n, t) for n, t in self.extras])


class ManifestWriter:
    """Streams record batches into `out` (written to a temp file, renamed on `finish`: never half a manifest)."""

    def __init__(self, out: Path, source: str, columns: ManifestColumns):
        self.out, self.source, self.columns = Path(out), source, columns
        self.schema = columns.schema()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent)
        os.close(fd)
        self._writer = pq.ParquetWriter(self._tmp, self.schema)
        self._seen: set[int] = set()
        self._patients: set[str] = set()
        self._studies: set[str] = set()
        self.skipped: Counter[str] = Counter()
        self.rows = self.with_report = self.masks_written = 0

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] += int(count)

    def write(self, data: Mapping[str, object]) -> None:
        """One chunk: a column name -> values (list, numpy array, pyarrow array; label codes as int8 with NULL)."""
        n = len(data["image_id"])  # type: ignore[arg-type]
        arrays = []
        for f in self.schema:
            value = self.source if f.name == "source" else data.get(f.name)
            arrays.append(_arrow(value, f.type, n))
        batch = self._drop_bad(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        if batch.num_rows == 0:
            return
        validate_manifest(pa.Table.from_batches([batch]), f"{self.out} (rows from {self.rows})")
        self._writer.write_batch(batch)
        self.rows += batch.num_rows
        self._patients.update(batch.column("patient_id").to_pylist())
        self._studies.update(batch.column("study_id").to_pylist())
        if self.columns.report:
            self.with_report += batch.num_rows - batch.column("report").null_count

    def _drop_bad(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        keep = np.ones(batch.num_rows, dtype=bool)
        for name in REQUIRED:
            missing = np.asarray(pc.is_null(batch.column(name)), dtype=bool) & keep
            self.skip(f"empty {name}", int(missing.sum()))
            keep &= ~missing
        for i, image_id in enumerate(batch.column("image_id").to_pylist()):
            if keep[i]:
                key = hash(image_id)
                if key in self._seen:
                    self.skip("duplicate image_id")
                    keep[i] = False
                self._seen.add(key)
        return batch if keep.all() else batch.filter(pa.array(keep))

    def finish(self) -> ImportSummary:
        self._writer.close()
        os.replace(self._tmp, self.out)
        return ImportSummary(self.source, str(self.out), self.rows, len(self._patients), len(self._studies),
                             self.with_report, self.masks_written, dict(sorted(self.skipped.items())),
                             self.columns.labels)

    def abort(self) -> None:
        self._writer.close()
        if os.path.exists(self._tmp):
            os.remove(self._tmp)


def _arrow(value: object, typ: pa.DataType, n: int) -> pa.Array:
    if value is None:
        return pa.nulls(n, typ)
    if isinstance(value, str):
        return pa.array([value] * n, typ)
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        arr = value.cast(typ)
    elif pa.types.is_int8(typ) and isinstance(value, np.ndarray) and value.dtype == np.int8:
        arr = pa.array(value, mask=value == NULL, type=typ)
    else:
        arr = pa.array(list(value) if isinstance(value, np.ndarray) else value, type=typ, from_pandas=True)
    if pa.types.is_string(typ):  # "" means "absent" in every source CSV read as text
        arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, typ), arr)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


# ---- labels -------------------------------------------------------------------------------------------------------

def parse_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """CheXpert-style cells '1.0'/'0.0'/'-1.0'/'' -> int8 codes (blank = NULL); second: rows with another value."""
    text = values.astype(str).str.strip()
    number = pd.to_numeric(text, errors="coerce")
    ok = number.isin([1.0, 0.0, -1.0]).to_numpy()
    codes = np.where(ok, np.nan_to_num(number.to_numpy(dtype=float)), NULL).astype(np.int8)
    return codes, ~ok & (text != "").to_numpy()


def combine_codes(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Many source labels -> one target: positive > uncertain > negative > NULL, element-wise."""
    ranks = np.stack([np.select([a == 1, a == -1, a == 0], [3, 2, 1], 0) for a in arrays]).max(axis=0)
    return _CODES_BY_RANK[ranks]


def targets_of(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def label_targets(mapping: Mapping[str, str | tuple[str, ...]], order: Sequence[str]) -> tuple[str, ...]:
    """The label columns a mapping produces, in vocabulary order."""
    hit = {t for v in mapping.values() for t in targets_of(v)}
    return tuple(name for name in order if name in hit)


def codes_from_columns(columns: Mapping[str, np.ndarray], mapping: Mapping[str, str | tuple[str, ...]],
                       targets: Sequence[str], n: int) -> dict[str, np.ndarray]:
    """Source label columns (already coded) -> target columns via `mapping` (source name -> target(s))."""
    sources: dict[str, list[np.ndarray]] = {t: [] for t in targets}
    for src, value in mapping.items():
        if src in columns:
            for target in targets_of(value):
                sources[target].append(columns[src])
    return {t: combine_codes(s) if s else np.full(n, NULL, np.int8) for t, s in sources.items()}


def codes_from_sets(rows: Sequence[Iterable[str] | None], mapping: Mapping[str, str | tuple[str, ...]],
                    targets: Sequence[str], absent: int) -> dict[str, np.ndarray]:
    """Per-row sets of positive source terms -> target codes: 1 if any term maps to it, else `absent` (0 for an
    exhaustive label list, NULL otherwise); a row of None has no labels at all (all NULL)."""
    out = {t: np.full(len(rows), NULL, np.int8) for t in targets}
    for i, terms in enumerate(rows):
        if terms is None:
            continue
        hit = {t for term in terms if term in mapping for t in targets_of(mapping[term])}
        for t in targets:
            out[t][i] = 1 if t in hit else absent
    return out


# ---- files and CSVs -----------------------------------------------------------------------------------------------

def find_file(root: Path, *names: str) -> Path | None:
    """The first of `names` (or its .gz twin) under `root`."""
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def require_file(root: Path, *names: str, what: str) -> Path:
    found = find_file(root, *names)
    if found is None:
        raise RadscaleError(f"{root}: {what} not found (looked for {', '.join(names)}, also .gz)")
    return found


def csv_columns(path: Path, required: Sequence[str] = ()) -> list[str]:
    """Header names of a CSV; a missing required column is a one-line error naming the file."""
    columns = list(next(iter(read_csv_chunks(path, 1, nrows=0))).columns)
    for name in required:
        if name not in columns:
            raise RadscaleError(f"{path}: line 1: missing column {name!r}")
    return columns


def read_csv_chunks(path: Path, chunk_rows: int, **options) -> Iterator[pd.DataFrame]:
    """Chunks of a CSV (or .csv.gz) with every cell as its verbatim string ('' when blank).

    Structural problems (a row with more fields than the header, unbalanced quotes, bad gzip, not UTF-8) make the
    whole file unusable: a RadscaleError naming the file and, when the parser knows it, the line.
    """
    kwargs = dict(dtype=str, keep_default_na=False, na_filter=False, index_col=False)
    kwargs.update(options)
    try:
        if kwargs.get("nrows") == 0:
            yield pd.read_csv(path, **kwargs)
            return
        with pd.read_csv(path, chunksize=max(1, int(chunk_rows)), **kwargs) as reader:
            yield from reader
    except FileNotFoundError:
        raise RadscaleError(f"{path}: file not found") from None
    except pd.errors.EmptyDataError:
        raise RadscaleError(f"{path}: empty CSV file (no header)") from None
    except pd.errors.ParserError as err:
        line = re.search(r"line (\d+)", str(err))
        where = f"line {line.group(1)}: " if line else ""
        raise RadscaleError(f"{path}: {where}malformed CSV (wrong number of fields or unbalanced quotes)") from None
    except UnicodeDecodeError:
        raise RadscaleError(f"{path}: not UTF-8 text") from None
    except (OSError, EOFError, zlib.error) as err:
        raise RadscaleError(f"{path}: unreadable ({type(err).__name__})") from None
    except ValueError as err:  # e.g. a requested column the file lacks; pandas' text may quote cells, so drop it
        raise RadscaleError(f"{path}: unusable CSV ({type(err).__name__})") from None


def column(chunk: pd.DataFrame, name: str) -> np.ndarray:
    """A chunk column as a stripped object array ('' where the CSV lacks the column)."""
    if name not in chunk.columns:
        return np.full(len(chunk), "", dtype=object)
    return chunk[name].fillna("").astype(str).str.strip().to_numpy(dtype=object)


def join_under(root: Path, rel: Sequence[str]) -> np.ndarray:
    """`str(root / r)` for each relative path, as an object array. pathlib's join cost ~6 of 48 CPU-s of a 4M-row
    CheXpert import, so plain paths are concatenated; only those pathlib would normalise ('//', '.', ends) use it."""
    base = str(root).rstrip("/") + "/"
    return np.array([base + r if r and r[0] != "/" and r[-1] != "/" and "//" not in r and "/./" not in f"/{r}/"
                     else str(root / r) for r in rel], dtype=object)


def existing(paths: Sequence[str]) -> np.ndarray:
    return np.fromiter((os.path.isfile(p) for p in paths), dtype=bool, count=len(paths))


def select(data: Mapping[str, object], keep: np.ndarray) -> dict[str, object]:
    """Rows `keep` of every column of a chunk (numpy arrays and lists; scalars and None pass through)."""
    out: dict[str, object] = {}
    for name, value in data.items():
        if isinstance(value, np.ndarray):
            out[name] = value[keep]
        elif isinstance(value, list):
            out[name] = [v for v, k in zip(value, keep) if k]
        else:
            out[name] = value
    return out


def read_text(path: Path) -> str | None:
    """A report file's text, or None when absent/empty (content is never logged)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return text or None


def parse_int(values: np.ndarray) -> list[int | None]:
    """Leading integer of each cell ('058Y' -> 58, '72' -> 72), None when there is none."""
    out: list[int | None] = []
    for v in values:
        m = re.match(r"\s*(\d+)", str(v))
        out.append(int(m.group(1)) if m else None)
    return out


def patient_from_path(path: str, pattern: re.Pattern[str]) -> str:
    """Patient id hidden in a path (first match of `pattern`, group 1 if any); '' when absent."""
    m = pattern.search(path)
    return "" if m is None else (m.group(1) if m.groups() else m.group(0))


def patient_from_folder(rel_parts: Sequence[str], depth: int) -> str:
    """Folder `depth` levels above the file (1 = parent); the top folder for a shallower file; '' at the root."""
    folders = list(rel_parts[:-1])
    if not folders:
        return ""
    return folders[-depth] if 1 <= depth <= len(folders) else folders[0]


def read_dicom_header(path: Path):
    """The header of a DICOM file (no pixel data), or None if it is not readable as DICOM."""
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception:  # pydicom raises many types on bad bytes; the caller counts the file as skipped
        return None


def dicom_str(ds, keyword: str) -> str:
    value = None if ds is None else ds.get(keyword)
    return "" if value is None else str(value).strip()


# ---- device masks (bit k = DEVICE_TYPES[k], as the phantom and the segmentation probe use) -------------------------

def prepare_masks_dir(out: Path, masks_dir: Path | None) -> Path:
    """A fresh mask folder next to the manifest; a folder radscale did not create is never emptied."""
    target = Path(masks_dir) if masks_dir is not None else out.parent / f"{out.stem}-masks"
    target = target.expanduser().resolve()
    if target.exists():
        if (target / MASK_MARKER).exists():
            for old in target.glob("*.png"):
                old.unlink()
        elif any(target.iterdir()):
            raise RadscaleError(f"{target}: masks folder exists and was not written by radscale import; "
                                f"pass another masks_dir")
    target.mkdir(parents=True, exist_ok=True)
    (target / MASK_MARKER).write_text("device masks written by radscale import\n")
    return target


def load_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The mask already written for an image (a source may list its lines in several chunks), else zeros."""
    if path.exists():
        with Image.open(path) as img:
            return np.asarray(img, dtype=np.uint8).copy()
    return np.zeros((size[1], size[0]), dtype=np.uint8)


def save_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).save(path, format="PNG", compress_level=1)


def label_reports(image_ids: Sequence[str], reports: Sequence[str | None], vocabulary, labeler) -> dict[str, pa.Array]:
    """Labels from report text with radscale's labeler (`label_table`); rows without a report stay null."""
    from radscale.data.labels.apply import label_table

    table = pa.table({"image_id": pa.array(list(image_ids), pa.string()),
                      "report": pa.array(list(reports), pa.string())})
    labelled = label_table(table, vocabulary, labeler)
    return {name: labelled.column(name).combine_chunks() for name in vocabulary.labels}
