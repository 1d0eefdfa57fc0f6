"""Dataset importers from CSV layouts (CheXpert, MIMIC-CXR-JPG, NIH, PadChest, VinDr) plus shared helpers/registry.

Fixtures are tiny copies of each documented layout written to tmp dirs; every output must pass read_manifest.
"""
import gzip

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from radscale.data.importers.base import NULL, ManifestColumns, ManifestWriter, combine_codes, parse_codes, read_csv_chunks
from radscale.data.importers.registry import IMPORTERS, import_dataset
from radscale.data.labels.rules import RuleLabeler
from radscale.data.manifest import read_manifest
from radscale.errors import RadscaleError

CHEXPERT_COLS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                 "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                 "Fracture", "Support Devices"]


def image(path, fmt="PNG", size=(8, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.arange(size[0] * size[1], dtype=np.uint8).reshape(size[1], size[0])).save(path, format=fmt)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def rows(out):
    """The manifest (validated) as {image_id: row dict}."""
    table = read_manifest(out)
    return {r["image_id"]: r for r in table.to_pylist()}


# ---- shared helpers -------------------------------------------------------------------------------------------

def test_parse_codes_follows_chexpert_convention_and_flags_other_values():
    codes, bad = parse_codes(pd.Series(["1.0", "0.0", "-1.0", "", "2", "x", " 1", "0"]))
    assert codes.tolist() == [1, 0, -1, NULL, NULL, NULL, 1, 0]
    assert bad.tolist() == [False, False, False, False, True, True, False, False]


def test_combine_codes_positive_beats_uncertain_beats_negative_beats_null():
    a = np.array([1, 0, -1, NULL, NULL, 0], np.int8)
    b = np.array([0, -1, NULL, NULL, 0, 0], np.int8)
    assert combine_codes([a, b]).tolist() == [1, -1, -1, NULL, 0, 0]


def test_malformed_csv_is_one_line_error_naming_file_and_line_without_cell_text(tmp_path):
    path = tmp_path / "x.csv"
    write(path, "a,b\n1,2\n3,SECRET-REPORT,5\n")
    with pytest.raises(RadscaleError) as err:
        list(read_csv_chunks(path, 10))
    msg = str(err.value)
    assert "x.csv: line 3: malformed CSV" in msg and "SECRET" not in msg and "\n" not in msg


def test_registry_names_formats_and_refuses_unknown_ones_and_options(tmp_path):
    assert set(IMPORTERS) == {"mimic-cxr", "chexpert", "nih", "padchest", "vindr", "ranzcr", "candid-ptx", "folder"}
    with pytest.raises(RadscaleError, match="unknown dataset format 'xray9'"):
        import_dataset("xray9", tmp_path, tmp_path / "m.parquet")
    with pytest.raises(RadscaleError, match="dataset root is not a directory"):
        import_dataset("nih", tmp_path / "none", tmp_path / "m.parquet")
    with pytest.raises(RadscaleError, match="unknown option 'colour'"):
        import_dataset("folder", tmp_path, tmp_path / "m.parquet", colour="red")
    with pytest.raises(RadscaleError, match="must be true or false"):
        import_dataset("chexpert", tmp_path, tmp_path / "m.parquet", check_files="maybe")


def test_writer_skips_duplicates_and_empty_ids_across_chunks_and_never_leaves_half_a_manifest(tmp_path):
    out = tmp_path / "m.parquet"
    columns = ManifestColumns(labels=("pneumothorax",), extras=(("age", pa.int16()),))
    writer = ManifestWriter(out, "test", columns)
    writer.write({"image_id": ["a", "b"], "patient_id": ["p", ""], "study_id": ["s", "s"], "uri": ["/a", "/b"],
                  "pneumothorax": np.array([1, NULL], np.int8), "age": [3, None]})
    writer.write({"image_id": np.array(["a", "c"], dtype=object), "patient_id": ["p", "q"], "study_id": ["s", "t"],
                  "uri": ["/a", "/c"], "pneumothorax": [0, -1]})
    summary = writer.finish()
    got = rows(out)
    assert set(got) == {"a", "c"} and got["a"]["pneumothorax"] == 1 and got["c"]["pneumothorax"] == -1
    assert got["a"]["source"] == "test" and got["a"]["age"] == 3 and got["c"]["age"] is None
    assert summary.skipped == {"duplicate image_id": 1, "empty patient_id": 1} and summary.skipped_total == 2
    assert (summary.rows, summary.patients, summary.studies) == (2, 2, 2)

    with pytest.raises(RuntimeError):
        with ManifestWriter(tmp_path / "broken.parquet", "test", columns):
            raise RuntimeError("crash mid-import")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet"]


# ---- CheXpert -------------------------------------------------------------------------------------------------

def _chexpert(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    header = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT_COLS)
    blank13 = "," * 12

    def line(rel, fl, appa, labels):
        return f"CheXpert-v1.0-small/{rel},Female,68,{fl},{appa},{labels}"

    train = [
        # No Finding blank, ECM 1, Cardiomegaly -1, Lung Opacity blank, Lung Lesion 0, ..., Support Devices 1
        line("train/patient00001/study1/view1_frontal.jpg", "Frontal", "AP", ",1.0,-1.0,,0.0" + "," * 9 + "1.0"),
        line("train/patient00001/study1/view2_lateral.jpg", "Lateral", "", "1.0," + blank13),
        line("train/patient00002/study1/view1_frontal.jpg", "Frontal", "PA", ",2.0" + blank13),  # bad value
        line("train/patient00003/study2/view1_frontal.jpg", "Frontal", "PA", "," + blank13),  # image missing
    ]
    write(root / "train.csv", "\n".join([header] + train) + "\n")
    write(root / "valid.csv", header + "\n" + line("valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP",
                                                   "0.0,0.0" + ",0.0" * 12) + "\n")
    for rel in ("train/patient00001/study1/view1_frontal.jpg", "train/patient00001/study1/view2_lateral.jpg",
                "train/patient00002/study1/view1_frontal.jpg", "valid/patient64541/study1/view1_frontal.jpg"):
        image(root / rel, "JPEG")
    return root


def test_chexpert_labels_ids_and_skips(tmp_path):
    root = _chexpert(tmp_path)
    out = tmp_path / "m.parquet"
    summary = import_dataset("chexpert", root, out)
    got = rows(out)
    assert set(got) == {"train/patient00001/study1/view1_frontal", "train/patient00001/study1/view2_lateral",
                        "valid/patient64541/study1/view1_frontal"}
    front = got["train/patient00001/study1/view1_frontal"]
    assert front["patient_id"] == "patient00001" and front["study_id"] == "patient00001/study1"
    assert front["enlarged_cardiomediastinum"] == 1 and front["cardiomegaly"] == -1
    assert front["lung_opacity"] is None and front["lung_lesion"] == 0 and front["support_devices"] == 1
    assert front["no_finding"] is None and front["view"] == "AP" and front["source"] == "chexpert"
    assert front["uri"] == str(root / "train/patient00001/study1/view1_frontal.jpg")
    assert front["path"] == "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg" and front["age"] == 68
    lateral = got["train/patient00001/study1/view2_lateral"]
    assert lateral["no_finding"] == 1 and lateral["view"] == "LATERAL" and lateral["pleural_effusion"] is None
    assert got["valid/patient64541/study1/view1_frontal"]["source_split"] == "valid"
    assert "no_finding" not in summary.label_columns and "nodule" not in summary.label_columns
    assert summary.skipped == {"bad label value": 1, "image file not found": 1}
    assert (summary.rows, summary.patients, summary.studies) == (3, 2, 2)

    only_valid = import_dataset("chexpert", root, out, csvs="valid.csv", check_files="false")
    assert only_valid.rows == 1 and only_valid.skipped == {}


# ---- MIMIC-CXR-JPG --------------------------------------------------------------------------------------------

def _mimic(tmp_path, gz=True):
    root = tmp_path / "mimic"
    meta = ("dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,"
            "StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
            "PatientOrientationCodeSequence_CodeMeaning\n"
            "d1,10000032,50414267,CHEST (PA AND LAT),PA,8,6,21800506,213014.5,x,postero-anterior,Erect\n"
            "d2,10000032,50414267,CHEST (PA AND LAT),LATERAL,8,6,21800506,213014.5,x,lateral,Erect\n"
            "d3,11000011,53000000,CHEST (PORTABLE AP),AP,8,6,21800101,1,x,antero-posterior,Erect\n"
            "d4,11000011,54000000,CHEST (PORTABLE AP),AP,8,6,21800101,1,x,antero-posterior,Erect\n")
    root.mkdir()
    if gz:
        with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as f:
            f.write(meta)
    else:
        write(root / "mimic-cxr-2.0.0-metadata.csv", meta)
    names = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
             "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
             "Pneumothorax", "Support Devices"]
    head = "subject_id,study_id," + ",".join(names) + "\n"
    # study 50414267: cardiomegaly 1, effusion -1, edema 0; study 53000000: No Finding; 54000000 has no label row
    write(root / "mimic-cxr-2.0.0-chexpert.csv", head + "10000032,50414267,,1.0,,0.0,,,,,,-1.0,,,,\n"
          + "11000011,53000000,,,,,,,,,1.0,,,,,\n")
    write(root / "mimic-cxr-2.0.0-negbio.csv", head + "10000032,50414267,,0.0,,,,,,,,1.0,,,,\n")
    write(root / "mimic-cxr-2.0.0-split.csv", "dicom_id,study_id,subject_id,split\nd1,50414267,10000032,train\n"
          "d2,50414267,10000032,train\nd3,53000000,11000011,test\nd4,54000000,11000011,test\n")
    for d, s, st in (("d1", "10000032", "50414267"), ("d2", "10000032", "50414267"), ("d3", "11000011", "53000000"),
                     ("d4", "11000011", "54000000")):
        image(root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}" / f"{d}.jpg", "JPEG")
    return root


