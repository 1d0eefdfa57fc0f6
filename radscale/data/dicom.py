"""DICOM pixel pipeline: stored values -> modality values -> VOI (display) values in [0, 1], bone bright.

Order follows DICOM PS3.3: keep BitsStored bits with PixelRepresentation's sign (C.7.6.3.1), apply the Modality
LUT or RescaleSlope/RescaleIntercept (C.11.1), then the first VOI LUT Sequence item, else the first
WindowCenter/WindowWidth pair with VOILUTFunction (C.11.2.1.2), else min-max; MONOCHROME1 is inverted last,
after VOI, so bone ends up bright (C.7.6.3.1.2). PresentationLUTShape is not applied on top: the DX IOD ties it
to the photometric interpretation, so it would invert a second time.

Multi-frame objects: only the first frame is decoded (a CXR is one frame; cine/tomo stacks are out of scope).
Colour objects (RGB, YBR_*, decoded to RGB by pydicom) become ITU-R 601 luma scaled by BitsStored; no VOI.
Compressed transfer syntaxes go through pydicom's pixel-data plugins (pylibjpeg for JPEG/JPEG-LS/JPEG 2000,
pyjpegls or Pillow where present); a syntax with no usable plugin is refused naming it (name + UID).
"""
from __future__ import annotations

import io
import re

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from radscale.data.images import ImageDecodeError

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
_PLUGINS_HINT = "install pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg"


def _why(e: BaseException) -> str:
    """An exception as one line for quarantine records and logs, with quoted values blanked: pydicom quotes the
    offending element value, and a header value may be patient data (a name in a mistyped field)."""
    text = re.sub(r"(['\"]).*?\1", r"\1…\1", " ".join(str(e).split()))
    return f"{type(e).__name__}: {text[:200]}"


def decode_dicom(data: bytes, *, uri_for_errors: str) -> tuple[np.ndarray, int]:
    """Decode a DICOM file held in memory to (float32 HxW display image in [0, 1], BitsStored)."""
    ds = _read_dataset(data, uri_for_errors)
    try:
        pixels, bits = _decode_dataset(ds, uri_for_errors)
    except ImageDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 -- one bad file is quarantined, never the end of a job
        # pydicom converts element values lazily, so a malformed header element surfaces only when it is used
        # (ValueError, struct.error from a short LUT, ...)
        raise ImageDecodeError(uri_for_errors, f"bad DICOM image attributes: {_why(e)}") from None
    if not np.isfinite(pixels).all():   # e.g. RescaleSlope "NaN", or NaN in float pixel data
        raise ImageDecodeError(uri_for_errors, "decoded image contains NaN or infinity (check RescaleSlope/"
                                               "RescaleIntercept or float pixel data)")
    return pixels, bits


def _decode_dataset(ds: Dataset, uri: str) -> tuple[np.ndarray, int]:
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows == 0 or cols == 0:
        raise ImageDecodeError(uri, f"zero-size image (Rows={rows}, Columns={cols})")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in _MONOCHROME + _COLOUR:
        raise ImageDecodeError(uri, f"unsupported PhotometricInterpretation {photometric or '(missing)'}")
    bits_stored = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 0)
    if not 1 <= bits_stored <= 32:
        raise ImageDecodeError(uri, f"invalid BitsStored {bits_stored}")
    signed = int(ds.get("PixelRepresentation") or 0) == 1

    stored = apply_bits_stored(_first_frame(ds, uri), bits_stored, signed=signed)
    if photometric in _COLOUR:
        if stored.ndim != 3 or stored.shape[-1] != 3:
            raise ImageDecodeError(uri, f"{photometric} pixel data is not 3-channel (shape {stored.shape})")
        luma = stored.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(luma / np.float32((1 << bits_stored) - 1), 0.0, 1.0), bits_stored
    if stored.ndim != 2:
        raise ImageDecodeError(uri, f"{photometric} pixel data is not single-channel (shape {stored.shape})")
    display = display_values(modality_values(stored, ds), ds, signed=signed)
    if photometric == "MONOCHROME1":
        display = 1.0 - display
    return display.astype(np.float32, copy=False), bits_stored


def _read_dataset(data: bytes, uri: str) -> Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as e:  # pydicom raises many types (EOFError, struct.error, InvalidDicomError...) on bad bytes
        raise ImageDecodeError(uri, f"unreadable DICOM: {_why(e)}") from None
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageDecodeError(uri, "DICOM has no pixel data")
    if "TransferSyntaxUID" not in ds.file_meta:
        # Preamble-less dataset without file meta: it can only be natively encoded; take the encoding it was read in.
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return ds


def transfer_syntax_label(tsuid: str) -> str:
    """Name and UID for messages: "JPEG Lossless, Non-Hierarchical (Process 14) (1.2.840.10008.1.2.4.57)"."""
    uid = UID(str(tsuid))
    return f"{uid.name} ({uid})" if uid.is_transfer_syntax else f"unknown ({uid})"


def _first_frame(ds: Dataset, uri: str) -> np.ndarray:
    tsuid = ds.file_meta.TransferSyntaxUID
    label = transfer_syntax_label(tsuid)
    try:
        decoder = get_decoder(tsuid)
    except NotImplementedError:
        raise ImageDecodeError(uri, f"unsupported transfer syntax {label}: pydicom has no decoder for it") from None
    if not decoder.is_available:
        raise ImageDecodeError(uri, f"unsupported transfer syntax {label}: no pixel-data plugin ({_PLUGINS_HINT})")
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        ds.pixel_array_options(index=0 if frames > 1 else None)
        return ds.pixel_array
    except Exception as e:  # plugins raise RuntimeError/ValueError/...; all mean "this file's pixels are unusable"
        raise ImageDecodeError(uri, f"{label} pixel data undecodable: {_why(e)}") from None


