"""Quarantine: the list of inputs a run skipped, with why, so a run can continue and report the count.

DATA.md: a file that fails to decode is quarantined (listed with the reason) and the run continues. Records are
keyed by (uri, image_id, stage): adding the same key again keeps the latest reason, and `write` merges with what
an earlier (resumed) run left at the same path, so re-running never duplicates rows. Reasons are forced to one
short line; callers must pass error reasons, never report text or pixel values (privacy).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from radscale.data.images import ImageDecodeError, one_line

SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("image_id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True)
class QuarantineRecord:
    """One skipped input: where it is, which manifest row, why, and which stage gave up (e.g. "prepare")."""

    uri: str
    image_id: str | None
    reason: str
    stage: str

    @property
    def key(self) -> tuple[str, str | None, str]:
        return self.uri, self.image_id, self.stage


class Quarantine:
    """An ordered, de-duplicated set of QuarantineRecords with Parquet persistence."""

    def __init__(self, records: Iterable[QuarantineRecord] = ()) -> None:
        self._records: dict[tuple[str, str | None, str], QuarantineRecord] = {}
        for record in records:
            self._records[record.key] = record

    def add(self, uri: str, image_id: str | None, reason: str, stage: str) -> QuarantineRecord:
        """Record a skipped input; the reason is collapsed to one line."""
        if not uri or not stage:
            raise ValueError(f"quarantine record needs a uri and a stage, got uri={uri!r} stage={stage!r}")
        record = QuarantineRecord(str(uri), None if image_id is None else str(image_id), one_line(reason), stage)
        self._records.pop(record.key, None)  # re-adding moves the record to the end with its latest reason
        self._records[record.key] = record
        return record

    def add_error(self, error: ImageDecodeError, *, image_id: str | None, stage: str) -> QuarantineRecord:
        """Record an ImageDecodeError under its own uri and reason."""
        return self.add(error.uri, image_id, error.reason, stage)

    @property
    def count(self) -> int:
        return len(self._records)

    @property
    def records(self) -> tuple[QuarantineRecord, ...]:
        return tuple(self._records.values())

    def __len__(self) -> int:
        return self.count

    def __contains__(self, uri: object) -> bool:
        return any(record.uri == uri for record in self._records.values())

    def merged(self, other: Quarantine) -> Quarantine:
        """Union of two quarantines; on equal keys `other` wins (it is the newer run)."""
        return Quarantine(self.records + other.records)

    def to_table(self) -> pa.Table:
        columns = {name: [getattr(r, name) for r in self._records.values()] for name in SCHEMA.names}
        return pa.table(columns, schema=SCHEMA)

    def write(self, path: str) -> int:
        """Write to Parquet, merging with an existing file at `path` (resume); returns the rows written."""
        merged = Quarantine.read(path).merged(self) if _exists(path) else self
        table = merged.to_table()
        if "://" in path:
            pq.write_table(table, path)  # object stores replace an object atomically
        else:
            tmp = f"{path}.tmp-{os.getpid()}"
            pq.write_table(table, tmp)
            os.replace(tmp, path)  # never leave a half-written file behind a crash
        return table.num_rows

    @classmethod
    def read(cls, path: str) -> Quarantine:
        """Load a quarantine file written by `write`."""
        table = pq.read_table(path)
        missing = [name for name in SCHEMA.names if name not in table.column_names]
        if missing:
            raise ValueError(f"quarantine file {path} lacks columns {missing}")
        rows = table.select(SCHEMA.names).to_pylist()
        return cls([QuarantineRecord(r["uri"], r["image_id"], r["reason"], r["stage"]) for r in rows])


def _exists(path: str) -> bool:
    if "://" not in path:
        return os.path.exists(path)
    from pyarrow import fs as pafs

    filesystem, inner = pafs.FileSystem.from_uri(path)
    return filesystem.get_file_info(inner).type != pafs.FileType.NotFound
