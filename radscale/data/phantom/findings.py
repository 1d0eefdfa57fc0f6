"""Which findings a phantom study has, and how its report will state them (label 1 / 0 / -1 / unmentioned).

Chronic findings (cardiomegaly, nodule, emphysema, ...) are patient traits that persist over studies; acute ones
(effusion, pneumothorax, consolidation, ...) follow a two-state Markov chain per patient whose stationary
probability is the target prevalence, so a patient's studies are correlated the way follow-up films are.

Uncertain findings (label -1, "possible ...", "cannot exclude ...") are drawn at half strength in half of the
cases and not at all otherwise: the image is genuinely ambiguous about them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

# Acute findings are more frequent in ICU patients: rate_icu = ICU_FACTOR * rate, outpatients get the rest.
ICU_FACTOR = 1.4
STAY = 0.6  # P(acute finding persists to the next study)
UNCERTAIN_DRAW = 0.5  # P(an uncertain finding is drawn at all); drawn ones get half strength


@dataclass(frozen=True)
class FindingRate:
    """Per-image label rates of one finding: P(label=1), P(label=-1), and P(label=0 | absent)."""

    positive: float
    uncertain: float
    negated: float
    chronic: bool


# Default (ICU-heavy) corpus, targets P(label = 1) per image. Within real-data ranges where those are known
# (effusion 25% in 10-40%, cardiomegaly 9% in 2-12%, pneumothorax 7.5% in 1-9%); every other drawn finding is
# kept at 8-18% so a few hundred test images hold positives for each label (rarer in real data: hernia, mass).
DEFAULT_RATES: dict[str, FindingRate] = {
    "atelectasis": FindingRate(0.18, 0.04, 0.10, False),
    "cardiomegaly": FindingRate(0.09, 0.02, 0.55, True),
    "consolidation": FindingRate(0.12, 0.03, 0.55, False),
    "edema": FindingRate(0.14, 0.04, 0.45, False),
    "enlarged_cardiomediastinum": FindingRate(0.08, 0.02, 0.35, True),
    "fracture": FindingRate(0.08, 0.01, 0.15, True),
    "lung_lesion": FindingRate(0.08, 0.01, 0.05, True),
    "lung_opacity": FindingRate(0.18, 0.02, 0.15, False),
    "pleural_effusion": FindingRate(0.25, 0.04, 0.75, False),
    "pleural_other": FindingRate(0.08, 0.01, 0.05, True),
    "pneumonia": FindingRate(0.10, 0.05, 0.25, False),
    "pneumothorax": FindingRate(0.075, 0.01, 0.75, False),
    "nodule": FindingRate(0.10, 0.02, 0.08, True),
    "mass": FindingRate(0.08, 0.01, 0.08, True),
    "emphysema": FindingRate(0.10, 0.02, 0.05, True),
    "fibrosis": FindingRate(0.08, 0.02, 0.05, True),
    "hernia": FindingRate(0.08, 0.01, 0.05, True),
    "calcification": FindingRate(0.10, 0.01, 0.03, True),
}
DRAWN_FINDINGS: tuple[str, ...] = tuple(DEFAULT_RATES)

SEVERITY = ("small", "moderate", "large")


@dataclass(frozen=True)
class FindingState:
    """One finding in one study: its label, how strongly it is drawn, and where."""

    name: str
    label: int | None
    strength: float = 0.0  # 0 = not drawn, 1 = full
    side: str = ""  # "right" | "left" | "bilateral" | ""
    severity: str = ""  # "small" | "moderate" | "large"
    fx: float = 0.5  # location inside the lung: 0 medial .. 1 lateral
    fy: float = 0.5  # 0 apex .. 1 base
    size: float = 0.0  # cm (radius for focal lesions)
    seed: int = 0  # texture seed for patchy patterns
    resolved: bool = False  # negative because it was present on the prior study

    @property
    def present(self) -> bool:
        return self.label in (1, -1)


@dataclass(frozen=True)
class PatientFindings:
    """Chronic traits of one patient (constant over studies) and the ICU flag that shapes acute rates."""

    icu: bool
    chronic: dict[str, FindingState] = field(default_factory=dict)


def _side(rng: np.random.Generator, bilateral: float = 0.0) -> str:
    u = rng.random()
    return "bilateral" if u < bilateral else ("right" if u < bilateral + (1 - bilateral) * 0.55 else "left")


def _attributes(name: str, rng: np.random.Generator) -> dict:
    """Where and how big a finding is; locations favour the zones where it usually appears."""
    sev = SEVERITY[int(rng.choice(3, p=[0.5, 0.35, 0.15]))]
    attrs = {"severity": sev, "fx": float(rng.uniform(0.2, 0.8)), "fy": float(rng.uniform(0.2, 0.8)),
             "seed": int(rng.integers(2**31)), "side": _side(rng)}
    if name == "pleural_effusion":
        attrs["side"] = _side(rng, bilateral=0.4)
    elif name in ("atelectasis", "pneumonia"):
        attrs["side"] = _side(rng, bilateral=0.3)
        attrs["fy"] = float(rng.uniform(0.6, 0.9))
    elif name in ("edema", "fibrosis", "emphysema", "cardiomegaly", "enlarged_cardiomediastinum", "hernia"):
        attrs["side"] = "bilateral" if name in ("edema", "fibrosis", "emphysema") else ""
    elif name == "consolidation":
        attrs["fy"] = float(rng.uniform(0.45, 0.85))
        attrs["size"] = float(rng.uniform(2.4, 3.4))
    elif name == "lung_opacity":
        attrs["size"] = float(rng.uniform(2.5, 4.0))
    elif name == "nodule":
        attrs["size"] = float(rng.uniform(0.5, 0.9))
    elif name == "mass":
        attrs["size"] = float(rng.uniform(2.0, 3.2))
    elif name == "lung_lesion":
        attrs["size"] = float(rng.uniform(1.6, 2.4))
        attrs["fy"] = float(rng.uniform(0.1, 0.5))
    elif name == "fracture":
        attrs["fy"] = float(rng.uniform(0.25, 0.75))
    return attrs


def _state(name: str, label: int, rng: np.random.Generator, attrs: dict) -> FindingState:
    if label == 1:
        strength = 1.0
    else:  # uncertain: ambiguous image, drawn faintly half the time
        strength = 0.5 if rng.random() < UNCERTAIN_DRAW else 0.0
        attrs = {**attrs, "severity": "small"}
    return FindingState(name=name, label=label, strength=strength, **attrs)


def _absent(name: str, rate: FindingRate, rng: np.random.Generator, prior: FindingState | None) -> FindingState:
    if prior is not None and prior.present and rng.random() < 0.6:
        return FindingState(name=name, label=0, side=prior.side, resolved=True)
    return FindingState(name=name, label=0 if rng.random() < rate.negated else None)


def sample_patient(rates: dict[str, FindingRate], icu_fraction: float, rng: np.random.Generator) -> PatientFindings:
    icu = bool(rng.random() < icu_fraction)
    chronic = {}
    for name, r in rates.items():
        if not r.chronic:
            continue
        u = rng.random()
        attrs = _attributes(name, rng)
        if u < r.positive + r.uncertain:
            chronic[name] = _state(name, 1 if u < r.positive else -1, rng, attrs)
    return PatientFindings(icu=icu, chronic=chronic)


def acute_presence(rate: FindingRate, icu: bool, icu_fraction: float) -> float:
    """Stationary presence probability of an acute finding for an ICU patient or an outpatient."""
    p = rate.positive + rate.uncertain
    if icu_fraction >= 1.0:
        return p
    factor = ICU_FACTOR if icu else max(1.0 - icu_fraction * ICU_FACTOR, 0.0) / (1.0 - icu_fraction)
    return min(p * factor, 0.9)


def sample_study(patient: PatientFindings, prior: dict[str, FindingState] | None, rates: dict[str, FindingRate],
                 icu_fraction: float, rng: np.random.Generator) -> dict[str, FindingState]:
    """Finding states of the next study of `patient` given the previous study's states (None for the first)."""
    out: dict[str, FindingState] = {}
    for name, r in rates.items():
        before = None if prior is None else prior.get(name)
        if r.chronic:
            state = patient.chronic.get(name)
            out[name] = state if state is not None else FindingState(
                name=name, label=0 if rng.random() < r.negated else None)
            continue
        pi = acute_presence(r, patient.icu, icu_fraction)
        if before is not None and before.present:
            p = STAY
        else:
            p = pi if prior is None else pi * (1 - STAY) / max(1 - pi, 1e-6)
        if rng.random() < p:
            label = 1 if rng.random() < r.positive / (r.positive + r.uncertain) else -1
            attrs = _attributes(name, rng)
            if before is not None and before.present:  # the same process, followed up
                attrs.update(side=before.side, fx=before.fx, fy=before.fy, size=before.size, seed=before.seed)
            out[name] = _state(name, label, rng, attrs)
        else:
            out[name] = _absent(name, r, rng, before)
    # A reader who calls the heart enlarged does not call the cardiomediastinal silhouette normal.
    if out["cardiomegaly"].label == 1 and out["enlarged_cardiomediastinum"].label == 0:
        out["enlarged_cardiomediastinum"] = replace(out["enlarged_cardiomediastinum"], label=None)
    return out
