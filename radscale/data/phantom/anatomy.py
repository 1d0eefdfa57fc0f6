"""Phantom chest anatomy: patient geometry in centimetres and its rendering to an attenuation map.

Coordinates are radiographic: x grows to the image right (the patient's *left*), y grows downwards (caudal),
origin at the centre of the default field of view. Brightness is "attenuation": bone and soft tissue bright,
aerated lung and air dark. Body, lungs, heart, mediastinum, diaphragm domes, ribs, clavicles, spine, trachea,
hila and lung markings are closed-form soft shapes (see canvas.py).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from radscale.data.phantom.canvas import Scene, View, add_capsule, add_ellipse, smooth_noise, soft_step

# Attenuation levels of the composed map (before the scanner's intensity curve).
TISSUE = 0.62
AIR = 0.03
LUNG_DARKNESS = 0.36
HEART_TILT = np.radians(30.0)
HEART_ASPECT = 0.72


@dataclass(frozen=True)
class Anatomy:
    """One patient's chest; studies of the same patient reuse it with small positioning changes."""

    body_half_width: float
    thorax_half_width: float
    mid_x: float
    apex_y: float
    widest_y: float
    cp_right_y: float  # costophrenic angle (lowest lung point) per side
    cp_left_y: float
    dome_rise: float  # how far each hemidiaphragm dome rises above its costophrenic angle
    heart_cx: float
    heart_cy: float
    heart_half_width: float
    mediastinum_half_width: float
    carina_y: float
    rib_spacing: float
    rib_phase: float
    rib_curve: float
    lung_darkness: float
    marking_gain: float
    texture_seed: int

    def cp_y(self, side: str) -> float:
        return self.cp_right_y if side == "right" else self.cp_left_y

    def dome_top(self, side: str) -> float:
        return self.cp_y(side) - self.dome_rise

    def lateral_x(self, side: str, y: float) -> float:
        """Lateral lung border at height y (cm), with its sign."""
        t = min(max((y - self.apex_y) / (self.widest_y - self.apex_y), 0.0), 1.0)
        w = self.thorax_half_width * np.sqrt(t * (2 - t)) + 0.04 * max(y - self.widest_y, 0.0)
        return self.mid_x + (-w if side == "right" else w)

    def lung_point(self, side: str, fx: float, fy: float) -> tuple[float, float]:
        """A point inside one lung: fy 0 apex .. 1 costophrenic level, fx 0 medial .. 1 lateral."""
        y = self.apex_y + 1.5 + fy * (self.dome_top(side) - self.apex_y - 1.5)
        med = self.mediastinum_half_width + 1.0
        lat = abs(self.lateral_x(side, y) - self.mid_x) - 1.0
        x = med + fx * max(lat - med, 0.5)
        return (self.mid_x - x if side == "right" else self.mid_x + x), y


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """A random adult chest; ranges are loose adult proportions at a 40 cm field of view."""
    tw = rng.uniform(12.8, 15.2)
    cp_r = rng.uniform(9.5, 11.5)
    return Anatomy(
        body_half_width=tw + rng.uniform(1.8, 3.2),
        thorax_half_width=tw,
        mid_x=rng.normal(0.0, 0.4),
        apex_y=rng.uniform(-15.0, -13.0),
        widest_y=rng.uniform(0.0, 3.0),
        cp_right_y=cp_r,
        cp_left_y=cp_r + rng.uniform(0.6, 1.8),
        dome_rise=rng.uniform(2.8, 4.2),
        heart_cx=rng.uniform(1.4, 2.4),
        heart_cy=cp_r - rng.uniform(4.2, 5.2),
        # normal cardiothoracic ratio 0.40-0.50 (heart width / thorax width)
        heart_half_width=tw * rng.uniform(0.41, 0.49),
        mediastinum_half_width=rng.uniform(2.6, 3.2),
        carina_y=rng.uniform(-6.5, -4.5),
        rib_spacing=rng.uniform(2.2, 2.7),
        rib_phase=rng.uniform(0.0, 1.0),
        rib_curve=rng.uniform(0.024, 0.034),
        lung_darkness=LUNG_DARKNESS * rng.uniform(0.9, 1.1),
        marking_gain=rng.uniform(0.8, 1.2),
        texture_seed=int(rng.integers(2**31)),
    )


def vary_anatomy(a: Anatomy, rng: np.random.Generator) -> Anatomy:
    """Study-level change of the same patient: depth of inspiration moves the domes."""
    d = rng.normal(0.0, 0.5)
    return replace(a, cp_right_y=a.cp_right_y + d, cp_left_y=a.cp_left_y + d, heart_cy=a.heart_cy + 0.5 * d)


