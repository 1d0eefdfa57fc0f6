"""Minimal grayscale PNG writer (8- or 16-bit), about twice as fast as Pillow's encoder for phantom images.

Pillow tries every PNG row filter on every row; noisy radiographs compress about as well with the "Up" filter
alone, and the encode is then one vectorised difference plus one zlib call. Output is a standard PNG
(RFC 2083: IHDR, one IDAT, IEND), deterministic for a given array.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels: np.ndarray, level: int = 1) -> bytes:
    """PNG bytes of a 2-D uint8 or uint16 array."""
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_png: need a 2-D uint8/uint16 array, got {pixels.dtype} {pixels.shape}")
    h, w = pixels.shape
    depth = 8 * pixels.dtype.itemsize
    rows = pixels.astype(">u2", copy=False).view(np.uint8).reshape(h, -1) if depth == 16 else pixels
    filtered = np.empty((h, rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # filter type "Up": each byte minus the byte above it (mod 256)
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    header = struct.pack(">IIBBBBB", w, h, depth, 0, 0, 0, 0)  # grayscale, deflate, no interlace
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(filtered.tobytes(), level)) \
        + _chunk(b"IEND", b"")


def write_png(path: Path, pixels: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(encode_png(pixels))
