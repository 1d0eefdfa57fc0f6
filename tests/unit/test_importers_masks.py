"""Importers with device masks or DICOMs: RANZCR CLiP (polylines -> mask bits), CANDID-PTX (column-major SIIM RLE),
and the generic folder importer (DICOM/PNG/JPEG, sidecar reports, patient ids)."""
import numpy as np
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset

from radscale.data.importers.candid_ptx import decode_rle
from radscale.data.importers.ranzcr import RANZCR_LABELS, parse_points
from radscale.data.importers.registry import import_dataset
from radscale.data.labels.rules import RuleLabeler
from radscale.data.manifest import read_manifest
from radscale.data.vocab import DEVICE_TYPES
from radscale.errors import RadscaleError

ETT, CVC, SWAN, TUBE = (1 << DEVICE_TYPES.index(d) for d in ("ett", "cvc", "swan_ganz", "chest_tube"))


def rows(out):
    return {r["image_id"]: r for r in read_manifest(out).to_pylist()}


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def image(path, size=(40, 30), fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), 128, np.uint8)).save(path, format=fmt)


def dicom(path, rows_=4, cols=3, preamble=True, **elements):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = elements.pop("SOPInstanceUID", uid.generate_uid())
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "DX", rows_, cols, 1
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "MONOCHROME2", 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(rows_ * cols, dtype=np.uint16).tobytes()
    for key, value in elements.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=preamble)


# ---- RANZCR CLiP ----------------------------------------------------------------------------------------------

def _ranzcr(tmp_path):
    root = tmp_path / "ranzcr"
    head = "StudyInstanceUID," + ",".join(RANZCR_LABELS) + ",PatientID"
    write(root / "train.csv", "\n".join([
        head, "1.2.1,0,0,1,0,0,0,0,0,0,1,1,pA", "1.2.2,0,0,0,0,0,0,0,0,0,0,0,pA", "1.2.3,0,0,0,0,0,0,0,2,0,0,0,pB",
        "1.2.4,0,0,0,0,0,0,0,0,0,0,0,pC"]) + "\n")
    write(root / "train_annotations.csv", "\n".join([
        "StudyInstanceUID,label,data",
        '1.2.1,ETT - Normal,"[[5, 5], [5, 25]]"',
        '1.2.9,ETT - Normal,"[[1, 1], [2, 2]]"',  # no such image
        '1.2.1,CVC - Normal,"[[10, 10], [30, 10]]"',
        '1.2.1,Swan Ganz Catheter Present,"[[35, 20]]"',
        '1.2.1,NGT - Normal,"[[1, 2], [3]]"',  # malformed points
        '1.2.1,Pacemaker,"[[1, 1], [2, 2]]"',  # not a RANZCR line label
    ]) + "\n")
    for u in ("1.2.1", "1.2.2", "1.2.3"):
        image(root / "train" / f"{u}.jpg", fmt="JPEG")
    return root


def test_parse_points_accepts_only_lists_of_xy_pairs():
    assert parse_points("[[1, 2], [3.5, 4]]") == [(1.0, 2.0), (3.5, 4.0)]
    for bad in ("[]", "[[1, 2, 3]]", "[[1, true]]", "__import__('os')", "[[1, NaN]]", "{}"):
        assert parse_points(bad) is None


def test_ranzcr_labels_and_polylines_rasterised_into_device_bits(tmp_path):
    root = _ranzcr(tmp_path)
    out = tmp_path / "m.parquet"
    summary = import_dataset("ranzcr", root, out, line_width="1", chunk_rows="2")  # chunks split one image's lines
    got = rows(out)
    assert set(got) == {"1.2.1", "1.2.2"}
    a = got["1.2.1"]
    assert a["ett_normal"] == 1 and a["cvc_normal"] == 1 and a["cvc_borderline"] == 0 and a["swan_ganz_present"] == 1
    assert a["support_devices"] == 1 and a["patient_id"] == "pA" and a["study_id"] == "1.2.1"
    assert a["mask_devices"] == "ett,ngt,cvc,swan_ganz"
    assert got["1.2.2"]["support_devices"] is None and got["1.2.2"]["mask_uri"] is None
    mask = np.asarray(Image.open(a["mask_uri"]))
    assert mask.shape == (30, 40) and mask.dtype == np.uint8
    expected = np.zeros((30, 40), np.uint8)
    expected[5:26, 5] |= ETT  # vertical line x=5, y=5..25: mask[y, x]
    expected[10, 10:31] |= CVC  # horizontal line y=10, x=10..30
    assert np.array_equal(mask & (ETT | CVC), expected)
    assert mask[20, 35] & SWAN and not mask[0, 0]
    assert summary.masks_written == 1 and summary.skipped == {
        "annotation for a missing image": 1, "bad annotation data": 1, "bad label value": 1,
        "image file not found": 1, "unknown annotation label": 1}

    import_dataset("ranzcr", root, out, line_width=3)  # re-import reuses its own mask folder
    thick = np.asarray(Image.open(rows(out)["1.2.1"]["mask_uri"]))
    assert all(thick[15, x] & ETT for x in (4, 5, 6)) and not thick[15, 8] & ETT


