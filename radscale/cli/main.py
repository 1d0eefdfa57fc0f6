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
    if out.failed:          # exit 1 (not 2: no user error); a job runner sees the sweep as failed
        print(f"radscale: error: {len(out.failed)} trial(s) failed ({', '.join(out.failed)}); the others are "
              "evaluated and in the report; re-run the same command to retry the failed ones", file=sys.stderr)
        return 1
    return 0


def _validate(args) -> int:
    from radscale.config.load import load_job
    from radscale.config.rerun import check_rerun
    from radscale.config.trial import plan_trials
    from radscale.data.sweep_data import prepare_sweep_data
    from radscale.evaluate.preflight import check_evaluation, memory_limit_bytes
    from radscale.orchestrate.cost import check_cost

    job = load_job(args.job, args.set)
    check_rerun(job, Path(job.sweep.output_dir) / job.sweep.name)
    check_cost(job)
    data = prepare_sweep_data(job, Path(job.sweep.output_dir) / job.sweep.name)
    trials = plan_trials(job)
    features = check_evaluation(job.eval, [t.encoder.name for t in trials], data.eval_rows, on_this_host=False)
    print(f"radscale: {args.job} is valid: {len(trials)} trials ({sum(t.trained for t in trials)} to train), "
          f"pretraining pool {data.pool_size} images, eval domains {', '.join(data.domains)}, "
          f"~{features / 1e9:.3g} GB of driver memory in the largest extraction pass")
    if not job.eval.max_feature_gb and features > memory_limit_bytes(job.eval):
        print("radscale: warning: that is over 80 % of this host's memory; `radscale sweep` refuses it on a "
              "host like this one (set eval.max_feature_gb to check against the cluster's head)")
    return 0


def _phantom(args) -> int:
    from radscale.data.phantom.generate import generate_phantom

    path = generate_phantom(Path(args.out), args.n, seed=args.seed, profile=args.profile, image_size=args.size)
    print(f"radscale: phantom manifest {path}")
    return 0


def _report(args) -> int:
    import json

    import pandas as pd

    from radscale.config.load import validate_job
    from radscale.data.sweep_data import SweepData
    from radscale.orchestrate.paths import SweepPaths
    from radscale.report.build import build_report

    root = Path(args.sweep_dir)
    if not (root / "results.parquet").exists():
        raise RadscaleError(f"{root}: no results.parquet (run `radscale sweep` first)")
    job = validate_job(json.loads((root / "job.json").read_text()), str(root / "job.json"))   # one-line errors
    meta = json.loads((root / "data" / "data.json").read_text())
    data = SweepData(str(root / "data/manifest.parquet"), str(root / "data/eval.parquet"), meta["pool_size"],
                     tuple(meta["labels"]), tuple(meta["domains"]), meta["sources"])
    print(f"radscale: report {build_report(job, pd.read_parquet(root / 'results.parquet'), SweepPaths(root), data)}")
    return 0


def _import(args) -> int:
    from radscale.data.importers.registry import import_dataset

    options = {}
    for item in args.option:
        if "=" not in item:
            raise RadscaleError(f"--option {item!r}: expected key=value")
        k, v = item.split("=", 1)
        options[k.strip().replace("-", "_")] = v.strip()
    s = import_dataset(args.format, Path(args.root), Path(args.out), **options)
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(s.skipped.items())) or "none"
    print(f"radscale: imported {s.rows} image(s) of {s.patients} patient(s), {s.studies} studies, "
          f"{s.with_report} with reports, {s.masks_written} masks; skipped {skipped} -> {s.out}")
    return 0


def _label(args) -> int:
    import pandas as pd

    from radscale.data.labels.apply import label_manifest
    from radscale.data.labels.evaluate import evaluate_labels, format_evaluation
    from radscale.data.vocab import Vocabulary

    vocab = Vocabulary()
    labeler = None
    if args.llm_url:
        from radscale.data.labels.llm import LLMLabeler
        labeler = LLMLabeler(args.llm_url, args.llm_model, cache_path=args.llm_cache or None,
                             requests_per_second=args.llm_rps)
    out = args.out or args.manifest
    summary = label_manifest(args.manifest, out, vocab, labeler)
    print(f"radscale: labelled {summary.reports} report(s) in {summary.rows} row(s) -> {out}")
    if args.evaluate:
        labels = list(vocab.labels)
        pred, gold = pd.read_parquet(out), pd.read_parquet(args.evaluate)
        labels = [lab for lab in labels if lab in gold.columns]
        print(format_evaluation(evaluate_labels(pred, gold, labels, uncertain=args.uncertain)))
    return 0


def _prepare(args) -> int:
    import json

    from radscale.orchestrate.prepare import run_prepare

    summary = run_prepare(args.manifest, args.out, args.short_side, args.rows_per_shard, bits=args.bits,
                          echo=lambda m: print(m, flush=True))
    print(f"radscale: prepared shards in {args.out}: {json.dumps(summary.as_dict())}")
    return 0


