"""DICOM decoding: photometric, bits stored, sign, rescale, VOI (window / LUT), compressed syntaxes, bad files.

Every DICOM here is written by pydicom in the test; the synthetic "anatomy" has a bright bone block in the top-left,
a lung field and a left-to-right gradient, so flips, transposes and inversions all change the decoded array.
"""
from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.pixels import get_decoder, get_encoder

from radscale.data import dicom as dicom_mod
from radscale.data.dicom import apply_bits_stored, apply_window
from radscale.data.images import ImageDecodeError, decode_bytes, decode_image

H, W = 48, 64
BONE = (slice(4, 16), slice(6, 22))
LUNG = (slice(24, 44), slice(30, 60))
AIR = (slice(0, 3), slice(40, 64))


def anatomy() -> np.ndarray:
    """Values in [0, 1]: air 0.05, lung 0.3, bone 0.9, plus a small left-to-right ramp (0..0.05)."""
    img = np.full((H, W), 0.05)
    img[LUNG] = 0.3
    img[BONE] = 0.9
    return img + np.linspace(0.0, 0.05, W)[None, :]


def make_dicom(
    stored: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    bits_allocated: int = 16,
    bits_stored: int | None = None,
    signed: bool = False,
    tsuid: str = uid.ExplicitVRLittleEndian,
    pixel_data: bytes | None = None,
    **elements: object,
) -> bytes:
    """A minimal DX object; `stored` is the raw stored array (frames, rows, cols[, samples]) or (rows, cols)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = tsuid
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    if stored is not None:
        shape = stored.shape
        colour = photometric in ("RGB", "YBR_FULL")
        rows, cols = (shape[-3], shape[-2]) if colour else shape[-2:]
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 3 if colour else 1
        if colour:
            ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = bits_allocated
        ds.BitsStored = bits_stored or bits_allocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = int(signed)
        if stored.ndim == (4 if colour else 3):
            ds.NumberOfFrames = shape[0]
        if pixel_data is None:
            dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32}[bits_allocated]
            pixel_data = np.ascontiguousarray(stored).astype(dtype).tobytes()
        ds.PixelData = pixel_data
        if tsuid not in (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian):
            ds["PixelData"].VR = "OB"
    for key, value in elements.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    private = {} if uid.UID(tsuid).is_transfer_syntax else {"implicit_vr": False, "little_endian": True}
    ds.save_as(buf, enforce_file_format=True, **private)
    return buf.getvalue()


def decode(data: bytes, **kw: object) -> np.ndarray:
    return decode_bytes(data, uri_for_errors="mem://x.dcm", **kw).pixels


def minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return (a - a.min()) / (a.max() - a.min())


def assert_bone_bright(img: np.ndarray) -> None:
    assert img.shape == (H, W)
    assert img[BONE].mean() > img[LUNG].mean() + 0.3 > img[AIR].mean() + 0.3
    # orientation: the bright block is top-left, and the ramp rises left to right inside the lung
    top_left = img[: H // 2, : W // 2].mean()
    assert top_left > img[: H // 2, W // 2:].mean() and top_left > img[H // 2:, : W // 2].mean()
    assert img[30, 58] > img[30, 32]


# --- photometric interpretation -------------------------------------------------------------------------------

def test_monochrome1_and_monochrome2_give_the_same_bone_bright_image():
    values = np.rint(anatomy() * 4095).astype(np.uint16)
    mono2 = decode(make_dicom(values, bits_stored=12))
    mono1 = decode(make_dicom(4095 - values, photometric="MONOCHROME1", bits_stored=12))
    assert_bone_bright(mono2)
    assert_bone_bright(mono1)
    np.testing.assert_allclose(mono1, mono2, atol=1e-6)
    np.testing.assert_allclose(mono2, minmax(values), atol=1e-6)


def test_monochrome1_inversion_happens_after_the_window():
    values = np.rint(anatomy() * 4095).astype(np.uint16)
    inverted = 4095 - values
    # the window is in stored (MONOCHROME1) units; the bone is dark there and must come out bright
    img = decode(make_dicom(inverted, photometric="MONOCHROME1", bits_stored=12, WindowCenter=2048, WindowWidth=4096))
    assert_bone_bright(img)
    expected = 1.0 - np.clip((inverted - 2047.5) / 4095 + 0.5, 0, 1)
    np.testing.assert_allclose(img, expected, atol=1e-5)


# --- bits stored, sign, rescale --------------------------------------------------------------------------------

@pytest.mark.parametrize("bits_stored", [12, 15, 16])
def test_bits_stored_masks_garbage_high_bits(bits_stored: int):
    top = (1 << bits_stored) - 1
    clean = np.rint(anatomy() * top).astype(np.uint32)
    garbage = np.random.default_rng(0).integers(0, 1 << (16 - bits_stored), size=clean.shape) << bits_stored
    img = decode(make_dicom((clean | garbage).astype(np.uint16), bits_stored=bits_stored))
    assert_bone_bright(img)
    np.testing.assert_allclose(img, minmax(clean), atol=1e-6)
    if bits_stored == 12:
        assert garbage.any()  # the 12-bit case really carries garbage above bit 11


def test_apply_bits_stored_masks_and_sign_extends_directly():
    values = np.array([-2048, -1, 0, 1, 2047])
    raw = ((values & 0xFFF) | 0xA000).astype(np.uint16)  # garbage in the top nibble
    np.testing.assert_array_equal(apply_bits_stored(raw, 12, signed=True), values)
    np.testing.assert_array_equal(apply_bits_stored(raw.view(np.int16), 12, signed=True), values)
    np.testing.assert_array_equal(apply_bits_stored(raw, 12, signed=False), values & 0xFFF)
    assert apply_bits_stored(raw, 16, signed=False) is raw


def test_big_endian_dataset():
    values = np.rint(anatomy() * 4095).astype(np.uint16)
    data = make_dicom(values, bits_stored=12, tsuid=uid.ExplicitVRBigEndian, pixel_data=values.astype(">u2").tobytes())
    np.testing.assert_allclose(decode(data), minmax(values), atol=1e-6)


def test_16_bit_keeps_full_precision():
    ramp = np.linspace(0, 65535, H * W).reshape(H, W).astype(np.uint16)
    img = decode(make_dicom(ramp, bits_stored=16))
    assert len(np.unique(img)) > 256
    assert np.all(np.diff(img.ravel()) >= 0)
    np.testing.assert_allclose(img, ramp / 65535.0, atol=1e-6)


def test_signed_12_bit_pixels_are_sign_extended():
    values = np.rint(anatomy() * 4095).astype(np.int32) - 2048  # -2048..2047
    raw = (values & 0xFFF).astype(np.uint16)  # 12-bit two's complement, high nibble zero
    img = decode(make_dicom(raw, bits_stored=12, signed=True))
    assert_bone_bright(img)
    np.testing.assert_allclose(img, minmax(values), atol=1e-6)


def test_signed_16_bit_with_rescale_and_window():
    hu = np.rint(anatomy() * 3000).astype(np.int32) - 1000  # -1000..2150 "HU"
    raw = ((hu + 1024) - 2048).astype(np.int16).view(np.uint16)  # stored = hu + 1024 - 2048, signed
    data = make_dicom(raw, bits_stored=16, signed=True, RescaleSlope=1, RescaleIntercept=1024,
                      WindowCenter=500, WindowWidth=2001)
    img = decode(data)
    expected = np.clip((hu - 499.5) / 2000 + 0.5, 0, 1)
    np.testing.assert_allclose(img, expected, atol=1e-5)
    assert_bone_bright(img)


def test_rescale_slope_intercept_is_applied_before_the_window():
    stored = np.arange(H * W, dtype=np.uint16).reshape(H, W) % 4096
    data = make_dicom(stored, bits_stored=12, RescaleSlope=2.0, RescaleIntercept=-1000.0,
                      WindowCenter=1000.0, WindowWidth=1001.0)
    x = stored * 2.0 - 1000.0
    np.testing.assert_allclose(decode(data), np.clip((x - 999.5) / 1000 + 0.5, 0, 1), atol=1e-5)
    # without a window the slope/intercept are linear, so min-max of modality values == min-max of stored ones
    no_window = make_dicom(stored, bits_stored=12, RescaleSlope=2.0, RescaleIntercept=-1000.0)
    np.testing.assert_allclose(decode(no_window), minmax(stored), atol=1e-6)


def test_negative_slope_flips_intensity_order():
    values = np.rint(anatomy() * 4095).astype(np.uint16)
    img = decode(make_dicom(4095 - values, bits_stored=12, RescaleSlope=-1, RescaleIntercept=4095))
    assert_bone_bright(img)


# --- VOI: window and LUT ---------------------------------------------------------------------------------------

def test_linear_window_clips_and_ramps_exactly():
    x = np.array([0.0, 1535.0, 1535.5, 1536.0, 2047.5, 2559.0, 2559.5, 2560.0, 4095.0])
    y = apply_window(x, 2048.0, 1025.0)
    # PS3.3 C.11.2.1.2.1: ramp from c - 0.5 - (w-1)/2 = 1535.5 to c - 0.5 + (w-1)/2 = 2559.5
    np.testing.assert_allclose(y, [0, 0, 0, 0.5 / 1024, 0.5, 1023.5 / 1024, 1, 1, 1], atol=1e-6)


def test_window_from_file_uses_first_of_multiple_values_and_clips():
    stored = (np.arange(H * W).reshape(H, W) * 2).astype(np.uint16)  # 0..6142
    data = make_dicom(stored, bits_stored=16, WindowCenter=[3000, 100], WindowWidth=[2001, 50])
    img = decode(data)
    np.testing.assert_allclose(img, np.clip((stored.astype(float) - 2999.5) / 2000 + 0.5, 0, 1), atol=1e-5)
    assert (img == 0).sum() > 100 and (img == 1).sum() > 100  # clipped at both ends
    assert 0 < img[stored == 3000].item() < 1


def test_linear_exact_and_sigmoid_functions():
    x = np.array([0.0, 1000.0, 2000.0])
    np.testing.assert_allclose(apply_window(x, 1000.0, 1000.0, "LINEAR_EXACT"), [0.0, 0.5, 1.0], atol=1e-6)
    sig = apply_window(x, 1000.0, 1000.0, "SIGMOID")
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-4 * (x - 1000) / 1000)), rtol=1e-5)
    stored = np.arange(H * W, dtype=np.uint16).reshape(H, W)
    data = make_dicom(stored, WindowCenter=1500, WindowWidth=1000, VOILUTFunction="LINEAR_EXACT")
    np.testing.assert_allclose(decode(data), np.clip((stored.astype(float) - 1500) / 1000 + 0.5, 0, 1), atol=1e-5)


def test_invalid_window_width_falls_back_to_minmax():
    values = np.rint(anatomy() * 4095).astype(np.uint16)
    img = decode(make_dicom(values, bits_stored=12, WindowCenter=100, WindowWidth=0))
    np.testing.assert_allclose(img, minmax(values), atol=1e-6)


def _voi_item(first: int, lut: np.ndarray, depth: int, *, as_bytes: bool = False) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(lut), first, depth]
    if as_bytes:
        item.LUTData = lut.astype("<u2").tobytes()
        item["LUTData"].VR = "OW"
    else:
        item.LUTData = [int(v) for v in lut]
        item["LUTData"].VR = "US"
    return item


@pytest.mark.parametrize("as_bytes", [False, True])
def test_voi_lut_sequence_takes_precedence_over_window(as_bytes: bool):
    stored = (np.arange(H * W).reshape(H, W) % 3000).astype(np.uint16)
    first = 500
    lut = np.rint(np.sqrt(np.linspace(0, 1, 2000)) * 4095).astype(np.uint16)  # non-linear, 12-bit output
    data = make_dicom(stored, bits_stored=12, VOILUTSequence=[_voi_item(first, lut, 12, as_bytes=as_bytes)],
                      WindowCenter=10, WindowWidth=5)
    expected = lut[np.clip(stored.astype(int) - first, 0, len(lut) - 1)] / 4095
    np.testing.assert_allclose(decode(data), expected, atol=1e-6)


def test_voi_lut_declared_16_bits_with_12_bit_data_is_not_dark():
    stored = (np.arange(H * W).reshape(H, W) % 4096).astype(np.uint16)
    lut = np.arange(4096, dtype=np.uint16)
    img = decode(make_dicom(stored, bits_stored=12, VOILUTSequence=[_voi_item(0, lut, 16)]))
    assert img.max() == pytest.approx(stored.max() / 4095)  # /4095, not /65535


def test_modality_lut_sequence():
    stored = (np.arange(H * W).reshape(H, W) % 256).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 16]
    item.ModalityLUTType = "US"
    item.LUTData = [int(v) for v in (255 - np.arange(256)) * 10]  # a decreasing LUT flips intensity order
    item["LUTData"].VR = "US"
    img = decode(make_dicom(stored, bits_stored=8, ModalityLUTSequence=[item]))
    np.testing.assert_allclose(img, 1 - stored / 255, atol=1e-6)


# --- frames, colour, layout ------------------------------------------------------------------------------------

def test_multiframe_takes_the_first_frame():
    first = np.rint(anatomy() * 4095).astype(np.uint16)
    frames = np.stack([first, 4095 - first, first // 2])
    img = decode(make_dicom(frames, bits_stored=12))
    np.testing.assert_allclose(img, minmax(first), atol=1e-6)


def test_rgb_dicom_becomes_luminance():
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    rgb[BONE] = 255
    img = decode(make_dicom(rgb, photometric="RGB", bits_allocated=8))
    assert img[BONE].min() == pytest.approx(1.0, abs=1e-3)
    assert img[AIR].max() == pytest.approx(0.299, abs=1e-3)


def test_dicom_extension_and_resize(tmp_path):
    values = np.rint(anatomy() * 4095).astype(np.uint16)
    path = tmp_path / "vindr.dicom"
    path.write_bytes(make_dicom(4095 - values, photometric="MONOCHROME1", bits_stored=12))
    out = decode_image(str(path), short_side=24)
    assert (out.format, out.bits, out.source_height, out.source_width) == ("dicom", 12, H, W)
    assert out.pixels.shape == (24, 32) and out.pixels.dtype == np.float32
    assert 0.0 <= out.pixels.min() and out.pixels.max() <= 1.0
    big = np.kron(out.pixels, np.ones((2, 2)))
    assert np.abs(big - minmax(values)).mean() < 0.02  # still upright, bone bright


def test_preamble_less_dataset_is_read_by_extension(tmp_path):
    values = np.rint(anatomy() * 255).astype(np.uint16)
    full = make_dicom(values, bits_stored=8)
    ds_bytes = DicomBytesIO()
    ds_bytes.is_little_endian, ds_bytes.is_implicit_VR = True, True
    ds = pydicom.dcmread(io.BytesIO(full))
    del ds.file_meta
    write_dataset(ds_bytes, ds)
    path = tmp_path / "raw.dcm"
    path.write_bytes(ds_bytes.getvalue())
    np.testing.assert_allclose(decode_image(str(path)).pixels, minmax(values), atol=1e-6)
    with pytest.raises(ImageDecodeError, match="unrecognised format"):
        decode_bytes(ds_bytes.getvalue(), uri_for_errors="raw.bin")


# --- compressed transfer syntaxes ------------------------------------------------------------------------------

def jpeg_lossless(img: np.ndarray, precision: int, predictor: int) -> bytes:
    """A minimal ITU-T T.81 process-14 (lossless, Huffman) encoder: one component, one fixed 5-bit code table."""
    x = img.astype(np.int64)
    ra, rb, rc = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    ra[:, 1:], rb[1:, :], rc[1:, 1:] = x[:, :-1], x[:-1, :], x[:-1, :-1]
    pred = {1: ra, 7: (ra + rb) >> 1}[predictor].copy()
    pred[0, 1:], pred[1:, 0], pred[0, 0] = x[0, :-1], x[:-1, 0], 1 << (precision - 1)  # T.81 H.1.2.1 edges
    diff = (x - pred) % 65536
    diff[diff > 32768] -= 65536
    bits = []
    for d in diff.ravel().tolist():
        ssss = abs(d).bit_length()
        bits.append(format(ssss, "05b"))
        if 0 < ssss < 16:
            bits.append(format(d if d > 0 else d + (1 << ssss) - 1, f"0{ssss}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    scan = int(stream, 2).to_bytes(len(stream) // 8, "big").replace(b"\xff", b"\xff\x00")

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    h, w = x.shape
    sof3 = segment(0xC3, bytes([precision]) + h.to_bytes(2, "big") + w.to_bytes(2, "big") + bytes([1, 1, 0x11, 0]))
    dht = segment(0xC4, bytes([0]) + bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17)))
    sos = segment(0xDA, bytes([1, 1, 0, predictor, 0, 0]))
    return b"\xff\xd8" + sof3 + dht + sos + scan + b"\xff\xd9"


def _compressed(tsuid: str, values: np.ndarray, bits_stored: int) -> bytes:
    if tsuid == uid.JPEGBaseline8Bit:
        buf = io.BytesIO()
        Image.fromarray(values.astype(np.uint8)).save(buf, format="JPEG", quality=95)
        return make_dicom(values, bits_allocated=8, bits_stored=8, tsuid=tsuid,
                          pixel_data=encapsulate([buf.getvalue()]))
    if tsuid in (uid.JPEGLosslessSV1, uid.JPEGLossless):
        predictor = 1 if tsuid == uid.JPEGLosslessSV1 else 7
        frame = jpeg_lossless(values, bits_stored, predictor)
        return make_dicom(values, bits_stored=bits_stored, tsuid=tsuid, pixel_data=encapsulate([frame]))
    encoder = get_encoder(tsuid)
    if not encoder.is_available:
        pytest.skip(f"no encoder installed for {uid.UID(tsuid).name}")
    native = make_dicom(values, bits_stored=bits_stored)
    ds = pydicom.dcmread(io.BytesIO(native))
    ds.compress(tsuid)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    "tsuid, bits_stored, lossy",
    [
        (uid.RLELossless, 16, False),
        (uid.JPEGBaseline8Bit, 8, True),
        (uid.JPEGLosslessSV1, 16, False),
        (uid.JPEGLossless, 12, False),
        (uid.JPEGLSLossless, 12, False),
        (uid.JPEG2000Lossless, 16, False),
    ],
)
def test_compressed_syntax_decodes_or_is_refused_by_name(tsuid: str, bits_stored: int, lossy: bool):
    values = np.rint(anatomy() * ((1 << bits_stored) - 1)).astype(np.uint16)
    data = _compressed(tsuid, values, bits_stored)
    if get_decoder(tsuid).is_available:
        img = decode(data)
        assert_bone_bright(img)
        error = np.abs(img - minmax(values))
        mean_limit, max_limit = (0.02, 0.08) if lossy else (1e-6, 1e-6)
        assert error.mean() < mean_limit and error.max() < max_limit
    else:
        with pytest.raises(ImageDecodeError) as err:
            decode(data)
        assert uid.UID(tsuid).name in str(err.value) and str(tsuid) in str(err.value)


def test_syntax_without_plugin_is_refused_with_name_and_uid(monkeypatch):
    data = _compressed(uid.JPEGLosslessSV1, np.rint(anatomy() * 4095).astype(np.uint16), 12)

    class Unavailable:
        is_available = False

    monkeypatch.setattr(dicom_mod, "get_decoder", lambda tsuid: Unavailable())
    with pytest.raises(ImageDecodeError) as err:
        decode(data)
    msg = str(err.value)
    assert "\n" not in msg and "1.2.840.10008.1.2.4.70" in msg and uid.UID(uid.JPEGLosslessSV1).name in msg
    assert "pylibjpeg" in msg


@pytest.mark.parametrize("tsuid", [uid.MPEG2MPML, "1.2.826.0.1.3680043.99.1"])
def test_syntax_pydicom_cannot_decode_is_refused(tsuid: str):
    values = np.zeros((H, W), dtype=np.uint16)
    data = make_dicom(values, bits_allocated=8, tsuid=tsuid, pixel_data=encapsulate([b"\x00\x01" * 50]))
    with pytest.raises(ImageDecodeError) as err:
        decode(data)
    assert str(tsuid) in str(err.value) and "\n" not in str(err.value)


def test_corrupt_compressed_frame_is_one_line_error():
    data = make_dicom(np.zeros((H, W)), bits_allocated=8, tsuid=uid.JPEGBaseline8Bit,
                      pixel_data=encapsulate([b"\xff\xd8\xff\xe0garbage" * 10]))
    with pytest.raises(ImageDecodeError) as err:
        decode(data)
    assert "JPEG Baseline" in str(err.value) and "\n" not in str(err.value)


# --- bad files -------------------------------------------------------------------------------------------------

def test_missing_pixel_data():
    with pytest.raises(ImageDecodeError, match="no pixel data"):
        decode(make_dicom(None))


def test_zero_size_image():
    data = make_dicom(np.zeros((H, W), np.uint16), bits_stored=12)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Rows = 0
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(ImageDecodeError, match="zero-size"):
        decode(buf.getvalue())


def test_constant_image_without_window_is_refused_not_black():
    with pytest.raises(ImageDecodeError, match="constant"):
        decode(make_dicom(np.full((H, W), 7, np.uint16), bits_stored=12))


def test_malformed_header_value_is_a_decode_error():
    data = make_dicom(np.rint(anatomy() * 4095).astype(np.uint16), bits_stored=12, WindowCenter=2048,
                      WindowWidth=2001)
    assert data.count(b"2001") == 1
    with pytest.raises(ImageDecodeError, match="bad DICOM image attributes"):
        decode(data.replace(b"2001", b"2x01"))


def test_a_header_value_is_not_echoed_in_the_error():
    # a patient name typed into a numeric field must not reach quarantine records or logs
    data = make_dicom(np.rint(anatomy() * 4095).astype(np.uint16), bits_stored=12, WindowCenter=2048,
                      WindowWidth=2001)
    with pytest.raises(ImageDecodeError, match="bad DICOM image attributes") as err:
        decode(data.replace(b"2001", b"Doe "))
    assert "Doe" not in str(err.value) and "\n" not in str(err.value)


def test_a_short_modality_lut_is_a_decode_error():
    item = Dataset()
    item.LUTDescriptor = [10, 0, 16]           # 10 entries declared, 3 present: pydicom raises struct.error
    item.ModalityLUTType = "US"
    item.LUTData = np.arange(3, dtype="<u2").tobytes()
    with pytest.raises(ImageDecodeError, match="bad DICOM image attributes: error"):
        decode(make_dicom(np.zeros((H, W), np.uint16) + 2, bits_stored=8, ModalityLUTSequence=[item]))


def test_a_nan_rescale_slope_is_a_decode_error_not_a_nan_image():
    data = make_dicom(np.rint(anatomy() * 4095).astype(np.uint16), bits_stored=12, RescaleSlope="1.5")
    assert data.count(b"1.5 ") == 1
    with pytest.raises(ImageDecodeError, match="NaN or infinity"):
        decode(data.replace(b"1.5 ", b"NaN "))


def test_unsupported_photometric():
    data = make_dicom(np.zeros((H, W), np.uint16), photometric="PALETTE COLOR", bits_stored=8)
    with pytest.raises(ImageDecodeError, match="PALETTE COLOR"):
        decode(data)


@pytest.mark.parametrize("keep", [0.99, 0.6, 0.2])
def test_truncated_file_is_a_one_line_error(keep: float, tmp_path):
    data = make_dicom(np.rint(anatomy() * 4095).astype(np.uint16), bits_stored=12)
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageDecodeError) as err:
        decode_image(str(path))
    msg = str(err.value)
    assert msg.startswith(f"cannot decode {path}: ") and "\n" not in msg and len(msg) < 500
    assert err.value.uri == str(path)
