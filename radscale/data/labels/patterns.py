"""Lexicons of the rule-based labeler: mentions per label, negation / uncertainty cues, device position language.

Data, not logic (rules.py applies them). Every pattern is a regular expression matched case-insensitively.
Conventions (CheXpert labeler, Irvin et al. 2019, sec. 3.1): a mention is found first, then a cue *in scope*
decides its polarity.
Decisions worth knowing:
- "likely", "probable", "suggestive of", "borderline" and "unlikely" are **uncertain** (-1), as in the
  CheXpert labeler and hence in MIMIC-CXR's CheXpert labels, so our labels line up with public ones.
- "compatible with" / "consistent with" are positive; "to suggest" is no cue ("no consolidation to suggest
  pneumonia" stays negated by the "no").
- "no change in X", "unchanged X" are not negations (pseudo-negations are masked before cues are read).
- ETT thresholds (cm above the carina, adult RANZCR-style reading): normal 3-7 inclusive, borderline [1, 3)
  or (7, 10], abnormal < 1, > 10, at or below the carina.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabelPatterns:
    """`negative` / `uncertain` are fixed-polarity phrases (e.g. "heart size is normal"); they are matched
    before `mention` and the text they cover is not read again for this label."""

    mention: tuple[str, ...]
    negative: tuple[str, ...] = ()
    uncertain: tuple[str, ...] = ()


# Section headers. IMPRESSION-like sections win over FINDINGS-like ones on conflict (rules.py);
# history-like sections are not labelled (an indication "r/o pneumonia" is not a finding).
SECTION_HEADER = (
    r"(?<![A-Za-z])(findings\s+and\s+impressions?|findings|impressions?|conclusions?|opinion|summary|"
    r"recommendations?|indications?|clinical\s+(?:history|indication|information)|history|"
    r"reason\s+for\s+(?:exam(?:ination)?|study)|comparisons?|technique|examination|exam|procedure|"
    r"notification|addendum)\s*:"
)
IMPRESSION_SECTIONS = ("impression", "impressions", "conclusion", "conclusions", "opinion", "summary")
SKIPPED_SECTIONS = ("indication", "indications", "clinical history", "clinical indication",
                    "clinical information", "history", "reason for exam", "reason for examination",
                    "reason for study", "comparison", "comparisons", "technique", "examination", "exam",
                    "procedure", "notification")

# Masked before cues are read: they contain "no"/"not" but do not negate what follows.
PSEUDO_NEGATION = (
    r"\bno\s+(?:(?:significant|interval|appreciable|substantial|definite|major|marked|other|further|acute)\s+)*"
    r"(?:change|changes|increase|decrease|progression|improvement|worsening|difference)\b",
    r"\bnot\s+(?:significantly\s+)?(?:changed|increased|decreased|improved|worsened)\b",
    r"\bwithout\s+(?:(?:significant|interval|appreciable)\s+)*(?:change|increase|decrease|progression)\b",
    r"\bnot\s+only\b", r"\bgram[- ]negative\b",
)
# Uncertainty phrases that contain a negation word are listed first so the negation inside is consumed.
PRE_UNCERTAINTY = (
    r"\b(?:cannot|can\s*not|can't|could\s+not|unable\s+to)\s+(?:be\s+)?(?:entirely\s+|completely\s+|totally\s+"
    r"|definitely\s+)?(?:exclude|excluded|rule\s+out|ruled\s+out)\b",
    r"\bnot\s+(?:entirely\s+|completely\s+)?(?:excluded|ruled\s+out)\b", r"\bdifficult\s+to\s+exclude\b",
    r"\bpossibl[ey]\b", r"\bprobabl[ey]\b", r"\blikely\b", r"\bpresum(?:ed|ably|ptive)\b",
    r"\bsuspect(?:ed)?\b", r"\bsuspicious\s+(?:for|of)\b", r"\bsuspicion\s+(?:for|of)\b",
    r"\bquestionabl[ey]\b", r"\bquestion\s+of\b", r"\bconcern(?:ing)?\s+(?:for|of)\b", r"\bworrisome\s+for\b",
    r"\b(?:may|might|could)\s+(?:be|represent|reflect|indicate|signify|relate\s+to|include)\b",
    r"(?<!to\s)\bsuggest(?:s|ive\s+of|ing)?\b", r"\bdifferential(?:\s+diagnosis)?(?:\s+(?:includes?|of))?\b",
    r"\bborderline\b", r"\bequivocal\b", r"\bindeterminate\b",
    r"\brule\s+out\b", r"\br/o\b", r"\bperhaps\b", r"\bunlikely\b", r"\buncertain\b", r"\bcannot\s+be\s+assessed\b",
)
PRE_NEGATION = (
    r"\bno\s+(?:evidence|signs?|findings?|radiographic\s+evidence)\s+(?:of|for|to\s+suggest)\b",
    r"\bnegative\s+for\b", r"\bfree\s+of\b", r"\bclear\s+of\b", r"\bwithout\b", r"\babsence\s+of\b",
    r"\bresolution\s+of\b", r"\bresolved\b", r"\bremoval\s+of\b", r"\brather\s+than\b", r"\binstead\s+of\b",
    r"\black\s+of\b", r"\bno\s+longer\b", r"\bneither\b", r"\bnor\b", r"\bno\b", r"\bnot\b",
)
POST_UNCERTAINTY = (
    r"\b(?:cannot|can\s*not|can't|could\s+not)\s+(?:be\s+)?(?:entirely\s+|completely\s+|totally\s+"
    r"|definitely\s+)?(?:excluded|ruled\s+out|assessed|evaluated)\b",
    r"\b(?:is|are)\s+not\s+(?:entirely\s+|completely\s+)?(?:excluded|ruled\s+out)\b",
    r"\b(?:is|are)\s+(?:also\s+)?(?:possible|likely|suspected|questioned|questionable|a\s+possibility|"
    r"considered|less\s+likely|unlikely|not\s+excluded)\b",
    r"\bmay\s+be\s+present\b", r"\?",
)
# Applies both ways: "atelectasis versus pneumonia" makes both uncertain.
BOTH_UNCERTAINTY = (r"\b(?:versus|vs\.?)(?=\s)",)
POST_NEGATION = (
    r"\b(?:is|are|was|were)?\s*(?:not|no\s+longer)\s+(?:clearly\s+|definitely\s+|well\s+)?(?:seen|present|"
    r"visuali[sz]ed|visible|identified|evident|appreciated|demonstrated|noted|detected|apparent)\b",
    r"\b(?:has|have)?\s*(?:since\s+)?resolved\b", r"\b(?:is|are)\s+absent\b",
    r"\b(?:has|have)\s+(?:been\s+)?(?:cleared|removed)\b", r"\b(?:is|are|was|were)\s+(?:ruled\s+out|excluded)\b",
)
# A cue's scope ends at these (and at the sentence end); the nearest cue wins. "which" ends a forward scope
# only: "the effusion, which was seen before, has resolved" is still negated.
_TERMINATOR = (r"\b(?:but|however|although|though|whereas|while|except|where|since|because|aside\s+from|"
               r"apart\s+from|other\s+than|due\s+to|secondary\s+to|with)\b|"
               r"\bthere\s+(?:is|are|has\s+been|have\s+been)\b|\band\s+(?:the|there|a|an)\b|:")
PRE_TERMINATOR, POST_TERMINATOR = _TERMINATOR + r"|\b(?:which|who|that)\b", _TERMINATOR
LIST_CONTINUATION = r"\b(?:or|nor)\b|,\s*and\b"
MAX_PRE_WORDS, MAX_POST_WORDS = 15, 8

_HEART = r"(?:heart|cardiac)(?:\s+(?:size|silhouette|shadow|contour|contours))?"
_CMS = r"(?:cardio-?mediastinal|mediastinal)(?:\s+(?:silhouette|contours?|width))?|mediastinum"
_NORMAL = r"(?:normal|within\s+normal\s+limits|unremarkable|not\s+enlarged|not\s+widened|normal\s+in\s+size)"

FINDING_PATTERNS: dict[str, LabelPatterns] = {
    "atelectasis": LabelPatterns((r"\batelecta\w*", r"\b(?:lobar|lobe|lung)\s+collapse\b", r"\bcollapsed?\s+lobe\b")),
    "cardiomegaly": LabelPatterns(
        mention=(r"\bcardiomegaly\b",
                 r"\b(?:enlarge(?:d|ment\s+of\s+the)|large)\s+(?:heart|cardiac\s+(?:silhouette|size|shadow))\b",
                 r"\bcardiac\s+enlargement\b", _HEART + r"\s+(?:\w+\s+){0,3}?(?:enlarged|enlargement)\b"),
        negative=(_HEART + r"\s+(?:is\s+|are\s+|appears\s+|remains\s+|is\s+again\s+)?(?:\w+\s+)?" + _NORMAL + r"\b",
                  r"\bnormal\s+(?:heart|cardiac)\s+(?:size|silhouette|contours?)\b"),
        uncertain=(_HEART + r"\s+(?:is\s+|appears\s+|remains\s+)?(?:at\s+the\s+)?(?:top|upper)[- ]"
                           r"(?:limits?\s+of\s+)?normal\b",
                   r"\b(?:top|upper)[- ]normal\s+(?:heart|cardiac)\b",
                   r"\bborderline\s+(?:cardiomegaly|enlarged|heart)\b",
                   _HEART + r"\s+(?:is\s+)?borderline\b")),
    "consolidation": LabelPatterns((r"\bconsolidat\w*",)),
    "edema": LabelPatterns((r"\b(?:o)?edema(?:tous)?\b", r"\b(?:pulmonary|vascular|venous)\s+congestion\b",
                            r"\bfluid\s+overload\b", r"\b(?:congestive\s+heart\s+failure|chf)\b")),
    "enlarged_cardiomediastinum": LabelPatterns(
        mention=(r"\benlarged\s+cardio-?mediastin\w*",
                 r"\b(?:widen(?:ed|ing)|enlarged?)\s+(?:of\s+the\s+)?(?:" + _CMS + r")\b",
                 r"\b(?:" + _CMS + r")\s+(?:\w+\s+){0,3}?(?:widen(?:ed|ing)|enlarged|enlargement)\b"),
        negative=(r"\b(?:" + _CMS + r")\s+(?:is\s+|are\s+|appears\s+|remains\s+|is\s+again\s+)?(?:\w+\s+)?"
                  + _NORMAL + r"\b",
                  r"\bnormal\s+(?:" + _CMS + r")\b")),
    "fracture": LabelPatterns((r"\bfractur\w*", r"\bfx\b")),
    "lung_lesion": LabelPatterns((r"\blesions?\b", r"\bnodul\w*", r"\bmass(?:es)?\b(?!\s+effect)", r"\btumou?rs?\b",
                                  r"\bneoplas\w*", r"\bcarcinoma\b", r"\bmalignan\w*", r"\bmetasta\w*",
                                  r"\bcavitary\b")),
    "lung_opacity": LabelPatterns((r"\bopaci\w*", r"\binfiltrat\w*", r"\bair-?space\s+(?:disease|process)\b",
                                   r"\bhaz(?:y|iness)\b", r"\bdensit(?:y|ies)\b")),
    "pleural_effusion": LabelPatterns((r"(?<!pericardial\s)\beffusions?\b", r"\bpleural\s+fluid\b",
                                       r"\bfluid\s+in\s+the\s+(?:\w+\s+)?pleural\b", r"\bhydrothorax\b",
                                       r"\bblunt(?:ing|ed)\s+(?:of\s+)?(?:the\s+)?(?:\w+\s+)?costophrenic\b")),
    "pleural_other": LabelPatterns((r"\bpleural\s+(?:thickening|plaques?|scarring|calcifications?)\b",
                                    r"\bfibrothorax\b", r"\bapical\s+(?:pleural\s+)?cap(?:ping)?\b")),
    "pneumonia": LabelPatterns((r"\b(?:broncho)?pneumonia\b", r"\bpneumonitis\b", r"\binfect(?:ion|ious)\b")),
    "pneumothorax": LabelPatterns((r"\b(?:hydro)?pneumothora(?:x|ces)\b", r"\bptx\b")),
    "nodule": LabelPatterns((r"\bnodul(?:e|es|ar|arity)\b",)),
    "mass": LabelPatterns((r"\bmass(?:es)?\b(?!\s+effect)", r"\bmass-like\b", r"\btumou?rs?\b")),
    "emphysema": LabelPatterns((r"(?<!subcutaneous\s)(?<!soft\stissue\s)(?<!mediastinal\s)\bemphysema(?:tous)?\b",
                                r"\bcopd\b", r"\bchronic\s+obstructive\s+(?:pulmonary|lung)\s+disease\b",
                                r"\bbullae\b", r"\bbullous\b")),
    "fibrosis": LabelPatterns((r"\bfibros\w*", r"\bfibrotic\b", r"\bhoneycomb\w*", r"\binterstitial\s+lung\s+disease\b",
                               r"\bild\b", r"(?<!pleural\s)\bscarring\b")),
    "hernia": LabelPatterns((r"\bhernia(?:tion)?s?\b",)),
    "calcification": LabelPatterns((r"\bcalcif\w*",)),
}

# Devices. Presence polarity uses its own, narrower cues: "tip not visualized" is a position, not an absence.
DEVICE_MENTIONS: dict[str, tuple[str, ...]] = {
    "ett": (r"\bett\b", r"\bendo-?tracheal(?:\s+tube)?\b", r"\bet\s+tube\b", r"\bintubat(?:ed|ion)\b"),
    "ngt": (r"\b(?:ngt|ogt|dht)\b", r"\b(?:ng|og)(?:\s+tube)?\b", r"\b(?:naso|oro)-?gastric(?:\s+tube)?\b",
            r"\b(?:enteric|feeding|gastric|nasoenteric|dobb?hoff|ryle'?s)\s+(?:feeding\s+)?tube\b",
            r"\bdobb?hoff\b"),
    "cvc": (r"\bcentral\s+(?:venous\s+)?(?:lines?|catheters?)\b", r"\b(?:cvc|cvl)\b",
            r"\bpicc(?:\s+line)?\b", r"\bperipherally\s+inserted\s+central\s+(?:venous\s+)?catheter\b",
            r"\b(?:internal\s+jugular|ij|subclavian|femoral|brachiocephalic|jugular)(?:\s+(?:vein|venous|approach))?"
            r"\s+(?:central\s+)?(?:venous\s+)?(?:lines?|catheters?|cvc|cvl)\b",
            r"\b(?:right|left|r|l)\s+ij\b(?=\s+(?:tip|terminates|ends|courses|extends|is|with|projects|in\s+the))",
            r"\b(?:port-?a-?cath|portacath|mediport)\b", r"\b(?:chest|power|chest\s+wall)\s+port\b",
            r"\b(?:hemo)?dialysis\s+catheter\b", r"\b(?:quinton|hickman|tunnel(?:l)?ed)\s+(?:catheter|line)\b",
            r"\btriple[- ]lumen\s+(?:catheter|line)\b"),
    "swan_ganz": (r"\bswan[- ]?ganz(?:\s+catheter)?\b", r"\bswan\b",
                  r"\bpulmonary\s+arter(?:y|ial)\s+(?:catheter|line)\b",
                  r"\bpa\s+(?:catheter|line)\b"),
}
# Devices that count for support_devices only.
OTHER_DEVICE_MENTIONS: tuple[str, ...] = (
    r"\bchest\s+tubes?\b", r"\b(?:pleural|mediastinal|pigtail)\s+(?:drain|catheter)s?\b", r"\bpacemaker\b",
    r"\bpacer\b", r"\b(?:icd|aicd)\b", r"\bdefibrillator\b", r"\btracheostomy(?:\s+tube)?\b", r"\btrach\b",
    r"\bintra-?aortic\s+balloon(?:\s+pump)?\b", r"\biabp\b", r"\bstents?\b", r"\b(?:prosthetic|replacement)\s+valve\b",
    r"\bvalve\s+replacement\b", r"\bsupport\s+devices?\b", r"\b(?:lines|tubes)\s+(?:and|or|/)\s+(?:lines|tubes)\b",
    r"\bmonitoring\s+(?:leads|devices|wires)\b", r"\b(?:indwelling|medical)\s+devices?\b", r"\blvad\b", r"\becmo\b",
    r"\b(?:tubes|catheters|drains?|cannulas?)\b",
)
# "The tube terminates in the stomach": a bare noun refers to the last device named; with none before it, a
# tube or catheter is some support device and a bare "line" (midline, line of ...) is nothing.
GENERIC_DEVICE = r"\b(?:tube|catheter|line)\b"
DEVICE_NEGATIVE = {"ett": (r"\bextubat(?:ed|ion)\b",)}
DEVICE_PRE_NEGATION = (
    r"\b(?:interval\s+|status\s+post\s+|s/p\s+)?removal\s+of\b", r"\babsence\s+of\b", r"\bno\s+longer\b",
    r"\bwithout\b", r"\bno\b(?:\s+evidence\s+of)?", r"\bneither\b", r"\bnor\b",
)
DEVICE_POST_NEGATION = (
    r"\b(?:has|have|had)\s+been\s+(?:removed|discontinued)\b", r"\b(?:was|were)\s+(?:removed|discontinued)\b",
    r"\b(?:is|are)\s+no\s+longer\s+(?:present|seen|visuali[sz]ed|identified|in\s+place)\b",
    r"\b(?:is|are)\s+absent\b", r"\bremoved\b",
)
DEVICE_PRE_UNCERTAINTY = (r"\bpossibl[ey]\b", r"\bquestionabl[ey]\b", r"\bprobabl[ey]\b", r"\bpresum(?:ed|ably)\b")
# Words just before a position phrase that make that position uncertain ("possibly in the esophagus").
POSITION_UNCERTAINTY = (r"\b(?:possibl[ey]|probabl[ey]|questionabl[ey]|likely|may|might|presum(?:ed|ably)|"
                        r"suspect(?:ed)?|suggest\w*|concern\w*|cannot\s+exclude)\b|\?")

_MOVE = r"(?:recommend(?:ed|ing)?|consider|suggest(?:ed)?|could|should|may|can|might)\s+(?:be\s+)?(?:\w+\s+)?"
_ADJUST = r"(?:advanc|withdr[ae]w|retract|pull(?:ed|ing|s)?\s+back|reposition)\w*"
GENERIC_POSITION: tuple[tuple[str, str], ...] = (
    ("abnormal", r"\bmal-?position(?:ed)?\b|\bmis-?placed\b|\bmal-?placed\b|\baberrant(?:ly)?\b|"
                 r"\binappropriately\s+(?:positioned|placed)\b"),
    ("borderline", r"\bborderline\b|\bsub-?optimal(?:ly)?(?:\s+(?:positioned|placed|position))?\b|" + _MOVE + _ADJUST),
    ("normal", r"\b(?:satisfactory|standard|appropriate|good|acceptable|expected|adequate|optimal|correct|proper|"
               r"typical|usual|anatomic)\s+(?:position|placement|location|positioning)\b|"
               r"\b(?:well|appropriately|satisfactorily|adequately|correctly|properly|optimally|suitably|"
               r"acceptably|normally)[- ](?:positioned|placed|sited|situated)\b|"
               r"\b(?:positioned|placed|terminates?|terminating|ends|lies|sits)\s+(?:appropriately|satisfactorily|"
               r"appropriate|well)\b"),
)
# Match order matters: a matched span is blanked before later patterns run (e.g. "cavoatrial junction" before
# "right atrium"). The label is then the most severe category found (rules.POSITION_PRIORITY).
_CARINA = r"(?:the\s+)?(?:level\s+of\s+(?:the\s+)?)?carina"
ETT_DISTANCE = (r"\b(\d+(?:\.\d+)?)\s*(?:(?:-|to)\s*(\d+(?:\.\d+)?)\s*)?(cm|centimeters?|mm|millimeters?)\s+"
                r"(above|superior\s+to|proximal\s+to|from|cephalad\s+to|below|beyond|distal\s+to|past)\s+" + _CARINA)
ETT_NORMAL_RANGE, ETT_BORDERLINE_RANGE = (3.0, 7.0), (1.0, 10.0)
ETT_POSITION: tuple[tuple[str, str], ...] = (
    ("borderline", r"\b(?:near|close\s+to|just\s+above|immediately\s+above|approaching|slightly\s+above)\s+" + _CARINA),
    ("abnormal", r"\b(?:right|left|r|l)\s*(?:main\s*-?\s*stem|main)(?:\s+bronch\w*)?\b|\bmain-?\s*stem\b|"
                 r"\bbronchus\s+intermedius\b|\b(?:in|into|within|enters?|entering)\s+(?:the\s+)?(?:right\s+|left\s+)?"
                 r"bronch(?:us|i)\b|\bendobronchial\b|\besophag\w*|\b(?:at|abuts?|abutting|touching|to)\s+" + _CARINA +
                 r"|\b(?:below|beyond|distal\s+to|past)\s+" + _CARINA +
                 r"|\b(?:hypo|oro|naso)?pharyn\w*|\babove\s+the\s+(?:vocal\s+cords|glottis)\b"),
    ("borderline", r"\babove\s+(?:the\s+)?(?:level\s+of\s+(?:the\s+)?)?"
                   r"(?:clavicles|clavicular\s+heads|thoracic\s+inlet)\b|"
                   r"\bat\s+(?:the\s+)?thoracic\s+inlet\b|\blow[- ]?(?:lying|riding|positioned|position|placed)\b|"
                   r"\bhigh[- ]?(?:lying|riding|positioned|position|placed)\b|"
                   r"\b(?:is|sits|lies|remains|somewhat|slightly|rather|too)\s+(?:\w+\s+)?(?:low|high|deep|shallow)\b"),
    ("normal", r"\b(?:at|below)\s+(?:the\s+)?(?:level\s+of\s+(?:the\s+)?)?(?:medial\s+)?"
               r"(?:clavicles|clavicular\s+heads)\b|"
               r"\bmid-?\s*(?:thoracic\s+)?trachea\b|\b(?:in|within)\s+(?:the\s+)?trachea\b"),
)
_GEJ = r"(?:the\s+)?(?:level\s+of\s+(?:the\s+)?)?(?:ge|g-e|gastro-?esophageal|esophago-?gastric|eg)\s+junction|\bgej\b"
_DIAPHRAGM = r"(?:the\s+)?(?:level\s+of\s+(?:the\s+)?)?(?:left\s+)?(?:hemi-?)?diaphragms?"
NGT_POSITION: tuple[tuple[str, str], ...] = (
    ("borderline", r"\bside[- ]?(?:port|hole)\s+(?:\w+\s+){0,3}?(?:at|above|near|in|proximal\s+to|within|"
                   r"projects\s+over|overlies)\s+(?:the\s+)?(?:(?:distal\s+)?esophag\w*|" + _GEJ + ")"),
    ("abnormal", r"\b(?:coil\w*|loop\w*|curl\w*|kink\w*|folded)\s+(?:back\s+)?(?:\w+\s+){0,2}?(?:in|within|into)\s+"
                 r"(?:the\s+)?(?:\w+\s+)?(?:esophag\w*|pharyn\w*|oropharyn\w*|hypopharyn\w*|mouth|oral\s+cavity|neck)|"
                 r"\bnot\s+(?:\w+\s+)?(?:in|within|reach(?:ing|es)?|enter(?:ing|s)?)\s+(?:the\s+)?stomach\b"),
    ("normal", r"\b(?:beyond|past|below|across|traverses|crosses)\s+(?:the\s+)?(?:" + _GEJ + r")"),
    ("borderline", r"\bdistal\s+(?:thoracic\s+)?esophag\w*|\b(?:at|near|above|just\s+(?:above|below)|proximal\s+to|"
                   r"in\s+the\s+region\s+of)\s+(?:" + _GEJ + r")|\b(?:at|near|just\s+above)\s+" + _DIAPHRAGM + r"\b"),
    ("incompletely_imaged",
     r"\b(?:tip|distal\s+(?:end|tip|portion|aspect)|end)\s+(?:\w+\s+){0,3}?(?:not|cannot\s+be)\s+"
     r"(?:well\s+|clearly\s+)?"
     r"(?:seen|visuali[sz]ed|imaged|included|identified|assessed|evaluated|delineated|demonstrated|shown)\b|"
     r"\b(?:beyond|outside|below|off|out\s+of)\s+(?:the\s+)?(?:inferior\s+|lower\s+)?(?:field\s+of\s+view|fov|margin|"
     r"edge|border|limits?|view|film|image|radiograph|study)\b|"
     r"\bincompletely\s+(?:imaged|visuali[sz]ed|seen|included)\b|"
     r"\bnot\s+(?:fully\s+|completely\s+|entirely\s+)?(?:imaged|included)\b|"
     r"\bexcluded\s+from\s+(?:the\s+)?(?:field|image|film|view)\b|"
     r"\bcannot\s+be\s+(?:traced|followed)\b"),
    ("abnormal", r"\besophag\w*|\b(?:in|into|within|enters?|entering|projects\s+over)\s+(?:the\s+)?(?:\w+\s+){0,3}?"
                 r"(?:trachea|airway|bronch\w*|lung|pleural\s+space|pleura)\b|"
                 r"\b(?:tracheal|endobronchial|main-?\s*stem)\b|"
                 r"\babove\s+" + _DIAPHRAGM + r"\b"),
    ("normal", r"\b(?:below|beneath|under|beyond|past|traverses|crosses|across)\s+" + _DIAPHRAGM + r"\b|"
               r"\bsub-?diaphragmatic\b|\bstomach\b|\bgastric\s+(?:body|fundus|antrum|lumen|bubble)\b|\bfundus\b|"
               r"\bantrum\b|\bduoden\w*|\bjejun\w*|\bpost-?pyloric\b|\bpylor\w*"),
)
_VEIN_SIDE = r"(?:the\s+)?(?:(?:right|left|contralateral|ipsilateral)\s+)?"
_WRONG_VEIN = r"(?:internal\s+jugular|ij|jugular|subclavian|axillary|azygo(?:s|us)|neck)"
CVC_POSITION: tuple[tuple[str, str], ...] = (
    ("normal", r"\b(?:cavo-?atrial|caval-?atrial|atrio-?caval)\s+junction\b|\bcaj\b|"
               r"\b(?:svc|superior\s+vena\s+cava)\s*[-/]\s*(?:ra|right\s+atri(?:um|al))(?:\s+junction)?\b|"
               r"\bjunction\s+of\s+the\s+(?:svc|superior\s+vena\s+cava)\s+and\s+(?:the\s+)?right\s+atrium\b"),
    ("abnormal", r"\b(?:into|up(?:\s+into)?)\s+" + _VEIN_SIDE + _WRONG_VEIN + r"\b|"
                 r"\b(?:tip|terminat\w*|ends?|ending|lies|lying|located|positioned|projects?|projecting|"
                 r"overl(?:ies|ying))"
                 r"\s+(?:\w+\s+){0,3}?(?:in|within|at|over)\s+" + _VEIN_SIDE + _WRONG_VEIN + r"\b|"
                 r"\b(?:deep|mid|low(?:er)?|inferior)\s+(?:right\s+)?atri(?:um|al)\b|\bright\s+ventric\w*|"
                 r"\binferior\s+vena\s+cava\b|\bivc\b|\bhepatic\s+vein\b|\b(?:in|into|within)\s+(?:the\s+)?(?:\w+\s+)?"
                 r"(?:aorta|carotid)\b|\b(?:intra-?)?arterial\s+(?:placement|position|course|location|cannulation)\b|"
                 r"\bextravascular\b|\bcoiled\b|\blooped\b"),
    ("borderline", r"\b(?:in|at|within|into)\s+(?:the\s+)?(?:(?:right|left|proximal|distal|mid)\s+)?"
                   r"(?:brachiocephalic|innominate)\b|\b(?:junction|confluence)\s+of\s+the\s+(?:\w+\s+){0,3}?"
                   r"(?:brachiocephalic|innominate)\b|\bright\s+atri(?:um|al)\b|\bright\s+atrium\b|\bra\b"),
    ("normal", r"\b(?:svc|superior\s+vena\s+cava)\b"),
)
