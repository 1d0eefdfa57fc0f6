"""Acquisition profiles of the phantom corpus: the scanner (intensity curve, noise, blur, field of view, storage
depth) and the population it images (ICU share, label prevalences, device rates); `acquire` is the detector
model that turns a rendered attenuation map into stored pixels.

"default" is an ICU-heavy in-house corpus (about half the films carry lines or tubes). "scanner-b" is an
out-of-domain site: a different detector curve and gamma, more noise and blur, a wider off-centre field of view,
16-bit PNG storage, and an outpatient-heavy population with different prevalences.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import gaussian_filter

from radscale.data.phantom.canvas import View, smooth_noise
from radscale.data.phantom.findings import DEFAULT_RATES, FindingRate


@dataclass(frozen=True)
class Profile:
    name: str
    id_prefix: str  # first letter of patient ids, so two profiles' corpora never share a patient id
    fov_cm: float
    center: tuple[float, float]  # cm offset of the field of view's centre from the default one
    curve: str  # "linear" | "log": detector response before gamma
    window: tuple[float, float]  # attenuation mapped to black and white
    gamma: float
    noise: float  # quantum noise sd (fraction of full scale) at white
    blur_cm: float  # Gaussian point-spread sd
    bit_depth: int  # 8 or 16 bit PNG
    icu_fraction: float  # share of patients from the ICU (AP portable films, lines, acute findings)
    rates: dict[str, FindingRate]
    device_rates: dict[str, float]  # presence per ICU study
    studies: tuple[float, float, float, float]  # P(1, 2, 3, 4 studies) per patient


def _with_positive(positive: dict[str, float]) -> dict[str, FindingRate]:
    return {name: replace(r, positive=positive.get(name, r.positive)) for name, r in DEFAULT_RATES.items()}


DEFAULT_DEVICE_RATES = {"ett": 0.55, "ngt": 0.55, "cvc": 0.6, "swan_ganz": 0.4, "chest_tube": 0.32}

PROFILES: dict[str, Profile] = {
    "default": Profile(
        name="default", id_prefix="P", fov_cm=40.0, center=(0.0, 0.0), curve="linear", window=(0.02, 0.86),
        gamma=1.0, noise=0.012, blur_cm=0.08, bit_depth=8, icu_fraction=0.5, rates=dict(DEFAULT_RATES),
        device_rates=dict(DEFAULT_DEVICE_RATES), studies=(0.2, 0.3, 0.3, 0.2)),
    "scanner-b": Profile(
        name="scanner-b", id_prefix="B", fov_cm=44.0, center=(1.2, -1.0), curve="log", window=(0.0, 0.95),
        gamma=0.8, noise=0.03, blur_cm=0.22, bit_depth=16, icu_fraction=0.2,
        rates=_with_positive({
            "pleural_effusion": 0.12, "cardiomegaly": 0.06, "pneumothorax": 0.03, "edema": 0.06,
            "consolidation": 0.08, "pneumonia": 0.07, "atelectasis": 0.12, "lung_opacity": 0.15, "nodule": 0.15,
            "mass": 0.06, "emphysema": 0.15, "fibrosis": 0.10, "calcification": 0.15,
            "enlarged_cardiomediastinum": 0.05, "fracture": 0.05, "lung_lesion": 0.05, "hernia": 0.05,
            "pleural_other": 0.10}),
        device_rates={"ett": 0.4, "ngt": 0.4, "cvc": 0.5, "swan_ganz": 0.2, "chest_tube": 0.25},
        studies=(0.4, 0.3, 0.2, 0.1)),
}


def acquire(att: np.ndarray, profile: Profile, view: View, rng: np.random.Generator) -> np.ndarray:
    """Detector model: intensity curve, gamma, point-spread blur, quantum noise and mottle, quantisation."""
    lo, hi = profile.window
    shift, gain = rng.normal(0.0, 0.02), rng.normal(1.0, 0.04)  # exposure varies film to film
    v = np.clip((att - np.float32(lo + shift)) * np.float32(gain / (hi - lo)), 0.0, 1.0)
    if profile.curve == "log":
        v = np.log1p(np.float32(3.0) * v) * np.float32(1 / np.log1p(3.0))
    if profile.gamma != 1.0:
        v = v ** np.float32(profile.gamma)
    sigma = profile.blur_cm / view.cm_per_px
    if sigma > 0.25:
        v = gaussian_filter(v, sigma, truncate=3.0)
    v += np.float32(profile.noise) * rng.standard_normal(v.shape, dtype=np.float32) * (0.4 + 0.6 * v)
    v += np.float32(profile.noise * 0.8) * smooth_noise(rng, view.size, 6)
    top = 255 if profile.bit_depth == 8 else 65535
    out = np.rint(np.clip(v, 0.0, 1.0) * np.float32(top))
    return out.astype(np.uint8 if profile.bit_depth == 8 else np.uint16)
