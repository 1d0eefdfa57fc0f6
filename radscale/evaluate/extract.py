"""Frozen-feature extraction as a callable class: Ray Data builds one per actor, so models load once.

Several encoders can share one pass over the images (one decode, one read of the batch); each model i fills
    features_<i>  float32 [B, (n_layers + 1)·D]  CLS of the last `n_layers` layers ++ mean patch token of the last
                  one: DINOv2's linear-evaluation input (Oquab et al. 2023, `create_linear_input`, n_last_blocks=4,
                  avgpool); it always ends with [last-layer CLS (D), mean patch (D)] (`last_layer_cls`).
    patch_<i>     float16 [B, P', D]  last-layer patch tokens, average-pooled to at most `max_patch_grid` per side
                  (raster order), for segmentation, attention probes and report generation; float16 and pooling
                  bound the memory of full-size encoders (RAD-DINO at 518 px has 37x37 tokens of width 768).
"Layers" per family:
- ViT: transformer blocks; layer i's CLS passes through the final LayerNorm (as DINOv2's intermediate outputs).
- DaViT (MI2): stages (4; DaViT has no class token). Layer i = the global average of stage i's output map; the
  last stage's is LayerNorm'd by the head norm (MI2's pooled image feature), earlier ones are left raw (the
  probes standardise features). With n_layers above the stage count, all stages are used. Widths differ per
  stage, so the feature width is the sum of the last n stage widths + D. Patch tokens are the last stage's map
  (stride 32: 2x2 for the 64-px tiny flavour, 15x15 for MI2 at 480 px).
    seg_<i>       float16 [B, P'', D_s]  tokens for the segmentation probe, pooled like patch_<i>:
                  - DaViT, when `seg_stage` is not the last stage: that stage's map (stride 16 for -2: 30x30 for
                    MI2 at 480 px, 4x4 for the tiny flavour; stride 8 for -3); a thin catheter has no place on
                    the stride-32 grid.
                  - ViT, when `seg_layers` > 1: the patch tokens of the last `seg_layers` blocks, each through
                    the final LayerNorm, concatenated along channels (D_s = seg_layers·D), the multi-layer input
                    of DINOv2's segmentation probes.
                  Absent otherwise: segmentation then uses patch_<i>.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from radscale.models.checkpoints import load_into, load_state
from radscale.models.davit import DaViTEncoder
from radscale.models.precision import uses_bf16
from radscale.models.registry import build_image_encoder, get_flavour
from radscale.models.vit import ViTEncoder


def load_frozen_encoder(encoder_name: str, checkpoint: str, device: torch.device) -> torch.nn.Module:
    model = build_image_encoder(encoder_name)
    load_into(model, load_state(checkpoint), checkpoint, strict=True)
    return model.eval().to(device)


def patch_grid(n_tokens: int) -> tuple[int, int]:
    """(h, w) of the square patch grid of `n_tokens` tokens (eval images are square)."""
    side = int(round(math.sqrt(n_tokens)))
    if side * side != n_tokens:
        raise ValueError(f"patch tokens: {n_tokens} tokens do not form a square grid")
    return side, side


def pool_patch_tokens(patch: torch.Tensor, max_grid: int) -> torch.Tensor:
    """[B, h·w, D] -> [B, h'·w', D] with h' = min(h, max_grid): average pooling over the grid (adaptive bins)."""
    b, p, d = patch.shape
    h, w = patch_grid(p)
    if h <= max_grid and w <= max_grid:
        return patch
    x = F.adaptive_avg_pool2d(patch.transpose(1, 2).reshape(b, d, h, w), (min(h, max_grid), min(w, max_grid)))
    return x.flatten(2).transpose(1, 2)


def pooled_f16(tokens: torch.Tensor, max_grid: int) -> torch.Tensor:
    """Tokens as the extractor returns them: pooled to `max_grid`, float16, on the host."""
    return pool_patch_tokens(tokens.float(), max_grid).to(torch.float16).cpu()


def last_layer_cls(features: np.ndarray, dim: int) -> np.ndarray:
    """The last layer's CLS inside a `features_<i>` row block (its second-to-last D columns)."""
    return features[:, -2 * dim:-dim]


def bytes_per_image(encoder_name: str, *, n_layers: int = 4, max_patch_grid: int = 16, patch_tokens: bool = True,
                    seg_stage: int = -1, seg_layers: int = 1) -> int:
    """Bytes of one image's row in the extractor's output (FeatureExtractor, same arguments), from the flavour's
    shapes alone: the driver holds this x the eval images for every encoder of a pass."""
    fl = get_flavour(encoder_name)
    side = lambda g: min(g, max_patch_grid) ** 2                  # noqa: E731  tokens after pooling
    if fl.family == "vit":
        d, depth, grid = fl.arch["embed_dim"], fl.arch["depth"], fl.img_size // fl.arch["patch_size"]
        n = 4 * (min(n_layers, depth) + 1) * d
        if patch_tokens:
            n += 2 * side(grid) * d * (1 + (min(seg_layers, depth) if seg_layers > 1 else 0))
        return n
    dims = fl.arch["embed_dims"]
    grids = [math.ceil(fl.img_size / (4 * 2 ** i)) for i in range(len(dims))]   # stem stride 4, then 2x per stage
    n = 4 * (sum(dims[max(0, len(dims) - n_layers):-1]) + 2 * dims[-1])
    if patch_tokens:
        n += 2 * side(grids[-1]) * dims[-1]
        if seg_stage != -1:
            n += 2 * side(grids[seg_stage]) * dims[seg_stage]
    return n


