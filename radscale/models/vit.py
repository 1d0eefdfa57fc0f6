"""ViT image encoder (RAD-DINO / DINOv2 shape) on timm blocks, with iBOT mask tokens.

Masked patch tokens are replaced by a learned `mask_token` before the position embedding is added, as in
DINOv2's `prepare_tokens_with_masks`; timm's ViT has no mask token, so the token lives here. At other input
sizes (224 px global and 98 px local crops of a 518 px model) the position embedding is resized bicubically
without antialiasing to the token grid, as Hugging Face's Dinov2Model does for RAD-DINO (timm's default
antialiases: 6 % off at 37 -> 16, 27 % at 37 -> 7). DINOv2's own code adds a 0.1 offset to the scale factor;
not matched here.
"""
from __future__ import annotations

import timm
import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from radscale.models.preprocess import Normalize


class ViTEncoder(nn.Module):
    def __init__(self, *, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mean: float, std: float, init_values: float | None = None, timm_name: str = ""):
        super().__init__()
        kwargs = dict(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                      num_heads=num_heads, num_classes=0, dynamic_img_size=True, init_values=init_values)
        if timm_name:
            self.vit = timm.create_model(timm_name, pretrained=False, **kwargs)
        else:
            self.vit = timm.models.vision_transformer.VisionTransformer(**kwargs)
        self.normalize = Normalize(mean, std)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.native_size = img_size

    def grid(self, size: int) -> tuple[int, int]:
        return size // self.patch_size, size // self.patch_size

    def forward_features(self, images: torch.Tensor, masks: torch.Tensor | None = None,
                         layers: tuple[int, ...] = (), patch_layers: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
        """images [B,1,H,W] in [0,1]; masks [B, H*W/p^2] bool. Returns cls [B,D], patch [B,P,D], and per block i
        of `layers` its CLS as layer{i} [B,D], of `patch_layers` its patch tokens as patch{i} [B,P,D], both
        through the final norm (DINOv2's intermediate outputs)."""
        x = self.vit.patch_embed(self.normalize(images))          # [B, h, w, D] (dynamic size)
        if masks is not None:
            b, h, w, d = x.shape
            m = masks.view(b, h, w, 1)
            x = torch.where(m, self.mask_token.to(x.dtype).view(1, 1, 1, d), x)
        x = self._pos_embed(x)
        x = self.vit.norm_pre(x)
        extra = {}
        for i, blk in enumerate(self.vit.blocks):
            x = blk(x)
            if i in layers or i in patch_layers:
                normed = self.vit.norm(x)
                if i in layers:
                    extra[f"layer{i}"] = normed[:, 0]
                if i in patch_layers:
                    extra[f"patch{i}"] = normed[:, self.vit.num_prefix_tokens:]
        x = self.vit.norm(x)
        out = {"cls": x[:, 0], "patch": x[:, self.vit.num_prefix_tokens:]}
        out.update(extra)
        return out

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, h, w, D] patch tokens -> [B, prefix + h*w, D] with class (and register) tokens and positions."""
        v = self.vit
        b, h, w, d = x.shape
        pos = v.pos_embed
        if (h, w) != tuple(v.patch_embed.grid_size):
            pos = resample_abs_pos_embed(pos, new_size=[h, w], old_size=list(v.patch_embed.grid_size),
                                         num_prefix_tokens=0 if v.no_embed_class else v.num_prefix_tokens,
                                         antialias=False)
        x = x.reshape(b, h * w, d)
        prefix = [t.expand(b, -1, -1) for t in (v.cls_token, v.reg_token) if t is not None]
        if v.no_embed_class:
            x = torch.cat(prefix + [x + pos], dim=1)
        else:
            x = torch.cat(prefix + [x], dim=1) + pos
        return v.pos_drop(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)["cls"]

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters by depth for layer-wise lr decay: [patch/pos/cls/mask], block 0..L-1, [final norm]."""
        v = self.vit
        embed = [p for n, p in self.named_parameters() if not n.startswith(("vit.blocks", "vit.norm.", "vit.fc_norm"))]
        groups = [embed] + [list(b.parameters()) for b in v.blocks]
        groups.append([p for n, p in self.named_parameters() if n.startswith(("vit.norm.", "vit.fc_norm"))])
        return groups

    def patch_embed_parameters(self) -> list[nn.Parameter]:
        return list(self.vit.patch_embed.parameters())
