"""Rule-based report labeler and manifest labelling (radscale/data/labels/rules.py, apply.py)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from radscale.data.labels.apply import label_manifest, label_table
from radscale.data.labels.rules import RuleLabeler, label_report, split_sections, split_sentences
from radscale.data.vocab import FINDINGS, TUBES, Vocabulary
from radscale.errors import RadscaleError


def mentioned(text: str) -> dict[str, int]:
    return {k: v for k, v in label_report(text).items() if v is not None}


def test_every_label_is_returned_and_unmentioned_is_none():
    out = label_report("Normal chest radiograph.")
    assert list(out) == list(FINDINGS + TUBES)
    assert set(out.values()) == {None}


@pytest.mark.parametrize("text, expected", [
    ("Small right pleural effusion.", {"pleural_effusion": 1}),
    ("Small amount of pleural fluid on the left.", {"pleural_effusion": 1}),
    ("Enlarged heart.", {"cardiomegaly": 1}),
    ("Small right PTX.", {"pneumothorax": 1}),
    ("Moderate cardiomegaly. No change in the small left effusion.", {"cardiomegaly": 1, "pleural_effusion": 1}),
    ("Pericardial effusion. Subcutaneous emphysema.", {}),
    ("Emphysema. Pleural thickening. Rib fracture. Hiatal hernia.",
     {"emphysema": 1, "pleural_other": 1, "fracture": 1, "hernia": 1}),
])
def test_mentions_and_synonyms(text, expected):
    assert mentioned(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("No pleural effusion, pneumothorax, or focal consolidation.",
     {"pleural_effusion": 0, "pneumothorax": 0, "consolidation": 0}),
    ("Lungs are free of consolidation.", {"consolidation": 0}),
    ("The costophrenic angles are clear of effusion.", {"pleural_effusion": 0}),
    ("Negative for pneumothorax.", {"pneumothorax": 0}),
    ("No evidence of pulmonary edema.", {"edema": 0}),
    ("Right pneumothorax has resolved.", {"pneumothorax": 0}),
    ("The left effusion, which was seen before, has resolved.", {"pleural_effusion": 0}),
    ("Pneumothorax is not seen.", {"pneumothorax": 0}),
    ("Lungs are clear without pneumothorax.", {"pneumothorax": 0}),
    ("Heart size is normal.", {"cardiomegaly": 0}),
    ("No consolidation to suggest pneumonia.", {"consolidation": 0, "pneumonia": 0}),
    # scope ends: a comma without a list, "but", a new sentence
    ("No pneumothorax, small left pleural effusion.", {"pneumothorax": 0, "pleural_effusion": 1}),
    ("No pneumothorax but there is a small effusion.", {"pneumothorax": 0, "pleural_effusion": 1}),
    ("No pneumothorax. Atelectasis at the left base.", {"pneumothorax": 0, "atelectasis": 1}),
    ("Cardiomegaly and pleural effusion have resolved.", {"cardiomegaly": 0, "pleural_effusion": 0}),
    ("Heart enlarged, effusion resolved.", {"cardiomegaly": 1, "pleural_effusion": 0}),
])
def test_negation(text, expected):
    assert mentioned(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Possible left lower lobe atelectasis, no pneumothorax.", {"atelectasis": -1, "pneumothorax": 0}),
    ("Cannot exclude a small pneumothorax.", {"pneumothorax": -1}),
    ("Pneumothorax cannot be excluded.", {"pneumothorax": -1}),
    ("Streaky opacity may represent atelectasis.", {"lung_opacity": 1, "atelectasis": -1}),
    ("Questionable left lower lobe nodule.", {"nodule": -1, "lung_lesion": -1}),
    ("Opacity suspicious for pneumonia.", {"lung_opacity": 1, "pneumonia": -1}),
    ("Atelectasis versus pneumonia in the left base.", {"atelectasis": -1, "pneumonia": -1}),
    ("Likely atelectasis.", {"atelectasis": -1}),  # CheXpert convention, documented in patterns.py
    ("Infection is not excluded.", {"pneumonia": -1}),
    ("Heart size is top normal.", {"cardiomegaly": -1}),
    ("Pneumonia?", {"pneumonia": -1}),
])
def test_uncertainty(text, expected):
    assert mentioned(text) == expected


def test_sections_impression_wins_and_history_is_ignored():
    text = "FINDINGS: Small right pleural effusion. IMPRESSION: No pleural effusion."
    assert mentioned(text) == {"pleural_effusion": 0}
    assert mentioned("IMPRESSION: Possible pneumonia.\nFINDINGS: Right lower lobe pneumonia.") == {"pneumonia": -1}
    # an IMPRESSION silent on a label leaves the FINDINGS value
    assert mentioned("FINDINGS: Right pleural effusion.\n\nIMPRESSION: No acute process.") == {"pleural_effusion": 1}
    assert mentioned("INDICATION: r/o pneumonia, eval ETT.\nCOMPARISON: None.\nFINDINGS: No pneumothorax.") == {
        "pneumothorax": 0}


def test_section_and_sentence_splitting():
    sections = split_sections("FINAL REPORT\nFINDINGS: a.\nIMPRESSION: b.")
    assert [name for name, _ in sections] == ["", "findings", "impression"]
    # wrapped lines join; decimals and "vs." do not split
    assert split_sentences("Tube 4.5 cm above the\ncarina. Atelectasis vs. pneumonia.\n\nNext") == [
        "Tube 4.5 cm above the\ncarina.", "Atelectasis vs. pneumonia.", "Next"]


def _device(text: str, device: str) -> dict[str, int | None]:
    return {k: v for k, v in label_report(text).items() if k.startswith(device)}


@pytest.mark.parametrize("text, label", [
    ("Endotracheal tube tip is 4 cm above the carina.", "ett_normal"),
    ("ETT tip 40 mm above the carina.", "ett_normal"),
    ("ETT tip approximately 3-4 cm above the carina.", "ett_normal"),
    ("Well-positioned endotracheal tube.", "ett_normal"),
    ("ETT in satisfactory position.", "ett_normal"),
    ("ETT terminates 1.5 cm above the carina.", "ett_borderline"),
    ("ETT tip 8 cm above the carina.", "ett_borderline"),
    ("ETT near the carina.", "ett_borderline"),
    ("ETT tip 12 cm above the carina.", "ett_abnormal"),
    ("ETT tip at the carina.", "ett_abnormal"),
    ("The endotracheal tube terminates 2 cm below the carina.", "ett_abnormal"),
    ("ETT in the right mainstem bronchus.", "ett_abnormal"),
    ("Endotracheal tube in the esophagus.", "ett_abnormal"),
])
def test_ett_positions(text, label):
    out = _device(text, "ett")
    assert out[label] == 1 and sum(out.values()) == 1 and set(out.values()) == {0, 1}


@pytest.mark.parametrize("text, label", [
    ("NG tube courses below the diaphragm with tip in the stomach.", "ngt_normal"),
    ("Interval placement of an enteric tube. The tip projects over the stomach.", "ngt_normal"),
    ("NG tube tip in the distal esophagus; recommend advancing.", "ngt_borderline"),
    ("NG tube tip in the stomach, side port at the GE junction.", "ngt_borderline"),
    ("NG tube coiled in the esophagus.", "ngt_abnormal"),
    ("NG tube tip in the right main bronchus.", "ngt_abnormal"),
    ("Feeding tube in the right lower lobe bronchus.", "ngt_abnormal"),
    ("The NG tube tip is not visualized, beyond the field of view.", "ngt_incompletely_imaged"),
    ("Enteric tube courses below the diaphragm with tip\nnot visualized.", "ngt_incompletely_imaged"),
])
def test_ngt_positions(text, label):
    out = _device(text, "ngt")
    assert out[label] == 1 and sum(out.values()) == 1 and set(out.values()) == {0, 1}


@pytest.mark.parametrize("text, label", [
    ("Right IJ central line terminates in the SVC.", "cvc_normal"),
    ("Right IJ terminates in the cavoatrial junction.", "cvc_normal"),
    ("There is a right IJ central venous catheter. Its tip is at the cavoatrial junction.", "cvc_normal"),
    ("Left subclavian catheter terminates in the left brachiocephalic vein.", "cvc_borderline"),
    ("Left PICC line tip in the right atrium.", "cvc_borderline"),
    ("Left subclavian line is directed into the right IJ vein.", "cvc_abnormal"),
    ("PICC tip in the azygos vein.", "cvc_abnormal"),
    ("Right IJ CVC tip in the right ventricle.", "cvc_abnormal"),
])
def test_cvc_positions(text, label):
    out = _device(text, "cvc")
    assert out[label] == 1 and sum(out.values()) == 1 and set(out.values()) == {0, 1}


def test_device_presence_absence_and_hedging():
    # mentioned without a position: position labels stay unmentioned, support devices positive
    out = label_report("Lines and tubes are unchanged in position. ETT in place.")
    assert out["support_devices"] == 1 and out["ett_normal"] is None and out["ngt_normal"] is None
    out = label_report("The endotracheal tube has been removed. No pneumothorax.")
    assert (out["ett_normal"], out["ett_borderline"], out["ett_abnormal"], out["support_devices"]) == (0, 0, 0, 0)
    assert label_report("The patient has been extubated.")["ett_normal"] == 0
    assert label_report("No lines or tubes.")["support_devices"] == 0
    out = label_report("Swan-Ganz catheter tip in the right pulmonary artery.")
    assert out["swan_ganz_present"] == 1 and out["cvc_normal"] is None
    assert label_report("Swan-Ganz catheter has been removed.")["swan_ganz_present"] == 0
    out = _device("ETT possibly in the right main stem bronchus.", "ett")
    assert out == {"ett_abnormal": -1, "ett_borderline": 0, "ett_normal": 0}


def test_multiple_devices():
    out = label_report("ETT 5 cm above the carina, NG tube in the stomach, right IJ line in the SVC.")
    assert (out["ett_normal"], out["ngt_normal"], out["cvc_normal"], out["support_devices"]) == (1, 1, 1, 1)
    out = label_report("The ETT and NG tube are in standard position.")
    assert out["ett_normal"] == 1 and out["ngt_normal"] == 1
    out = label_report("ETT in the right mainstem bronchus. NG tube coiled in the esophagus.")
    assert out["ett_abnormal"] == 1 and out["ngt_abnormal"] == 1 and out["ngt_normal"] == 0
    out = label_report("No NG tube, ETT in good position.")
    assert out["ett_normal"] == 1 and out["ngt_normal"] == 0 and out["support_devices"] == 1
    # two central lines: one well placed, one not
    out = label_report("Right IJ line tip in the mid SVC. Left PICC tip is in the left subclavian vein.")
    assert (out["cvc_normal"], out["cvc_abnormal"], out["cvc_borderline"]) == (1, 1, 0)
    out = label_report("NG tube and ETT have been removed. Right chest tube in place.")
    assert out["ngt_normal"] == 0 and out["ett_normal"] == 0 and out["support_devices"] == 1


def test_a_bare_noun_refers_to_the_last_device():
    assert label_report("Right PICC placed. The catheter tip is in the SVC.")["cvc_normal"] == 1
    assert label_report("New enteric tube. The tube terminates in the stomach.")["ngt_normal"] == 1
    assert label_report("NG tube. The tip is not visualized.")["ngt_incompletely_imaged"] == 1
    assert label_report("No tubes or catheters.")["support_devices"] == 0
    assert label_report("The line of the fissure is normal.")["support_devices"] is None


def test_mimic_style_report():
    text = ("FINAL REPORT\nEXAMINATION: CHEST (PORTABLE AP)\nINDICATION: eval ETT placement, r/o pneumonia\n"
            "COMPARISON: none.\nFINDINGS:\nEndotracheal tube terminates approximately 4.5 cm above the\ncarina. "
            "Enteric tube courses below the diaphragm with tip\nnot visualized. There is a small left pleural "
            "effusion with adjacent\natelectasis. No pneumothorax.\n\nIMPRESSION:\n1. Endotracheal tube in "
            "standard position.\n2. Small left effusion and atelectasis, although infection is not excluded.")
    assert mentioned(text) == {
        "atelectasis": 1, "pleural_effusion": 1, "pneumonia": -1, "pneumothorax": 0, "support_devices": 1,
        "ett_abnormal": 0, "ett_borderline": 0, "ett_normal": 1,
        "ngt_abnormal": 0, "ngt_borderline": 0, "ngt_incompletely_imaged": 1, "ngt_normal": 0}


def test_vocabulary_subset_and_unknown_label_error_has_no_text():
    vocab = Vocabulary(findings=("pneumothorax",), tubes=("ett_normal",))
    assert label_report("Small PTX. ETT 4 cm above the carina.", vocab) == {"pneumothorax": 1, "ett_normal": 1}
    with pytest.raises(RadscaleError) as err:
        label_report("Secret patient words here.", Vocabulary(findings=("no_finding",), tubes=()))
    assert "no_finding" in str(err.value) and "Secret" not in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- manifests
REPORTS = ["Small right pleural effusion.", None, "No pneumothorax. ETT 4 cm above the carina.",
           "Small right pleural effusion.", "Possible pneumonia."]


def _manifest(**extra) -> pa.Table:
    n = len(REPORTS)
    cols = {"image_id": [f"img{i}" for i in range(n)], "patient_id": ["p"] * n, "study_id": [f"s{i}" for i in range(n)],
            "uri": [f"/x/{i}.png" for i in range(n)], "report": REPORTS}
    cols.update(extra)
    return pa.table(cols)


def test_label_table_types_nulls_and_overwrite():
    old = pa.array([1, 1, None, 0, 0], pa.float64())  # an importer's labels, as floats
    table = label_table(_manifest(pleural_effusion=old).combine_chunks())
    assert table.schema.field("pleural_effusion").type == pa.int8()
    assert table.column_names[:6] == ["image_id", "patient_id", "study_id", "uri", "report", "pleural_effusion"]
    # rows with a report are overwritten; the row without keeps its value
    assert table.column("pleural_effusion").to_pylist() == [1, 1, None, 1, None]
    assert table.column("pneumonia").to_pylist() == [None, None, None, None, -1]
    assert table.column("ett_normal").to_pylist() == [None, None, 1, None, None]
    assert all(table.schema.field(name).type == pa.int8() for name in FINDINGS + TUBES)


def test_label_table_works_per_batch_and_dedupes_reports():
    calls = []

    def labeler(text):
        calls.append(len(text))
        return label_report(text)

    table = pa.Table.from_batches(_manifest().to_batches(max_chunksize=2))
    out = label_table(table, labeler=labeler)
    assert out.num_rows == 5 and len(calls) == 4  # rows 0 and 3 share a report but sit in different batches
    assert out.column("pleural_effusion").to_pylist() == [1, None, None, 1, None]
    calls.clear()
    label_table(_manifest().combine_chunks(), labeler=labeler)
    assert len(calls) == 3  # one batch: the shared report is labelled once


def test_label_table_rejects_bad_labeler_output_without_text():
    with pytest.raises(RadscaleError) as err:
        label_table(_manifest(), labeler=lambda text: {label: 2 for label in FINDINGS + TUBES})
    assert "img0" in str(err.value) and "effusion." not in str(err.value)


def test_label_manifest_streams_in_batches_and_in_place(tmp_path):
    src = tmp_path / "m.parquet"
    pq.write_table(_manifest(), src)
    summary = label_manifest(src, tmp_path / "out" / "labelled.parquet", batch_size=2)
    assert (summary.rows, summary.reports) == (5, 4)
    assert summary.positives["pleural_effusion"] == 2 and summary.positives["ett_normal"] == 1
    out = pq.read_table(tmp_path / "out" / "labelled.parquet")
    assert out.column("pneumothorax").to_pylist() == [None, None, 0, None, None]
    label_manifest(src, src, labeler=RuleLabeler(), batch_size=3)  # in place
    assert pq.read_table(src).column("pneumothorax").to_pylist() == [None, None, 0, None, None]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet", "out"]  # no temp files left
    with pytest.raises(RadscaleError, match="not found"):
        label_manifest(tmp_path / "missing.parquet", tmp_path / "x.parquet")
