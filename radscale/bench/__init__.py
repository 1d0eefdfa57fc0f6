"""Benchmarks: radscale paths side by side with bare PyTorch baselines; each prints one JSON line.

`run_bench` dispatches the data benchmarks (`radscale bench manifest|ingest`), which return one flat dict.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable

from radscale.errors import RadscaleError

KINDS = ("manifest", "ingest")


def _coerce(fn: Callable, opts: dict) -> dict:
    """Options from a command line arrive as strings: convert each to the type of the parameter's default."""
    params = inspect.signature(fn).parameters
    out = {}
    for key, value in opts.items():
        if key not in params:
            raise RadscaleError(f"unknown option {key!r} for {fn.__name__}; options: {', '.join(params)}")
        default = params[key].default
        if isinstance(value, str) and isinstance(default, tuple):
            value = tuple(int(v) for v in value.split(",") if v)
        elif isinstance(value, str) and isinstance(default, (int, float)) and not isinstance(default, bool):
            try:
                value = type(default)(value)
            except ValueError:
                raise RadscaleError(f"option {key!r}: expected {type(default).__name__}, got {value!r}") from None
        out[key] = value
    return out


def run_bench(kind: str, **opts) -> dict:
    """Run benchmark `kind` ("manifest": validation/splits/subsets at 4M rows; "ingest": decode rates per core).

    `opts` are the keyword arguments of `bench_manifest` / `bench_ingest` (strings are converted).
    """
    if kind == "manifest":
        from radscale.bench.manifest import bench_manifest as fn
    elif kind == "ingest":
        from radscale.bench.ingest import bench_ingest as fn
    else:
        raise RadscaleError(f"unknown benchmark {kind!r}; choose one of {', '.join(KINDS)}")
    return fn(**_coerce(fn, opts))
