"""Image decoding: DICOM, PNG (8/16-bit) and JPEG into one canonical grayscale float image.

Canonical form (DATA.md "Images"): float32 HxW in [0, 1], bright = dense (bone white, as a CXR is displayed),
resized with antialiasing so the short side is the target, source size recorded. Formats are recognised by their
magic bytes, not the extension (VinDr ships DICOMs as `.dicom`). PNG and JPEG are scaled by their full bit range
(value / (2**bits - 1)) so that `encode_png` -> `decode_bytes` round-trips exactly up to quantisation; colour
PNG/JPEG become ITU-R 601-2 luma (Pillow's "L" conversion), alpha is dropped, and 16-bit colour PNGs lose their
low byte (Pillow reads them as 8-bit RGB). DICOM specifics live in `radscale.data.dicom`.

Every failure a file can cause is an `ImageDecodeError` with a one-line reason and no pixel values, so callers
can quarantine the file and carry on.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_DICOM_MAGIC_OFFSET = 128
_DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")
# BICUBIC is antialiased in Pillow (its support grows with the downscale factor). reducing_gap=3 box-reduces by
# an integer factor first only for >= 6x downscales (4k -> 518), leaving >= 3x to bicubic; Pillow: indistinguishable.
_RESAMPLE = Image.Resampling.BICUBIC
_REDUCING_GAP = 3.0
_MAX_REASON_CHARS = 300
_EXIF_ORIENTATION = 0x0112


class ImageDecodeError(ValueError):
    """A file that cannot become a canonical image; `str()` is one line: "cannot decode <uri>: <reason>"."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = one_line(reason)
        super().__init__(f"cannot decode {uri}: {self.reason}")


def one_line(text: str, limit: int = _MAX_REASON_CHARS) -> str:
    """Collapse whitespace/newlines and cap the length, so a reason is always a single short line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image in canonical form; `bits` is the stored bit depth of the source (BitsStored for DICOM)."""

    pixels: np.ndarray
    source_height: int
    source_width: int
    format: str
    bits: int


def decode_image(uri: str, *, short_side: int | None = None, upscale: bool = False) -> DecodedImage:
    """Read `uri` (local path, file://, s3://, gs://) and decode it; see `decode_bytes`."""
    return decode_bytes(read_uri(uri), uri_for_errors=uri, short_side=short_side, upscale=upscale)


