"""Report wording for the phantom corpus: mention phrases, negation/uncertainty cues and sentence templates.

Contract with any labeler (and checked by tests/unit/test_phantom.py): a label is non-null exactly when one of its
MENTIONS occurs in FINDINGS/IMPRESSION. A mention preceded in its sentence by a NEGATION_BEFORE cue, or followed
by a NEGATION_AFTER cue, is negative (0); likewise UNCERTAIN_* gives -1; otherwise it is positive (1). All
mentions of a finding in one report agree; for support_devices any positive device mention wins. Device
categories are stated by the one sentence naming that device: it carries a CATEGORY_CUES phrase
("malpositioned", "borderline", "off the image") or none (normal position); a positively named device fixes all
its RANZCR labels (the stated category 1, the others 0) and a negated one ("no NG tube", "... has been removed")
sets them all 0. Labels are not propagated along a hierarchy: "consolidation" says nothing about lung_opacity.
"""
from __future__ import annotations

NEGATION_BEFORE = ("no", "without", "negative for", "normal", "interval resolution of", "interval removal of")
NEGATION_AFTER = ("has resolved", "is normal", "within normal limits", "has been removed")
UNCERTAIN_BEFORE = ("possible", "cannot exclude", "may represent", "questionable")
UNCERTAIN_AFTER = ("cannot be excluded",)

DEVICE_MENTIONS: dict[str, tuple[str, ...]] = {
    "ett": ("endotracheal tube", "ett", "et tube"),
    "ngt": ("nasogastric tube", "ng tube", "enteric tube"),
    "cvc": ("central line", "central venous catheter", "cvc"),
    "swan_ganz": ("swan-ganz catheter", "pulmonary artery catheter"),
    "chest_tube": ("chest tube", "pleural drain"),
}

# Lower-case phrases matched on word boundaries. Nothing else in a report mentions a label.
MENTIONS: dict[str, tuple[str, ...]] = {
    "atelectasis": ("atelectasis",),
    "cardiomegaly": ("cardiomegaly", "heart size", "cardiac silhouette"),
    "consolidation": ("consolidation",),
    "edema": ("edema",),
    "enlarged_cardiomediastinum": ("cardiomediastinal silhouette", "mediastinal widening", "mediastinum"),
    "fracture": ("fracture",),
    "lung_lesion": ("cavitary lesion", "lung lesion"),
    "lung_opacity": ("opacity", "opacification"),
    "pleural_effusion": ("effusion", "effusions"),
    "pleural_other": ("pleural thickening",),
    "pneumonia": ("pneumonia",),
    "pneumothorax": ("pneumothorax",),
    "support_devices": ("lines or tubes", "support devices") + sum(DEVICE_MENTIONS.values(), ()),
    "nodule": ("nodule",),
    "mass": ("mass",),
    "emphysema": ("emphysema", "emphysematous"),
    "fibrosis": ("fibrosis", "fibrotic"),
    "hernia": ("hiatal hernia",),
    "calcification": ("calcification", "calcifications", "calcified"),
}
for _kind, _labels in (("ett", ("ett_abnormal", "ett_borderline", "ett_normal")),
                       ("ngt", ("ngt_abnormal", "ngt_borderline", "ngt_incompletely_imaged", "ngt_normal")),
                       ("cvc", ("cvc_abnormal", "cvc_borderline", "cvc_normal")),
                       ("swan_ganz", ("swan_ganz_present",))):
    for _label in _labels:
        MENTIONS[_label] = DEVICE_MENTIONS[_kind]

