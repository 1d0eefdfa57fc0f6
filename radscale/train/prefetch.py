"""A continuous stream of batches across epochs, filled by a background thread.

Re-creating the epoch iterator inside the timed loop would put the pipeline restart inside the budget and make
the stop land late (RAY.md: trials of a 5 s budget ran 9-13 s). A thread keeps the queue full across epochs and
the loop waits for a batch with a bounded timeout, so the clock is checked even while data stalls.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable


class BatchStream:
    def __init__(self, make_epoch: Callable[[int], Iterable[Any]], maxsize: int = 4,
                 prepare: Callable[[Any], Any] | None = None):
        """`prepare` runs on each batch in the thread, off the training step (e.g. pinning for a GPU)."""
        self._make_epoch = make_epoch
        self._prepare = prepare
        self._q: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self.epochs_started = 0
        self._thread = threading.Thread(target=self._run, name="radscale-batches", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            epoch = 0
            while not self._stop.is_set():
                self.epochs_started = epoch + 1
                empty = True
                for batch in self._make_epoch(epoch):
                    empty = False
                    if self._prepare is not None:
                        batch = self._prepare(batch)
                    while not self._stop.is_set():
                        try:
                            self._q.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if self._stop.is_set():
                        return
                if empty:
                    raise ValueError("training data stream is empty (no rows in this trial's subset)")
                epoch += 1
        except BaseException as err:  # surfaced to the loop on the next get()
            self._error = err

    def get(self, timeout: float) -> Any | None:
        """The next batch, or None if none arrived within `timeout` seconds."""
        if self._error is not None:
            raise self._error
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            if self._error is not None:
                raise self._error
            return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
