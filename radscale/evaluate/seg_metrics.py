"""Overlap and centreline metrics for thin structures (lines and tubes): Dice and clDice.

clDice (Shit et al., CVPR 2021, eq. 1-3) scores topology rather than volume: Tprec = |S(P) ∩ G| / |S(P)|,
Tsens = |S(G) ∩ P| / |S(G)|, clDice = 2·Tprec·Tsens / (Tprec + Tsens), with S(.) the skeleton. Each unit of
centreline length counts the same whatever the tube's width, so missing a thin catheter costs far more clDice
than Dice when a thick tube fills most of the mask.

Skeletons come from scikit-image when it is installed, else from the Zhang-Suen thinning below (the 2-D
algorithm scikit-image also uses); both keep a connected, one-pixel-wide centreline inside the shape.
"""
from __future__ import annotations

import numpy as np

try:  # optional: the project does not depend on scikit-image
    from skimage.morphology import skeletonize as _sk_skeletonize
except ImportError:  # pragma: no cover - depends on the environment
    _sk_skeletonize = None


def _thinning_pass(x: np.ndarray, first: bool) -> np.ndarray:
    """One Zhang-Suen sub-iteration on zero-padded [M, H+2, W+2] bool images, in place; which images changed."""
    c = x[..., 1:-1, 1:-1]
    # Neighbours P2..P9 clockwise from north (Zhang & Suen, CACM 1984, fig. 1).
    p = [x[..., :-2, 1:-1], x[..., :-2, 2:], x[..., 1:-1, 2:], x[..., 2:, 2:],
         x[..., 2:, 1:-1], x[..., 2:, :-2], x[..., 1:-1, :-2], x[..., :-2, :-2]]
    b = sum(q.astype(np.uint8) for q in p)                                # B(P1): foreground neighbours
    a = sum((~p[i] & p[(i + 1) % 8]).astype(np.uint8) for i in range(8))  # A(P1): 0->1 transitions
    p2, _, p4, _, p6, _, p8, _ = p
    if first:
        keep = (p2 & p4 & p6) | (p4 & p6 & p8)
    else:
        keep = (p2 & p4 & p8) | (p2 & p6 & p8)
    remove = c & (b >= 2) & (b <= 6) & (a == 1) & ~keep
    c &= ~remove
    return remove.any(axis=(-2, -1))


def zhang_suen_skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a bool mask [..., H, W] (all leading images at once); pure numpy.

    Images are thinned independently, so each leaves the working set once a full iteration changes nothing
    (empty images never enter): the cost follows each image's own thickness, not the thickest in the batch."""
    m = np.asarray(mask, dtype=bool)
    x = np.pad(m.reshape(-1, *m.shape[-2:]), [(0, 0), (1, 1), (1, 1)])
    active = np.flatnonzero(x.any(axis=(-2, -1)))
    while len(active):
        sub = x[active]
        changed = _thinning_pass(sub, True)
        changed |= _thinning_pass(sub, False)
        x[active] = sub
        active = active[changed]
    return x[:, 1:-1, 1:-1].reshape(m.shape).copy()


def skeletonize(mask: np.ndarray) -> np.ndarray:
    """Skeleton of each 2-D image of a bool mask [..., H, W].

    Thinning can erase a tiny blob (a 2x2 square) completely; such a non-empty image keeps its own pixels as
    skeleton so clDice stays defined and a small correct detection is not scored as a miss.
    """
    m = np.asarray(mask, dtype=bool)
    if _sk_skeletonize is not None:
        flat = m.reshape(-1, *m.shape[-2:])
        skel = np.stack([_sk_skeletonize(im) for im in flat]).reshape(m.shape) if len(flat) else m.copy()
    else:
        skel = zhang_suen_skeleton(m)
    lost = m.any(axis=(-2, -1)) & ~skel.any(axis=(-2, -1))
    skel[lost] = m[lost]
    return skel


def dice_scores(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Dice per image [...] of bool masks [..., H, W]; NaN where the ground truth is empty (no structure)."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    inter = (pred & gt).sum(axis=(-2, -1))
    size_p, size_g = pred.sum(axis=(-2, -1)), gt.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 2.0 * inter / (size_p + size_g)
    return np.where(size_g > 0, out, np.nan)


def cldice_scores(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """clDice per image [...] of bool masks [..., H, W]; NaN where the ground truth is empty, 0 for an empty
    prediction of a present structure. Skeletons are computed only where the ground truth is present."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    present = gt.any(axis=(-2, -1))
    out = np.full(present.shape, np.nan)
    if not present.any():
        return out
    p, g = pred[present], gt[present]                                     # [M, H, W]
    s_p, s_g = skeletonize(p), skeletonize(g)
    n_sp, n_sg = s_p.sum(axis=(-2, -1)), s_g.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        tprec = np.where(n_sp > 0, (s_p & g).sum(axis=(-2, -1)) / n_sp, 0.0)
        tsens = np.where(n_sg > 0, (s_g & p).sum(axis=(-2, -1)) / n_sg, 0.0)
        out[present] = np.where(tprec + tsens > 0, 2 * tprec * tsens / (tprec + tsens), 0.0)
    return out
