"""Lines and tubes of a phantom study: which are present, where their tips lie, and their RANZCR labels.

Tip positions follow common radiology criteria (and the RANZCR CLiP categories):
- ETT: tip 3-7 cm above the carina is normal; 1.2-2.5 cm (low) or 7.5-8.5 cm (high) is borderline; at the carina,
  in the right main bronchus, or >= 9.5 cm above the carina is abnormal.
- NGT: tip in the stomach well below the diaphragm is normal; near the gastro-oesophageal junction borderline;
  coiled in the oesophagus, tip in the oesophagus, or in the airway abnormal; a tube that leaves the field of view
  before its tip is "incompletely imaged".
- CVC (internal jugular or subclavian route): tip in the lower SVC / cavoatrial junction is normal; in the upper
  SVC or upper right atrium borderline; deep in the right atrium, up the jugular vein, or across into the
  contralateral brachiocephalic vein abnormal.
- Swan-Ganz: present, tip in a pulmonary artery. Chest tube: along the lateral wall to the apex (no RANZCR label;
  it counts towards support_devices).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radscale.data.vocab import DEVICE_TYPES

DEVICE_STAY = 0.7  # P(a line stays in place until the next study)
OUTPATIENT_FACTOR = 0.03  # outpatients rarely carry lines (ports, the odd feeding tube)
POSITIONS = {
    "ett": (("normal", 0.7), ("borderline", 0.2), ("abnormal", 0.1)),
    "ngt": (("normal", 0.6), ("borderline", 0.12), ("abnormal", 0.1), ("incomplete", 0.18)),
    "cvc": (("normal", 0.65), ("borderline", 0.25), ("abnormal", 0.1)),
    "swan_ganz": (("present", 1.0),),
    "chest_tube": (("present", 1.0),),
}
VARIANTS = {
    ("ett", "normal"): ("mid",), ("ett", "borderline"): ("low", "high"),
    ("ett", "abnormal"): ("carina", "bronchus", "very_high"),
    ("ngt", "normal"): ("stomach",), ("ngt", "borderline"): ("junction",),
    ("ngt", "abnormal"): ("coiled", "esophagus", "airway"), ("ngt", "incomplete"): ("off_image",),
    ("cvc", "normal"): ("svc",), ("cvc", "borderline"): ("high", "atrium"),
    ("cvc", "abnormal"): ("deep_atrium", "contralateral", "jugular"),
    ("swan_ganz", "present"): ("right_pa", "left_pa"), ("chest_tube", "present"): ("apex",),
}
# The RANZCR CLiP label of each device position (chest tubes have none).
TUBE_LABELS = {
    "ett": {"normal": "ett_normal", "borderline": "ett_borderline", "abnormal": "ett_abnormal"},
    "ngt": {"normal": "ngt_normal", "borderline": "ngt_borderline", "abnormal": "ngt_abnormal",
            "incomplete": "ngt_incompletely_imaged"},
    "cvc": {"normal": "cvc_normal", "borderline": "cvc_borderline", "abnormal": "cvc_abnormal"},
    "swan_ganz": {"present": "swan_ganz_present"},
}


@dataclass(frozen=True)
class DeviceState:
    kind: str
    position: str  # "normal" | "borderline" | "abnormal" | "incomplete" | "present"
    variant: str
    side: str = ""  # cvc access side / chest tube side
    route: str = ""  # cvc: "ij" | "subclavian"
    depth: float = 0.0  # ett: tip cm above the carina (negative: below)
    seed: int = 0


@dataclass(frozen=True)
class StudyDevices:
    """Devices in one study, those removed since the prior study, and those the report states are absent."""

    present: dict[str, DeviceState]
    removed: tuple[str, ...] = ()
    negated: tuple[str, ...] = ()
    none_stated: bool = False  # "No lines or tubes." (only when nothing is present)

    def labels(self, names: tuple[str, ...]) -> dict[str, int | None]:
        """RANZCR labels among `names`: a named device's stated position is 1 and its other positions 0; a device
        stated absent (removed, "no NG tube") is 0 throughout; a device never named stays null."""
        out: dict[str, int | None] = {}
        for kind, by_position in TUBE_LABELS.items():
            dev = self.present.get(kind)
            absent = kind in self.removed or kind in self.negated
            for position, label in by_position.items():
                if label in names:
                    out[label] = int(position == dev.position) if dev is not None else (0 if absent else None)
        return out

    def support_label(self) -> int | None:
        if self.present:
            return 1
        return 0 if (self.removed or self.negated or self.none_stated) else None


def _pick(rng: np.random.Generator, options: tuple) -> str:
    names, p = zip(*options, strict=True)
    return names[int(rng.choice(len(names), p=np.asarray(p) / sum(p)))]


def _place(kind: str, rng: np.random.Generator, prior: DeviceState | None, side: str = "") -> DeviceState:
    if prior is not None and rng.random() < 0.5:
        return prior  # untouched since the last film
    position = _pick(rng, POSITIONS[kind])
    variants = VARIANTS[(kind, position)]
    route = prior.route if prior is not None else ("ij" if rng.random() < 0.6 else "subclavian")
    side = prior.side if prior is not None else (side or ("right" if rng.random() < 0.7 else "left"))
    if kind == "cvc" and route == "ij":
        variants = tuple(v for v in variants if v != "jugular")
    variant = variants[int(rng.integers(len(variants)))]
    depth = {("normal", "mid"): rng.uniform(3.0, 7.0), ("borderline", "low"): rng.uniform(1.2, 2.5),
             ("borderline", "high"): rng.uniform(7.5, 8.5), ("abnormal", "carina"): rng.uniform(0.0, 0.8),
             ("abnormal", "bronchus"): -rng.uniform(1.5, 2.5), ("abnormal", "very_high"): rng.uniform(9.5, 11.5),
             }.get((position, variant), 0.0) if kind == "ett" else 0.0
    return DeviceState(kind=kind, position=position, variant=variant, side=side,
                       route=route if kind == "cvc" else "", depth=round(float(depth), 1),
                       seed=int(rng.integers(2**31)))


def sample_devices(rates: dict[str, float], icu: bool, prior: StudyDevices | None, pneumothorax_side: str,
                   rng: np.random.Generator) -> StudyDevices:
    """Devices of the next study. `rates` are per-ICU-study presence rates; outpatients carry few lines."""
    present: dict[str, DeviceState] = {}
    removed, negated = [], []
    for kind in DEVICE_TYPES:
        before = None if prior is None else prior.present.get(kind)
        p = rates[kind] if icu else rates[kind] * OUTPATIENT_FACTOR
        if kind == "chest_tube" and pneumothorax_side:
            p = max(p, 0.5)
        if before is not None:
            p = DEVICE_STAY
        elif prior is not None:
            p = p * (1 - DEVICE_STAY) / max(1 - p, 1e-6)
        if rng.random() < min(p, 0.95):
            side = pneumothorax_side if kind == "chest_tube" and pneumothorax_side in ("right", "left") else ""
            present[kind] = _place(kind, rng, before, side)
        elif before is not None and rng.random() < 0.7:
            removed.append(kind)
        elif icu and rng.random() < 0.15:
            negated.append(kind)
    none_stated = not present and not removed and not negated and rng.random() < 0.4
    return StudyDevices(present=present, removed=tuple(removed), negated=tuple(negated), none_stated=none_stated)
