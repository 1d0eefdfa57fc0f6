"""Loaders for the public reference data with published scaling fits (copied into tests/data/reference/scaling;
provenance in SOURCES.txt there).

Used by the validation tests: the fitters must reproduce Epoch AI's Chinchilla replication and Cherti et al.'s
OpenCLIP fits from these files before we trust them on our own curves.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

CHINCHILLA_CSV = "epoch_chinchilla_svg_extracted_data.csv"
OPENCLIP_CSV = "openclip_zeroshot_results.csv"
NMT_CSV = "alabdulmohsin2022_benchmark_lang_NMT_subset.csv"

# Besiroglu et al. 2024 (Epoch AI), notebook cell "Replicate exactly": summed Huber δ=1e-3 over 240 points.
EPOCH_CHINCHILLA = {"A": 477.8, "B": 2143.0, "E": 1.8172, "alpha": 0.3473, "beta": 0.3672}
# Cherti et al. 2023, Fig. 1 / figures.ipynb: error = a·C^−α, C = total GMACs, LAION-trained models.
CHERTI_OPENCLIP = {"imagenet1k": {"a": 5.86, "alpha": 0.111}, "mscoco_captions": {"a": 2.75, "alpha": 0.079}}
# Cherti et al.'s error metric per downstream task: 1 − top-1 for classification, 1 − image-retrieval R@5 for
# retrieval (figures.ipynb `default_acc_metric`).
OPENCLIP_ACC_COLUMN = {"mscoco_captions": "image_retrieval_recall@5", "flickr30k": "image_retrieval_recall@5"}


def _read(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"reference data not found: {path}")
    df = pd.read_csv(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column {missing[0]!r}")
    return df


@dataclass(frozen=True)
class ChinchillaPoints:
    n: np.ndarray  # parameters
    d: np.ndarray  # tokens, D = C / (6N)
    loss: np.ndarray


def load_chinchilla_points(folder: Path, drop_highest: int = 5) -> ChinchillaPoints:
    """Epoch's SVG-extracted Chinchilla runs, without the `drop_highest` highest-loss rows (Epoch keep 240)."""
    df = _read(Path(folder) / CHINCHILLA_CSV, ("Model Size", "Training FLOP", "loss")).dropna(
        subset=["Model Size", "Training FLOP", "loss"])
    keep = np.sort(np.argsort(df["loss"].to_numpy(), kind="stable")[: len(df) - drop_highest])
    n = df["Model Size"].to_numpy(float)[keep]
    return ChinchillaPoints(n=n, d=df["Training FLOP"].to_numpy(float)[keep] / (6.0 * n),
                            loss=df["loss"].to_numpy(float)[keep])


@dataclass(frozen=True)
class OpenClipPoints:
    gmacs_total: np.ndarray
    err: np.ndarray
    arch: tuple[str, ...]


def load_openclip_points(folder: Path, downstream: str, *, laion_only: bool = True) -> OpenClipPoints:
    """(total compute, error) per pretrained model on one downstream task; LAION rows only by default."""
    path = Path(folder) / OPENCLIP_CSV
    acc = OPENCLIP_ACC_COLUMN.get(downstream, "acc1")
    df = _read(path, ("arch", "gmacs_total", "upstream_dataset", "downstream_dataset", acc))
    df = df[df["downstream_dataset"] == downstream]
    if laion_only:
        df = df[df["upstream_dataset"].str.startswith("LAION")]
    if df.empty:
        raise ValueError(f"{path}: no rows with downstream_dataset={downstream!r}")
    return OpenClipPoints(gmacs_total=df["gmacs_total"].to_numpy(float), err=1.0 - df[acc].to_numpy(float),
                          arch=tuple(df["arch"]))


@dataclass(frozen=True)
class LearningCurve:
    n_fit: np.ndarray  # examples seen, rows with Training == 1
    loss_fit: np.ndarray
    n_holdout: np.ndarray  # Training == 0: the extrapolation target
    loss_holdout: np.ndarray


def load_nmt_curves(folder: Path) -> dict[str, LearningCurve]:
    """Alabdulmohsin et al. 2022 NMT log-perplexity curves, one per architecture."""
    df = _read(Path(folder) / NMT_CSV, ("Model", "Seen Examples", "Loss", "Training"))
    out = {}
    for model, g in df.groupby("Model", sort=True):
        tr = g["Training"].to_numpy() == 1
        n, loss = g["Seen Examples"].to_numpy(float), g["Loss"].to_numpy(float)
        out[str(model)] = LearningCurve(n_fit=n[tr], loss_fit=loss[tr], n_holdout=n[~tr], loss_holdout=loss[~tr])
    return out
