"""Rule-based report labeler (CheXpert-labeler style): mention, then negation / uncertainty cues in scope.

Report text → {label: 1 positive | 0 negative | -1 uncertain | None not mentioned} for a Vocabulary.
Sections: FINDINGS-like and IMPRESSION-like sections are labelled separately and merged per label; where the
IMPRESSION states a value it wins (it is the radiologist's conclusion), else the FINDINGS value stands.
History-like sections (INDICATION, COMPARISON, ...) are skipped; a report without any FINDINGS/IMPRESSION
header is labelled as a whole. Within a section group a label is 1 if any mention is positive, else -1 if any
is uncertain, else 0 (CheXpert aggregation, Irvin et al. 2019).
Lines and tubes: each device mention gets a presence polarity and, where stated, a position category
(patterns.py lists the language and the ETT distance thresholds). A device type not mentioned leaves its
labels None; a mentioned device with a stated position sets that label to 1 (-1 if hedged) and the type's
other position labels to 0; a mentioned device without a stated position leaves them None; an absent or
removed device sets them all to 0. Several devices of one type (two central lines) may set several labels.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Iterable

from radscale.data.labels import patterns as P
from radscale.data.vocab import DEFAULT_VOCABULARY, Vocabulary
from radscale.errors import RadscaleError

_FLAGS = re.IGNORECASE
POSITION_LABELS: dict[str, dict[str, str]] = {
    "ett": {"abnormal": "ett_abnormal", "borderline": "ett_borderline", "normal": "ett_normal"},
    "ngt": {"abnormal": "ngt_abnormal", "borderline": "ngt_borderline",
            "incompletely_imaged": "ngt_incompletely_imaged", "normal": "ngt_normal"},
    "cvc": {"abnormal": "cvc_abnormal", "borderline": "cvc_borderline", "normal": "cvc_normal"},
}
POSITION_PRIORITY: dict[str, tuple[str, ...]] = {  # most severe first
    "ett": ("abnormal", "borderline", "normal"),
    "ngt": ("abnormal", "incompletely_imaged", "borderline", "normal"),
    "cvc": ("abnormal", "borderline", "normal"),
}
_SPECIFIC_POSITION = {"ett": P.ETT_POSITION, "ngt": P.NGT_POSITION, "cvc": P.CVC_POSITION}
DEVICE_LABELS = ("support_devices", "swan_ganz_present",
                 *(label for labels in POSITION_LABELS.values() for label in labels.values()))


def _rx(patterns: Iterable[str] | str) -> re.Pattern:
    return re.compile(patterns if isinstance(patterns, str) else "|".join(f"(?:{p})" for p in patterns), _FLAGS)


@dataclass(frozen=True)
class _Lexicon:
    """All patterns compiled once."""

    header: re.Pattern
    pseudo: re.Pattern
    cues: tuple[tuple[re.Pattern, str, str], ...]  # (regex, polarity "neg"/"unc", direction "pre"/"post"/"both")
    pre_term: re.Pattern
    post_term: re.Pattern
    list_cont: re.Pattern
    findings: dict[str, tuple[re.Pattern | None, re.Pattern | None, re.Pattern]]  # negative, uncertain, mention
    devices: dict[str, re.Pattern]
    device_negative: dict[str, re.Pattern]
    device_cues: tuple[tuple[re.Pattern, str, str], ...]
    positions: dict[str, tuple[tuple[str, re.Pattern], ...]]
    ett_distance: re.Pattern
    position_uncertainty: re.Pattern


@functools.lru_cache(maxsize=1)
def _lexicon() -> _Lexicon:
    findings = {name: (_rx(p.negative) if p.negative else None, _rx(p.uncertain) if p.uncertain else None,
                       _rx(p.mention)) for name, p in P.FINDING_PATTERNS.items()}
    devices = {name: _rx(p) for name, p in P.DEVICE_MENTIONS.items()}
    devices["other"] = _rx(P.OTHER_DEVICE_MENTIONS)
    devices["generic"] = _rx(P.GENERIC_DEVICE)
    generic = tuple((cat, _rx(p)) for cat, p in P.GENERIC_POSITION)
    return _Lexicon(
        header=_rx(P.SECTION_HEADER), pseudo=_rx(P.PSEUDO_NEGATION),
        # Order matters: earlier cues claim their text first ("is not excluded" is uncertainty, not "not").
        cues=((_rx(P.POST_UNCERTAINTY), "unc", "post"), (_rx(P.PRE_UNCERTAINTY), "unc", "pre"),
              (_rx(P.BOTH_UNCERTAINTY), "unc", "both"), (_rx(P.POST_NEGATION), "neg", "post"),
              (_rx(P.PRE_NEGATION), "neg", "pre")),
        pre_term=_rx(P.PRE_TERMINATOR), post_term=_rx(P.POST_TERMINATOR), list_cont=_rx(P.LIST_CONTINUATION),
        findings=findings, devices=devices,
        device_negative={name: _rx(p) for name, p in P.DEVICE_NEGATIVE.items()},
        device_cues=((_rx(P.DEVICE_POST_NEGATION), "neg", "post"), (_rx(P.DEVICE_PRE_UNCERTAINTY), "unc", "pre"),
                     (_rx(P.DEVICE_PRE_NEGATION), "neg", "pre")),
        positions={dev: generic + tuple((cat, _rx(p)) for cat, p in table)
                   for dev, table in _SPECIFIC_POSITION.items()},
        ett_distance=_rx(P.ETT_DISTANCE), position_uncertainty=_rx(P.POSITION_UNCERTAINTY),
    )


# ---------------------------------------------------------------- text structure
_SENTENCE_END = re.compile(r"(?<!\bvs\.)(?<!\bdr\.)(?<!\be\.g\.)(?<!\bi\.e\.)(?<=[.!?;])\s+|\n\s*\n")


def split_sections(text: str) -> list[tuple[str, str]]:
    """[(lower-case header or "" for text before the first header, body)] in report order."""
    matches = list(_lexicon().header.finditer(text))
    out = [("", text[:matches[0].start()] if matches else text)]
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        out.append((" ".join(m.group(1).lower().split()), text[m.end():end]))
    return [(name, body) for name, body in out if body.strip()]


def section_groups(text: str) -> dict[str, str]:
    """{"findings": ..., "impression": ...}: the IMPRESSION-like sections, and every other section that is not
    history-like (text before the first header only when there is no FINDINGS/IMPRESSION header)."""
    sections = split_sections(text)
    has_main = any(name.startswith("findings") or name in P.IMPRESSION_SECTIONS for name, _ in sections)
    groups: dict[str, list[str]] = {"findings": [], "impression": []}
    for name, body in sections:
        if name in P.SKIPPED_SECTIONS or (name == "" and has_main):
            continue
        groups["impression" if name in P.IMPRESSION_SECTIONS else "findings"].append(body.strip())
    # Section bodies are joined with a blank line so a sentence never spans two sections.
    return {g: "\n\n".join(bodies) for g, bodies in groups.items()}


def split_sentences(text: str) -> list[str]:
    # Reports wrap lines mid-sentence: a single newline is a space, a blank line ends a sentence.
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _blank(text: str, start: int, end: int) -> str:
    return text[:start] + " " * (end - start) + text[end:]


def _find_cues(sentence: str, table: tuple[tuple[re.Pattern, str, str], ...],
               pseudo: re.Pattern | None) -> list[tuple[int, int, str, str]]:
    work = sentence
    if pseudo is not None:
        for m in pseudo.finditer(sentence):
            work = _blank(work, m.start(), m.end())
    cues = []
    for rx, polarity, direction in table:
        for m in rx.finditer(work):
            if m.end() > m.start():
                cues.append((m.start(), m.end(), polarity, direction))
        for start, end, *_ in cues:
            work = _blank(work, start, end)
    return sorted(cues)


def _pre_scope(s: str, cue_end: int, start: int, end: int, lex: _Lexicon, max_words: int) -> bool:
    gap = s[cue_end:start]
    if lex.pre_term.search(gap) or len(gap.split()) > max_words:
        return False
    if "," not in gap:
        return True
    # Crossing a comma needs a list: "no consolidation, effusion, or pneumothorax" but not "no ptx, small effusion".
    if re.match(r"\s*(?:or|nor|and)\b", gap[gap.rfind(",") + 1:], _FLAGS):
        return True
    return bool(lex.list_cont.search(s[end:]))


_JOINED = re.compile(r"\s*,?\s*(?:and|or|nor|and/or|as\s+well\s+as)\s+(?:[\w-]+\s+){0,3}", _FLAGS)


def _post_scope(s: str, end: int, cue_start: int, others: list[tuple[int, int]], lex: _Lexicon) -> bool:
    gap = s[end:cue_start]
    if lex.post_term.search(gap) or len(gap.split()) > P.MAX_POST_WORDS:
        return False
    # "cardiomegaly and effusion have resolved" reaches back over "and"; "heart enlarged, effusion resolved" not.
    return all(_JOINED.fullmatch(s[end:o_start]) for o_start, _ in others if end <= o_start < cue_start)


def _polarity(s: str, start: int, end: int, cues: list, others: list[tuple[int, int]], lex: _Lexicon,
              max_pre: int) -> int:
    before = [c for c in cues if c[1] <= start]
    after = [c for c in cues if c[0] >= end]
    found = set()
    if before and before[-1][3] in ("pre", "both") and _pre_scope(s, before[-1][1], start, end, lex, max_pre):
        found.add(before[-1][2])
    if after and after[0][3] in ("post", "both") and _post_scope(s, end, after[0][0], others, lex):
        found.add(after[0][2])
    return -1 if "unc" in found else 0 if "neg" in found else 1


def _merge(values: Iterable[int | None]) -> int | None:
    """CheXpert aggregation: positive > uncertain > negative > unmentioned."""
    vals = {v for v in values if v is not None}
    return 1 if 1 in vals else -1 if -1 in vals else 0 if 0 in vals else None


# ---------------------------------------------------------------- findings
def _label_findings(sentences: list[str], lex: _Lexicon) -> dict[str, int | None]:
    values: dict[str, list[int]] = {name: [] for name in lex.findings}
    for s in sentences:
        cues = _find_cues(s, lex.cues, lex.pseudo)
        mentions: list[tuple[int, int, str, int | None]] = []  # start, end, label, fixed polarity
        for name, (negative, uncertain, mention) in lex.findings.items():
            work = s
            for rx, fixed in ((uncertain, -1), (negative, 0)):
                for m in rx.finditer(work) if rx is not None else ():
                    mentions.append((m.start(), m.end(), name, fixed))
                    work = _blank(work, m.start(), m.end())
            mentions.extend((m.start(), m.end(), name, None) for m in mention.finditer(work))
        spans = sorted({(a, b) for a, b, _, _ in mentions})
        for start, end, name, fixed in mentions:
            values[name].append(fixed if fixed is not None else
                                _polarity(s, start, end, cues, spans, lex, P.MAX_PRE_WORDS))
    return {name: _merge(v) for name, v in values.items()}


# ---------------------------------------------------------------- lines and tubes
def _classify_position(device: str, text: str, lex: _Lexicon) -> tuple[str, bool] | None:
    """(category, hedged) from the text around one device mention, or None when no position is stated."""
    work, hits = text, []
    if device == "ett":
        m = lex.ett_distance.search(work)
        if m is not None:
            cm = (float(m.group(1)) + float(m.group(2) or m.group(1))) / 2
            cm = cm / 10 if m.group(3).lower().startswith("m") else cm
            lo, hi = P.ETT_NORMAL_RANGE
            blo, bhi = P.ETT_BORDERLINE_RANGE
            below = not re.match(r"above|superior|proximal|from|cephalad", m.group(4), _FLAGS)
            cat = "abnormal" if below or not blo <= cm <= bhi else "normal" if lo <= cm <= hi else "borderline"
            return cat, bool(lex.position_uncertainty.search(text[max(0, m.start() - 40):m.start()]))
    for cat, rx in lex.positions[device]:
        for m in rx.finditer(work):
            hits.append((cat, m.start()))
            work = _blank(work, m.start(), m.end())
    for cat in POSITION_PRIORITY[device]:
        starts = [start for c, start in hits if c == cat]
        if starts:
            return cat, bool(lex.position_uncertainty.search(text[max(0, starts[0] - 40):starts[0]]))
    return None


_CLAUSE_BREAK = re.compile(r".*(?:[,;]|\band\b|\bwith\b|\bwhile\b)", _FLAGS | re.DOTALL)
_CONJUNCTION = re.compile(r"\s*(?:,|and|or|&|/|,\s*and|as\s+well\s+as)\s*(?:the\s+)?", _FLAGS)
_COREFERENCE = re.compile(r"\b(?:tip|side[- ]?(?:port|hole)|terminat\w*|the\s+(?:tube|catheter|line)|its?)\b", _FLAGS)


def _device_instances(sentences: list[str], lex: _Lexicon) -> list[tuple[str, int, tuple[str, bool] | None]]:
    """(device type, presence polarity, position) per device mention, in report order."""
    out: list[tuple[str, int, tuple[str, bool] | None]] = []
    last: tuple[str, int] | None = None
    for s in sentences:
        found = []
        for dev, rx in lex.devices.items():
            found.extend((m.start(), m.end(), dev, None) for m in rx.finditer(s))
            if dev in lex.device_negative:
                found.extend((m.start(), m.end(), dev, 0) for m in lex.device_negative[dev].finditer(s))
        mentions = []  # longest first wins overlapping spans ("right IJ central line" is one mention)
        for start, end, dev, fixed in sorted(found, key=lambda f: (f[0], -(f[1] - f[0]))):
            if mentions and start < mentions[-1][1]:
                continue
            if dev == "generic":
                if last is None and s[start:end].lower() == "line":
                    continue
                dev = last[0] if last is not None else "other"
            mentions.append((start, end, dev, fixed))
            last = (dev, 1)
        if not mentions:
            if last is not None and last[1] != 0 and last[0] in POSITION_LABELS and _COREFERENCE.search(s):
                position = _classify_position(last[0], s, lex)
                if position is not None:
                    out.append((last[0], last[1], position))
            continue
        cues = _find_cues(s, lex.device_cues, None)
        spans = [(a, b) for a, b, _, _ in mentions]
        positions: list[tuple[str, bool] | None] = []
        for i, (start, end, dev, fixed) in enumerate(mentions):
            polarity = fixed if fixed is not None else _polarity(s, start, end, cues, spans, lex, 6)
            prev_end = mentions[i - 1][1] if i else 0
            head = _CLAUSE_BREAK.match(s, prev_end, start)
            seg_start = head.end() if head else prev_end
            seg_end = mentions[i + 1][0] if i + 1 < len(mentions) else len(s)
            segment = _blank(s, start, end)[seg_start:seg_end]
            positions.append(_classify_position(dev, segment, lex) if dev in POSITION_LABELS else None)
            out.append((dev, polarity, None))
            last = (dev, polarity)
        # "ETT and NG tube in standard position": a bare conjunction shares the next device's position words.
        for i in range(len(mentions) - 2, -1, -1):
            dev, nxt = mentions[i][2], mentions[i + 1]
            if positions[i] is None and dev in POSITION_LABELS and _CONJUNCTION.fullmatch(s[mentions[i][1]:nxt[0]]):
                tail_end = mentions[i + 2][0] if i + 2 < len(mentions) else len(s)
                positions[i] = _classify_position(dev, s[nxt[1]:tail_end], lex)
        base = len(out) - len(mentions)
        for i, position in enumerate(positions):
            dev, polarity, _ = out[base + i]
            out[base + i] = (dev, polarity, position)
    return out


def _label_devices(sentences: list[str], lex: _Lexicon) -> tuple[dict[str, int | None], dict[str, int | None]]:
    """(tube labels, presence per device type) for one section group."""
    instances = _device_instances(sentences, lex)
    labels: dict[str, int | None] = {label: None for labels in POSITION_LABELS.values() for label in labels.values()}
    presence = {dev: _merge(pol for d, pol, _ in instances if d == dev) for dev in lex.devices if dev != "generic"}
    for dev, cats in POSITION_LABELS.items():
        present = [(pol, pos) for d, pol, pos in instances if d == dev and pol != 0]
        if not present and presence[dev] == 0:
            labels.update({label: 0 for label in cats.values()})
            continue
        for pol, pos in present:
            if pos is None:
                continue
            cat, hedged = pos
            for other in cats.values():
                labels[other] = 0 if labels[other] is None else labels[other]
            value = -1 if hedged or pol == -1 else 1
            labels[cats[cat]] = _merge((labels[cats[cat]] if labels[cats[cat]] != 0 else None, value))
    labels["swan_ganz_present"] = presence["swan_ganz"]
    return labels, presence


# ---------------------------------------------------------------- report
def _label_group(text: str, lex: _Lexicon) -> tuple[dict[str, int | None], dict[str, int | None]]:
    sentences = split_sentences(text)
    labels = _label_findings(sentences, lex)
    tubes, presence = _label_devices(sentences, lex)
    labels.update(tubes)
    return labels, presence


def label_report(text: str, vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> dict[str, int | None]:
    """Label one report: {label: 1 | 0 | -1 | None} for every label of `vocabulary`."""
    lex = _lexicon()
    known = set(lex.findings) | set(DEVICE_LABELS)
    unknown = [label for label in vocabulary.labels if label not in known]
    if unknown:
        raise RadscaleError(f"rule-based labeler: no patterns for label {unknown[0]!r} "
                            f"(add them to radscale/data/labels/patterns.py or use the LLM labeler)")
    groups = section_groups(text)
    (f_labels, f_presence), (i_labels, i_presence) = (_label_group(groups[g], lex)
                                                      for g in ("findings", "impression"))
    merged = {k: i_labels[k] if i_labels[k] is not None else f_labels[k] for k in f_labels}
    presence = {k: i_presence[k] if i_presence[k] is not None else f_presence[k] for k in f_presence}
    merged["support_devices"] = _merge(presence.values())
    return {label: merged[label] for label in vocabulary.labels}


class RuleLabeler:
    """The offline default labeler; `label(text, report_id)` matches LLMLabeler's interface."""

    def __init__(self, vocabulary: Vocabulary = DEFAULT_VOCABULARY):
        self.vocabulary = vocabulary

    def label(self, text: str, report_id: str = "") -> dict[str, int | None]:
        return label_report(text, self.vocabulary)

    def __call__(self, text: str) -> dict[str, int | None]:
        return label_report(text, self.vocabulary)
