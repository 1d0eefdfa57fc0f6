"""Label vocabularies: the manifest carries one int8 column per label (1 pos, 0 neg, -1 uncertain, null unmentioned).

Defaults follow RECIPES.md: the 13 CheXpert findings (without "No Finding") plus six ChestX-ray14/PadChest
findings = 19, and the 11 RANZCR CLiP lines-and-tubes labels. Jobs may name other vocabularies; these are data.
"""
from __future__ import annotations

from dataclasses import dataclass

FINDINGS: tuple[str, ...] = (
    "atelectasis", "cardiomegaly", "consolidation", "edema", "enlarged_cardiomediastinum", "fracture",
    "lung_lesion", "lung_opacity", "pleural_effusion", "pleural_other", "pneumonia", "pneumothorax",
    "support_devices", "nodule", "mass", "emphysema", "fibrosis", "hernia", "calcification",
)

TUBES: tuple[str, ...] = (
    "ett_abnormal", "ett_borderline", "ett_normal",
    "ngt_abnormal", "ngt_borderline", "ngt_incompletely_imaged", "ngt_normal",
    "cvc_abnormal", "cvc_borderline", "cvc_normal",
    "swan_ganz_present",
)

# Device types with pixel masks (segmentation probe). A mask PNG stores bit k for DEVICE_TYPES[k].
DEVICE_TYPES: tuple[str, ...] = ("ett", "ngt", "cvc", "swan_ganz", "chest_tube")

# Human-readable names for prompts and reports.
DISPLAY: dict[str, str] = {
    "atelectasis": "atelectasis", "cardiomegaly": "cardiomegaly", "consolidation": "consolidation",
    "edema": "pulmonary edema", "enlarged_cardiomediastinum": "enlarged cardiomediastinum",
    "fracture": "rib fracture", "lung_lesion": "lung lesion", "lung_opacity": "lung opacity",
    "pleural_effusion": "pleural effusion", "pleural_other": "pleural thickening", "pneumonia": "pneumonia",
    "pneumothorax": "pneumothorax", "support_devices": "support devices", "nodule": "pulmonary nodule",
    "mass": "lung mass", "emphysema": "emphysema", "fibrosis": "fibrosis", "hernia": "hiatal hernia",
    "calcification": "calcification",
    "ett_abnormal": "malpositioned endotracheal tube", "ett_borderline": "borderline endotracheal tube",
    "ett_normal": "well-positioned endotracheal tube", "ngt_abnormal": "malpositioned nasogastric tube",
    "ngt_borderline": "borderline nasogastric tube", "ngt_incompletely_imaged": "incompletely imaged nasogastric tube",
    "ngt_normal": "well-positioned nasogastric tube", "cvc_abnormal": "malpositioned central venous catheter",
    "cvc_borderline": "borderline central venous catheter", "cvc_normal": "well-positioned central venous catheter",
    "swan_ganz_present": "Swan-Ganz catheter",
    "ett_present": "endotracheal tube", "ngt_present": "nasogastric tube",
    "cvc_present": "central venous catheter", "chest_tube_present": "chest tube",
}


@dataclass(frozen=True)
class Vocabulary:
    findings: tuple[str, ...] = FINDINGS
    tubes: tuple[str, ...] = TUBES

    @property
    def labels(self) -> tuple[str, ...]:
        return self.findings + self.tubes

    def display(self, label: str) -> str:
        return DISPLAY.get(label, label.replace("_", " "))


DEFAULT_VOCABULARY = Vocabulary()


def prompt_label_names(vocabulary: Vocabulary) -> tuple[list[str], list[str]]:
    """UniCL image-label pairs: findings and device presence (the study's 'findings and tube presence')."""
    keys = list(vocabulary.findings)
    names = [vocabulary.display(k) for k in keys]
    for dev in _present_devices(vocabulary):
        keys.append(f"{dev}_present")
        names.append(vocabulary.display(f"{dev}_present"))
    return keys, names


def _present_devices(vocabulary: Vocabulary) -> list[str]:
    return [d for d in DEVICE_TYPES if any(t.startswith(d + "_") for t in vocabulary.tubes)]
