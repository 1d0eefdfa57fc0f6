"""Segmentation probe for lines and tubes on frozen patch tokens: a light head, Dice and clDice with CIs.

Tokens [N, P, D] are laid back on their patch grid (h, w); the head predicts one sigmoid map per device type
(multi-label: an ETT and an NG tube may overlap) at grid resolution or a little finer, upsampled bilinearly to
the mask. Masks are uint8 bitfields, bit k = DEVICE_TYPES[k] (radscale/data/vocab.py).

Loss = 1·BCE + 1·soft Dice (the unweighted sum nnU-Net uses, Isensee et al. 2021): BCE alone collapses to
"background" on 1-pixel-wide catheters, Dice alone is unstable on images without the structure. The soft Dice
is pooled over the batch per type and averaged over the types present in the batch.

Scoring convention: Dice/clDice of type k are averaged over the test images whose ground truth contains type
k; images without it are excluded from that type (their score is undefined, and false positives there are a
detection question, not a delineation one). Per-type rows report that image count as n_test.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from radscale.errors import RadscaleError
from radscale.evaluate.metrics import cluster_bootstrap
from radscale.evaluate.seg_metrics import cldice_scores, dice_scores

BCE_WEIGHT, DICE_WEIGHT = 1.0, 1.0


class LinearSegHead(nn.Module):
    """1x1 conv = one linear map per patch to K logits (the segmentation linear probe of DINOv2, Oquab 2023)."""

    def __init__(self, dim: int, n_types: int):
        super().__init__()
        self.proj = nn.Conv2d(dim, n_types, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class PyramidSegHead(nn.Module):
    """Light progressive-upsampling head (SETR-PUP, Zheng et al. 2021, two stages): [3x3 conv, GroupNorm, GELU,
    2x bilinear] twice, then 1x1 conv to K logits at 4x the patch grid, so thin lines are not limited to one
    patch width before the final upsampling."""

    def __init__(self, dim: int, n_types: int, hidden: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in in (dim, hidden):
            layers += [nn.Conv2d(c_in, hidden, 3, padding=1), nn.GroupNorm(8 if hidden % 8 == 0 else 1, hidden),
                       nn.GELU(), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(hidden, n_types, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


HEADS = {"linear": LinearSegHead, "pyramid": PyramidSegHead}


def unpack_masks(masks: np.ndarray, n_types: int) -> np.ndarray:
    """uint8 bitfields [N, H, W] -> bool [N, K, H, W] with channel k = bit k."""
    m = np.asarray(masks)
    if not np.issubdtype(m.dtype, np.integer) or m.ndim != 3:
        raise RadscaleError(f"segmentation masks: expected integer bitfields [N, H, W], got {m.dtype} {m.shape}")
    bits = np.arange(n_types, dtype=m.dtype).reshape(1, -1, 1, 1)
    return ((m[:, None] >> bits) & 1).astype(bool)


def seg_loss(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor | None = None) -> torch.Tensor:
    """BCE + soft Dice on logits/targets [B, K, H, W]; Dice per type pooled over the batch (module docstring).
    annotated [B, K] (None = all): the types each image's source draws; the others are left out of both terms,
    so a tube that a dataset never annotates (RANZCR: chest tubes) is not taught as background."""
    if annotated is None:
        annotated = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
    w = annotated.to(logits.dtype)[:, :, None, None].expand_as(logits)
    bce_map = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce = (bce_map * w).sum() / w.sum().clamp_min(1.0)
    p = torch.sigmoid(logits) * w
    target = target * w
    inter, total = (p * target).sum((0, 2, 3)), p.sum((0, 2, 3)) + target.sum((0, 2, 3))
    present = target.sum((0, 2, 3)) > 0
    soft = 1 - (2 * inter + 1) / (total + 1)
    dice = soft[present].mean() if bool(present.any()) else soft.sum() * 0
    return BCE_WEIGHT * bce + DICE_WEIGHT * dice


@dataclass(frozen=True)
class SegProbe:
    head: nn.Module
    head_name: str
    grid: tuple[int, int]
    n_types: int
    mean: np.ndarray                    # [D] token standardisation fitted on probe_train
    std: np.ndarray
    best_epoch: int
    val_dice: tuple[float, ...]         # macro Dice on probe_val per epoch
    seed: int = 0                       # of the head's initialisation and batch order

    def logits(self, tokens: np.ndarray, size: tuple[int, int], device: str = "cpu") -> torch.Tensor:
        """Tokens [B, P, D] -> logits [B, K, H, W] (gradients flow; caller picks the mode)."""
        x = torch.as_tensor((np.asarray(tokens, np.float32) - self.mean) / self.std, device=device)
        b, _, d = x.shape
        x = x.transpose(1, 2).reshape(b, d, *self.grid)
        return F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict(self, tokens: np.ndarray, size: tuple[int, int], threshold: float = 0.5,
                batch_size: int = 32, device: str = "cpu") -> np.ndarray:
        """Binary masks bool [N, K, H, W] (sigmoid > threshold)."""
        self.head.eval().to(device)
        out = [(torch.sigmoid(self.logits(tokens[i:i + batch_size], size, device)) > threshold).cpu().numpy()
               for i in range(0, len(tokens), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.n_types, *size), bool)


def _check(tokens: np.ndarray, masks: np.ndarray, grid: tuple[int, int], where: str) -> None:
    if tokens.ndim != 3 or tokens.shape[1] != grid[0] * grid[1]:
        raise RadscaleError(f"segmentation probe {where}: tokens {tokens.shape} do not match grid {grid}")
    if len(tokens) != len(masks):
        raise RadscaleError(f"segmentation probe {where}: {len(tokens)} token rows but {len(masks)} masks")


def segmentation_scores(probe: SegProbe, tokens: np.ndarray, masks: np.ndarray, threshold: float = 0.5,
                        batch_size: int = 32, device: str = "cpu", cldice: bool = True) -> dict[str, np.ndarray]:
    """{"dice", "cldice"} -> [N, K] per image and type; NaN where the type is absent from the ground truth."""
    _check(tokens, masks, probe.grid, "scoring")
    dice, cld = [], []
    for i in range(0, len(tokens), batch_size):
        gt = unpack_masks(masks[i:i + batch_size], probe.n_types)
        pred = probe.predict(tokens[i:i + batch_size], gt.shape[-2:], threshold, batch_size, device)
        dice.append(dice_scores(pred, gt))
        if cldice:
            cld.append(cldice_scores(pred, gt))
    out = {"dice": np.concatenate(dice) if dice else np.zeros((0, probe.n_types))}
    if cldice:
        out["cldice"] = np.concatenate(cld) if cld else np.zeros((0, probe.n_types))
    return out


def macro_mean(scores: np.ndarray) -> float:
    """Mean over images per type (NaN = excluded), then over the types with at least one image."""
    ok = np.isfinite(scores)
    count = ok.sum(0)
    if not (count > 0).any():
        return float("nan")
    per_type = np.where(ok, scores, 0.0).sum(0)[count > 0] / count[count > 0]
    return float(per_type.mean())


def _token_stats(tokens: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean/std over images and patches, in chunks (token arrays can be large or memory-mapped)."""
    s = s2 = 0.0
    for i in range(0, len(tokens), chunk):
        x = np.asarray(tokens[i:i + chunk], np.float64).reshape(-1, tokens.shape[-1])
        s, s2 = s + x.sum(0), s2 + (x * x).sum(0)
    n = tokens.shape[0] * tokens.shape[1]
    mean = s / n
    return mean.astype(np.float32), (np.sqrt(np.maximum(s2 / n - mean ** 2, 0)) + 1e-6).astype(np.float32)