def test_ranzcr_annotation_of_a_corrupt_image_is_skipped_not_fatal(tmp_path):
    root = _ranzcr(tmp_path)
    (root / "train" / "1.2.1.jpg").write_bytes(b"\xff\xd8\xff" + b"junk" * 8)
    summary = import_dataset("ranzcr", root, tmp_path / "m.parquet", line_width="1")
    assert summary.skipped["annotation for an unreadable image"] == 5 and summary.masks_written == 0
    assert rows(tmp_path / "m.parquet")["1.2.1"]["mask_uri"] is None     # the row stays; decoding quarantines it


def test_ranzcr_refuses_a_foreign_non_empty_masks_folder(tmp_path):
    root = _ranzcr(tmp_path)
    write(tmp_path / "mine" / "notes.txt", "keep me")
    with pytest.raises(RadscaleError, match="not written by radscale import"):
        import_dataset("ranzcr", root, tmp_path / "m.parquet", masks_dir=str(tmp_path / "mine"))
    assert (tmp_path / "mine" / "notes.txt").exists()


# ---- CANDID-PTX -----------------------------------------------------------------------------------------------

# Hand-made 4x3 mask (height 4, width 3). Column-major flat order: index = x * 4 + y.
HAND = np.array([[0, 0, 1],
                 [1, 0, 0],
                 [1, 0, 0],
                 [0, 1, 0]], dtype=bool)
# set flat indices: (y1,x0)=1, (y2,x0)=2, (y3,x1)=7, (y0,x2)=8 -> runs (1, 2) and (7, 2)
RELATIVE, ABSOLUTE = "1 2 4 2", "2 2 8 2"


def test_rle_decode_is_column_major_relative_or_absolute():
    assert np.array_equal(decode_rle(RELATIVE, 4, 3), HAND)
    assert np.array_equal(decode_rle(ABSOLUTE, 4, 3, mode="absolute"), HAND)
    assert not np.array_equal(decode_rle(RELATIVE, 4, 3), np.arange(12).reshape(4, 3) % 12 < 0)
    assert not decode_rle("-1", 4, 3).any() and decode_rle("-1", 4, 3).shape == (4, 3)
    for bad in ("1 2 3", "0 13", "a b"):
        with pytest.raises(ValueError):
            decode_rle(bad, 4, 3)


def test_candid_ptx_labels_reports_and_chest_tube_mask(tmp_path):
    root = tmp_path / "candid"
    dicom(root / "dataset" / "1.1.1.dcm", SOPInstanceUID="1.1.1", PatientID="anon", StudyInstanceUID="9.9",
          ViewPosition="AP")
    dicom(root / "dataset" / "1.1.2", SOPInstanceUID="1.1.2", PatientID="P777", StudyInstanceUID="9.8")
    write(root / "Pneumothorax_reports.csv", "\n".join([
        "SOPInstanceUID,filename,EncodedPixels,Report",
        "1.1.1.dcm,P123_s1_a.dcm,-1,\"Right pneumothorax, chest drain in situ.\"",
        "1.1.1.dcm,P123_s1_a.dcm,5 3,\"Right pneumothorax, chest drain in situ.\"",
        "1.1.2,,-1,No acute findings.",
        "1.1.3,P5_x.dcm,-1,Missing image.",
    ]) + "\n")
    write(root / "chest_tube.csv", f"anon_SOPUID,mask_rle\n1.1.1,{RELATIVE}\n1.1.1,0 1\n1.1.2,-1\n")
    write(root / "acute_rib_fracture.csv", "anon_SOPUID,mask_rle\n1.1.2,3 1\n")
    out = tmp_path / "m.parquet"
    summary = import_dataset("candid-ptx", root, out)
    got = rows(out)
    assert set(got) == {"1.1.1", "1.1.2"}
    a, b = got["1.1.1"], got["1.1.2"]
    assert (a["pneumothorax"], a["chest_tube_present"], a["support_devices"], a["fracture"]) == (1, 1, 1, None)
    assert (b["pneumothorax"], b["chest_tube_present"], b["support_devices"], b["fracture"]) == (0, 0, None, 1)
    assert a["patient_id"] == "P123" and b["patient_id"] == "P777" and a["study_id"] == "9.9" and a["view"] == "AP"
    assert a["report"] == "Right pneumothorax, chest drain in situ." and a["sop_instance_uid"] == "1.1.1.dcm"
    assert b["mask_uri"] is None and a["mask_devices"] == "chest_tube"
    mask = np.asarray(Image.open(a["mask_uri"]))
    expected = HAND.astype(np.uint8) * TUBE
    expected[0, 0] = TUBE  # second tube row "0 1": first pixel
    assert np.array_equal(mask, expected)
    assert summary.masks_written == 1 and summary.skipped == {"image file not found": 1}
    assert summary.with_report == 2 and summary.patients == 2


