"""Label a manifest: the `report` column → one int8 column per label, batch by batch (bounded memory).

Rows whose report is null keep the label values they had (null for a new column): importers may carry
dataset labels for images without reports. Report text is never printed or logged; only counts and ids.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Protocol, Union

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from radscale.data.labels.rules import RuleLabeler
from radscale.data.vocab import DEFAULT_VOCABULARY, Vocabulary
from radscale.errors import RadscaleError


class ReportLabeler(Protocol):
    def label(self, text: str, report_id: str) -> Mapping[str, int | None]: ...


LabelerLike = Union[ReportLabeler, Callable[[str], Mapping[str, Optional[int]]]]
_VALID = (1, 0, -1, None)


@dataclass(frozen=True)
class LabelingSummary:
    rows: int
    reports: int  # rows with a non-null report
    positives: dict[str, int] = field(default_factory=dict)


def _call(labeler: LabelerLike, text: str, report_id: str) -> Mapping[str, int | None]:
    label = getattr(labeler, "label", None)
    return label(text, report_id) if label is not None else labeler(text)


def _label_batch(batch: pa.RecordBatch, vocabulary: Vocabulary, labeler: LabelerLike, key: str,
                 offset: int) -> pa.RecordBatch:
    if "report" not in batch.schema.names:
        raise RadscaleError("label_table: manifest has no 'report' column")
    reports = batch.column("report").to_pylist()
    ids = batch.column(key).to_pylist() if key in batch.schema.names else list(range(offset, offset + len(reports)))
    seen: dict[str, Mapping[str, int | None]] = {}  # studies share a report across images
    answers = []
    for text, rid in zip(reports, ids):
        if text is None:
            answers.append(None)
            continue
        if text not in seen:
            seen[text] = _call(labeler, text, str(rid))
        answers.append(seen[text])
    columns = {name: batch.column(name) for name in batch.schema.names}
    for label in vocabulary.labels:
        old = columns.get(label)
        if old is not None:
            try:
                old = old.cast(pa.int8())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise RadscaleError(f"label_table: column {label!r} cannot be cast to int8 (got {old.type})") from None
        old_values = old.to_pylist() if old is not None else [None] * len(answers)
        values = []
        for row, answer in enumerate(answers):
            if answer is None:
                values.append(old_values[row])
                continue
            value = answer.get(label)
            if value not in _VALID:
                raise RadscaleError(f"label_table: labeler returned {value!r} for label {label!r} "
                                    f"at report id {ids[row]!r} (expected 1, 0, -1 or None)")
            values.append(value)
        columns[label] = pa.array(values, type=pa.int8())
    return pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))


def label_table(table: pa.Table, vocabulary: Vocabulary = DEFAULT_VOCABULARY, labeler: LabelerLike | None = None,
                key: str = "image_id") -> pa.Table:
    """Add/overwrite the vocabulary's int8 label columns from `report`, one record batch at a time."""
    labeler = labeler if labeler is not None else RuleLabeler(vocabulary)
    batches, offset = [], 0
    for batch in table.to_batches():
        batches.append(_label_batch(batch, vocabulary, labeler, key, offset))
        offset += batch.num_rows
    if not batches:  # an empty table still gets its columns
        empty = pa.RecordBatch.from_pylist([], schema=table.schema)
        return pa.Table.from_batches([_label_batch(empty, vocabulary, labeler, key, 0)])
    return pa.Table.from_batches(batches)


def label_manifest(in_path: str | Path, out_path: str | Path, vocabulary: Vocabulary = DEFAULT_VOCABULARY,
                   labeler: LabelerLike | None = None, batch_size: int = 4096,
                   key: str = "image_id") -> LabelingSummary:
    """Stream `in_path` → `out_path` (Parquet) in batches of `batch_size` rows; in place when the paths match."""
    labeler = labeler if labeler is not None else RuleLabeler(vocabulary)
    try:
        source = pq.ParquetFile(str(in_path))
    except FileNotFoundError:
        raise RadscaleError(f"{in_path}: manifest not found") from None
    except (pa.ArrowInvalid, OSError) as err:
        raise RadscaleError(f"{in_path}: not a readable Parquet file ({type(err).__name__})") from None
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".parquet.tmp", dir=out_path.parent)
    os.close(fd)
    rows = reports = offset = 0
    positives = {label: 0 for label in vocabulary.labels}
    writer = None
    try:
        for batch in source.iter_batches(batch_size=batch_size):
            out = _label_batch(batch, vocabulary, labeler, key, offset)
            if writer is None:
                writer = pq.ParquetWriter(tmp, out.schema)
            writer.write_batch(out)
            rows, offset = rows + out.num_rows, offset + out.num_rows
            reports += out.num_rows - out.column("report").null_count
            for label in vocabulary.labels:
                positives[label] += int(pc.sum(pc.equal(out.column(label), 1)).as_py() or 0)
        if writer is None:  # no rows: write the labelled, empty schema
            empty = pa.RecordBatch.from_pylist([], schema=source.schema_arrow)
            writer = pq.ParquetWriter(tmp, _label_batch(empty, vocabulary, labeler, key, 0).schema)
        writer.close()
        os.replace(tmp, out_path)  # atomic: a crash never leaves a half-written manifest
    finally:
        if os.path.exists(tmp):
            if writer is not None:
                writer.close()
            os.remove(tmp)
    return LabelingSummary(rows=rows, reports=reports, positives=positives)