def dome_y(a: Anatomy, X: np.ndarray) -> np.ndarray:
    """Hemidiaphragm height under each x: a parabola per side peaking mid-hemithorax."""
    right = X < a.mid_x
    ax = np.abs(X - a.mid_x)
    cp = np.where(right, np.float32(a.cp_right_y), np.float32(a.cp_left_y))
    peak = 0.45 * a.thorax_half_width
    t = (ax - peak) * np.float32(1.0 / (0.62 * a.thorax_half_width))
    return cp - np.float32(a.dome_rise) * np.clip(1.0 - t * t, 0.0, 1.0)


def lung_mask(a: Anatomy, X: np.ndarray, Y: np.ndarray, inset: float = 0.0) -> np.ndarray:
    """Both lungs (soft), optionally shrunk by `inset` cm from the chest wall and apex (pneumothorax edge)."""
    ax = np.abs(X - np.float32(a.mid_x))
    t = np.clip((Y - np.float32(a.apex_y + inset)) * np.float32(1.0 / (a.widest_y - a.apex_y)), 0.0, 1.0)
    lat = np.float32(a.thorax_half_width - inset) * np.sqrt(t * (2.0 - t))
    lat += np.float32(0.04) * np.maximum(Y - np.float32(a.widest_y), 0.0)
    width = 0.35 if inset == 0.0 else 0.2
    m = soft_step(lat - ax, width) * soft_step(dome_y(a, X) - Y, width)
    m *= soft_step(ax - np.float32(a.mediastinum_half_width), 0.5)
    m *= 1.0 - heart_mask(a, X, Y)
    # aortic knob bulges into the left upper lung
    k = (X - np.float32(a.mid_x + 2.6)) ** 2 + (Y - np.float32(a.carina_y - 1.6)) ** 2
    m *= soft_step(np.sqrt(k) - np.float32(1.7), 0.4)
    return m


def heart_axes(a: Anatomy) -> tuple[float, float, float, float]:
    """Heart as an ellipse tilted down to the patient's left: (centre x, centre y, major, minor) in cm.

    `heart_half_width` is the half horizontal extent, so 2 * heart_half_width / (2 * thorax_half_width) is the
    cardiothoracic ratio.
    """
    c, s = np.cos(HEART_TILT), np.sin(HEART_TILT)
    major = a.heart_half_width / np.sqrt(c * c + (HEART_ASPECT * s) ** 2)
    return a.heart_cx, a.heart_cy, major, HEART_ASPECT * major


