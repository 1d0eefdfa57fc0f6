"""PNG/JPEG decoding, resizing, encode_png round trips, error reporting, and the quarantine list."""
from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from radscale.data.images import (
    _to_gray,
    DecodedImage,
    ImageDecodeError,
    decode_bytes,
    decode_image,
    encode_png,
    resize_short_side,
    target_size,
)
from radscale.data.quarantine import Quarantine

H, W = 60, 90
BRIGHT = (slice(5, 20), slice(8, 30))  # top-left block


def scene(top: int) -> np.ndarray:
    """Integer image: background 10% of `top`, a bright top-left block, a left-to-right ramp."""
    img = np.full((H, W), 0.1) + np.linspace(0, 0.2, W)[None, :]
    img[BRIGHT] = 0.95
    return np.rint(img * top).astype(np.uint16 if top > 255 else np.uint8)


def png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(arr: np.ndarray, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def assert_upright(img: np.ndarray) -> None:
    h, w = img.shape
    top_left = img[: h // 2, : w // 2].mean()
    assert top_left > img[: h // 2, w // 2:].mean() and top_left > img[h // 2:, : w // 2].mean()
    assert img[-1, -1] > img[-1, 0]  # the ramp still rises left to right


# --- PNG -------------------------------------------------------------------------------------------------------

def test_png_8_bit_exact(tmp_path):
    arr = scene(255)
    out = decode_image(write(tmp_path, "a.png", png_bytes(arr)))
    assert isinstance(out, DecodedImage)
    assert (out.format, out.bits, out.source_height, out.source_width) == ("png", 8, H, W)
    assert out.pixels.dtype == np.float32 and out.pixels.shape == (H, W)
    np.testing.assert_allclose(out.pixels, arr / 255.0, atol=1e-7)
    assert_upright(out.pixels)


def test_png_16_bit_keeps_precision():
    ramp = np.linspace(0, 65535, H * W).round().astype(np.uint16).reshape(H, W)
    out = decode_bytes(png_bytes(ramp), uri_for_errors="ramp.png")
    assert out.bits == 16
    assert len(np.unique(out.pixels)) > 256
    assert np.all(np.diff(out.pixels.ravel()) >= 0)
    assert out.pixels.min() == 0.0 and out.pixels.max() == 1.0
    np.testing.assert_allclose(out.pixels, ramp / 65535.0, atol=1e-7)


def test_png_16_bit_resize_stays_in_range_and_upright():
    arr = scene(65535)
    out = decode_bytes(png_bytes(arr), uri_for_errors="x.png", short_side=30)
    assert out.pixels.shape == (30, 45) and (out.source_height, out.source_width) == (H, W)
    assert 0.0 <= out.pixels.min() and out.pixels.max() <= 1.0
    assert_upright(out.pixels)


def test_colour_png_becomes_luminance():
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red -> ITU-R 601 luma 0.299
    rgb[BRIGHT] = 255
    out = decode_bytes(png_bytes(rgb), uri_for_errors="c.png")
    assert out.pixels[0, -1] == pytest.approx(76 / 255)
    assert out.pixels[BRIGHT].min() == 1.0
    rgba = decode_bytes(png_bytes(rgb, "RGBA"), uri_for_errors="c.png").pixels
    palette = decode_bytes(png_bytes(rgb, "P"), uri_for_errors="c.png").pixels
    np.testing.assert_allclose(rgba, out.pixels)
    np.testing.assert_allclose(palette, out.pixels, atol=2 / 255)


def test_32_bit_integer_mode_is_read_as_16_bit():
    # Pillow < 10 returned mode "I" for 16-bit grayscale PNGs; such images must not be clipped to 8 bits
    gray, bits = _to_gray(Image.fromarray(np.array([[0, 300, 65535]], dtype=np.int32)))
    assert bits == 16 and np.asarray(gray).tolist() == [[0, 300, 65535]]


def test_extension_does_not_decide_the_format(tmp_path):
    path = write(tmp_path, "really_a_png.jpg", png_bytes(scene(255)))
    assert decode_image(path).format == "png"


# --- JPEG ------------------------------------------------------------------------------------------------------

def test_jpeg_decodes_close_to_source():
    arr = scene(255)
    out = decode_bytes(jpeg_bytes(arr), uri_for_errors="a.jpg")
    assert (out.format, out.bits) == ("jpeg", 8)
    assert np.abs(out.pixels - arr / 255.0).mean() < 0.01
    assert_upright(out.pixels)


def test_jpeg_draft_downscale_matches_full_decode_then_resize():
    big = np.kron(scene(255), np.ones((12, 12), dtype=np.uint8))  # 720 x 1080
    data = jpeg_bytes(big)
    out = decode_bytes(data, uri_for_errors="big.jpg", short_side=90)
    assert out.pixels.shape == (90, 135) and (out.source_height, out.source_width) == big.shape
    reference = resize_short_side(np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32) / 255.0, 90)
    assert np.abs(out.pixels - reference).mean() < 0.01
    assert_upright(out.pixels)


def test_jpeg_downscale_uses_draft_mode(monkeypatch):
    from PIL import JpegImagePlugin

    calls = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        calls.append((mode, size, self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    big = np.kron(scene(255), np.ones((12, 12), dtype=np.uint8))  # 720 x 1080
    decode_bytes(jpeg_bytes(big), uri_for_errors="big.jpg", short_side=90)
    assert calls == [("L", (135, 90), (135, 90))]  # 1/8 DCT scaling: decoded at 135 x 90, not 1080 x 720


def test_jpeg_exif_orientation_is_applied():
    arr = scene(255)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise for display
    out = decode_bytes(jpeg_bytes(arr, exif=exif), uri_for_errors="rot.jpg")
    assert (out.source_height, out.source_width) == (W, H)
    assert np.abs(out.pixels - np.rot90(arr, k=-1) / 255.0).mean() < 0.01
    small = decode_bytes(jpeg_bytes(arr, exif=exif), uri_for_errors="rot.jpg", short_side=30)
    assert small.pixels.shape == (45, 30)


# --- resizing --------------------------------------------------------------------------------------------------

def test_target_size_keeps_aspect_and_never_upscales_by_default():
    assert target_size(200, 300, 100) == (100, 150)
    assert target_size(300, 200, 100) == (150, 100)
    assert target_size(200, 300, 400) == (200, 300)
    assert target_size(200, 300, 400, upscale=True) == (400, 600)


def test_resize_short_side_through_decode(tmp_path):
    path = write(tmp_path, "a.png", png_bytes(scene(255)))
    assert decode_image(path, short_side=30).pixels.shape == (30, 45)
    assert decode_image(path, short_side=518).pixels.shape == (H, W)
    assert decode_image(path, short_side=120, upscale=True).pixels.shape == (120, 180)
    with pytest.raises(ValueError, match="short_side"):
        decode_image(path, short_side=0)


def test_downscaling_is_antialiased():
    checker = ((np.indices((128, 192)).sum(axis=0) % 2) * 255).astype(np.uint8)  # 1-px checkerboard
    out = decode_bytes(png_bytes(checker), uri_for_errors="c.png", short_side=32).pixels
    assert np.abs(out - 0.5).max() < 0.05  # aliasing would leave values near 0 or 1
    floats = resize_short_side(checker / np.float32(255), 32)
    assert np.abs(floats - 0.5).max() < 0.05


# --- encode_png ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [8, 16])
def test_encode_png_round_trip(bits: int):
    pixels = np.random.default_rng(0).random((37, 53)).astype(np.float32)
    out = decode_bytes(encode_png(pixels, bits), uri_for_errors="shard.png")
    assert out.bits == bits and out.pixels.shape == pixels.shape
    assert np.abs(out.pixels - pixels).max() <= 0.5 / ((1 << bits) - 1) + 1e-7


def test_encode_png_refuses_bad_input():
    with pytest.raises(ValueError, match="bits"):
        encode_png(np.zeros((4, 4)), 12)
    with pytest.raises(ValueError, match="NaN"):
        encode_png(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="HxW"):
        encode_png(np.zeros((4, 4, 3)))


# --- errors ----------------------------------------------------------------------------------------------------

def assert_one_line_error(err: ImageDecodeError, uri: str) -> None:
    msg = str(err)
    assert msg.startswith(f"cannot decode {uri}: ") and "\n" not in msg and len(msg) < 400
    assert err.uri == uri and err.reason and isinstance(err, ValueError)


def test_missing_path(tmp_path):
    uri = str(tmp_path / "nope.png")
    with pytest.raises(ImageDecodeError) as err:
        decode_image(uri)
    assert_one_line_error(err.value, uri)
    assert "not found" in err.value.reason


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_truncated_file(tmp_path, fmt: str):
    data = png_bytes(scene(255)) if fmt == "png" else jpeg_bytes(scene(255))
    uri = write(tmp_path, f"cut.{fmt}", data[: len(data) // 2])
    with pytest.raises(ImageDecodeError) as err:
        decode_image(uri)
    assert_one_line_error(err.value, uri)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"hello, not an image at all" * 10, "unrecognised format"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "png decoder failed"),
        (b"\xff\xd8\xff" + b"\x00" * 500, "jpeg decoder failed"),
    ],
)
def test_corrupt_bytes(data: bytes, reason: str):
    with pytest.raises(ImageDecodeError) as err:
        decode_bytes(data, uri_for_errors="s3://bucket/x")
    assert_one_line_error(err.value, "s3://bucket/x")
    assert reason in err.value.reason
    assert "\\x" not in str(err.value)  # no raw bytes echoed


def test_directory_and_file_uri(tmp_path):
    with pytest.raises(ImageDecodeError, match="directory"):
        decode_image(str(tmp_path))
    path = write(tmp_path, "a.png", png_bytes(scene(255)))
    assert decode_image(f"file://{path}").pixels.shape == (H, W)
    with pytest.raises(ImageDecodeError) as err:
        decode_image(f"file://{tmp_path}/missing.png")
    assert_one_line_error(err.value, f"file://{tmp_path}/missing.png")


def test_error_reason_is_collapsed_to_one_line():
    err = ImageDecodeError("a.png", "first\nsecond\r\nthird " + "x" * 1000)
    assert "\n" not in str(err) and "\r" not in str(err) and len(err.reason) <= 300


# --- quarantine ------------------------------------------------------------------------------------------------

def test_quarantine_round_trip_and_resume_merge(tmp_path):
    path = str(tmp_path / "quarantine.parquet")
    first = Quarantine()
    first.add("/d/a.png", "a", "png decoder failed:\ntruncated", "prepare")
    first.add("/d/b.dcm", None, "DICOM has no pixel data", "prepare")
    first.add("/d/a.png", "a", "png decoder failed: truncated", "prepare")  # same key: no duplicate
    assert first.count == 2
    assert first.write(path) == 2

    back = Quarantine.read(path)
    assert back.records == first.records
    assert all("\n" not in r.reason for r in back.records)

    resumed = Quarantine()
    try:
        decode_bytes(b"", uri_for_errors="/d/c.png")
    except ImageDecodeError as e:
        resumed.add_error(e, image_id="c", stage="prepare")
    resumed.add("/d/b.dcm", None, "DICOM has no pixel data", "prepare")  # already on disk
    resumed.add("/d/a.png", "a", "file not found", "train")  # same file, other stage: a new record
    assert resumed.write(path) == 4

    table = pq.read_table(path)
    assert table.column_names == ["uri", "image_id", "reason", "stage"] and table.num_rows == 4
    merged = Quarantine.read(path)
    assert merged.count == 4 and "/d/c.png" in merged
    assert {(r.uri, r.stage) for r in merged.records} == {
        ("/d/a.png", "prepare"), ("/d/b.dcm", "prepare"), ("/d/c.png", "prepare"), ("/d/a.png", "train")}
    assert not list(tmp_path.glob("*.tmp-*"))


def test_quarantine_needs_uri_and_stage():
    with pytest.raises(ValueError, match="uri"):
        Quarantine().add("", "x", "reason", "prepare")
    with pytest.raises(ValueError, match="stage"):
        Quarantine().add("/a.png", "x", "reason", "")
