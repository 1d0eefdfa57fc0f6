"""Block masks for iBOT (BEiT, Bao et al. 2022 §2.2 "blockwise masking"; DINOv2 collate and mask generator).

Choices, following DINOv2's defaults and made explicit here:
- Of the N_img global crops in a batch, ``int(N_img * masked_fraction_of_images)`` get a mask (DINOv2: 0.5).
- Their mask ratios are spread over ``mask_ratio_range``: the range is cut into equal bins, one per masked
  image, and image i draws its target ratio uniformly inside bin i, so every batch covers low and high ratios.
- A mask is grown from rectangular blocks: area uniform in [min_block_patches, remaining budget] (capped at
  ``max_block_fraction`` of the grid), log-aspect uniform in [log a, -log a] with a = ``min_aspect``; a block
  must be strictly smaller than the grid, is placed uniformly, and is kept only if it adds between 1 and the
  remaining budget of new patches (10 tries). Growth stops at the target or when no block fits, so the
  target is an upper bound on the masked count.
- ``shuffle=True`` (DINOv2) assigns the masks to random images. Global crops are usually laid out as
  [view 0 of every sample, view 1 of every sample]; without shuffling only view-0 crops would ever be masked.
All randomness comes from the given ``torch.Generator``, so masks are reproducible per (seed, step).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["block_masks"]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _add_block(
    mask: np.ndarray,
    budget: int,
    min_block_patches: int,
    log_aspect: tuple[float, float],
    generator: torch.Generator,
) -> int:
    """Try to mask one new rectangle adding 1..budget patches; return how many were added (0 if none fit)."""
    height, width = mask.shape
    for _ in range(10):
        area = _uniform(generator, min_block_patches, budget)
        aspect = math.exp(_uniform(generator, *log_aspect))
        h = int(round(math.sqrt(area * aspect)))
        w = int(round(math.sqrt(area / aspect)))
        if not (0 < h < height and 0 < w < width):
            continue
        top = _randint(generator, 0, height - h)
        left = _randint(generator, 0, width - w)
        region = mask[top : top + h, left : left + w]
        added = h * w - int(region.sum())
        if 0 < added <= budget:
            region[...] = True
            return added
    return 0


def _one_mask(
    grid: tuple[int, int],
    target: int,
    min_block_patches: int,
    max_block_patches: int,
    log_aspect: tuple[float, float],
    generator: torch.Generator,
) -> np.ndarray:
    mask = np.zeros(grid, dtype=bool)
    count = 0
    while count < target:
        added = _add_block(mask, min(target - count, max_block_patches), min_block_patches, log_aspect, generator)
        if added == 0:
            break
        count += added
    return mask


def block_masks(
    n_images: int,
    grid: tuple[int, int],
    mask_ratio_range: tuple[float, float] = (0.1, 0.5),
    masked_fraction_of_images: float = 0.5,
    *,
    generator: torch.Generator,
    min_block_patches: int = 4,
    max_block_fraction: float = 0.5,
    min_aspect: float = 0.3,
    shuffle: bool = True,
) -> Tensor:
    """iBOT block masks for ``n_images`` global crops on a ``grid`` = (H, W) patch grid.

    Returns:
        [n_images, H*W] bool (row-major patches), True where the student's patch token is masked.
    """
    height, width = grid
    lo, hi = mask_ratio_range
    if n_images < 0 or height < 1 or width < 1:
        raise ValueError(f"block_masks: need n_images >= 0 and a positive grid, got {n_images} and {grid}")
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"block_masks: mask_ratio_range must satisfy 0 <= lo <= hi <= 1, got {mask_ratio_range}")
    if not 0.0 <= masked_fraction_of_images <= 1.0:
        raise ValueError(f"block_masks: masked_fraction_of_images must be in [0, 1], got {masked_fraction_of_images}")
    if not 0.0 < min_aspect <= 1.0:
        raise ValueError(f"block_masks: min_aspect must be in (0, 1], got {min_aspect}")

    n_patches = height * width
    n_masked = int(n_images * masked_fraction_of_images)
    max_block_patches = max(1, int(max_block_fraction * n_patches))
    log_aspect = (math.log(min_aspect), -math.log(min_aspect))
    edges = np.linspace(lo, hi, n_masked + 1)
    masks = np.zeros((n_images, n_patches), dtype=bool)
    for i in range(n_masked):
        target = int(n_patches * _uniform(generator, float(edges[i]), float(edges[i + 1])))
        masks[i] = _one_mask(grid, target, min_block_patches, max_block_patches, log_aspect, generator).reshape(-1)
    out = torch.from_numpy(masks)
    if shuffle:
        out = out[torch.randperm(n_images, generator=generator)]
    return out
