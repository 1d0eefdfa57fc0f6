"""Counts the operations of a piece of torch code that make the host wait for the device.

On a GPU each such operation (`.item()`, `float(t)`, a boolean-mask gather, `nonzero`...) drains the kernel
queue, idling the GPU while the host catches up. The same aten operations are dispatched on the CPU, so the
count is measurable on a machine without a GPU; work on host-only data (numpy, e.g. the iBOT masks) is not
dispatched through torch and is not counted.
"""
from __future__ import annotations

import sys
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_ALWAYS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive",
           "is_nonzero", "equal"}


def _bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in (indices or ()))


def _caller() -> str:
    """Innermost Python frame outside torch itself (path tail:line): who asked for the value."""
    f = sys._getframe(2)
    while f is not None and "/torch/" in f.f_code.co_filename.replace("\\", "/"):
        f = f.f_back
    if f is None:
        return "?"
    parts = f.f_code.co_filename.replace("\\", "/").split("/")
    return f"{'/'.join(parts[-2:])}:{f.f_lineno}"


class HostReads(TorchDispatchMode):
    """`with HostReads() as r: ...` then `r.total`, `r.counts` (aten op -> calls) and `r.callers` (who)."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()
        self.callers: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        if name in _ALWAYS or (name in ("index", "index_put", "index_put_") and _bool_index(args)) \
                or (name == "repeat_interleave" and isinstance(args[0], torch.Tensor) and "output_size" not in
                    (kwargs or {})):
            self.counts[name] += 1
            self.callers[_caller()] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())