# ---- generic folder -------------------------------------------------------------------------------------------

def _folder(tmp_path):
    root = tmp_path / "folder"
    image(root / "patA" / "img1.png")
    write(root / "patA" / "img1.txt", "Large left pleural effusion.")
    image(root / "patA" / "img2.jpg", fmt="JPEG")
    dicom(root / "patB" / "study1" / "x.dcm", PatientID="PID9", StudyInstanceUID="1.2.3", ViewPosition="PA")
    dicom(root / "patC" / "noext", PatientID="", StudyInstanceUID="")
    write(root / "patC" / "readme.md", "not an image")
    image(root / ".cache" / "hidden.png")
    write(root / "patC" / "broken.dcm", "not a dicom")
    return root


def test_folder_ids_reports_and_dicom_headers(tmp_path):
    root = _folder(tmp_path)
    out = tmp_path / "m.parquet"
    summary = import_dataset("folder", root, out)
    got = rows(out)
    assert set(got) == {"patA/img1.png", "patA/img2.jpg", "patB/study1/x.dcm", "patC/noext"}
    assert got["patA/img1.png"]["report"] == "Large left pleural effusion." and got["patA/img2.jpg"]["report"] is None
    assert got["patA/img1.png"]["patient_id"] == "patA" and got["patA/img1.png"]["study_id"] == "patA"
    x = got["patB/study1/x.dcm"]
    assert (x["patient_id"], x["study_id"], x["view"], x["format"]) == ("PID9", "1.2.3", "PA", "dicom")
    assert got["patC/noext"]["patient_id"] == "patC" and got["patC/noext"]["format"] == "dicom"
    assert got["patA/img2.jpg"]["uri"] == str(root / "patA" / "img2.jpg") and x["source"] == "folder"
    assert summary.skipped == {"unreadable DICOM header": 1} and summary.label_columns == ()

    import_dataset("folder", root, out, patient_from="folder", patient_depth=2, label_reports=True, source="site1")
    got = rows(out)
    assert got["patB/study1/x.dcm"]["patient_id"] == "patB" and got["patA/img1.png"]["patient_id"] == "patA"
    assert got["patA/img1.png"]["pleural_effusion"] == RuleLabeler().label("Large left pleural effusion.")[
        "pleural_effusion"] == 1
    assert got["patA/img2.jpg"]["pleural_effusion"] is None and got["patA/img1.png"]["source"] == "site1"

    import_dataset("folder", root, out, patient_from="dicom")
    assert set(rows(out)) == {"patB/study1/x.dcm"}


def test_folder_auto_gives_one_patient_one_id(tmp_path):
    root = tmp_path / "mixed"
    dicom(root / "p001" / "a.dcm", PatientID="MRN123")
    dicom(root / "p001" / "b.dcm", PatientID="")
    image(root / "p001" / "c.png")                      # same folder: same patient as a.dcm
    dicom(root / "ward" / "x.dcm", PatientID="MRN7")    # a folder of several patients
    dicom(root / "ward" / "y.dcm", PatientID="MRN8")
    image(root / "ward" / "z.png")                      # cannot be placed: skipped, not given a new id
    image(root / "p002" / "d.png")
    image(root / "root.png")
    out = tmp_path / "m.parquet"
    summary = import_dataset("folder", root, out, chunk_rows="2")   # chunks split the p001 folder
    got = {k: v["patient_id"] for k, v in rows(out).items()}
    assert got == {"p001/a.dcm": "MRN123", "p001/b.dcm": "MRN123", "p001/c.png": "MRN123", "ward/x.dcm": "MRN7",
                   "ward/y.dcm": "MRN8", "p002/d.png": "p002", "root.png": "root.png"}
    assert summary.skipped == {"no PatientID in a folder of several DICOM patients": 1}