def apply_bits_stored(arr: np.ndarray, bits_stored: int, *, signed: bool) -> np.ndarray:
    """Keep the low `bits_stored` bits (garbage above them is ignored) and sign-extend when signed."""
    if not np.issubdtype(arr.dtype, np.integer) or bits_stored >= arr.dtype.itemsize * 8:
        return arr
    low = arr.view(arr.dtype.str.replace("i", "u")) & ((1 << bits_stored) - 1)  # same width, unsigned
    if not signed:
        return low
    sign = 1 << (bits_stored - 1)  # two's complement sign extension: (v ^ sign) - sign
    return (low.astype(np.int64 if arr.dtype.itemsize >= 4 else np.int32) ^ sign) - sign


def modality_values(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality LUT Sequence if present (pydicom's, which handles its descriptor quirks), else slope/intercept."""
    if ds.get("ModalityLUTSequence"):
        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    slope = _first_number(ds.get("RescaleSlope"), 1.0)
    intercept = _first_number(ds.get("RescaleIntercept"), 0.0)
    values = stored.astype(np.float32)
    if slope != 1.0:
        values *= np.float32(slope)
    if intercept != 0.0:
        values += np.float32(intercept)
    return values


def display_values(x: np.ndarray, ds: Dataset, *, signed: bool) -> np.ndarray:
    """VOI stage: first VOI LUT item, else first valid window, else min-max; output in [0, 1] (0 = black)."""
    if ds.get("VOILUTSequence"):
        return apply_voi_lut_item(x, ds.VOILUTSequence[0], signed=signed, little_endian=_little_endian(ds))
    center = _first_number(ds.get("WindowCenter"), None)
    width = _first_number(ds.get("WindowWidth"), None)
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    if center is not None and width is not None and window_is_valid(width, function):
        return apply_window(x, center, width, function)
    return minmax(x)


def window_is_valid(width: float, function: str = "LINEAR") -> bool:
    """PS3.3 C.11.2.1.2: LINEAR needs width >= 1, LINEAR_EXACT and SIGMOID width > 0; invalid -> min-max."""
    if function == "LINEAR":
        return width >= 1.0
    return function in ("LINEAR_EXACT", "SIGMOID") and width > 0.0


def apply_window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Window to [0, 1]: LINEAR (C.11.2.1.2.1), LINEAR_EXACT (C.11.2.1.3.2) or SIGMOID (C.11.2.1.3.1)."""
    x = np.asarray(x, dtype=np.float32)
    if function == "SIGMOID":
        with np.errstate(over="ignore"):  # exp overflow far below the centre is the intended limit 0
            return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width == 1.0:  # the linear ramp degenerates to a threshold at c - 0.5
        return (x > center - 0.5).astype(np.float32)
    # y = (x - (c - 0.5)) / (w - 1) + 0.5, clamped to [ymin, ymax]; one multiply-add, clipped in place
    scale = 1.0 / (width - 1.0)
    y = x * np.float32(scale)
    y += np.float32(0.5 - (center - 0.5) * scale)
    return np.clip(y, 0.0, 1.0, out=y)


def apply_voi_lut_item(x: np.ndarray, item: Dataset, *, signed: bool, little_endian: bool = True) -> np.ndarray:
    """Map values through one VOI LUT (C.11.2.1.1): out-of-range inputs take the first/last entry; scaled to [0, 1]."""
    entries, first, depth = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536  # 0 encodes 2**16 entries
    if signed and first >= 32768:  # descriptor read as US although it is SS for signed pixel data
        first -= 65536
    raw = item.LUTData
    if isinstance(raw, (bytes, bytearray)):
        lut = np.frombuffer(raw, dtype="<u2" if little_endian else ">u2")
    else:
        lut = np.atleast_1d(np.asarray(raw))
    if lut.size < entries:
        raise ValueError(f"VOI LUT has {lut.size} entries, descriptor says {entries}")
    lut = lut[:entries].astype(np.float32)
    index = np.clip(np.rint(x) - first, 0, entries - 1).astype(np.intp)
    # Vendors often declare 16 bits for 12-bit LUT data; scale by the bits the data actually uses.
    used_bits = min(max(depth, 1), max(8, int(lut.max()).bit_length()))
    return np.clip(lut[index] / np.float32((1 << used_bits) - 1), 0.0, 1.0)


def minmax(x: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant image has no contrast to scale and is refused (it would be silently black)."""
    low, high = float(x.min()), float(x.max())
    if high <= low:
        raise ValueError("constant pixel values and no window: cannot min-max scale")
    return ((x - np.float32(low)) * np.float32(1.0 / (high - low))).astype(np.float32)


def _first_number(value: object, default: float | None) -> float | None:
    """First value of a possibly multi-valued DS/IS element; empty -> default."""
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple, MultiValue)):
        if len(value) == 0:
            return default
        value = value[0]
    return float(value)


def _little_endian(ds: Dataset) -> bool:
    little = ds.original_encoding[1]
    return True if little is None else bool(little)