def test_mimic_labels_splits_and_reports_when_present(tmp_path):
    root = _mimic(tmp_path)
    write(root / "files/p10/p10000032/s50414267.txt", "FINDINGS: Large right pleural effusion.\n")
    out = tmp_path / "m.parquet"
    summary = import_dataset("mimic-cxr", root, out)
    got = rows(out)
    assert set(got) == {"d1", "d2", "d3", "d4"}
    d1 = got["d1"]
    assert (d1["patient_id"], d1["study_id"], d1["dicom_id"], d1["subject_id"]) == ("10000032", "50414267", "d1",
                                                                                    "10000032")
    assert d1["cardiomegaly"] == 1 and d1["pleural_effusion"] == -1 and d1["edema"] == 0 and d1["fracture"] is None
    assert d1["report"] == "FINDINGS: Large right pleural effusion." == got["d2"]["report"]
    assert got["d3"]["report"] is None and got["d3"]["no_finding"] == 1 and got["d3"]["cardiomegaly"] is None
    assert got["d4"]["cardiomegaly"] is None and got["d4"]["source_split"] == "test"
    assert d1["view"] == "PA" and d1["source_split"] == "train"
    assert d1["uri"].endswith("files/p10/p10000032/s50414267/d1.jpg")
    assert (summary.rows, summary.patients, summary.studies, summary.with_report) == (4, 2, 3, 2)

    import_dataset("mimic-cxr", root, out, labels="negbio")
    got = rows(out)
    assert got["d1"]["cardiomegaly"] == 0 and got["d1"]["pleural_effusion"] == 1 and got["d3"]["cardiomegaly"] is None