class _StageTaps:
    """Forward hooks keeping the global-average output of DaViT stages, and the whole map of the segmentation
    stage (single forward pass, no model edit)."""

    def __init__(self, model: DaViTEncoder, n_layers: int, seg_stage: int = -1):
        stages = list(model.davit.stages)
        if not -len(stages) <= seg_stage <= -1:
            raise ValueError(f"FeatureExtractor: seg_stage={seg_stage}: DaViT has stages -{len(stages)}..-1")
        self.index = list(range(max(0, len(stages) - n_layers), len(stages) - 1))  # the last stage = "cls"
        self.seg_index = None if seg_stage == -1 else len(stages) + seg_stage
        self.out: dict[int, torch.Tensor] = {}
        self.seg: torch.Tensor | None = None
        for i in sorted(set(self.index) | ({self.seg_index} - {None})):
            stages[i].register_forward_hook(self._keep(i))

    def clear(self) -> None:
        self.out.clear()
        self.seg = None

    def _keep(self, i: int):
        def hook(_module, _inputs, output):
            if i in self.index:
                self.out[i] = output.float().mean((2, 3))           # NCHW -> [B, C]
            if i == self.seg_index:
                self.seg = output.flatten(2).transpose(1, 2)       # [B, h*w, C], raster order
        return hook


class FeatureExtractor:
    """batch {'image_id', 'image' uint8 [B,S,S]} -> {'image_id', 'features_<i>', 'patch_<i>'} (module docstring).

    n_layers: CLS of how many last layers (blocks / stages) enter features_<i> (1 = CLS ++ mean patch).
    patch_tokens=False leaves the patch_<i> columns out (when no patch-token family is evaluated).
    seg_stage: the DaViT stage (negative index) whose map becomes seg_<i>; -1 (the last) = no seg_<i> column.
    seg_layers: ViT blocks whose patch tokens are concatenated into seg_<i> (all when above the depth); 1 = none.
    """

    def __init__(self, models: list[tuple[str, str]], device: str = "cpu", threads: int = 0, *, n_layers: int = 4,
                 max_patch_grid: int = 16, patch_tokens: bool = True, precision: str = "fp32",
                 seg_stage: int = -1, seg_layers: int = 1):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"FeatureExtractor: precision={precision!r}: expected fp32 or bf16")
        if threads:
            torch.set_num_threads(threads)
        if min(n_layers, max_patch_grid, seg_layers) < 1:
            raise ValueError(f"FeatureExtractor: n_layers={n_layers}, max_patch_grid={max_patch_grid} and "
                             f"seg_layers={seg_layers} must be >= 1")
        self.device = torch.device(device)
        self.models = [load_frozen_encoder(name, ckpt, self.device) for name, ckpt in models]
        self.n_layers, self.max_grid, self.patch_tokens = n_layers, max_patch_grid, patch_tokens
        self.seg_layers = seg_layers if patch_tokens else 1
        self.bf16 = uses_bf16(precision, self.device)
        self.taps = [_StageTaps(m, n_layers, seg_stage if patch_tokens else -1) if isinstance(m, DaViTEncoder)
                     else None for m in self.models]

    def _features(self, i: int, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(features, last-layer patch tokens, segmentation-stage tokens or None)."""
        model = self.models[i]
        if isinstance(model, ViTEncoder):
            depth = len(model.vit.blocks)
            layers = tuple(range(max(0, depth - self.n_layers), depth))
            seg_layers = tuple(range(max(0, depth - self.seg_layers), depth)) if self.seg_layers > 1 else ()
            f = model.forward_features(images, layers=layers, patch_layers=seg_layers)
            cls = [f[f"layer{j}"] for j in layers]                 # layer{depth-1} is the final CLS
            seg = torch.cat([pool_patch_tokens(f[f"patch{j}"], self.max_grid) for j in seg_layers], -1) \
                if seg_layers else None                             # pooled first: a quarter of the memory
        else:
            taps = self.taps[i]
            taps.clear()
            f = model.forward_features(images)
            cls = [taps.out[j] for j in taps.index] + [f["cls"]]
            seg, taps.seg = taps.seg, None          # the taps hold no stage map between batches
        return torch.cat([c.float() for c in cls] + [f["patch"].float().mean(1)], dim=1), f["patch"], seg

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = torch.as_tensor(np.asarray(batch["image"])).to(self.device).unsqueeze(1).float() / 255.0
        out = {"image_id": np.asarray(batch["image_id"])}
        for i in range(len(self.models)):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16):
                feats, patch, seg = self._features(i, images)
            out[f"features_{i}"] = feats.cpu().numpy()
            if self.patch_tokens:
                out[f"patch_{i}"] = pooled_f16(patch, self.max_grid).numpy()
            if seg is not None:
                out[f"seg_{i}"] = pooled_f16(seg, self.max_grid).numpy()
        return out
