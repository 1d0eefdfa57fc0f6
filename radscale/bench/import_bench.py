"""`radscale bench import`: import + validate a synthetic N-row public layout, and the labelling rate per core.

Issue "Real corpora in", item 4: a 4M-row import + validation must finish within 15 min and 4 GB peak memory on
the 2-core machine. Stages, each in a fresh subprocess so that its peak RSS (VmHWM = ru_maxrss of that process)
is its own:
  generate  the source layout of `fmt`, streamed to disk in chunks (CheXpert `train.csv`; or MIMIC-CXR-JPG
            metadata + chexpert + split CSVs and one report file per study). Image paths need not exist: the
            import runs with check_files=False.
  import    `import_dataset(fmt, root, out, check_files=False)`
  validate  `read_manifest(out)` (read + validate_manifest)
  label     `label_manifest` over the first `label_rows` rows with a report (phantom report text for CheXpert,
            which has none); the rate is reports per CPU-second of one process and the 4M figure is an
            EXTRAPOLATION from it, not a measurement.
tracemalloc is not used: it cannot see Arrow's allocator (most of the bytes) and slows Python loops several-fold.
Wall and CPU seconds are both reported: on a shared machine wall clock depends on the load (loadavg_1m).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from radscale.bench.memory import peak_rss_mb

FORMATS = ("chexpert", "mimic-cxr")
PAPER_ROWS = 4_000_000            # arXiv 2509.12818 pretraining corpus, ~4M images
TARGET_S, TARGET_RSS_MB = 900.0, 4096.0
GEN_CHUNK_ROWS = 200_000
MAX_MIMIC_ROWS = 1_000_000        # the MIMIC layout writes one report file per study
CHEXPERT_LABEL_COLUMNS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                          "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                          "Pleural Other", "Fracture", "Support Devices")
MIMIC_METADATA = ("dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                  "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                  "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning")
# Cell probabilities (1.0, 0.0, -1.0); the rest blank. Roughly CheXpert's: most observations are not mentioned.
LABEL_P = (0.12, 0.08, 0.04)
_CODES = pa.array(["1.0", "0.0", "-1.0", None])
_WRITE = pacsv.WriteOptions(include_header=False, quoting_style="none")


# ---- synthetic source layouts -------------------------------------------------------------------------------------

def _structure(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Rows grouped into studies (1-3 views) and studies into patients (geometric, mean ~3):
    per row its patient (0-based, within the chunk), study number in the patient, view number in the study."""
    views = rng.choice(np.array([1, 2, 3]), size=n, p=[0.55, 0.40, 0.05])
    views = views[: int(np.searchsorted(np.cumsum(views), n)) + 1]
    views[-1] -= int(views.sum()) - n
    per_patient = rng.geometric(0.35, size=len(views))
    per_patient = per_patient[: int(np.searchsorted(np.cumsum(per_patient), len(views))) + 1]
    per_patient[-1] -= int(per_patient.sum()) - len(views)
    study_patient = np.repeat(np.arange(len(per_patient)), per_patient)
    study_no = np.arange(len(views)) - np.repeat(np.cumsum(per_patient) - per_patient, per_patient) + 1
    row_study = np.repeat(np.arange(len(views)), views)
    view_no = np.arange(n) - np.repeat(np.cumsum(views) - views, views) + 1
    return study_patient[row_study], study_no[row_study], view_no, len(per_patient)


def _text(values: np.ndarray, width: int = 0) -> pa.Array:
    out = pc.cast(pa.array(values), pa.string())
    return pc.utf8_lpad(out, width, "0") if width else out


def _labels(rng: np.random.Generator, n: int) -> pa.Array:
    u = rng.random(n)
    edges = np.cumsum(LABEL_P)
    return pc.take(_CODES, pa.array(np.searchsorted(edges, u, side="right")))


def _csv_writer(path: Path, header: tuple[str, ...], schema: pa.Schema) -> tuple[object, pacsv.CSVWriter]:
    """A CSV written like the source's: an unquoted header line, then unquoted cells (no cell holds a comma)."""
    handle = open(path, "wb")
    handle.write((",".join(header) + "\n").encode())
    return handle, pacsv.CSVWriter(handle, schema, write_options=_WRITE)