def test_mimic_without_reports_with_report_labels_and_missing_label_file(tmp_path):
    root = _mimic(tmp_path, gz=False)
    (root / "files/p11/p11000011/s53000000/d3.jpg").unlink()
    out = tmp_path / "m.parquet"
    summary = import_dataset("mimic-cxr", root, out, labels="none")
    table = pq.read_table(out)
    assert summary.label_columns == () and "cardiomegaly" not in table.column_names
    assert table.column("report").null_count == 3 and summary.skipped == {"image file not found": 1}

    text = "Large right pleural effusion. No pneumothorax."
    write(root / "files/p10/p10000032/s50414267.txt", text)
    import_dataset("mimic-cxr", root, out, labels="reports")
    got, expected = rows(out), RuleLabeler().label(text)
    assert got["d1"]["pleural_effusion"] == expected["pleural_effusion"] == 1
    assert got["d1"]["pneumothorax"] == expected["pneumothorax"] == 0 and got["d4"]["pleural_effusion"] is None

    (root / "mimic-cxr-2.0.0-negbio.csv").unlink()
    with pytest.raises(RadscaleError, match="negbio label CSV not found"):
        import_dataset("mimic-cxr", root, out, labels="negbio")


# ---- NIH ChestX-ray14 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("sex_header,trailing", [("Patient Gender", ","), ("Patient Sex", "")])
def test_nih_bracketed_header_quirk_exhaustive_labels_and_kaggle_folders(tmp_path, sex_header, trailing):
    root = tmp_path / "nih"
    header = (f"Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,{sex_header},View Position,"
              f"OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]{trailing}")
    data = [
        f"00000001_000.png,Cardiomegaly|Effusion,0,1,58,M,PA,2682,2749,0.143,0.1431{trailing}",
        f"00000001_001.png,No Finding,1,1,58,M,AP,2894,2729,0.168,0.168{trailing}",
        f"00000002_000.png,Infiltration|Pleural_Thickening,0,2,81,F,PA,1024,1000,0.5,0.25{trailing}",
        f"00000003_000.png,Cardiomegaly|Alien,0,3,40,F,PA,1,1,1,1{trailing}",  # unknown label: skipped
        f"00000004_000.png,Hernia,0,4,40,F,PA,1,1,1,1{trailing}",  # image missing: skipped
    ]
    write(root / "Data_Entry_2017.csv", "\n".join([header] + data) + "\n")
    write(root / "test_list.txt", "00000002_000.png\n")
    image(root / "images_001/images/00000001_000.png")
    image(root / "images_001/images/00000001_001.png")
    image(root / "images_002/images/00000002_000.png")
    image(root / "images_002/images/00000003_000.png")
    naive = pd.read_csv(root / "Data_Entry_2017.csv", nrows=1)
    assert "OriginalImage[Width" in naive.columns  # the quirk: a naive read names the split halves
    out = tmp_path / "m.parquet"
    summary = import_dataset("nih", root, out)
    got = rows(out)
    assert set(got) == {"00000001_000.png", "00000001_001.png", "00000002_000.png"}
    a = got["00000001_000.png"]
    assert (a["original_width"], a["original_height"]) == (2682, 2749)
    assert a["pixel_spacing_x"] == pytest.approx(0.143) and a["pixel_spacing_y"] == pytest.approx(0.1431)
    assert a["cardiomegaly"] == 1 and a["pleural_effusion"] == 1 and a["lung_opacity"] == 0 and a["hernia"] == 0
    assert a["patient_id"] == "1" and a["study_id"] == "00000001_000" and a["patient_sex"] == "M"
    assert a["patient_age"] == 58 and a["view"] == "PA" and a["source_split"] == "train_val"
    assert a["uri"] == str(root / "images_001/images/00000001_000.png")
    assert all(got["00000001_001.png"][k] == 0 for k in summary.label_columns)
    b = got["00000002_000.png"]
    assert b["lung_opacity"] == 1 and b["pleural_other"] == 1 and b["source_split"] == "test"
    assert (b["original_width"], b["pixel_spacing_y"]) == (1024, 0.25)
    assert summary.skipped == {"image file not found": 1, "unknown finding label": 1}
    assert "support_devices" not in summary.label_columns and len(summary.label_columns) == 14


