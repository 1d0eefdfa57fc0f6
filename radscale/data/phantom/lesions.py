"""Drawing findings onto a rendered phantom chest.

Each finding is a pattern chosen to survive downsampling to 64 px (the CPU demo models' input): effusion fills
the costophrenic angle with a meniscus, cardiomegaly widens the heart past half the thorax, a pneumothorax is an
apical/lateral rim without lung markings bounded by a pleural line, and so on. Some findings change the anatomy
itself (heart size, diaphragm height), the rest add attenuation on small windows of the image.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from radscale.data.phantom.anatomy import Anatomy, lung_mask
from radscale.data.phantom.canvas import Scene, add_capsule, add_ellipse, smooth_noise, soft_step
from radscale.data.phantom.findings import FindingState

EFFUSION_HEIGHT = {"small": 4.5, "moderate": 7.0, "large": 10.0}  # cm above the costophrenic angle
PNEUMOTHORAX_GAP = {"small": 1.6, "moderate": 2.8, "large": 4.2}  # cm between chest wall and lung edge
CARDIOTHORACIC = {"small": 0.57, "moderate": 0.62, "large": 0.68}  # cardiomegaly: CTR > 0.5
UNCERTAIN_CTR = 0.53


def _sides(state: FindingState) -> tuple[str, ...]:
    return ("right", "left") if state.side in ("bilateral", "") else (state.side,)


def adjust_anatomy(a: Anatomy, findings: dict[str, FindingState]) -> Anatomy:
    """Findings that are shape changes: heart size, mediastinal width, hyperinflation, volume loss."""
    f = findings
    if f["cardiomegaly"].strength > 0:
        s = f["cardiomegaly"]
        ctr = CARDIOTHORACIC[s.severity] if s.strength >= 1 else UNCERTAIN_CTR
        a = replace(a, heart_half_width=a.thorax_half_width * ctr, heart_cy=a.heart_cy + 0.6)
    if f["enlarged_cardiomediastinum"].strength > 0:
        widen = 1 + 0.55 * f["enlarged_cardiomediastinum"].strength
        a = replace(a, mediastinum_half_width=a.mediastinum_half_width * widen)
    if f["emphysema"].strength > 0:
        k = f["emphysema"].strength
        a = replace(a, cp_right_y=a.cp_right_y + 2.2 * k, cp_left_y=a.cp_left_y + 2.2 * k,
                    dome_rise=a.dome_rise * (1 - 0.55 * k), lung_darkness=a.lung_darkness * (1 + 0.15 * k),
                    marking_gain=a.marking_gain * (1 - 0.5 * k), heart_half_width=a.heart_half_width * (1 - 0.15 * k),
                    heart_cy=a.heart_cy + 2.0 * k)  # the narrow heart hangs lower with the flattened diaphragm
    lift = {"right": 0.0, "left": 0.0}  # volume loss raises the hemidiaphragm
    for name, cm in (("atelectasis", 1.6), ("fibrosis", 1.0)):
        s = f[name]
        for side in _sides(s) if s.strength > 0 else ():
            lift[side] += cm * s.strength
    return replace(a, cp_right_y=a.cp_right_y - lift["right"], cp_left_y=a.cp_left_y - lift["left"])


def draw_findings(scene: Scene, findings: dict[str, FindingState]) -> None:
    """Add every drawn finding (strength > 0) to the scene's attenuation, in a fixed order."""
    for name, draw in _DRAWERS:
        s = findings[name]
        if s.strength > 0:
            draw(scene, s)


def _side_window(scene: Scene, side: str, y0: float, y1: float) -> tuple[slice, slice] | None:
    a = scene.anatomy
    reach = a.thorax_half_width + 2.0
    lo, hi = (a.mid_x - reach, a.mid_x) if side == "right" else (a.mid_x, a.mid_x + reach)
    return scene.view.window(lo, y0, hi, y1)


def _effusion(s: Scene, f: FindingState) -> None:
    a = s.anatomy
    for side in _sides(f):
        h = EFFUSION_HEIGHT[f.severity] * (1.0 if f.strength >= 1 else 0.6)
        cp = a.cp_y(side)
        w = _side_window(s, side, cp - h - 2.0, cp + 1.0)
        if w is None:
            continue
        X, Y = s.X[w], s.Y[w]
        # meniscus: fluid climbs higher along the lateral chest wall
        t = np.clip((np.abs(X - a.mid_x) - 2.0) / (a.thorax_half_width - 2.0), 0.0, 1.0)
        top = np.float32(cp) - np.float32(h) * (0.45 + 0.55 * t * t)
        side_mask = (X < a.mid_x) if side == "right" else (X >= a.mid_x)
        fluid = soft_step(Y - top, 1.2) * (np.float32(f.strength) * side_mask)
        s.att[w] += fluid * (s.lung_dark[w] - s.markings[w] + np.float32(0.03))


