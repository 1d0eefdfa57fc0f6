"""Benchmarks behind `radscale bench <kind>`: each returns one flat dict (printed as one JSON line)."""
from __future__ import annotations

KINDS = ("manifest", "ingest")


def run_bench(kind: str, **opts) -> dict:
    """Run benchmark `kind` ("manifest": validation/splits/subsets at 4M rows; "ingest": decode rates per core).

    `opts` are the keyword arguments of `bench_manifest` / `bench_ingest`.
    """
    if kind == "manifest":
        from radscale.bench.manifest import bench_manifest

        return bench_manifest(**opts)
    if kind == "ingest":
        from radscale.bench.ingest import bench_ingest

        return bench_ingest(**opts)
    raise ValueError(f"unknown benchmark {kind!r}; choose one of {', '.join(KINDS)}")
