"""The evaluation suite of one frozen encoder: every enabled family on the same eval rows, one results table.

Families (rows' `task`): linear probes ("findings", "tubes") on the multi-layer features; attention-pooling
probes ("<task>:attention"), the segmentation probe ("segmentation") and the report-generation probe
("report_generation") on the last layer's patch tokens. Every probe is fitted on in-domain probe_train (epochs
or C chosen on in-domain probe_val) and tested on each domain's test rows with patient-clustered bootstrap CIs;
the resamples depend only on the rows and `eval.seed`, so every trial is scored on the same ones (paired).

Segmentation rows need masks (`SegMasks`): a row's mask is known when its `mask_uri` was read, or when it has
none and its `support_devices` label is not positive or uncertain (no device drawn: the phantom's
convention); a device-positive row without a mask (RANZCR images without annotations) is unknown
and left out of fitting and scoring. Within a known mask, `mask_devices` (the importers': the types its source
draws, e.g. RANZCR has no chest tubes, CANDID-PTX only chest tubes) limits which types train as background
(`SegMasks.annotated`); null = every type.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from radscale.config.specs import EvalSpec
from radscale.data.vocab import DEVICE_TYPES, Vocabulary
from radscale.evaluate.attention_probe import evaluate_attention_probes
from radscale.evaluate.classification import evaluate_classification
from radscale.evaluate.extract import last_layer_cls, patch_grid
from radscale.evaluate.report_gen import (HFDecoderConfig, SmallDecoderConfig, evaluate_report_generation,
                                          fit_report_generator, report_section)
from radscale.evaluate.segmentation import evaluate_segmentation, fit_segmentation_probe

IN_DOMAIN = "in-domain"
# The small decoder on a few hundred probe_train reports: without dropout and at lr 2e-3 it reaches in 8 epochs
# the probe_val loss its defaults (dropout 0.1, lr 1e-3) reach in ~12 (phantom, measured), and dropout's masks
# are ~15% of a CPU step. Stopping at 8 left greedy decoding repeating one sentence (label F1 0); early stopping
# within report_epochs=30 ends near epoch 12.
SMALL_DECODER = SmallDecoderConfig(dropout=0.0, lr=2e-3)


@dataclass(frozen=True)
class SegMasks:
    masks: np.ndarray           # [N, S, S] uint8 bitfields (bit k = DEVICE_TYPES[k]), rows aligned with meta
    known: np.ndarray           # bool [N]: the row's mask is known (module docstring)
    annotated: np.ndarray | None = None   # bool [N, K]: types the row's source draws (None = all; annotated_types)

    def rows(self, keep: np.ndarray) -> "SegMasks":
        return SegMasks(self.masks[keep], self.known[keep], None if self.annotated is None else self.annotated[keep])


def annotated_types(meta: pd.DataFrame) -> np.ndarray | None:
    """bool [N, K] from `mask_devices` ("ett,ngt,cvc,swan_ganz"; null = every type); None without the column."""
    if "mask_devices" not in meta.columns:
        return None
    out = np.ones((len(meta), len(DEVICE_TYPES)), bool)
    for i, value in enumerate(meta["mask_devices"].tolist()):
        if value is None or value != value or not str(value).strip():     # null / NaN / empty: every type
            continue
        names = [n.strip() for n in str(value).split(",") if n.strip()]
        bad = [n for n in names if n not in DEVICE_TYPES]
        if bad:
            raise ValueError(f"mask_devices: unknown device type {bad[0]!r} at eval row {i} "
                             f"(known: {', '.join(DEVICE_TYPES)})")
        out[i] = [t in names for t in DEVICE_TYPES]
    return out


@dataclass(frozen=True)
class SuiteResult:
    table: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)     # wall time per family
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # process CPU time per family


@contextmanager
def probe_threads(n: int):
    """Cap torch and BLAS/OpenMP threads at n (0 = leave them) and restore them afterwards. Probes are small:
    on a 2-core machine shared with other work, multi-threaded BLAS inside L-BFGS is ~6x slower than 1 thread."""
    if n <= 0:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(old)


def known_masks(meta: pd.DataFrame, failed=()) -> np.ndarray:
    """bool [N]: mask_uri set and readable (not in `failed`), or null with support_devices not 1/-1."""
    if "mask_uri" not in meta.columns:
        return np.zeros(len(meta), bool)
    has_file = meta["mask_uri"].notna().to_numpy()
    if "support_devices" in meta.columns:
        dev = meta["support_devices"].to_numpy(dtype="float64", na_value=np.nan)
        no_device = ~np.isin(dev, (1.0, -1.0))
    else:
        no_device = np.ones(len(meta), bool)
    known = has_file | no_device
    known[np.asarray(list(failed), dtype=np.int64)] = False
    return known


def _splits(meta: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    split, domain = meta["split"].to_numpy(), meta["domain"].to_numpy()
    return ((split == "probe_train") & (domain == IN_DOMAIN), (split == "probe_val") & (domain == IN_DOMAIN),
            split == "test", domain)


def segmentation_table(tokens: np.ndarray, meta: pd.DataFrame, masks: SegMasks, spec: EvalSpec,
                       device: str = "cpu", known_rows_only: bool = False) -> pd.DataFrame:
    """Rows task="segmentation" (Dice, clDice per device type and macro) for each domain with masks.
    tokens: one row per meta row, or with known_rows_only one per row with a known mask (masks.known), in order."""
    if known_rows_only and len(tokens) != int(masks.known.sum()):
        raise ValueError(f"segmentation: {len(tokens)} token rows for {int(masks.known.sum())} rows with masks")
    at = np.cumsum(masks.known) - 1 if known_rows_only else np.arange(len(meta))     # meta row -> token row
    tr, va, te_all, domain = _splits(meta)
    tr, va = tr & masks.known, va & masks.known
    if not masks.masks[va].any() or not masks.masks[tr].any():     # nothing to learn or to select an epoch on
        return pd.DataFrame()
    # sliced once: each fancy index copies the tokens (GBs at full size), and every repeat reads the same rows
    fit_data = (tokens[at[tr]], masks.masks[tr], tokens[at[va]], masks.masks[va])
    annotated = None if masks.annotated is None else masks.annotated[tr]
    probes = [fit_segmentation_probe(*fit_data, patch_grid(tokens.shape[1]), len(DEVICE_TYPES), spec.seg_head,
                                     spec.seg_epochs, spec.seg_lr, spec.seed + r, device=device,
                                     train_annotated=annotated)
              for r in range(spec.seg_repeats)]
    del fit_data
    patients = meta["patient_id"].to_numpy()
    parts = []
    for dom in sorted(set(domain)):
        te = te_all & (domain == dom) & masks.known
        if te.any():
            parts.append(evaluate_segmentation(probes, tokens[at[te]], masks.masks[te], patients[te], DEVICE_TYPES,
                                               spec.bootstrap, spec.seed, domain=dom, device=device))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def report_test_rows(meta: pd.DataFrame, has_report: np.ndarray, domain: str, spec: EvalSpec) -> np.ndarray:
    """Indices of a domain's test rows that get a generated report: a seeded sample of `report_max_test`
    (sorted), the same for every trial."""
    split, dom = meta["split"].to_numpy(), meta["domain"].to_numpy()
    rows = np.flatnonzero((split == "test") & (dom == domain) & has_report)
    if spec.report_max_test and len(rows) > spec.report_max_test:
        rows = np.sort(np.random.default_rng(spec.seed).choice(rows, spec.report_max_test, replace=False))
    return rows


def report_table(features: np.ndarray, patch: np.ndarray, meta: pd.DataFrame, spec: EvalSpec,
                 vocabulary: Vocabulary, device: str = "cpu") -> pd.DataFrame:
    """Rows task="report_generation" (label F1, BLEU-4, ROUGE-L) for each domain with report text."""
    if "report" not in meta.columns:
        return pd.DataFrame()
    reports = np.array([report_section(r, spec.report_section) if isinstance(r, str) else None
                        for r in meta["report"].to_numpy(dtype=object)], dtype=object)
    has = np.array([isinstance(r, str) and r.strip() != "" for r in reports])
    tr, va, _, domain = _splits(meta)
    tr, va = np.flatnonzero(tr & has), np.flatnonzero(va & has)
    if not len(tr) or not len(va):
        return pd.DataFrame()
    cls = last_layer_cls(features, patch.shape[-1])

    def feats(idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"cls": cls[idx], "patch": patch[idx]}

    decoder = SMALL_DECODER if spec.report_decoder == "small" else \
        HFDecoderConfig(spec.report_decoder, dtype="bfloat16" if device == "cuda" else "float32")
    generator = fit_report_generator(feats(tr), list(reports[tr]), feats(va), list(reports[va]), decoder,
                                     spec.report_epochs, spec.seed, max_len=spec.report_max_tokens, device=device)
    patients = meta["patient_id"].to_numpy()
    parts = []
    for dom in sorted(set(domain)):
        te = report_test_rows(meta, has, dom, spec)
        if len(te):
            parts.append(evaluate_report_generation(generator, feats(te), list(reports[te]), patients[te], vocabulary,
                                                    spec.bootstrap, spec.seed, domain=dom))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def evaluate_encoder(features: np.ndarray, patch: np.ndarray | None, meta: pd.DataFrame, spec: EvalSpec,
                     vocabulary: Vocabulary, masks: SegMasks | None = None, device: str = "cpu",
                     seg_tokens: np.ndarray | None = None) -> SuiteResult:
    """All enabled families of one encoder. features [N, F] and patch [N, P, D] (None: patch-token families
    skipped) align with meta's rows (eval_id, patient_id, split, domain, labels[, mask_uri, report]).
    seg_tokens [K, P', D'] (evaluate/extract.py `seg_<i>`), one per row with a known mask (masks.known, in
    order; orchestrate/ingest.py `extract_features(seg_ids=)`), replace patch for segmentation when given."""
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    parts: list[pd.DataFrame] = []

    def run(name: str, fn) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        parts.append(fn())
        seconds[name], cpu[name] = time.perf_counter() - t0, time.process_time() - c0

    with probe_threads(spec.probe_threads if device == "cpu" else 0):
        run("linear", lambda: evaluate_classification(features, meta, spec, vocabulary))
        if patch is not None:
            if spec.attention_probe:
                run("attention", lambda: evaluate_attention_probes(patch, meta, spec, vocabulary, device))
            if spec.segmentation and masks is not None:
                run("segmentation", lambda: segmentation_table(patch if seg_tokens is None else seg_tokens,
                                                               meta, masks, spec, device, seg_tokens is not None))
            if spec.report_generation:
                run("report_generation", lambda: report_table(features, patch, meta, spec, vocabulary, device))
    parts = [p for p in parts if len(p)]
    return SuiteResult(pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(), seconds, cpu)


def needs_patch_tokens(spec: EvalSpec) -> bool:
    return spec.attention_probe or spec.segmentation or spec.report_generation


def extraction_options(spec: EvalSpec, segmentation: bool) -> dict:
    """The column arguments of FeatureExtractor (and of `bytes_per_image`) for an evaluation: patch tokens for
    the patch-token families, segmentation tokens only when segmentation runs (rows with masks)."""
    patch = needs_patch_tokens(spec)
    seg = patch and spec.segmentation and segmentation
    return dict(n_layers=spec.layers, max_patch_grid=spec.max_patch_grid, patch_tokens=patch,
                seg_stage=spec.seg_stage if seg else -1, seg_layers=spec.seg_layers if seg else 1)