def should_stop(history: list[float], patience: int) -> bool:
    """Never before an epoch with probe_val Dice > 0 (NaN counts as 0); then `patience` epochs after the best
    (see fit_segmentation_probe)."""
    h = np.nan_to_num(np.asarray(history, np.float64), nan=0.0)
    return bool((h > 0).any()) and len(h) - 1 - int(np.argmax(h)) >= patience


def fit_segmentation_probe(train_tokens: np.ndarray, train_masks: np.ndarray, val_tokens: np.ndarray,
                           val_masks: np.ndarray, grid: tuple[int, int], n_types: int, head: str = "linear",
                           epochs: int = 30, lr: float = 1e-3, seed: int = 0, *, weight_decay: float = 1e-4,
                           batch_size: int = 16, patience: int = 10, device: str = "cpu",
                           train_annotated: np.ndarray | None = None) -> SegProbe:
    """AdamW on probe_train; the epoch with the best probe_val macro Dice is kept. train_annotated bool [N, K]:
    the device types each training image's source annotates (seg_loss; None = all). Early stop `patience` epochs
    after the best, but never before an epoch with probe_val Dice > 0: a head starts below the 0.5 threshold
    everywhere (Dice 0) and the pyramid head stays there for 5-20 epochs on the phantom, so counting from epoch 1
    stopped it at Dice 0 (measured: 0.000 for every encoder). Callers ensure probe_val has foreground."""
    if head not in HEADS:
        raise RadscaleError(f"segmentation probe: unknown head {head!r} (choose from {sorted(HEADS)})")
    grid = (int(grid[0]), int(grid[1]))
    _check(train_tokens, train_masks, grid, "probe_train")
    _check(val_tokens, val_masks, grid, "probe_val")
    if train_annotated is not None and np.shape(train_annotated) != (len(train_tokens), n_types):
        raise RadscaleError(f"segmentation probe: train_annotated {np.shape(train_annotated)} for "
                            f"{len(train_tokens)} images of {n_types} types")
    if not 1 <= n_types <= 8 * np.asarray(train_masks).dtype.itemsize:
        raise RadscaleError(f"segmentation probe: n_types={n_types} does not fit {train_masks.dtype} bitfields")
    mean, std = _token_stats(train_tokens)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        net = HEADS[head](train_tokens.shape[-1], n_types).to(device)
    probe = SegProbe(net, head, grid, n_types, mean, std, 0, ())
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    size = tuple(train_masks.shape[-2:])
    best, best_state, best_epoch, history = -np.inf, copy.deepcopy(net.state_dict()), 0, []
    for epoch in range(1, epochs + 1):
        net.train()
        for idx in np.array_split(rng.permutation(len(train_tokens)), max(1, len(train_tokens) // batch_size)):
            target = torch.as_tensor(unpack_masks(train_masks[idx], n_types), dtype=torch.float32, device=device)
            ann = None if train_annotated is None else torch.as_tensor(train_annotated[idx], device=device)
            loss = seg_loss(probe.logits(train_tokens[idx], size, device), target, ann)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        score = macro_mean(segmentation_scores(probe, val_tokens, val_masks, batch_size=batch_size,
                                               device=device, cldice=False)["dice"])
        history.append(score)
        if np.isfinite(score) and score > best:
            best, best_state, best_epoch = score, copy.deepcopy(net.state_dict()), epoch
        elif should_stop(history, patience):
            break
    net.load_state_dict(best_state)
    net.eval()
    return SegProbe(net, head, grid, n_types, mean, std, best_epoch, tuple(history), seed)


def evaluate_segmentation(probes: SegProbe | Sequence[SegProbe], tokens: np.ndarray, masks: np.ndarray,
                          groups: np.ndarray, device_types, n_boot: int, seed: int, *, domain: str = "in-domain",
                          threshold: float = 0.5, batch_size: int = 32, device: str = "cpu") -> pd.DataFrame:
    """Rows task="segmentation", metric dice|cldice, label = device type or "macro", with patient-clustered
    95% CIs; the columns match evaluate_classification so both land in one results table. Several probes (fits
    of one head from different seeds): each image's score is their mean, so the rows estimate the probe
    protocol's Dice rather than one initialisation's (eval.seg_repeats)."""
    probes = [probes] if isinstance(probes, SegProbe) else list(probes)
    if not probes:
        raise RadscaleError("evaluate_segmentation: no probe to score")
    n_types = probes[0].n_types
    device_types = list(device_types)
    if len(device_types) != n_types or any(p.n_types != n_types for p in probes):
        raise RadscaleError(f"evaluate_segmentation: {len(device_types)} device types for "
                            f"{sorted({p.n_types for p in probes})}-type probes")
    groups = np.asarray(groups)
    if len(groups) != len(tokens):
        raise RadscaleError(f"evaluate_segmentation: {len(groups)} patient ids for {len(tokens)} images")
    each = [segmentation_scores(p, tokens, masks, threshold, batch_size, device) for p in probes]
    scores = {m: np.mean([e[m] for e in each], axis=0) for m in each[0]}   # NaN where the type is absent
    present = np.isfinite(scores["dice"])
    kept = [k for k in range(n_types) if present[:, k].any()]
    rows = []
    if not kept:
        return pd.DataFrame(rows)
    for metric, s in scores.items():
        ci = cluster_bootstrap(macro_mean, groups, n_boot, seed, s[:, kept])
        rows.append(dict(task="segmentation", domain=domain, metric=metric, label="macro", value=ci.value,
                         ci_lo=ci.lo, ci_hi=ci.hi, n_test=len(tokens), n_labels=len(kept),
                         replicates=ci.replicates.tolist()))
        for k in kept:
            ok = present[:, k]
            ci_k = cluster_bootstrap(lambda v: float(v.mean()), groups[ok], n_boot, seed, s[ok, k])
            rows.append(dict(task="segmentation", domain=domain, metric=metric, label=device_types[k],
                             value=ci_k.value, ci_lo=ci_k.lo, ci_hi=ci_k.hi, n_test=int(ok.sum()), n_labels=1,
                             replicates=None))
    return pd.DataFrame(rows)
