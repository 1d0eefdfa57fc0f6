"""User-facing errors: one line that says what and where, never a traceback, never patient data."""
from __future__ import annotations


class RadscaleError(ValueError):
    """An error the user can fix (bad job file, bad manifest, missing image, unreachable store)."""

    def __init__(self, message: str):
        # One line, always: multi-line messages hide the 'where' in logs.
        super().__init__(" ".join(str(message).split()))