def test_nih_row_with_extra_values_is_a_file_error_naming_the_line(tmp_path):
    root = tmp_path / "nih"
    header = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
    body = "a.png,Hernia,0,1,5,M,PA,1,1,1,1\nb.png,Hernia,0,1,5,M,PA,1,1,1,1,9\n"  # line 3: 12 values
    write(root / "Data_Entry_2017.csv", header + "\n" + body)
    with pytest.raises(RadscaleError, match=r"Data_Entry_2017.csv: line 3: malformed CSV"):
        import_dataset("nih", root, tmp_path / "m.parquet")


# ---- PadChest -------------------------------------------------------------------------------------------------

def test_padchest_safe_list_parsing_devices_and_absent_policy(tmp_path, monkeypatch):
    root = tmp_path / "padchest"
    canary = tmp_path / "PWNED"
    monkeypatch.chdir(tmp_path)
    evil = f"__import__('pathlib').Path(r'{canary}').write_text('x')"
    header = "ImageID,ImageDir,StudyDate_DICOM,StudyID,PatientID,PatientBirth,Projection,Report,MethodLabel,Labels"
    lines = [
        "a.png,0,20100101,st1,pt1,1950,PA,derrame pleural,Physician,\"['pleural effusion', 'NSG tube', "
        "' endotracheal tube', 'central venous catheter via jugular vein']\"",
        "b.png,0,20100101,st2,pt1,1950,L,normal,RNN_model,['normal']",
        "c.png,1,20100101,st3,pt2,1960,PA,,RNN_model,",
        f"d.png,1,20100101,st4,pt3,1960,PA,x,RNN_model,\"{evil}\"",
        f"e.png,1,20100101,st5,pt3,1960,PA,x,RNN_model,\"[{evil}]\"",
        "f.png,1,20100101,st6,pt4,1960,PA,x,RNN_model,\"['hydropneumothorax', 'chest drain tube', 'nodule']\"",
    ]
    write(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", "\n".join([header] + lines) + "\n")
    for rel in ("0/a.png", "0/b.png", "1/c.png", "1/d.png", "1/e.png"):
        image(root / rel)
    image(root / "f.png")  # a flattened copy
    out = tmp_path / "m.parquet"
    summary = import_dataset("padchest", root, out)
    assert not canary.exists()
    got = rows(out)
    assert set(got) == {"a.png", "b.png", "c.png", "f.png"}
    a = got["a.png"]
    assert a["pleural_effusion"] == 1 and a["ngt_present"] == 1 and a["ett_present"] == 1 and a["cvc_present"] == 1
    assert a["support_devices"] == 1 and a["cardiomegaly"] == 0 and a["chest_tube_present"] == 0
    assert a["report"] == "derrame pleural" and a["patient_id"] == "pt1" and a["study_id"] == "st1"
    assert not any(c.startswith(("ett_", "ngt_", "cvc_")) and not c.endswith("_present") for c in a)
    assert all(got["b.png"][k] == 0 for k in summary.label_columns)
    assert all(got["c.png"][k] is None for k in summary.label_columns) and got["c.png"]["report"] is None
    f = got["f.png"]
    assert f["uri"] == str(root / "f.png") and f["pneumothorax"] == 1 and f["pleural_effusion"] == 1
    assert f["chest_tube_present"] == 1 and f["nodule"] == 1 and f["lung_lesion"] == 1 and f["mass"] == 0
    assert summary.skipped == {"unparsable Labels list": 2} and summary.with_report == 3

    import_dataset("padchest", root, out, absent_negative=False)
    got = rows(out)
    assert got["a.png"]["cardiomegaly"] is None and got["b.png"]["pleural_effusion"] is None


# ---- VinDr-CXR ------------------------------------------------------------------------------------------------

def _vindr_physionet(tmp_path):
    root = tmp_path / "vindr"
    names = ["Aortic enlargement", "Atelectasis", "Clavicle fracture", "Nodule/Mass", "Pneumothorax", "Rib fracture",
             "Lung tumor", "No finding"]
    head = "image_id,rad_ID," + ",".join(names)
    train = [  # image A: Nodule/Mass by 2 of 3, Pneumothorax by 1, Rib fracture by R2 and Clavicle fracture by R3
        "A,R1,1,0,0,1,0,0,0,0", "A,R2,0,0,0,1,1,1,0,0", "A,R3,0,0,1,0,0,0,0,0",
        "B,R1,0,0,0,0,0,0,0,1", "B,R2,0,0,0,0,0,0,0,1", "B,R4,0,0,0,0,0,0,0,1",
    ]
    write(root / "annotations/image_labels_train.csv", "\n".join([head] + train) + "\n")
    write(root / "annotations/image_labels_test.csv", "image_id," + ",".join(names) + "\nT,0,1,0,0,0,0,0,0\n")
    for rel in ("train/A.dicom", "train/B.dicom", "test/T.dicom"):
        write(root / rel, "not read by the importer")
    return root


@pytest.mark.parametrize("policy,lesion,ptx,fracture", [("majority", 1, 0, 0), ("any", 1, 1, 1),
                                                         ("uncertain", 1, -1, -1)])
def test_vindr_reader_aggregation_policies(tmp_path, policy, lesion, ptx, fracture):
    root = _vindr_physionet(tmp_path)
    out = tmp_path / "m.parquet"
    summary = import_dataset("vindr", root, out, readers=policy)
    got = rows(out)
    a = got["A"]
    assert (a["lung_lesion"], a["pneumothorax"], a["fracture"], a["atelectasis"]) == (lesion, ptx, fracture, 0)
    assert a["patient_id"] == a["study_id"] == "A" and a["readers"] == 3 and a["source_split"] == "train"
    assert all(got["B"][k] == 0 for k in summary.label_columns)
    assert got["T"]["atelectasis"] == 1 and got["T"]["readers"] == 1 and got["T"]["source_split"] == "test"
    assert summary.label_columns == ("atelectasis", "fracture", "lung_lesion", "pneumothorax")


def test_vindr_kaggle_boxes_count_each_reader_once(tmp_path):
    root = tmp_path / "vinbig"
    lines = ["image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max",
             "A,Cardiomegaly,3,R1,1,1,2,2", "A,Cardiomegaly,3,R1,3,3,4,4", "A,Aortic enlargement,0,R1,1,1,2,2",
             "A,Cardiomegaly,3,R2,1,1,2,2", "A,No finding,14,R3,,,,", "A,Pneumothorax,12,R3,1,1,2,2",
             "B,No finding,14,R1,,,,", "B,No finding,14,R2,,,,", "B,No finding,14,R3,,,,",
             "C,Nodule/Mass,8,R1,1,1,2,2"]
    write(root / "train.csv", "\n".join(lines) + "\n")
    write(root / "train/A.dicom", "x")
    write(root / "train/B.dicom", "x")
    out = tmp_path / "m.parquet"
    summary = import_dataset("vindr", root, out)
    got = rows(out)
    assert got["A"]["cardiomegaly"] == 1 and got["A"]["pneumothorax"] == 0 and got["A"]["readers"] == 3
    assert all(got["B"][k] == 0 for k in summary.label_columns)
    assert summary.skipped == {"image file not found": 1} and "fibrosis" in summary.label_columns
