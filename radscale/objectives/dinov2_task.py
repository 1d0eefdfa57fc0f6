"""The DINOv2 / RAD-DINO training step as a module: multi-crop views, EMA teacher, DINO + iBOT + KoLeo.

`forward(images, progress)` returns (loss, metrics); the trainer calls `after_step(progress)` once the
optimizer has stepped to move the EMA teacher. Oquab et al. 2023 (DINOv2) §4; RAD-DINO (Pérez-García et al.
2025) continues this recipe from the released backbone and head.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from radscale.config.specs import Dinov2Spec
from radscale.data import transforms as T
from radscale.models.heads import DINOHead
from radscale.objectives.centering import EMACenter, sinkhorn_knopp, teacher_temperature
from radscale.objectives.dino import dino_loss
from radscale.objectives.ibot import ibot_patch_loss_masked
from radscale.objectives.koleo import koleo_loss
from radscale.objectives.masking import block_masks
from radscale.objectives.rng import generator_state, restore_generator
from radscale.objectives.ema import ema_update_
from radscale.objectives.progress import cosine


class _Student(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head


class DINOv2Task(nn.Module):
    def __init__(self, backbone: nn.Module, spec: Dinov2Spec, seed: int = 0):
        super().__init__()
        self.spec = spec
        head = DINOHead(backbone.embed_dim, spec.n_prototypes, spec.head_hidden, spec.head_bottleneck,
                        spec.head_layers)
        self.student = _Student(backbone, head)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.center = EMACenter(spec.n_prototypes, spec.center_momentum)
        self.patch_center = EMACenter(spec.n_prototypes, spec.center_momentum)
        self._seed = seed
        self._gen: torch.Generator | None = None
        self._mask_gen: torch.Generator | None = None

    # --- views -------------------------------------------------------------------------------------------
    def _generator(self, device: torch.device, mask: bool = False) -> torch.Generator:
        # Crops draw on the training device; masks are built on the host (small, index-heavy).
        if mask:
            if self._mask_gen is None:
                self._mask_gen = torch.Generator().manual_seed(self._seed + 7919)
            return self._mask_gen
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device).manual_seed(self._seed)
        return self._gen

    @torch.no_grad()
    @T.full_precision
    def make_views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """images [B,H,W] uint8 -> globals [2B,1,G,G], locals [L*B,1,l,l], iBOT masks [2B, P], and the masked
        tokens' flat indices [M] and iBOT weights [M] (`masks[masks]` order)."""
        s, x = self.spec, T.to_float(images)
        g = self._generator(x.device)
        globals_ = []
        for i in range(2):
            v = T.random_resized_crop(x, s.global_size, s.global_scale, g, flip_p=s.flip_p,
                                      antialias=s.crop_antialias)
            v = T.brightness_contrast(v, s.jitter_p, g)
            v = T.gaussian_blur(v, s.blur_p[i], g, ref_size=s.blur_ref_sizes[0])
            if i == 1:
                v = T.solarize(v, s.solarize_p, g)
            globals_.append(v)
        locals_ = []
        for _ in range(s.local_crops):
            v = T.random_resized_crop(x, s.local_size, s.local_scale, g, flip_p=s.flip_p,
                                      antialias=s.crop_antialias)
            v = T.brightness_contrast(v, s.jitter_p, g)
            locals_.append(T.gaussian_blur(v, s.blur_p[2], g, ref_size=s.blur_ref_sizes[1]))
        gl = torch.cat(globals_)
        grid = self.student.backbone.grid(s.global_size)
        masks = block_masks(gl.shape[0], grid, s.mask_ratio, s.mask_image_fraction,
                            generator=self._generator(torch.device("cpu"), mask=True))
        # The masks are drawn on the host, so the masked tokens' indices are known there: gathering by index
        # instead of `tokens[masks]` on the device avoids a host sync (a data-dependent shape) per use.
        index = torch.from_numpy(np.flatnonzero(masks.numpy()))
        counts = masks.sum(dim=1).clamp(min=1)
        weights = (1.0 / counts.float())[index // masks.shape[1]]       # = masked_token_weights(masks), by index
        pin = x.device.type == "cuda"      # a non_blocking copy from pageable memory is synchronous
        masks, index, weights = ((t.pin_memory() if pin else t).to(x.device, non_blocking=True)
                                 for t in (masks, index, weights))
        lc = torch.cat(locals_) if locals_ else gl.new_zeros((0,) + gl.shape[1:])
        return gl, lc, masks, index, weights

    # --- step --------------------------------------------------------------------------------------------
    def _targets(self, logits: torch.Tensor, temp: float, center: EMACenter, n_valid=None) -> torch.Tensor:
        if self.spec.centering == "sinkhorn_knopp":
            return sinkhorn_knopp(logits, temp, 3, n_valid)
        probs = center.teacher_probs(logits, temp)
        center.update(logits)          # takes effect from the next step (DINO centering timing)
        return probs

    def forward(self, images: torch.Tensor, progress: float) -> tuple[torch.Tensor, dict]:
        s = self.spec
        gl, lc, masks, index, weights = self.make_views(images)
        n_img = gl.shape[0]
        b = n_img // 2
        temp = teacher_temperature(progress, *s.teacher_temp, warmup_fraction=s.teacher_temp_warmup)
        with torch.no_grad():
            t = self.teacher.backbone.forward_features(gl)
            t_cls = self.teacher.head(t["cls"])
            t_patch = self.teacher.head(t["patch"].flatten(0, 1).index_select(0, index))
            t_cls_probs = self._targets(t_cls, temp, self.center)
            t_patch_probs = self._targets(t_patch, temp, self.patch_center)
        st = self.student.backbone.forward_features(gl, masks=masks)
        cls_all = st["cls"]
        if lc.shape[0]:
            cls_all = torch.cat([cls_all, self.student.backbone.forward_features(lc)["cls"]])
        s_logits = self.student.head(cls_all).view(-1, b, t_cls.shape[-1])
        dino = dino_loss(s_logits, t_cls_probs.view(2, b, -1), s.student_temp)
        s_patch = self.student.head(st["patch"].flatten(0, 1).index_select(0, index))
        ibot = ibot_patch_loss_masked(s_patch, t_patch_probs, weights, n_img, s.student_temp)
        koleo = sum(koleo_loss(c) for c in st["cls"].chunk(2)) if s.koleo_weight else dino.new_zeros(())
        loss = dino + s.ibot_weight * ibot + s.koleo_weight * koleo
        metrics = {"loss": loss.detach(), "dino_loss": dino.detach(), "ibot_loss": ibot.detach(),
                   "koleo_loss": koleo.detach(), "teacher_temp": temp}
        return loss, metrics

    @torch.no_grad()
    def after_step(self, progress: float) -> float:
        """EMA teacher update with cosine momentum (0.992 -> 1.0 over the budget)."""
        m = cosine(progress, *self.spec.teacher_momentum)
        ema_update_(self.teacher.parameters(), self.student.parameters(), m)
        return m

    # --- what the trainer needs --------------------------------------------------------------------------
    def eval_encoder(self) -> nn.Module:
        """DINOv2 evaluates the EMA teacher's backbone."""
        return self.teacher.backbone

    def forward_encoders(self) -> list[nn.Module]:
        """The image encoders the step runs (what `train.compile` compiles): student and teacher."""
        return [self.student.backbone, self.teacher.backbone]

    def extra_state(self) -> dict:
        return {"center": self.center.state_dict(), "patch_center": self.patch_center.state_dict(),
                "generator": generator_state(self._gen), "mask_generator": generator_state(self._mask_gen)}

    def load_extra_state(self, state: dict) -> None:
        self.center.load_state_dict(state["center"])
        self.patch_center.load_state_dict(state["patch_center"])
        self._gen = restore_generator(state.get("generator"), self._seed)
        self._mask_gen = restore_generator(state.get("mask_generator"), self._seed + 7919)

    def param_groups(self, lr_decay: float, patch_embed_mult: float) -> list[dict]:
        """Layer-wise lr decay (DINOv2: 0.9) over backbone depth, patch-embed x0.2; weight decay on everything but
        biases, norms and LayerScale gammas (DINOv2's name rule: cls/pos/mask tokens are decayed)."""
        groups: list[dict] = []
        layers = self.student.backbone.layer_groups()
        n = len(layers)
        patch = {id(p) for p in self.student.backbone.patch_embed_parameters()}
        names = {id(p): name for name, p in self.student.named_parameters()}

        def wd(p: nn.Parameter) -> float:
            name = names[id(p)]
            return 0.0 if name.endswith(".bias") or "norm" in name or "gamma" in name else 1.0

        for depth, params in enumerate(layers):
            scale = lr_decay ** (n - 1 - depth)
            for p in params:
                if not p.requires_grad:
                    continue
                groups.append({"params": [p], "lr_scale": scale * (patch_embed_mult if id(p) in patch else 1.0),
                               "wd_scale": wd(p), "last_layer": False})
        last = {id(p) for p in self.student.head.last_layer.parameters()}
        for p in self.student.head.parameters():
            if p.requires_grad:
                groups.append({"params": [p], "lr_scale": 1.0, "wd_scale": wd(p), "last_layer": id(p) in last})
        return _merge_groups(groups)


def _merge_groups(groups: list[dict]) -> list[dict]:
    """One optimizer group per distinct (lr_scale, wd_scale, last_layer)."""
    merged: dict[tuple, dict] = {}
    for g in groups:
        key = (g["lr_scale"], g["wd_scale"], g["last_layer"])
        merged.setdefault(key, {"params": [], "lr_scale": key[0], "wd_scale": key[1], "last_layer": key[2]})
        merged[key]["params"].extend(g["params"])
    return list(merged.values())
