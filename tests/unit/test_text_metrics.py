import math

import numpy as np
import pytest

from radscale.errors import RadscaleError
from radscale.evaluate.text_metrics import (bleu_from_stats, bleu_stats, clinical_label_f1, corpus_bleu,
                                            label_f1, lcs_length, positive_labels, rouge_l, tokenize)


def test_tokenize_keeps_numbers_and_splits_punctuation():
    assert tokenize("ETT tip 4.5 cm above the carina; no x-ray.") == \
        ["ett", "tip", "4.5", "cm", "above", "the", "carina", ";", "no", "x-ray", "."]


def test_bleu_hand_case_with_and_without_smoothing():
    hyp, ref = "the cat sat on the mat".split(), "the cat is on the mat".split()
    # Clipped matches: 1-grams 5/6, 2-grams 3/5, 3-grams 1/4, 4-grams 0/3; equal lengths so BP = 1.
    assert bleu_stats(hyp, ref).tolist() == [5, 3, 1, 0, 6, 5, 4, 3, 6, 6]
    assert corpus_bleu([hyp], [ref]) == 0.0
    assert corpus_bleu([hyp], [ref], smooth="epsilon") == pytest.approx((5 / 6 * 3 / 5 * 1 / 4 * 0.1 / 3) ** 0.25)
    assert corpus_bleu([hyp], [ref], smooth="add1") == pytest.approx((5 / 6 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25)
    with pytest.raises(RadscaleError, match="smoothing"):
        bleu_from_stats(bleu_stats(hyp, ref), smooth="laplace")


def test_bleu_brevity_penalty_and_corpus_pooling():
    short, long_ref = "a b c d e".split(), "a b c d e f g".split()
    assert corpus_bleu([short], [long_ref]) == pytest.approx(math.exp(1 - 7 / 5))
    # A longer candidate has no brevity penalty; its extra n-grams lower the precisions instead.
    assert corpus_bleu([long_ref], [short]) == pytest.approx((5 / 7 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25)
    assert corpus_bleu([long_ref + ["x"]], [long_ref]) == pytest.approx((7 / 8 * 6 / 7 * 5 / 6 * 4 / 5) ** 0.25)
    # Corpus-level: statistics are summed before the geometric mean, not BLEU averaged per sentence.
    h2, r2 = "p q r s".split(), "p q r t".split()
    pooled = ((5 + 3) / (5 + 4) * (4 + 2) / (4 + 3) * (3 + 1) / (3 + 2) * (2 + 0) / (2 + 1)) ** 0.25
    assert corpus_bleu([short, h2], [short, r2]) == pytest.approx(pooled)
    assert corpus_bleu([[]], [short]) == 0.0


def test_rouge_l_hand_cases_from_lin_2004():
    ref = "police killed the gunman".split()
    assert rouge_l("police kill the gunman".split(), ref) == pytest.approx(0.75)
    assert rouge_l("the gunman kill police".split(), ref) == pytest.approx(0.5)
    # Unequal lengths: LCS 2, R = 2/4, P = 2/3 -> F1 = 4/7; beta weights recall.
    assert rouge_l("police the x".split(), ref) == pytest.approx(4 / 7)
    assert rouge_l("police the x".split(), ref, beta=2.0) == pytest.approx(5 * 0.5 * (2 / 3) / (0.5 + 4 * 2 / 3))
    assert rouge_l([], ref) == 0.0


def test_bit_parallel_lcs_matches_dynamic_programming():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = (list(rng.choice(list("abcd"), rng.integers(0, 80))) for _ in range(2))
        table = np.zeros((len(a) + 1, len(b) + 1), int)
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                table[i + 1, j + 1] = table[i, j] + 1 if x == y else max(table[i, j + 1], table[i + 1, j])
        assert lcs_length(a, b) == table[-1, -1]


def test_label_f1_counts_positive_labels_over_supported_labels():
    ref = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]], bool)
    pred = np.array([[1, 0, 1], [0, 1, 0], [0, 1, 0]], bool)
    macro, per, support = label_f1(pred, ref)
    assert support.tolist() == [2, 2, 0]
    assert per[0] == pytest.approx(2 / 3) and per[1] == 1.0 and np.isnan(per[2])
    assert macro == pytest.approx((2 / 3 + 1) / 2)


def test_clinical_label_f1_reads_reports_with_the_rule_labeler():
    refs = ["FINDINGS: Right pleural effusion. No pneumothorax.", "FINDINGS: Large left pneumothorax."]
    same = clinical_label_f1(refs, refs)
    swapped = clinical_label_f1(refs[::-1], refs)
    hedged = clinical_label_f1(["FINDINGS: Possible pleural effusion.", refs[1]], refs)
    assert same == 1.0 and swapped == 0.0 and hedged == pytest.approx(0.5)   # uncertain is not positive
    pos = positive_labels(refs)
    assert pos.shape[0] == 2 and pos.sum() == 2
    with pytest.raises(RadscaleError):
        clinical_label_f1(refs, refs[:1])