def heart_mask(a: Anatomy, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    cx, cy, major, minor = heart_axes(a)
    c, s = np.float32(np.cos(HEART_TILT)), np.float32(np.sin(HEART_TILT))
    dx, dy = X - np.float32(cx), Y - np.float32(cy)
    u = (c * dx + s * dy) * np.float32(1 / major)
    v = (c * dy - s * dx) * np.float32(1 / minor)
    return np.clip((1.0 - np.sqrt(u * u + v * v)) * np.float32(major / 0.7) + 0.5, 0.0, 1.0)


def render_anatomy(a: Anatomy, view: View) -> Scene:
    """Body, lungs, heart, mediastinum, diaphragm, ribs, clavicles, spine, trachea and lung markings."""
    X, Y = view.grid()
    mid = np.float32(a.mid_x)
    ax = np.abs(X - mid)
    # body outline, wider at the shoulders; soft tissue thins towards the skin and thickens over the abdomen
    bw = np.clip(-Y - np.float32(10.0), 0.0, 7.0)
    bw += np.float32(a.body_half_width)
    depth = np.sqrt(np.clip(1.0 - (ax / bw) ** 2, 0.0, 1.0))
    depth *= np.float32(0.4)
    depth += np.float32(0.6) + np.float32(0.012) * np.clip(Y, -8.0, 12.0)
    att = soft_step(bw - ax, 0.8)
    att *= depth
    att *= np.float32(TISSUE - AIR)
    att += np.float32(AIR)
    # spine with vertebral bodies and disc spaces
    sw = view.window(a.mid_x - 2.2, -1e3, a.mid_x + 2.2, 1e3)
    if sw is not None:
        spine = soft_step(np.float32(1.7) - ax[sw], 0.4)
        att[sw] += spine * (np.float32(0.05) + np.float32(0.018) * np.cos(Y[sw] * np.float32(2 * np.pi / 2.5)))
    lung = np.zeros_like(att)
    markings = np.zeros_like(att)
    lung_dark = np.zeros_like(att)
    tw = a.thorax_half_width
    w = view.window(a.mid_x - tw - 2.2, a.apex_y - 2.0, a.mid_x + tw + 2.2, max(a.cp_right_y, a.cp_left_y) + 1.0)
    if w is not None:  # everything inside the thorax is computed on its bounding window only
        Xw, Yw, axw = X[w], Y[w], ax[w]
        lw = lung_mask(a, Xw, Yw)
        lung[w] = lw
        # lung markings: ridges of band-limited noise look like vessels; stronger near the hila
        tex = np.random.default_rng(a.texture_seed)
        ridges = np.abs(smooth_noise(tex, Xw.shape, max(8, round(Xw.shape[1] * view.cm_per_px / 4.4))))
        ridges = np.clip(1.0 - ridges * 2.5, 0.0, 1.0)
        ridges *= np.clip(1.0 - axw * np.float32(1 / (tw + 2)), 0.15, 1.0)
        ridges *= lw * np.float32(0.075 * a.marking_gain)
        markings[w] = ridges
        # aerated lung is darkest mid-laterally; bases and apices carry more overlying tissue
        zone = np.clip(1.0 - np.abs(Yw - np.float32(a.widest_y - 3.0)) * np.float32(1 / 12), 0.0, 1.0)
        zone *= np.float32(0.2 * a.lung_darkness)
        zone += np.float32(0.8 * a.lung_darkness)
        zone *= lw
        lung_dark[w] = zone
        # posterior ribs: bands of a warped periodic coordinate, rising then falling laterally
        phase = Yw + np.float32(0.3) * axw - np.float32(a.rib_curve) * axw * axw
        phase *= np.float32(2 * np.pi / a.rib_spacing)
        ribs = np.clip((np.cos(phase + np.float32(a.rib_phase * 2 * np.pi)) - 0.45) * 3.0, 0.0, 1.0)
        ribs *= soft_step(np.float32(tw + 1.2) - axw, 1.0)
        ribs *= soft_step(Yw - np.float32(a.apex_y - 1.0), 1.0)
        ribs *= soft_step(np.float32(a.cp_left_y - 1.0) - Yw, 2.0)
        ribs *= soft_step(axw - 1.2, 0.8)
        att[w] += np.float32(0.05) * ribs + ridges - zone
    scene = Scene(view=view, X=X, Y=Y, att=att, lung=lung, lung_dark=lung_dark, markings=markings, anatomy=a)
    _draw_local_structures(scene)
    return scene


def _draw_local_structures(s: Scene) -> None:
    """Small structures drawn on windows: heart density, aortic knob, trachea, clavicles, gastric bubble."""
    a = s.anatomy
    hw = a.heart_half_width
    w = s.view.window(a.heart_cx - hw - 1, a.heart_cy - hw - 1, a.heart_cx + hw + 1, a.heart_cy + hw + 1)
    if w is not None:
        X, Y = s.X[w], s.Y[w]
        s.att[w] += np.float32(0.05) * heart_mask(a, X, Y) * soft_step(dome_y(a, X) - Y, 1.0)
    add_ellipse(s, a.mid_x + 2.6, a.carina_y - 1.6, 1.6, 1.5, 0.04, edge=0.4)
    for sign in (-1.0, 1.0):  # hila: pulmonary arteries and veins
        add_ellipse(s, a.mid_x + sign * 4.3, a.carina_y + 3.0, 1.6, 2.6, 0.09, edge=1.2, within=s.lung)
    # trachea and main bronchi: air columns
    w = s.view.window(a.mid_x - 1.2, -25.0, a.mid_x + 1.2, a.carina_y)
    if w is not None:
        X, Y = s.X[w], s.Y[w]
        s.att[w] -= np.float32(0.11) * soft_step(np.float32(0.8) - np.abs(X - np.float32(a.mid_x)), 0.3)
    c = (a.mid_x, a.carina_y)
    for q in ((a.mid_x - 3.0, a.carina_y + 2.2), (a.mid_x + 3.4, a.carina_y + 2.8)):
        add_capsule(s, c, q, 0.6, -0.09, edge=0.3)
    for sign in (-1.0, 1.0):
        p = (a.mid_x + sign * 1.8, a.apex_y + 1.2)
        q = (a.mid_x + sign * (a.thorax_half_width - 1.0), a.apex_y - 1.6)
        add_capsule(s, p, q, 0.55, 0.09, edge=0.3)
    gx = a.mid_x + 0.45 * a.thorax_half_width
    add_ellipse(s, gx, a.cp_left_y + 0.6, 2.6, 1.5, -0.12, edge=0.8)