def _plan(args) -> int:
    import json

    import pandas as pd

    from radscale.config.load import load_job
    from radscale.report.plan import plan_text

    job = load_job(args.job, args.set)
    root = Path(job.sweep.output_dir) / job.sweep.name
    results = pd.read_parquet(root / "results.parquet") if (root / "results.parquet").exists() else None
    meta = root / "data" / "data.json"
    pool = json.loads(meta.read_text())["pool_size"] if meta.exists() else None
    print(plan_text(job, results, args.target or None, args.extra_budget_usd, pool_size=pool))
    return 0


def _inspect(args) -> int:
    from radscale.models.open_weights import inspect_checkpoint

    report = inspect_checkpoint(args.path, args.encoder, allow_partial=args.allow_partial)
    print(report.describe())
    return 0


def _bench(args, rest: list[str]) -> int:
    from importlib import import_module

    modules = {"train": "radscale.bench.train_step", "import": "radscale.bench.import_bench",
               "manifest": "radscale.bench.manifest", "ingest": "radscale.bench.ingest",
               "extract": "radscale.orchestrate.bench_extract"}    # its default side runs Ray Data: orchestrate
    return import_module(modules[args.kind]).main(rest) or 0


def _ui(args) -> int:
    import signal
    import subprocess

    store = args.store or f"sqlite:///{Path(args.output_dir).resolve() / 'mlflow.db'}"
    if store.startswith("sqlite:///") and not Path(store.removeprefix("sqlite:///")).exists():
        raise RadscaleError(f"{store}: no MLflow store there yet (run a sweep first)")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
           "--port", str(args.port)]
    print(f"radscale: MLflow UI on http://127.0.0.1:{args.port} (Ctrl-C to stop)", flush=True)
    # The server runs in its own process group so that stopping `radscale ui` stops all of its workers.
    server = subprocess.Popen(cmd, start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        return server.wait()
    except (KeyboardInterrupt, SystemExit):
        return 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


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

    im = sub.add_parser("import", help="turn a public dataset layout or a folder into a radscale manifest")
    im.add_argument("format", help="mimic-cxr, chexpert, nih, padchest, vindr, ranzcr, candid-ptx, folder")
    im.add_argument("root")
    im.add_argument("--out", required=True)
    im.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="importer option, e.g. readers=any (see radscale/data/importers/)")
    im.set_defaults(fn=_import)

    lb = sub.add_parser("label", help="label reports into the manifest's label columns (rule-based or LLM)")
    lb.add_argument("manifest")
    lb.add_argument("--out", default="", help="output manifest (default: rewrite in place)")
    lb.add_argument("--llm-url", default="", help="OpenAI-compatible base URL (default: rule-based labeler)")
    lb.add_argument("--llm-model", default="")
    lb.add_argument("--llm-cache", default="", help="SQLite cache of answers keyed by report hash")
    lb.add_argument("--llm-rps", type=float, default=2.0, help="requests per second")
    lb.add_argument("--evaluate", default="", metavar="GOLD", help="gold manifest: print per-label P/R/F1")
    lb.add_argument("--uncertain", default="positive", choices=["positive", "negative", "exclude"])
    lb.set_defaults(fn=_label)

    pr = sub.add_parser("prepare", help="decode every image once into resized Parquet shards (resumable)")
    pr.add_argument("manifest")
    pr.add_argument("--out", required=True)
    pr.add_argument("--short-side", type=int, default=518)
    pr.add_argument("--rows-per-shard", type=int, default=1024)
    pr.add_argument("--bits", type=int, default=8, choices=[8, 16])
    pr.set_defaults(fn=_prepare)

    pl = sub.add_parser("plan", help="trials, projected cost, and (with results) extrapolations and next sizes")
    pl.add_argument("job")
    pl.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    pl.add_argument("--target", action="append", type=float, default=[], help="target error τ (repeatable)")
    pl.add_argument("--extra-budget-usd", type=float, default=None, help="budget for additional sizes")
    pl.set_defaults(fn=_plan)

    ic = sub.add_parser("inspect-checkpoint", help="what an open-weights checkpoint loads into an encoder")
    ic.add_argument("path")
    ic.add_argument("--encoder", required=True, help="registry name, e.g. rad-dino or mi2")
    ic.add_argument("--allow-partial", action="store_true", help="report missing/unexpected keys instead of refusing")
    ic.set_defaults(fn=_inspect)

    # add_help=False: `radscale bench KIND --help` reaches the benchmark's own options
    bn = sub.add_parser("bench", add_help=False,
                        help="benchmarks (one JSON line): train | extract | ingest | manifest | import")
    bn.add_argument("kind", choices=["train", "extract", "ingest", "manifest", "import"])
    bn.set_defaults(fn=_bench, passthrough=True)

    u = sub.add_parser("ui", help="serve the MLflow UI on 127.0.0.1")
    u.add_argument("--store", default="", help="tracking URI (default: sqlite under --output-dir)")
    u.add_argument("--output-dir", default="runs")
    u.add_argument("--port", type=int, default=5000)
    u.set_defaults(fn=_ui)
    return p


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    if rest and not getattr(args, "passthrough", False):
        build_parser().parse_args(argv)             # reports the unknown arguments and exits 2
    try:
        return args.fn(args, rest) if getattr(args, "passthrough", False) else args.fn(args)
    except RadscaleError as err:
        print(f"radscale: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