def _pneumothorax(s: Scene, f: FindingState) -> None:
    a = s.anatomy
    gap = PNEUMOTHORAX_GAP[f.severity] * (1.0 if f.strength >= 1 else 0.7)
    for side in _sides(f):
        w = _side_window(s, side, a.apex_y - 1.0, a.widest_y + 6.0)
        if w is None:
            continue
        X, Y = s.X[w], s.Y[w]
        side_mask = (X < a.mid_x) if side == "right" else (X >= a.mid_x)
        inner = lung_mask(a, X, Y, inset=gap)
        fade = soft_step(np.float32(a.widest_y + 3.0) - Y, 4.0)  # apicolateral, tapering towards the base
        k = np.float32(f.strength) * side_mask
        rim = np.clip(s.lung[w] - inner, 0.0, 1.0) * fade * k
        edge = inner * (1.0 - inner) * 4.0 * fade * k * (s.lung[w] > 0.5)
        # lucent rim without markings, the visceral pleural line, and a denser partly collapsed lung
        s.att[w] += -rim * (s.markings[w] + np.float32(0.1)) + np.float32(0.14) * edge + np.float32(0.06) * inner * k


def _blob(s: Scene, f: FindingState, amp: float, edge: float, side: str | None = None, fx: float | None = None,
          fy: float | None = None, r: float | None = None, aspect: float = 0.8,
          patchy: np.random.Generator | None = None) -> None:
    x, y = s.anatomy.lung_point(side or f.side, f.fx if fx is None else fx, f.fy if fy is None else fy)
    rad = f.size if r is None else r
    add_ellipse(s, x, y, rad, rad * aspect, amp * f.strength, edge=edge, within=s.lung, patchy=patchy)


def _consolidation(s: Scene, f: FindingState) -> None:
    # dense, lobar-sized, confined by the lung border, blotchy inside
    _blob(s, f, 0.30, 1.5, side=_sides(f)[0], r=f.size * 1.4, aspect=0.75, patchy=np.random.default_rng(f.seed))


def _opacity(s: Scene, f: FindingState) -> None:
    _blob(s, f, 0.2, 3.0, side=_sides(f)[0], patchy=np.random.default_rng(f.seed))


def _pneumonia(s: Scene, f: FindingState) -> None:
    rng = np.random.default_rng(f.seed)
    for side in _sides(f):
        for _ in range(3):  # multifocal patchy airspace disease in the lower zone
            _blob(s, f, 0.2, 2.0, side=side, fx=rng.uniform(0.2, 0.8), fy=f.fy + rng.uniform(-0.2, 0.1),
                  r=rng.uniform(2.0, 3.0), patchy=rng)


def _atelectasis(s: Scene, f: FindingState) -> None:
    rng = np.random.default_rng(f.seed)
    for side in _sides(f):  # plate-like band across the lower zone
        p = s.anatomy.lung_point(side, 0.1, f.fy)
        q = s.anatomy.lung_point(side, 0.9, f.fy - rng.uniform(0.0, 0.1))
        add_capsule(s, p, q, 0.55, 0.24 * f.strength, edge=0.5, within=s.lung)


def _edema(s: Scene, f: FindingState) -> None:
    a = s.anatomy
    k = {"small": 0.75, "moderate": 1.0, "large": 1.25}[f.severity] * f.strength
    for sign in (-1.0, 1.0):  # bilateral perihilar ("bat-wing") haze
        add_ellipse(s, a.mid_x + sign * 5.0, a.carina_y + 4.5, 4.5, 6.0, 0.2 * k, edge=5.0, within=s.lung)


def _nodule(s: Scene, f: FindingState) -> None:
    _blob(s, f, 0.32, 0.3, side=_sides(f)[0], aspect=1.0)


def _mass(s: Scene, f: FindingState) -> None:
    side = _sides(f)[0]
    _blob(s, f, 0.30, 0.6, side=side, aspect=0.9)
    _blob(s, f, 0.12, 0.5, side=side, fx=min(f.fx + 0.12, 1.0), r=f.size * 0.6)  # lobulation