def write_chexpert_source(root: Path, rows: int, seed: int = 0, chunk_rows: int = GEN_CHUNK_ROWS) -> int:
    """`<root>/train.csv` of `rows` images in CheXpert's format, written chunk by chunk; returns its size in bytes."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    header = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABEL_COLUMNS)
    schema = pa.schema([pa.field(f"c{i}", pa.string()) for i in range(len(header))])
    handle, writer = _csv_writer(root / "train.csv", header, schema)
    first_patient = 1
    with handle, writer:
        for start in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - start)
            patient, study_no, view_no, n_patients = _structure(rng, n)
            frontal = (view_no == 1) | (rng.random(n) < 0.15)
            sex = np.where(rng.random(n_patients) < 0.55, "Male", "Female")[patient]
            age = rng.integers(18, 91, n_patients)[patient]
            path = pc.binary_join_element_wise(
                "CheXpert-v1.0/train/patient", _text(patient + first_patient, 5), "/study", _text(study_no),
                "/view", _text(view_no), pa.array(np.where(frontal, "_frontal.jpg", "_lateral.jpg")), "")
            ap_pa = pa.array(np.where(rng.random(n) < 0.8, "AP", "PA"), mask=~frontal)
            cols = [path, pa.array(sex), _text(age), pa.array(np.where(frontal, "Frontal", "Lateral")), ap_pa]
            cols += [_labels(rng, n) for _ in CHEXPERT_LABEL_COLUMNS]
            writer.write_table(pa.Table.from_arrays(cols, schema=schema))
            first_patient += n_patients
    return (root / "train.csv").stat().st_size


def _hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    """MIMIC dicom_ids: five dash-separated groups of 8 hex digits (44 characters), built in one buffer."""
    chars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[rng.integers(0, 16, (n, 44), dtype=np.uint8)]
    chars[:, 8::9] = ord("-")
    offsets = np.arange(n + 1, dtype=np.int32) * 44
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def synthetic_reports(n: int, seed: int = 0) -> Iterator[str]:
    """`n` phantom report texts (FINDINGS + IMPRESSION, negation, hedging, device positions), patient by patient."""
    from radscale.data.phantom.devices import sample_devices
    from radscale.data.phantom.findings import sample_patient, sample_study
    from radscale.data.phantom.profiles import PROFILES
    from radscale.data.phantom.reports import write_report

    profile, rng, made = PROFILES["default"], np.random.default_rng([seed, 7]), 0
    while made < n:
        patient, findings, devices = sample_patient(profile.rates, profile.icu_fraction, rng), None, None
        for k in range(1 + int(rng.choice(4, p=profile.studies))):
            findings = sample_study(patient, findings, profile.rates, profile.icu_fraction, rng)
            ptx = findings["pneumothorax"]
            devices = sample_devices(profile.device_rates, patient.icu, devices,
                                     ptx.side if ptx.label == 1 else "", rng)
            yield write_report(findings, devices, "AP" if patient.icu else "PA", k > 0, rng)
            made += 1
            if made == n:
                return


def write_mimic_source(root: Path, rows: int, seed: int = 0, chunk_rows: int = GEN_CHUNK_ROWS) -> int:
    """MIMIC-CXR-JPG metadata / chexpert / split CSVs for `rows` images plus one report per study under `files/`;
    returns the bytes written."""
    if rows > MAX_MIMIC_ROWS:
        raise ValueError(f"import bench: fmt mimic-cxr writes one report file per study; rows must be <= "
                         f"{MAX_MIMIC_ROWS}, got {rows}")
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    prefix = "mimic-cxr-2.0.0"
    meta_schema = pa.schema([pa.field(f"c{i}", pa.string()) for i in range(len(MIMIC_METADATA))])
    label_header = ("subject_id", "study_id", *sorted(CHEXPERT_LABEL_COLUMNS))
    label_schema = pa.schema([pa.field(f"c{i}", pa.string()) for i in range(len(label_header))])
    split_schema = pa.schema([pa.field(f"c{i}", pa.string()) for i in range(4)])
    meta = _csv_writer(root / f"{prefix}-metadata.csv", MIMIC_METADATA, meta_schema)
    labels = _csv_writer(root / f"{prefix}-chexpert.csv", label_header, label_schema)
    split = _csv_writer(root / f"{prefix}-split.csv", ("dicom_id", "study_id", "subject_id", "split"), split_schema)
    reports = synthetic_reports(rows, seed)
    subject0, study0, written = 10_000_000, 50_000_000, 0
    try:
        for start in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - start)
            patient, study_no, _, n_patients = _structure(rng, n)
            first = np.r_[True, (patient[1:] != patient[:-1]) | (study_no[1:] != study_no[:-1])]
            study_index = np.cumsum(first) - 1
            study_numbers = study0 + np.cumsum(rng.integers(1, 40, int(first.sum())))
            subject, study = patient + subject0, study_numbers[study_index]
            view = np.array(["PA", "AP", "LATERAL"])[rng.choice(3, n, p=[0.35, 0.4, 0.25])]
            dicom = _hex_ids(rng, n)
            subject_text, study_text = _text(subject), _text(study)
            portable = np.where(view == "AP", "CHEST (PORTABLE AP)", "CHEST (PA AND LAT)")
            meaning = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral"}
            meta[1].write_table(pa.Table.from_arrays([
                dicom, subject_text, study_text, pa.array(portable), pa.array(view), _text(np.full(n, 3056)),
                _text(np.full(n, 2544)), _text(21_000_000 + rng.integers(0, 99_999, n_patients)[patient] * 10),
                _text(rng.integers(0, 235_959, n)), pa.array(portable),
                pa.array(np.vectorize(meaning.get, otypes=[object])(view)),
                pa.array(np.where(view == "AP", "Recumbent", "Erect"))], schema=meta_schema))
            n_studies = int(first.sum())
            labels[1].write_table(pa.Table.from_arrays(
                [_text(subject[first]), _text(study[first])] + [_labels(rng, n_studies) for _ in label_header[2:]],
                schema=label_schema))
            fold = np.array(["train", "validate", "test"])[rng.choice(3, n_patients, p=[0.98, 0.01, 0.01])]
            split[1].write_table(pa.Table.from_arrays(
                [dicom, study_text, subject_text, pa.array(fold[patient])], schema=split_schema))
            for s, st in zip(subject[first].tolist(), study[first].tolist()):
                folder = root / "files" / f"p{str(s)[:2]}" / f"p{s}"
                folder.mkdir(parents=True, exist_ok=True)
                text = next(reports)
                (folder / f"s{st}.txt").write_text(text)
                written += len(text)
            subject0, study0 = subject0 + n_patients, int(study_numbers[-1])
    finally:
        for handle, writer in (meta, labels, split):
            writer.close()
            handle.close()
    return written + sum((root / f"{prefix}-{k}.csv").stat().st_size for k in ("metadata", "chexpert", "split"))


# ---- stages (each runs in its own process) ------------------------------------------------------------------------

def _label_input(manifest: Path, dest: Path, rows: int, seed: int) -> int:
    """The first `rows` rows with a report (phantom text added where the manifest has no report column)."""
    source = pq.ParquetFile(str(manifest))
    batches, have = [], 0
    for batch in source.iter_batches(batch_size=min(max(rows, 1), 65_536)):
        if "report" in batch.schema.names:
            batch = batch.filter(pc.is_valid(batch.column("report")))
        batches.append(batch.slice(0, rows - have))
        have += batches[-1].num_rows
        if have >= rows:
            break
    table = pa.Table.from_batches(batches, schema=batches[0].schema if batches else source.schema_arrow)
    if "report" not in table.column_names:
        table = table.append_column("report", pa.array(list(synthetic_reports(table.num_rows, seed)), pa.string()))
    pq.write_table(table, str(dest))
    return table.num_rows


def _stage(name: str, p: dict) -> dict:
    """Run one stage in this process; wall/CPU seconds of the timed part and this process' peak RSS."""
    from radscale.data.importers.registry import import_dataset
    from radscale.data.labels.apply import label_manifest
    from radscale.data.manifest import read_manifest

    root, out = Path(p["root"]), Path(p["out"])
    extra: dict = {}
    if name == "label":  # untimed set-up: the report texts
        label_in = out.with_name("label_in.parquet")
        n = _label_input(out, label_in, p["label_rows"], p["seed"])
        texts = pq.read_table(str(label_in), columns=["report"]).column("report")
        extra["unique_reports"] = int(pc.count_distinct(texts).as_py())
    base = peak_rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    if name == "generate":
        writer = write_chexpert_source if p["fmt"] == "chexpert" else write_mimic_source
        extra["source_mb"] = round(writer(root, p["rows"], p["seed"]) / 2**20, 1)
    elif name == "import":
        summary = import_dataset(p["fmt"], root, out, check_files=False)
        extra.update(rows=summary.rows, patients=summary.patients, studies=summary.studies,
                     with_report=summary.with_report, skipped=summary.skipped_total,
                     manifest_mb=round(out.stat().st_size / 2**20, 1))
    elif name == "validate":
        extra["rows"] = read_manifest(out).num_rows
    elif name == "label":
        summary = label_manifest(label_in, out.with_name("label_out.parquet"))
        extra["reports"] = summary.reports
    else:
        raise ValueError(f"import bench: unknown stage {name!r}")
    return {"s": round(time.perf_counter() - wall, 3), "cpu_s": round(time.process_time() - cpu, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1), "base_rss_mb": round(base, 1), **extra}


