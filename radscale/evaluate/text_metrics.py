"""Report-generation metrics: BLEU-4, ROUGE-L and the labeler's clinical label F1.

Texts are compared as lower-case word and punctuation tokens (`tokenize`), one reference per report.
BLEU is corpus-level (Papineni et al. 2002): clipped n-gram precisions summed over the corpus, geometric mean
over n = 1..4, brevity penalty exp(1 - r/c) when the candidate corpus is shorter than the reference corpus.
Per-report sufficient statistics (`bleu_stats`) make bootstrap resamples cheap: corpus BLEU is a function of
their column sums. ROUGE-L is the LCS F-measure of each report (Lin 2004, eq. 2-4; beta = 1 as in the
rouge-score package most report-generation papers use), averaged over reports.
Clinical efficacy: the rule-based labeler reads generated and reference reports; a label counts as predicted
when it is positive (1; uncertain -1 is not positive), and F1 is macro-averaged over the labels that have at
least one positive reference (labels without support have undefined recall).
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

import numpy as np

from radscale.data.labels.rules import label_report
from radscale.data.vocab import DEFAULT_VOCABULARY, Vocabulary
from radscale.errors import RadscaleError

MAX_N = 4
SMOOTHING = ("none", "epsilon", "add1")
_TOKEN = re.compile(r"[a-z0-9]+(?:['.-][a-z0-9]+)*|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-case words (keeping "4.5", "x-ray", "pa's" whole) and single punctuation marks."""
    return _TOKEN.findall(text.lower())


def bleu_stats(hyp: Sequence[str], ref: Sequence[str], max_n: int = MAX_N) -> np.ndarray:
    """[matches_1..N, totals_1..N, hyp_len, ref_len] of one candidate against its reference."""
    out = np.zeros(2 * max_n + 2, dtype=np.int64)
    for n in range(1, max_n + 1):
        h = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
        r = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        out[n - 1] = sum(min(c, r[g]) for g, c in h.items())       # clipped counts (Papineni eq. 1)
        out[max_n + n - 1] = max(len(hyp) - n + 1, 0)
    out[-2], out[-1] = len(hyp), len(ref)
    return out


def bleu_from_stats(stats: np.ndarray, smooth: str = "none", epsilon: float = 0.1) -> float:
    """Corpus BLEU from summed `bleu_stats`.

    smooth: "none" (Papineni; 0 when some n-gram order has no match), "epsilon" (a zero match count becomes
    epsilon: Chen & Cherry 2014, method 1), "add1" (add 1 to matches and totals of orders n >= 2: Lin & Och
    2004, Chen & Cherry method 2).
    """
    if smooth not in SMOOTHING:
        raise RadscaleError(f"BLEU: unknown smoothing {smooth!r} (choose from {', '.join(SMOOTHING)})")
    stats = np.asarray(stats, dtype=np.float64)
    max_n = (len(stats) - 2) // 2
    matches, totals = stats[:max_n].copy(), stats[max_n:2 * max_n].copy()
    c, r = stats[-2], stats[-1]
    if c == 0:
        return 0.0
    if smooth == "epsilon":
        matches = np.where(matches == 0, epsilon, matches)
    elif smooth == "add1":
        matches[1:] += 1
        totals[1:] += 1
    if (matches <= 0).any() or (totals <= 0).any():
        return 0.0
    log_p = np.log(matches / totals).mean()                           # uniform weights 1/N
    bp = 1.0 if c > r else np.exp(1.0 - r / c)
    return float(bp * np.exp(log_p))


def corpus_bleu(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], smooth: str = "none") -> float:
    """Corpus BLEU-4 of token lists, one reference per candidate."""
    if len(hyps) != len(refs):
        raise RadscaleError(f"BLEU: {len(hyps)} candidates for {len(refs)} references")
    stats = sum((bleu_stats(h, r) for h, r in zip(hyps, refs)), np.zeros(2 * MAX_N + 2, np.int64))
    return bleu_from_stats(stats, smooth)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length, bit-parallel (Allison & Dix 1986; Hyyrö 2004): O(len(b)) big-int ops."""
    if not a or not b:
        return 0
    match: dict[str, int] = {}
    for i, tok in enumerate(a):
        match[tok] = match.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        u = v & match.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l(hyp: Sequence[str], ref: Sequence[str], beta: float = 1.0) -> float:
    """ROUGE-L F-measure of one candidate: R = LCS/|ref|, P = LCS/|hyp|, F = (1+b²)RP / (R + b²P)."""
    lcs = lcs_length(ref, hyp)
    if lcs == 0:
        return 0.0
    rec, prec = lcs / len(ref), lcs / len(hyp)
    return float((1 + beta ** 2) * rec * prec / (rec + beta ** 2 * prec))


def positive_labels(texts: Sequence[str], vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> np.ndarray:
    """bool [N, L]: the labeler calls label l positive (1) in text i; L = vocabulary.labels."""
    out = np.zeros((len(texts), len(vocabulary.labels)), dtype=bool)
    for i, text in enumerate(texts):
        labels = label_report(text, vocabulary)
        out[i] = [labels[name] == 1 for name in vocabulary.labels]
    return out


def label_f1(pred: np.ndarray, ref: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(macro F1 over labels with support, per-label F1 [L] (NaN without support), support [L])."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    tp = (pred & ref).sum(0)
    fp, fn = (pred & ~ref).sum(0), (~pred & ref).sum(0)
    support = ref.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(support > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    macro = float(np.nanmean(f1)) if (support > 0).any() else float("nan")
    return macro, f1, support


def clinical_label_f1(generated: Sequence[str], references: Sequence[str],
                      vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> float:
    """Macro label F1 of generated against reference reports, labels read by the rule-based labeler."""
    if len(generated) != len(references):
        raise RadscaleError(f"label F1: {len(generated)} generated reports for {len(references)} references")
    return label_f1(positive_labels(generated, vocabulary), positive_labels(references, vocabulary))[0]