# Noun phrases used in negations, resolutions and hedges.
NEG_NOUN = {
    "atelectasis": "atelectasis", "consolidation": "focal consolidation", "edema": "pulmonary edema",
    "fracture": "acute rib fracture", "lung_lesion": "cavitary lung lesion", "lung_opacity": "focal opacity",
    "pleural_effusion": "pleural effusion", "pleural_other": "pleural thickening", "pneumonia": "pneumonia",
    "pneumothorax": "pneumothorax", "nodule": "pulmonary nodule", "mass": "lung mass", "emphysema": "emphysema",
    "fibrosis": "fibrosis", "hernia": "hiatal hernia", "calcification": "calcification",
    "cardiomegaly": "cardiomegaly", "enlarged_cardiomediastinum": "mediastinal widening",
}
NEGATIVE_SPECIAL = {
    "cardiomegaly": ("Heart size is normal.", "Normal heart size.", "The cardiac silhouette is within normal limits.",
                     "No cardiomegaly."),
    "enlarged_cardiomediastinum": ("Normal cardiomediastinal silhouette.", "No mediastinal widening.",
                                   "The cardiomediastinal silhouette is within normal limits."),
}
NEGATIVE = ("No {n}.", "No evidence of {n}.", "There is no {n}.", "Negative for {n}.")
RESOLVED = ("The previously seen {n} has resolved.", "Interval resolution of the {n}.", "The {n} has resolved.")
UNCERTAIN = ("Possible {n}.", "Cannot exclude {n}.", "{N} cannot be excluded.", "Questionable {n}.",
             "Subtle changes may represent {n}.")

# Positive sentences per finding; fields: sev, side, zone, lobe, size, rib.
POSITIVE = {
    "atelectasis": ("Plate-like atelectasis at the {side} base.", "{Side} basilar atelectasis.",
                    "Linear atelectasis in the {side} lower zone."),
    "cardiomegaly": ("{Sev} cardiomegaly.", "The heart size is enlarged.", "The cardiac silhouette is enlarged."),
    "consolidation": ("Focal consolidation in the {side} {lobe}.", "Dense {side} {zone} zone consolidation.",
                      "Airspace consolidation in the {side} {zone} lung."),
    "edema": ("{Sev} pulmonary edema.", "Perihilar haziness and vascular congestion consistent with pulmonary edema.",
              "Findings consistent with {sev} interstitial edema."),
    "enlarged_cardiomediastinum": ("The cardiomediastinal silhouette is enlarged.", "The mediastinum is widened.",
                                   "Mediastinal widening is noted."),
    "fracture": ("Healing fracture of the {side} {rib} rib.", "{Side} {rib} rib fracture.",
                 "There is a fracture of the {side} {rib} rib."),
    "lung_lesion": ("{Size} cm cavitary lesion in the {side} upper lung.",
                    "Cavitary lung lesion in the {side} {zone} zone measuring {size} cm."),
    "lung_opacity": ("Hazy opacity in the {side} {zone} lung.", "Patchy {side} {zone} zone opacification.",
                     "Ill-defined opacity in the {side} {zone} lung."),
    "pneumonia": ("Findings compatible with {side} lower lobe pneumonia.", "{Side} basilar pneumonia.",
                  "Multifocal {side} pneumonia."),
    "pneumothorax": ("{Sev} {side} apical pneumothorax.",
                     "There is a {sev} {side} pneumothorax with a visible pleural line.",
                     "{Side} pneumothorax, {sev} in size."),
    "nodule": ("{Size} cm nodule in the {side} {zone} lung.",
               "A {size} cm pulmonary nodule projects over the {side} {zone} lung."),
    "mass": ("{Size} cm mass in the {side} {zone} lung.", "Large {side} {zone} lung mass measuring {size} cm."),
    "emphysema": ("Hyperinflated lungs with flattened hemidiaphragms, consistent with emphysema.",
                  "Emphysematous changes.", "Emphysema."),
    "fibrosis": ("Bibasilar reticular changes consistent with pulmonary fibrosis.", "Fibrotic changes at both bases."),
    "hernia": ("Retrocardiac air-fluid level consistent with a hiatal hernia.", "Hiatal hernia."),
    "calcification": ("Calcified granulomas in the {side} lung.",
                      "Scattered punctate calcifications in the {side} lung."),
    "pleural_other": ("{Side} pleural thickening.", "Apical and lateral pleural thickening on the {side}."),
}
BILATERAL_POSITIVE = {
    "pleural_effusion": ("{Sev} bilateral pleural effusions.", "There are {sev} bilateral pleural effusions.",
                         "Bilateral pleural effusions, {sev} in size."),
    "atelectasis": ("Bibasilar atelectasis.", "Plate-like atelectasis at both bases."),
    "pneumonia": ("Findings compatible with bibasilar pneumonia.", "Multifocal bilateral pneumonia."),
}
UNILATERAL_EFFUSION = ("{Sev} {side} pleural effusion.", "There is a {sev} {side} pleural effusion.",
                       "Blunting of the {side} costophrenic angle from a {sev} effusion.")

