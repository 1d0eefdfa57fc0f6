"""Templated radiology reports for phantom studies, and the labels they state.

The report is written *from* the labels, so the labels are exactly what the report says (see phrases.py for the
mention/cue contract): positives are stated, negatives negated ("no ...", "... has resolved"), uncertain findings
hedged ("possible ...", "cannot exclude ..."), unmentioned findings (null) never named.
"""
from __future__ import annotations

import numpy as np

from radscale.data.phantom import phrases as P
from radscale.data.phantom.devices import StudyDevices
from radscale.data.phantom.findings import FindingState

ORDER = ("consolidation", "pneumonia", "lung_opacity", "atelectasis", "edema", "nodule", "mass", "lung_lesion",
         "emphysema", "fibrosis", "calcification", "pleural_effusion", "pneumothorax", "pleural_other",
         "cardiomegaly", "enlarged_cardiomediastinum", "hernia", "fracture")
SEVERITY_WORD = {"small": "mild", "moderate": "moderate", "large": "marked"}
MEASURED = ("pleural_effusion", "pneumothorax")  # take small/moderate/large; the rest mild/moderate/marked
DEVICE_NAMES = {"ett": ("ETT", "endotracheal tube", "ET tube"), "ngt": ("NG tube", "nasogastric tube", "enteric tube"),
                "cvc": ("central line", "central venous catheter", "CVC"),
                "swan_ganz": ("Swan-Ganz catheter", "pulmonary artery catheter"),
                "chest_tube": ("chest tube", "pleural drain")}
ROUTE_WORDS = {"ij": ("IJ", "internal jugular"), "subclavian": ("subclavian",)}
HEDGED = {
    "pleural_effusion": "small {side} pleural {effusion}", "pneumothorax": "small {side} apical pneumothorax",
    "consolidation": "early consolidation in the {side} {lobe}", "pneumonia": "early {side} basilar pneumonia",
    "lung_opacity": "faint opacity in the {side} {zone} lung", "atelectasis": "{side} basilar atelectasis",
    "edema": "mild interstitial edema", "cardiomegaly": "mild cardiomegaly",
    "enlarged_cardiomediastinum": "mediastinal widening", "nodule": "nodule in the {side} {zone} lung",
    "mass": "mass in the {side} {zone} lung", "lung_lesion": "cavitary lesion in the {side} upper lung",
    "emphysema": "emphysema", "fibrosis": "early fibrosis", "hernia": "small hiatal hernia",
    "calcification": "calcified granuloma in the {side} lung", "pleural_other": "{side} pleural thickening",
    "fracture": "subtle fracture of the {side} {rib} rib",
}
RESOLVED_NOUN = {"pleural_effusion": "{side} pleural effusion", "pneumothorax": "{side} pneumothorax",
                 "consolidation": "{side} consolidation", "pneumonia": "pneumonia", "lung_opacity": "{side} opacity",
                 "atelectasis": "{side} atelectasis", "edema": "pulmonary edema"}


def _fill(template: str, fields: dict[str, str]) -> str:
    """Format with lower-case fields and their Capitalised twins ({side} / {Side}); capitalise the sentence."""
    full = dict(fields)
    full.update({k[0].upper() + k[1:]: v[:1].upper() + v[1:] for k, v in fields.items() if k})
    text = template.format(**full)
    return text[:1].upper() + text[1:]


def _fields(f: FindingState) -> dict[str, str]:
    side = f.side or "right"
    return {
        "side": side, "sev": f.severity if f.name in MEASURED else SEVERITY_WORD.get(f.severity, "mild"),
        "zone": "upper" if f.fy < 0.35 else ("mid" if f.fy < 0.65 else "lower"),
        "lobe": "upper lobe" if f.fy < 0.45 else "lower lobe", "size": f"{2 * f.size:.1f}",
        "rib": ("4th", "5th", "6th", "7th", "8th")[min(int(f.fy * 5), 4)],
        "effusion": "effusions" if side == "bilateral" else "effusion",
    }


