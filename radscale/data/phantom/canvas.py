"""The drawing surface of a phantom image: the view (cm <-> pixels), the mutable scene, and soft-edged primitives.

All shapes are evaluated in patient centimetres on the pixel grid (or on a small window of it) so one 256 px
image costs a few milliseconds; edges are linear ramps a few millimetres wide, i.e. anti-aliased.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from radscale.data.phantom.anatomy import Anatomy


@dataclass(frozen=True)
class View:
    """Affine map between patient centimetres and pixels (field of view, centre offset, in-plane rotation)."""

    size: int
    fov_cm: float
    center_x: float
    center_y: float
    angle_deg: float

    @property
    def cm_per_px(self) -> float:
        return self.fov_cm / self.size

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Patient coordinates (X, Y) in cm of every pixel centre, float32 arrays of shape (size, size)."""
        u = (np.arange(self.size, dtype=np.float32) + 0.5 - self.size / 2) * np.float32(self.cm_per_px)
        c, s = np.float32(np.cos(np.radians(self.angle_deg))), np.float32(np.sin(np.radians(self.angle_deg)))
        X = (c * u)[None, :] + (s * u)[:, None] + np.float32(self.center_x)
        Y = (-s * u)[None, :] + (c * u)[:, None] + np.float32(self.center_y)
        return X, Y

    def to_pixels(self, pts: np.ndarray) -> np.ndarray:
        """(N, 2) cm points -> (N, 2) PIL pixel coordinates (column, row); pixel i is centred at i."""
        c, s = np.cos(np.radians(self.angle_deg)), np.sin(np.radians(self.angle_deg))
        dx, dy = pts[:, 0] - self.center_x, pts[:, 1] - self.center_y
        u = (c * dx - s * dy) / self.cm_per_px + self.size / 2 - 0.5
        v = (s * dx + c * dy) / self.cm_per_px + self.size / 2 - 0.5
        return np.stack([u, v], axis=1)

    def window(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice] | None:
        """Pixel slices covering the cm rectangle [x0, x1] x [y0, y1]; None when it misses the image."""
        px = self.to_pixels(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64))
        c0, r0 = np.floor(px.min(axis=0)).astype(int) - 1
        c1, r1 = np.ceil(px.max(axis=0)).astype(int) + 2
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, self.size), min(r1, self.size)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)


@dataclass
class Scene:
    """Mutable render state of one image: attenuation plus the layers findings need to edit."""

    view: View
    X: np.ndarray
    Y: np.ndarray
    att: np.ndarray
    lung: np.ndarray  # soft aerated-lung mask (0..1)
    lung_dark: np.ndarray  # how much aerated lung darkened att (fluid or collapse adds it back)
    markings: np.ndarray  # lung-marking attenuation already inside att (so findings can remove it)
    anatomy: Anatomy


def soft_step(t: np.ndarray, width: float) -> np.ndarray:
    """0 -> 1 ramp of the given width (cm) centred at t = 0: a cheap anti-aliased edge."""
    r = t * np.float32(1.0 / width)
    r += np.float32(0.5)
    return np.clip(r, 0.0, 1.0, out=r)


def smooth_noise(rng: np.random.Generator, size: int | tuple[int, int], cells: int) -> np.ndarray:
    """Zero-mean, unit-ish variance noise with about `cells` blobs across the longer side (bicubic upsampling)."""
    h, w = (size, size) if isinstance(size, int) else size
    ch, cw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    small = rng.standard_normal((ch, cw), dtype=np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize((w, h), Image.Resampling.BICUBIC))


def segment_distance(X: np.ndarray, Y: np.ndarray, p: tuple[float, float], q: tuple[float, float]) -> np.ndarray:
    """Distance (cm) from each grid point to the segment p-q."""
    dx, dy = q[0] - p[0], q[1] - p[1]
    t = np.clip(((X - p[0]) * dx + (Y - p[1]) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    return np.hypot(X - (p[0] + t * dx), Y - (p[1] + t * dy))


def add_ellipse(s: Scene, cx: float, cy: float, rx: float, ry: float, amp: float, edge: float = 0.5,
                within: np.ndarray | None = None, patchy: np.random.Generator | None = None) -> None:
    """Add `amp` inside a soft-edged ellipse (edge width in cm), optionally weighted by a full-size layer and
    broken up by smooth noise (`patchy`: the generator of that noise) for airspace disease."""
    w = s.view.window(cx - rx - edge, cy - ry - edge, cx + rx + edge, cy + ry + edge)
    if w is None:
        return
    X, Y = s.X[w], s.Y[w]
    r = np.sqrt(((X - np.float32(cx)) * np.float32(1 / rx)) ** 2 + ((Y - np.float32(cy)) * np.float32(1 / ry)) ** 2)
    v = np.float32(amp) * soft_step(1.0 - r, edge / max(rx, ry))
    if patchy is not None:
        cells = max(3, round(max(X.shape) * s.view.cm_per_px / 1.2))  # ~1.2 cm blotches
        v *= np.clip(np.float32(0.75) + np.float32(0.45) * smooth_noise(patchy, X.shape, cells), 0.35, 1.2)
    s.att[w] += v if within is None else v * within[w]


def add_capsule(s: Scene, p: tuple[float, float], q: tuple[float, float], radius: float, amp: float,
                edge: float = 0.3, within: np.ndarray | None = None) -> None:
    """Add `amp` within `radius` cm of the segment p-q (a rod: clavicle, bronchus, plate atelectasis)."""
    pad = radius + edge
    w = s.view.window(min(p[0], q[0]) - pad, min(p[1], q[1]) - pad, max(p[0], q[0]) + pad, max(p[1], q[1]) + pad)
    if w is None:
        return
    d = segment_distance(s.X[w], s.Y[w], p, q)
    v = np.float32(amp) * soft_step(np.float32(radius) - d, edge)
    s.att[w] += v if within is None else v * within[w]