# Device sentences per (kind, variant); fields: name, d (cm), side, route, opp, pa. Every sentence of a non-normal
# category carries that category's CATEGORY_CUES phrase; normal-position sentences carry none.
CATEGORY_CUES = {"abnormal": ("malpositioned",), "borderline": ("borderline",),
                 "incompletely_imaged": ("off the image",)}
DEVICE_SENTENCES = {
    ("ett", "mid"): ("{Name} tip {d} cm above the carina, in satisfactory position.",
                     "{Name} terminates {d} cm above the carina.",
                     "{Name} in standard position, tip {d} cm above the carina."),
    ("ett", "low"): ("{Name} tip {d} cm above the carina, borderline low; consider withdrawal by 1 to 2 cm.",
                     "{Name} tip is borderline low at {d} cm above the carina."),
    ("ett", "high"): ("{Name} tip {d} cm above the carina, borderline high; consider advancing 1 to 2 cm.",),
    ("ett", "carina"): ("{Name} tip at the level of the carina, malpositioned; recommend withdrawal by 3 cm.",),
    ("ett", "bronchus"): ("{Name} tip in the right main bronchus, malpositioned; recommend withdrawal.",
                          "Malpositioned {name} extends into the right mainstem bronchus."),
    ("ett", "very_high"): ("{Name} tip {d} cm above the carina near the thoracic inlet, malpositioned; "
                           "recommend advancement.",),
    ("ngt", "stomach"): ("{Name} tip in the stomach.", "{Name} courses below the diaphragm with tip in the stomach.",
                         "{Name} terminates in the gastric body."),
    ("ngt", "junction"): ("{Name} tip at the gastroesophageal junction, borderline; advance by 5 to 10 cm.",
                          "{Name} tip near the GE junction with the side port above it, borderline position."),
    ("ngt", "coiled"): ("Malpositioned {name} coiled in the esophagus.",
                        "{Name} is coiled in the mid esophagus, malpositioned; recommend repositioning."),
    ("ngt", "esophagus"): ("{Name} tip in the mid esophagus, malpositioned; recommend advancement.",),
    ("ngt", "airway"): ("Malpositioned {name} enters the right main bronchus with tip in the right lower lobe.",
                        "{Name} is malpositioned in the airway, tip in the right lower lobe bronchus."),
    ("ngt", "off_image"): ("{Name} extends below the diaphragm with its tip off the image.",
                           "{Name} courses into the abdomen, tip off the image."),
    ("cvc", "svc"): ("{Side} {route} {name} terminates in the SVC.",
                     "{Side} {route} {name} with tip at the cavoatrial junction.",
                     "{Side} {route} {name} tip in the lower SVC."),
    ("cvc", "high"): ("{Side} {route} {name} tip in the upper SVC, borderline; could be advanced 2 cm.",),
    ("cvc", "atrium"): ("{Side} {route} {name} tip in the upper right atrium, borderline; consider withdrawal "
                        "by 1 to 2 cm.",),
    ("cvc", "deep_atrium"): ("{Side} {route} {name} tip deep in the right atrium, malpositioned; recommend "
                             "withdrawal.",),
    ("cvc", "contralateral"): ("{Side} {route} {name} crosses the midline with tip in the {opp} brachiocephalic "
                               "vein, malpositioned.",),
    ("cvc", "jugular"): ("{Side} {route} {name} is directed cranially into the {side} internal jugular vein, "
                         "malpositioned.",),
    ("swan_ganz", "pa"): ("{Name} tip in the {pa} pulmonary artery.",
                          "Right IJ {name} terminates in the {pa} pulmonary artery."),
    ("chest_tube", "apex"): ("{Side} {name} with tip at the apex.", "{Side} {name} in place, tip projecting over "
                             "the apex."),
}
REMOVED = ("The {name} has been removed.", "Interval removal of the {name}.")
ABSENT_DEVICE = ("No {name}.",)
NONE_STATED = ("No lines or tubes.", "No support devices.")
NO_ACUTE = ("No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.")
INDICATIONS = ("Dyspnea.", "Fever.", "Cough.", "Hypoxia.", "Chest pain.", "Follow-up.", "Weakness.",
               "Preoperative evaluation.")