def _run_stage(name: str, params: dict) -> dict:
    """`_stage` in a fresh interpreter, so the peak RSS it reports belongs to this stage alone."""
    cmd = [sys.executable, "-m", "radscale.bench.import_bench", "--stage", name, "--params", json.dumps(params)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"import bench: stage {name} failed (exit {done.returncode}): {tail}")
    return json.loads(lines[-1])


def run_import_bench(rows: int = 4_000_000, fmt: str = "chexpert", workdir: str | None = None,
                     label_rows: int = 20_000, seed: int = 0) -> dict:
    """Generate, import, validate and label (a sample); one flat dict (see the module docstring)."""
    if fmt not in FORMATS:
        raise ValueError(f"import bench: fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if rows < 1 or label_rows < 0:
        raise ValueError(f"import bench: rows must be >= 1 and label_rows >= 0, got {rows} and {label_rows}")
    if fmt == "mimic-cxr" and rows > MAX_MIMIC_ROWS:
        raise ValueError(f"import bench: fmt mimic-cxr writes one report file per study; rows must be <= "
                         f"{MAX_MIMIC_ROWS}, got {rows}")
    base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="radscale-import-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    params = {"fmt": fmt, "rows": rows, "seed": seed, "label_rows": label_rows,
              "root": str(base / f"{fmt}-{rows}"), "out": str(base / "manifest.parquet")}
    load = os.getloadavg()[0]
    try:
        shutil.rmtree(params["root"], ignore_errors=True)
        gen = _run_stage("generate", params)
        imp = _run_stage("import", params)
        val = _run_stage("validate", params)
        lab = _run_stage("label", params) if label_rows else None
    finally:
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    stages = {"import": imp, "validate": val, **({"label": lab} if lab else {})}
    out = {"bench": "import", "fmt": fmt, "rows": rows, "imported_rows": imp["rows"], "skipped": imp["skipped"],
           "patients": imp["patients"], "studies": imp["studies"], "with_report": imp["with_report"],
           "source_mb": gen["source_mb"], "manifest_mb": imp["manifest_mb"], "generate_s": gen["s"],
           **{f"{k}_{m}": v[m] for k, v in stages.items() for m in ("s", "cpu_s", "peak_rss_mb")},
           "import_base_rss_mb": imp["base_rss_mb"]}
    out["import_validate_s"] = round(imp["s"] + val["s"], 3)
    out["import_validate_cpu_s"] = round(imp["cpu_s"] + val["cpu_s"], 3)
    out["meets_target"] = bool(out["import_validate_s"] <= TARGET_S
                               and max(imp["peak_rss_mb"], val["peak_rss_mb"]) <= TARGET_RSS_MB)
    if lab:
        per_cpu_s = lab["reports"] / max(lab["cpu_s"], 1e-9)
        out.update(label_reports=lab["reports"], label_unique_reports=lab["unique_reports"],
                   label_reports_per_s=round(lab["reports"] / max(lab["s"], 1e-9), 1),
                   label_reports_per_cpu_s=round(per_cpu_s, 1),
                   label_hours_4m_one_core_extrapolated=round(PAPER_ROWS / per_cpu_s / 3600, 2))
    out.update(target_s=TARGET_S, target_rss_mb=TARGET_RSS_MB, loadavg_1m=round(load, 2), cpus=os.cpu_count(),
               python=platform.python_version(), pyarrow=pa.__version__, numpy=np.__version__)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="radscale bench import", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=PAPER_ROWS)
    parser.add_argument("--fmt", choices=FORMATS, default="chexpert")
    parser.add_argument("--workdir", default=None, help="keep the source layout and manifest here (default: temp)")
    parser.add_argument("--label-rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", help=argparse.SUPPRESS)    # internal: one stage, in this process
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        print(json.dumps(_stage(args.stage, json.loads(args.params))), flush=True)
        return 0
    print(json.dumps(run_import_bench(args.rows, args.fmt, args.workdir, args.label_rows, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
