"""The `radscale` command. User errors print one line (`radscale: error: ...`) and exit 2."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from radscale.errors import RadscaleError


def _sweep(args) -> int:
    from radscale.config.load import load_job

    job = load_job(args.job, args.set)
    if job.sweep.ray_address:               # before Ray is imported: it reads its settings at import time
        os.environ["RAY_ADDRESS"] = job.sweep.ray_address
    from radscale.orchestrate.sweep import run_sweep

    out = run_sweep(job, echo=lambda m: print(m, flush=True))
    print(f"radscale: trained {len(out.trained)}, skipped {len(out.skipped)} complete, "
          f"evaluated {len(out.evaluated)}")
    print(f"radscale: MLflow store {out.tracking_uri} (open it with: radscale ui --store {out.tracking_uri})")
    print(f"radscale: report {out.report}")
    return 0


def _validate(args) -> int:
    from radscale.config.load import load_job
    from radscale.config.trial import plan_trials
    from radscale.data.sweep_data import prepare_sweep_data

    job = load_job(args.job, args.set)
    data = prepare_sweep_data(job, Path(job.sweep.output_dir) / job.sweep.name)
    trials = plan_trials(job)
    print(f"radscale: {args.job} is valid: {len(trials)} trials ({sum(t.trained for t in trials)} to train), "
          f"pretraining pool {data.pool_size} images, eval domains {', '.join(data.domains)}")
    return 0


def _phantom(args) -> int:
    from radscale.data.phantom.generate import generate_phantom

    path = generate_phantom(Path(args.out), args.n, seed=args.seed, profile=args.profile, image_size=args.size)
    print(f"radscale: phantom manifest {path}")
    return 0


def _report(args) -> int:
    import json

    import pandas as pd

    from radscale.config.specs import JobSpec
    from radscale.data.sweep_data import SweepData
    from radscale.orchestrate.paths import SweepPaths
    from radscale.report.build import build_report

    root = Path(args.sweep_dir)
    if not (root / "results.parquet").exists():
        raise RadscaleError(f"{root}: no results.parquet (run `radscale sweep` first)")
    job = JobSpec.model_validate_json((root / "job.json").read_text())
    meta = json.loads((root / "data" / "data.json").read_text())
    data = SweepData(str(root / "data/manifest.parquet"), str(root / "data/eval.parquet"), meta["pool_size"],
                     tuple(meta["labels"]), tuple(meta["domains"]), meta["sources"])
    print(f"radscale: report {build_report(job, pd.read_parquet(root / 'results.parquet'), SweepPaths(root), data)}")
    return 0


def _ui(args) -> int:
    store = args.store or f"sqlite:///{Path(args.output_dir).resolve() / 'mlflow.db'}"
    if store.startswith("sqlite:///") and not Path(store.removeprefix("sqlite:///")).exists():
        raise RadscaleError(f"{store}: no MLflow store there yet (run a sweep first)")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
           "--port", str(args.port)]
    print(f"radscale: MLflow UI on http://127.0.0.1:{args.port} (Ctrl-C to stop)", flush=True)
    os.execv(sys.executable, cmd)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="radscale", description="Data-scaling sweeps for radiology foundation models")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sweep", help="run (or resume) a sweep and write its report")
    s.add_argument("job", help="job file (TOML), e.g. jobs/demo.toml")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a job key")
    s.set_defaults(fn=_sweep)

    v = sub.add_parser("validate", help="check a job file and its data without training anything")
    v.add_argument("job")
    v.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    v.set_defaults(fn=_validate)

    ph = sub.add_parser("phantom", help="generate a phantom CXR corpus (images, masks, reports, manifest)")
    ph.add_argument("--out", required=True)
    ph.add_argument("--n", type=int, default=1000)
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--profile", default="default")
    ph.add_argument("--size", type=int, default=256)
    ph.set_defaults(fn=_phantom)

    r = sub.add_parser("report", help="rebuild the report of a finished sweep directory")
    r.add_argument("sweep_dir")
    r.set_defaults(fn=_report)

    u = sub.add_parser("ui", help="serve the MLflow UI on 127.0.0.1")
    u.add_argument("--store", default="", help="tracking URI (default: sqlite under --output-dir)")
    u.add_argument("--output-dir", default="runs")
    u.add_argument("--port", type=int, default=5000)
    u.set_defaults(fn=_ui)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except RadscaleError as err:
        print(f"radscale: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
