"""Paths of lines and tubes through the phantom anatomy, and their rasterisation into image + exact masks.

Each device is a smooth curve (Catmull-Rom through anatomical waypoints: trachea, oesophagus, jugular and
subclavian veins, SVC, right heart, pulmonary artery, pleural space) ending at the tip its label asks for.
The mask is exactly the set of pixels the line was drawn on; the image brightens those same pixels.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from radscale.data.phantom.anatomy import Anatomy, dome_y
from radscale.data.phantom.canvas import Scene, View
from radscale.data.phantom.devices import DeviceState, StudyDevices
from radscale.data.vocab import DEVICE_TYPES

WIDTH_CM = {"ett": 0.45, "ngt": 0.3, "cvc": 0.25, "swan_ganz": 0.3, "chest_tube": 0.65}
BRIGHTNESS = {"ett": 0.17, "ngt": 0.2, "cvc": 0.22, "swan_ganz": 0.22, "chest_tube": 0.18}


def catmull_rom(points: list[tuple[float, float]], step: float = 0.2) -> np.ndarray:
    """Dense polyline through the waypoints (uniform Catmull-Rom), about `step` cm between samples."""
    P = np.asarray(points, dtype=np.float64)
    P = np.vstack([P[:1], P, P[-1:]])
    out = [P[1:2]]
    for i in range(1, len(P) - 2):
        p0, p1, p2, p3 = P[i - 1], P[i], P[i + 1], P[i + 2]
        n = max(2, int(np.ceil(np.hypot(*(p2 - p1)) / step)))
        t = np.linspace(0.0, 1.0, n + 1)[1:, None]
        out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (3 * p1 - p0 - 3 * p2 + p3) * t**3))
    return np.vstack(out)


def _scalar_dome(a: Anatomy, x: float) -> float:
    return float(dome_y(a, np.array([x], dtype=np.float32))[0])


def _jitter(points: list[tuple[float, float]], rng: np.random.Generator, cm: float = 0.3) -> list[tuple[float, float]]:
    """Perturb interior waypoints (never the first or the tip) so no two lines are identical."""
    return [points[0]] + [(x + rng.normal(0, cm), y + rng.normal(0, cm)) for x, y in points[1:-1]] + [points[-1]]


def device_path(dev: DeviceState, a: Anatomy, view: View) -> np.ndarray:
    """(N, 2) cm polyline from outside the field of view (or the skin) to the device tip."""
    rng = np.random.default_rng(dev.seed)
    m, c = a.mid_x, a.carina_y
    top = view.center_y - 0.6 * view.fov_cm - 2.0
    bottom = view.center_y + 0.5 * view.fov_cm
    svc = m - a.mediastinum_half_width + 0.5
    if dev.kind == "ett":
        pts = [(m - 1.0, top), (m - 0.4, c - 11.0), (m, c - max(dev.depth, 1.0))]
        if dev.depth < 0:  # right main bronchus
            pts += [(m - 0.9, c + 0.8), (m - 1.7, c - 0.9 * dev.depth)]
        elif dev.depth < 1.0:
            pts[-1] = (m, c - dev.depth)
        return catmull_rom(_jitter(pts, rng, 0.15))
    if dev.kind == "ngt":
        return catmull_rom(_jitter(_ngt_points(dev, a, top, bottom, rng), rng, 0.15))
    if dev.kind == "cvc":
        return catmull_rom(_jitter(_cvc_points(dev, a, svc, top), rng, 0.15))
    if dev.kind == "swan_ganz":
        # jugular -> SVC -> right atrium -> right ventricle -> outflow tract -> main pulmonary artery
        pts = [(m - 3.6, top), (m - 3.3, c - 9.0), (svc - 0.3, c - 4.5), (svc, c + 3.0), (svc + 0.2, c + 6.3),
               (m + 1.8, c + 7.6), (m + 3.2, c + 5.0), (m + 2.4, c + 2.2)]
        pts.append((m - 4.0, c + 3.2) if dev.variant == "right_pa" else (m + 4.6, c + 1.0))
        return catmull_rom(_jitter(pts, rng, 0.15))
    s = -1.0 if dev.side == "right" else 1.0  # chest tube from the lateral wall up towards the apex
    tw = a.thorax_half_width
    pts = [(m + s * (tw + 3.5), a.widest_y + 5.0), (m + s * (tw - 0.6), a.widest_y + 3.0),
           (m + s * (tw - 1.6), a.apex_y + 6.0), (m + s * 0.55 * tw, a.apex_y + 2.5)]
    return catmull_rom(_jitter(pts, rng, 0.2))


def _ngt_points(dev: DeviceState, a: Anatomy, top: float, bottom: float, rng: np.random.Generator) -> list:
    m, c = a.mid_x, a.carina_y
    gej = (m + 2.6, _scalar_dome(a, m + 2.6) + 0.6)
    oesophagus = [(m - 0.6, top), (m + 0.1, c - 9.0), (m + 0.6, c), (m + 1.3, c + 6.0)]
    stomach_y = min(a.cp_left_y + 1.6, bottom - 1.5)
    if dev.variant == "airway":
        return [(m - 0.6, top), (m, c - 6.0), (m - 0.5, c + 0.5), (m - 3.0, c + 2.6),
                (m - 5.0, min(a.cp_right_y - 4.0, c + 9.0))]
    if dev.variant == "esophagus":
        return oesophagus[:3] + [(m + 0.8, c + rng.uniform(2.5, 5.0))]
    if dev.variant == "coiled":  # 1.5 turns of a loop in the mid oesophagus, tip pointing back up
        cx, cy, r = m + 0.9, c + 3.0, 1.2
        turn = [(cx + r * np.sin(t), cy + r - r * np.cos(t) - 0.3 * t) for t in np.linspace(0.3, 3 * np.pi, 14)]
        return oesophagus[:3] + turn
    if dev.variant == "junction":
        return oesophagus + [(gej[0] + 0.2, gej[1] + 0.6)]
    path = oesophagus + [gej, (m + 4.2, stomach_y - 0.2)]
    if dev.variant == "off_image":
        return path + [(m + 5.5, stomach_y + 1.5), (m + 4.0, bottom + 4.0)]
    return path + [(m + 0.45 * a.thorax_half_width + 1.0, stomach_y - 0.8)]


def _cvc_points(dev: DeviceState, a: Anatomy, svc: float, top: float) -> list:
    m, c, s = a.mid_x, a.carina_y, (-1.0 if dev.side == "right" else 1.0)
    if dev.route == "ij":
        access = [(m + s * 3.6, top), (m + s * 3.4, c - 9.0)]
    else:
        tw = a.thorax_half_width
        access = [(m + s * (tw + 1.0), a.apex_y + 0.3), (m + s * 8.0, a.apex_y + 2.0), (m + s * 4.2, c - 6.0)]
    if dev.variant == "jugular":  # subclavian line turned up into the ipsilateral jugular vein
        return access + [(m + s * 3.6, c - 6.5), (m + s * 3.7, c - 11.0)]
    confluence = [(m + s * 1.2, c - 5.0)] if s > 0 else []
    path = access + confluence + [(svc, c - 3.5)]
    if dev.variant == "contralateral":  # into the opposite brachiocephalic / subclavian vein
        return path[:-1] + [(m - s * 2.5, c - 5.2), (m - s * 6.0, c - 6.3)]
    tip = {"svc": (svc, c + 1.0 + 2.5 * ((dev.seed % 100) / 100)), "high": (svc, c - 1.8),
           "atrium": (svc - 0.3, c + 5.0), "deep_atrium": (a.heart_cx - a.heart_half_width + 2.5, c + 8.0)}
    return path + [tip[dev.variant]]


def draw_devices(scene: Scene, devices: StudyDevices) -> np.ndarray:
    """Draw every present device into the scene; returns the uint8 mask (bit k = DEVICE_TYPES[k])."""
    view = scene.view
    mask = np.zeros((view.size, view.size), dtype=np.uint8)
    for bit, kind in enumerate(DEVICE_TYPES):
        dev = devices.present.get(kind)
        if dev is None:
            continue
        layer = Image.new("L", (view.size, view.size), 0)
        px = view.to_pixels(device_path(dev, scene.anatomy, view))
        width = max(1, int(round(WIDTH_CM[kind] / view.cm_per_px)))
        ImageDraw.Draw(layer).line([tuple(p) for p in px.tolist()], fill=1, width=width, joint="curve")
        drawn = np.asarray(layer, dtype=np.uint8)
        scene.att += np.float32(BRIGHTNESS[kind]) * drawn
        mask |= drawn << bit
    return mask