def read_uri(uri: str) -> bytes:
    """All bytes of a local path or of a pyarrow-filesystem URI; failures become ImageDecodeError."""
    try:
        if "://" not in uri:
            with open(uri, "rb") as f:
                return f.read()
        from pyarrow import fs as pafs

        filesystem, path = pafs.FileSystem.from_uri(uri)
        with filesystem.open_input_file(path) as f:
            return f.read()
    except FileNotFoundError:
        raise ImageDecodeError(uri, "file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError(uri, "is a directory, not a file") from None
    except PermissionError:
        raise ImageDecodeError(uri, "permission denied") from None
    except (OSError, ValueError) as e:  # pyarrow: ArrowInvalid (ValueError) for bad URIs, OSError for I/O
        raise ImageDecodeError(uri, f"cannot read: {type(e).__name__}: {e}") from None


def sniff_format(data: bytes, uri: str = "") -> str | None:
    """Format name ("dicom", "png", "jpeg") from magic bytes; a preamble-less DICOM only by its extension."""
    if len(data) >= _DICOM_MAGIC_OFFSET + 4 and data[_DICOM_MAGIC_OFFSET:_DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return "dicom"
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if uri.lower().endswith(_DICOM_EXTENSIONS):
        return "dicom"
    return None


def decode_bytes(
    data: bytes, *, uri_for_errors: str, short_side: int | None = None, upscale: bool = False
) -> DecodedImage:
    """Decode an in-memory file into canonical form.

    short_side: resize (antialiased, aspect kept) so the short side equals it; images already smaller are left
    as they are unless `upscale`. DICOM details (photometric, rescale, bits stored, VOI, first frame of a
    multi-frame object) are in `radscale.data.dicom.decode_dicom`.
    """
    uri = uri_for_errors
    if short_side is not None and short_side < 1:
        raise ValueError(f"short_side must be >= 1, got {short_side} (decoding {uri})")
    data = bytes(data)
    if not data:
        raise ImageDecodeError(uri, "empty file")
    fmt = sniff_format(data, uri)
    if fmt is None:
        raise ImageDecodeError(uri, "unrecognised format (not DICOM, PNG or JPEG by magic bytes)")
    if fmt == "dicom":
        from radscale.data.dicom import decode_dicom  # lazy: dicom.py imports ImageDecodeError from here

        pixels, bits = decode_dicom(data, uri_for_errors=uri)
        height, width = pixels.shape
        if short_side is not None:
            pixels = resize_short_side(pixels, short_side, upscale=upscale)
        return DecodedImage(pixels, height, width, fmt, bits)
    return _decode_pil(data, fmt, uri, short_side, upscale)


def _decode_pil(data: bytes, fmt: str, uri: str, short_side: int | None, upscale: bool) -> DecodedImage:
    try:
        img = Image.open(io.BytesIO(data))
        stored_width, stored_height = img.size
        if stored_width == 0 or stored_height == 0:
            raise ImageDecodeError(uri, f"zero-size image ({stored_width}x{stored_height})")
        # EXIF orientations 5-8 swap the axes; the recorded source size is the displayed one.
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        swapped = orientation in (5, 6, 7, 8)
        height, width = (stored_width, stored_height) if swapped else (stored_height, stored_width)
        target = None if short_side is None else target_size(height, width, short_side, upscale=upscale)
        if fmt == "jpeg" and target is not None:
            # DCT-domain downscaling (1/2, 1/4, 1/8) never goes below the requested size; the exact resize follows.
            img.draft("L", (target[0], target[1]) if swapped else (target[1], target[0]))
        img.load()
        if orientation != 1:
            img = ImageOps.exif_transpose(img)
        img, bits = _to_gray(img)
        if bits == 16:
            pixels = np.asarray(img, dtype=np.float32) * np.float32(1.0 / 65535.0)
            if target is not None:
                pixels = resize_short_side(pixels, short_side, upscale=upscale)
            return DecodedImage(pixels, height, width, fmt, bits)
        if target is not None and target != (img.height, img.width):
            img = img.resize((target[1], target[0]), _RESAMPLE, reducing_gap=_REDUCING_GAP)
        pixels = np.asarray(img, dtype=np.float32) * np.float32(1.0 / 255.0)
        return DecodedImage(pixels, height, width, fmt, bits)
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as e:
        raise ImageDecodeError(uri, f"{fmt} decoder failed: {type(e).__name__}: {e}") from None


def _to_gray(img: Image.Image) -> tuple[Image.Image, int]:
    """Single channel "L" (8-bit) or "I;16" (16-bit); returns (image, stored bits)."""
    if img.mode == "L":
        return img, 8
    if img.mode.startswith("I;16"):
        return (img if img.mode == "I;16" else img.convert("I;16")), 16
    if img.mode == "I":  # 32-bit container that some decoders use for 16-bit gray
        return Image.fromarray(np.clip(np.asarray(img), 0, 65535).astype(np.uint16)), 16
    if img.mode == "1":
        return img.convert("L"), 1
    if img.mode in ("LA", "La"):
        return img.getchannel(0), 8
    if img.mode == "RGB":
        return img.convert("L"), 8
    return img.convert("RGB").convert("L"), 8  # P, RGBA, CMYK, YCbCr...; unknown modes raise ValueError


def target_size(height: int, width: int, short_side: int, *, upscale: bool = False) -> tuple[int, int]:
    """(height, width) with the short side = `short_side`, aspect kept; smaller images stay unless `upscale`."""
    short = min(height, width)
    if short <= short_side and not upscale:
        return height, width
    scale = short_side / short
    if height <= width:
        return short_side, max(1, round(width * scale))
    return max(1, round(height * scale)), short_side


def resize_short_side(pixels: np.ndarray, short_side: int, *, upscale: bool = False) -> np.ndarray:
    """Antialiased resize of a float image in [0, 1]; bicubic overshoot is clipped back into [0, 1]."""
    height, width = pixels.shape
    target = target_size(height, width, short_side, upscale=upscale)
    if target == (height, width):
        return pixels
    img = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32))
    out = np.asarray(img.resize((target[1], target[0]), _RESAMPLE, reducing_gap=_REDUCING_GAP))
    return np.clip(out, 0.0, 1.0)


def encode_png(pixels: np.ndarray, bits: int = 8, *, compress_level: int = 6) -> bytes:
    """Encode a canonical float image (HxW, [0, 1]) as an 8- or 16-bit grayscale PNG; `decode_bytes` inverts it."""
    if bits not in (8, 16):
        raise ValueError(f"encode_png: bits must be 8 or 16, got {bits}")
    arr = np.asarray(pixels)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"encode_png: expected a non-empty HxW array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("encode_png: pixels contain NaN or infinity")
    top = (1 << bits) - 1
    quantised = np.rint(np.clip(arr, 0.0, 1.0) * top).astype(np.uint8 if bits == 8 else np.uint16)
    buf = io.BytesIO()
    Image.fromarray(quantised).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