def _lesion(s: Scene, f: FindingState) -> None:
    side = _sides(f)[0]  # cavitary lesion: thick bright wall around an air-filled centre
    _blob(s, f, 0.30, 0.4, side=side, aspect=1.0)
    _blob(s, f, -0.34, 0.3, side=side, r=f.size * 0.5, aspect=1.0)


def _fibrosis(s: Scene, f: FindingState) -> None:
    a = s.anatomy
    w = s.view.window(a.mid_x - a.thorax_half_width - 1, a.widest_y - 4.0, a.mid_x + a.thorax_half_width + 1,
                      max(a.cp_right_y, a.cp_left_y) + 1.0)
    if w is None:
        return
    rng = np.random.default_rng(f.seed)
    n = smooth_noise(rng, s.view.size, max(12, s.view.size // 5))[w]
    net = np.clip(1.0 - np.abs(n) * 4.0, 0.0, 1.0)  # zero crossings of band-limited noise: a reticular net
    basal = soft_step(s.Y[w] - np.float32(a.widest_y), 5.0)
    s.att[w] += np.float32(0.11 * f.strength) * net * basal * s.lung[w]


def _hernia(s: Scene, f: FindingState) -> None:
    a = s.anatomy  # retrocardiac gas bubble with an air-fluid level
    cx, cy, rx, ry = a.mid_x + 1.2, a.dome_top("left") - 1.6, 2.3, 1.8
    w = s.view.window(cx - rx - 0.5, cy - ry - 0.5, cx + rx + 0.5, cy + ry + 0.5)
    if w is None:
        return
    X, Y = s.X[w], s.Y[w]
    r = np.sqrt(((X - np.float32(cx)) / np.float32(rx)) ** 2 + ((Y - np.float32(cy)) / np.float32(ry)) ** 2)
    inside = soft_step(1.0 - r, 0.15)
    fluid = soft_step(Y - np.float32(cy + 0.2), 0.1)
    s.att[w] += np.float32(f.strength) * inside * (np.float32(-0.2) * (1.0 - fluid) + np.float32(0.06) * fluid)


def _calcification(s: Scene, f: FindingState) -> None:
    rng = np.random.default_rng(f.seed)
    for side in _sides(f):
        for _ in range(int(rng.integers(2, 5))):
            x, y = s.anatomy.lung_point(side, rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9))
            add_ellipse(s, x, y, 0.35, 0.35, 0.5 * f.strength, edge=0.15)


def _pleural_thickening(s: Scene, f: FindingState) -> None:
    a = s.anatomy
    for side in _sides(f):
        w = _side_window(s, side, a.apex_y - 1.0, a.cp_y(side) + 1.0)
        if w is None:
            continue
        X, Y = s.X[w], s.Y[w]
        side_mask = (X < a.mid_x) if side == "right" else (X >= a.mid_x)
        rim = np.clip(s.lung[w] - lung_mask(a, X, Y, inset=1.3), 0.0, 1.0) * side_mask
        s.att[w] += np.float32(f.strength) * rim * (s.lung_dark[w] - s.markings[w] + np.float32(0.03))


def _fracture(s: Scene, f: FindingState) -> None:
    a = s.anatomy
    side = _sides(f)[0]
    x, y = a.lung_point(side, 0.92, f.fy)
    ax = abs(x - a.mid_x)  # snap to the centre of the nearest posterior rib (see render_anatomy)
    shift = -0.3 * ax + a.rib_curve * ax * ax
    k = np.round((y - shift) / a.rib_spacing + a.rib_phase)
    y = (k - a.rib_phase) * a.rib_spacing + shift
    add_capsule(s, (x - 0.15, y - 0.7), (x + 0.15, y + 0.7), 0.16, -0.12 * f.strength, edge=0.1)
    add_ellipse(s, x, y, 0.7, 0.55, 0.07 * f.strength, edge=0.4)  # callus


# Emphysema, cardiomegaly and an enlarged cardiomediastinum are pure shape changes (adjust_anatomy).
_DRAWERS = (
    ("edema", _edema), ("fibrosis", _fibrosis), ("lung_opacity", _opacity), ("pneumonia", _pneumonia),
    ("consolidation", _consolidation), ("atelectasis", _atelectasis), ("nodule", _nodule), ("mass", _mass),
    ("lung_lesion", _lesion), ("calcification", _calcification), ("hernia", _hernia),
    ("pleural_other", _pleural_thickening), ("fracture", _fracture), ("pneumothorax", _pneumothorax),
    ("pleural_effusion", _effusion),
)
