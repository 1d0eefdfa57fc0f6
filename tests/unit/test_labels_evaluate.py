"""Labeler evaluation against held-out annotations (radscale/data/labels/evaluate.py)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from radscale.data.labels.evaluate import evaluate_labels, format_evaluation
from radscale.data.labels.rules import label_report
from radscale.errors import RadscaleError

GOLD = pd.DataFrame({"image_id": list("abcdef"),
                     "x": [1, 0, -1, None, 1, 0],
                     "y": [0, 0, 0, 0, None, 0]})
# shuffled ids and an extra id that gold does not have
PRED = pd.DataFrame({"image_id": list("zfedcba"),
                     "x": [1, 1, 1, None, -1, 1, 1],
                     "y": [1, 0, 0, 0, 0, 0, 0]})


def row(df: pd.DataFrame, label: str) -> pd.Series:
    return df.set_index("label").loc[label]


@pytest.mark.parametrize("uncertain, counts", [
    # aligned x: gold [1, 0, -1, None, 1, 0] vs pred [1, 1, -1, None, 1, 1]
    ("positive", (3, 2, 0, 3, 6)),  # tp, fp, fn, support, n
    ("negative", (2, 2, 0, 2, 6)),
    ("exclude", (2, 2, 0, 2, 5)),
])
def test_counts_for_each_uncertainty_policy(uncertain, counts):
    out = evaluate_labels(PRED, GOLD, ["x", "y"], uncertain=uncertain)
    x = row(out, "x")
    assert (x.tp, x.fp, x.fn, x.support, x.n) == counts
    tp, fp, fn, support, _ = counts
    assert x.precision == pytest.approx(tp / (tp + fp)) and x.recall == pytest.approx(tp / support)
    assert x.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_exclude_counts_a_predicted_hedge_as_positive():
    gold = pd.DataFrame({"image_id": ["a", "b"], "x": [0, -1]})
    pred = pd.DataFrame({"image_id": ["a", "b"], "x": [-1, 1]})
    x = row(evaluate_labels(pred, gold, ["x"], uncertain="exclude"), "x")
    assert (x.n, x.tp, x.fp) == (1, 0, 1)


def test_undefined_labels_are_nan_and_left_out_of_macro():
    out = evaluate_labels(PRED, GOLD, ["x", "y"])
    y = row(out, "y")  # no gold positives, no predicted positives on gold rows
    assert (y.support, y.tp, y.fp) == (0, 0, 0) and math.isnan(y.f1) and math.isnan(y.precision)
    assert row(out, "macro").f1 == pytest.approx(row(out, "x").f1)
    micro = row(out, "micro")
    assert (micro.tp, micro.fp, micro.fn) == (3, 2, 0)
    assert list(out["label"]) == ["x", "y", "macro", "micro"]


def test_macro_averages_labels():
    gold = pd.DataFrame({"image_id": list("abcd"), "x": [1, 1, 0, 0], "y": [1, 0, 0, 0]})
    pred = pd.DataFrame({"image_id": list("abcd"), "x": [1, 0, 0, 0], "y": [1, 1, 0, 0]})
    out = evaluate_labels(pred, gold, ["x", "y"])
    # x: P 1, R 0.5, F1 2/3; y: P 0.5, R 1, F1 2/3
    macro = row(out, "macro")
    assert (macro.precision, macro.recall, macro.f1) == pytest.approx((0.75, 0.75, 2 / 3))


def test_errors_name_the_problem():
    with pytest.raises(RadscaleError, match="pred lacks 1 gold image_ids"):
        evaluate_labels(PRED[PRED.image_id != "c"], GOLD, ["x"])
    with pytest.raises(RadscaleError, match="duplicate image_id 'a'"):
        evaluate_labels(pd.concat([PRED, PRED.tail(1)]), GOLD, ["x"])
    with pytest.raises(RadscaleError, match="no column 'w'"):
        evaluate_labels(PRED, GOLD, ["w"])
    bad = GOLD.assign(x=[1, 0, 2, None, 1, 0])
    with pytest.raises(RadscaleError, match="gold column 'x' at image_id='c'"):
        evaluate_labels(PRED, bad, ["x"])
    with pytest.raises(RadscaleError, match="uncertain must be"):
        evaluate_labels(PRED, GOLD, ["x"], uncertain="ignore")


def test_nullable_integer_columns_are_accepted():
    gold = GOLD.astype({"x": "Int8", "y": "Int8"})
    out = evaluate_labels(PRED, gold, ["x", "y"])
    assert row(out, "x").tp == 3


def test_rule_labeler_on_a_small_annotated_set():
    reports = {"a": "Small right pleural effusion. No pneumothorax.", "b": "No effusion. Small left pneumothorax.",
               "c": "Possible pneumothorax.", "d": "Normal chest."}
    gold = pd.DataFrame({"image_id": list("abcd"), "pleural_effusion": [1, 0, None, None],
                         "pneumothorax": [0, 1, -1, None]})
    pred = pd.DataFrame([{"image_id": k, **label_report(v)} for k, v in reports.items()])
    out = evaluate_labels(pred, gold, ["pleural_effusion", "pneumothorax"])
    assert list(out["f1"]) == [1.0, 1.0, 1.0, 1.0]


def test_format_evaluation_is_a_printable_table():
    text = format_evaluation(evaluate_labels(PRED, GOLD, ["x", "y"]))
    lines = text.splitlines()
    assert lines[0].split() == ["label", "support", "precision", "recall", "f1"]
    assert lines[1].split() == ["x", "3", "0.600", "1.000", "0.750"]
    assert lines[2].split() == ["y", "0", "-", "-", "-"]
    assert set(lines[3]) == {"-"} and lines[4].startswith("macro") and lines[5].startswith("micro")
