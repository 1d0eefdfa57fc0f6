"""A prompt/response store for the LLM labeler: SQLite, keyed by sha256(report) + prompt + model.

Only the hash of a report is stored, never its text; the value is the validated answer ({label: "positive" |
"negative" | "uncertain" | "not_mentioned"}), which carries no patient text. A re-run with the same reports,
prompt and model therefore makes no endpoint calls.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Mapping

from radscale.errors import RadscaleError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    report_sha256 TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    prompt_sha256 TEXT NOT NULL,
    model TEXT NOT NULL,
    answer TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (report_sha256, prompt_version, prompt_sha256, model)
)
"""


def report_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class LabelCache:
    """`get`/`put` by (report hash, prompt version, prompt hash, model). Thread-safe; ":memory:" works too.

    The prompt hash (of the system prompt + answer schema) is part of the key so that editing the prompt or
    the vocabulary invalidates old answers even if nobody bumps the prompt version.
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
            self._db.execute(_SCHEMA)
            self._db.commit()
        except sqlite3.DatabaseError as err:
            raise RadscaleError(f"{self.path}: not a usable label cache ({type(err).__name__})") from None
        self._lock = threading.Lock()

    def get(self, report_sha256: str, prompt_version: str, prompt_sha256: str, model: str) -> dict[str, str] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT answer FROM answers WHERE report_sha256=? AND prompt_version=? AND prompt_sha256=? AND model=?",
                (report_sha256, prompt_version, prompt_sha256, model)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, report_sha256: str, prompt_version: str, prompt_sha256: str, model: str,
            answer: Mapping[str, str]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                             (report_sha256, prompt_version, prompt_sha256, model,
                              json.dumps(dict(answer), sort_keys=True), time.time()))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "LabelCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
