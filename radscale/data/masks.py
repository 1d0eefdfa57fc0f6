"""Device masks (uint8 bitfields, bit k = DEVICE_TYPES[k]) mapped through the eval images' geometry.

An eval image is decoded with its short side resized to the encoder input size S and centre-cropped to S x S
(`images.decode_bytes`, `train.batches.square_uint8`); its mask goes through the same resize and crop so pixel
(i, j) of both covers the same anatomy. Resampling a bitfield as numbers would mix bits, and nearest-neighbour
would drop 1-pixel lines when downscaling (a catheter on a 3000-px film is 3 px wide), so each bit is resized
on its own with a box (area) filter and kept where its coverage is > 0: a line that touches an output pixel
stays in it, at the price of widening it to about one output pixel.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import Image

from radscale.data.images import ImageDecodeError, read_uri, target_size


def has_mask_uris(meta) -> bool:
    """Whether any eval row (a DataFrame) names a mask file: segmentation runs only then."""
    return "mask_uri" in meta.columns and bool(meta["mask_uri"].notna().any())


def square_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """uint8 bitfield [H, W] -> [size, size]: short side to `size` (area per bit, > 0 kept), centre crop."""
    m = np.asarray(mask)
    if m.ndim != 2 or not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"square_mask: expected an integer bitfield [H, W], got {m.dtype} {m.shape}")
    h, w = m.shape
    th, tw = target_size(h, w, size, upscale=True)
    out = np.zeros((th, tw), np.uint8)
    for k in range(8):
        bit = ((m >> k) & 1).astype(bool)
        if not bit.any():
            continue
        if (th, tw) != (h, w):
            coverage = Image.fromarray(bit.astype(np.float32)).resize((tw, th), Image.Resampling.BOX)
            bit = np.asarray(coverage) > 0
        out |= bit.astype(np.uint8) << k
    top, left = (th - size) // 2, (tw - size) // 2     # the offsets square_uint8 uses for the image
    return out[top:top + size, left:left + size]


def read_mask(uri: str) -> np.ndarray:
    """The bitfield PNG at `uri` as uint8 [H, W]; an unreadable file or a value above 255 is an ImageDecodeError."""
    try:
        with Image.open(io.BytesIO(read_uri(uri))) as img:
            m = np.asarray(img)
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageDecodeError(uri, f"mask decoder failed: {type(e).__name__}") from None
    integer = np.issubdtype(m.dtype, np.integer) or m.dtype == bool
    if m.ndim != 2 or not integer or m.max(initial=0) > 255:
        raise ImageDecodeError(uri, f"mask is not a uint8 bitfield (dtype {m.dtype}, shape {m.shape})")
    return m.astype(np.uint8)


def load_square_masks(uris: Sequence[str | None], size: int) -> tuple[np.ndarray, list[int]]:
    """Masks [N, size, size] uint8 for `uris` (None = empty mask) and the indices whose file failed (left empty)."""
    out = np.zeros((len(uris), size, size), np.uint8)
    failed = []
    for i, uri in enumerate(uris):
        if uri is None or (isinstance(uri, float) and np.isnan(uri)):
            continue
        try:
            out[i] = square_mask(read_mask(str(uri)), size)
        except ImageDecodeError:
            failed.append(i)
    return out, failed