def _choice(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _positive(f: FindingState, rng: np.random.Generator) -> str:
    if f.side == "bilateral" and f.name in P.BILATERAL_POSITIVE:
        options = P.BILATERAL_POSITIVE[f.name]
    elif f.name == "pleural_effusion":
        options = P.UNILATERAL_EFFUSION
    else:
        options = P.POSITIVE[f.name]
    return _fill(_choice(rng, options), _fields(f))


def _hedged(f: FindingState, rng: np.random.Generator) -> str:
    fields = _fields(f)
    if f.side == "bilateral":
        fields["side"] = "bibasilar" if f.name in ("atelectasis", "pneumonia") else "bilateral"
        if f.name in ("atelectasis", "pneumonia"):
            return _fill(_choice(rng, P.UNCERTAIN), {"n": HEDGED[f.name].replace("{side} basilar", "bibasilar")})
    return _fill(_choice(rng, P.UNCERTAIN), {"n": HEDGED[f.name].format(**fields)})


def _negative(f: FindingState, rng: np.random.Generator) -> str:
    if f.resolved and f.name in RESOLVED_NOUN:
        noun = RESOLVED_NOUN[f.name].format(side=f.side or "right").replace("bilateral ", "")
        return _fill(_choice(rng, P.RESOLVED), {"n": noun})
    if f.name in P.NEGATIVE_SPECIAL and rng.random() < 0.7:
        return _choice(rng, P.NEGATIVE_SPECIAL[f.name])
    return _fill(_choice(rng, P.NEGATIVE), {"n": P.NEG_NOUN[f.name]})


def _device_sentence(kind: str, dev, rng: np.random.Generator) -> str:
    variant = "pa" if kind == "swan_ganz" else dev.variant
    fields = {"name": _choice(rng, DEVICE_NAMES[kind]), "d": f"{abs(dev.depth):g}", "side": dev.side or "right",
              "opp": "left" if dev.side == "right" else "right", "pa": "right" if dev.variant == "right_pa" else "left",
              "route": _choice(rng, ROUTE_WORDS.get(dev.route, ("",)))}
    return _fill(_choice(rng, P.DEVICE_SENTENCES[(kind, variant)]), fields).replace("  ", " ")


def _device_part(devices: StudyDevices, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """FINDINGS sentences about lines and tubes, and those worth repeating in the IMPRESSION (misplaced ones)."""
    said, flagged = [], []
    for kind, dev in devices.present.items():
        s = _device_sentence(kind, dev, rng)
        said.append(s)
        if dev.position in ("borderline", "abnormal"):
            flagged.append(s)
    for kind in devices.removed:
        said.append(_fill(_choice(rng, P.REMOVED), {"name": DEVICE_NAMES[kind][1]}))
    for kind in devices.negated:
        said.append(_fill(_choice(rng, P.ABSENT_DEVICE), {"name": DEVICE_NAMES[kind][1]}))
    if devices.none_stated:
        said.append(_choice(rng, P.NONE_STATED))
    return said, flagged


def write_report(findings: dict[str, FindingState], devices: StudyDevices, view: str, has_prior: bool,
                 rng: np.random.Generator) -> str:
    """FINDINGS + IMPRESSION report stating every non-null label of the study (and nothing else)."""
    body, impression = _device_part(devices, rng)
    plain_negatives, last_positive = [], None
    for name in ORDER:
        f = findings[name]
        if f.label == 1:
            s = _positive(f, rng)
            if has_prior and rng.random() < 0.25:
                s = s[:-1] + ", unchanged from the prior study."
            last_positive = len(body)
            body.append(s)
            impression.append(_positive(f, rng))
        elif f.label == -1:
            body.append(_hedged(f, rng))
            impression.append(_hedged(f, rng))
        elif f.label == 0:
            if not f.resolved and name not in P.NEGATIVE_SPECIAL and rng.random() < 0.5:
                plain_negatives.append(P.NEG_NOUN[name])  # grouped into one "No a, b, or c." sentence
            else:
                body.append(_negative(f, rng))
    if plain_negatives and last_positive is not None and rng.random() < 0.4:  # "A without B."
        body[last_positive] = body[last_positive][:-1] + f" without {plain_negatives.pop()}."
    if plain_negatives:
        body.append(_fill("No {n}.", {"n": _join_or(plain_negatives)}))
    if not impression:
        impression.append(_choice(rng, P.NO_ACUTE))
    header = (f"EXAMINATION: Chest radiograph, {'portable AP' if view == 'AP' else 'PA'} view.\n"
              f"INDICATION: {_choice(rng, P.INDICATIONS)}\n"
              f"COMPARISON: {'Prior radiograph of the same patient.' if has_prior else 'None.'}\n")
    return f"{header}\nFINDINGS: {' '.join(body)}\n\nIMPRESSION: {' '.join(impression)}\n"


def _join_or(items: list[str]) -> str:
    if len(items) <= 2:
        return " or ".join(items)
    return ", ".join(items[:-1]) + ", or " + items[-1]


def study_labels(findings: dict[str, FindingState], devices: StudyDevices,
                 labels: tuple[str, ...]) -> dict[str, int | None]:
    """The label row of a study: finding labels, support_devices, and the RANZCR lines-and-tubes labels."""
    out: dict[str, int | None] = {name: None for name in labels}
    for name in labels:
        if name in findings:
            out[name] = findings[name].label
    if "support_devices" in out:
        out["support_devices"] = devices.support_label()
    out.update(devices.labels(labels))
    return out
