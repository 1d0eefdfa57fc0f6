"""DaViT image encoder (MI2 / MedImageInsight image tower) on timm's DaViT."""
from __future__ import annotations

import torch
from timm.models.davit import DaVit
from torch import nn

from radscale.models.preprocess import Normalize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DaViTEncoder(nn.Module):
    def __init__(self, *, img_size: int, embed_dims: tuple[int, ...], depths: tuple[int, ...],
                 num_heads: tuple[int, ...], window_size: int, down_kernel_size: int = 2,
                 channel_attn_v2: bool = False, named_blocks: bool = False):
        super().__init__()
        # Florence-2/MI2 variant ('davit_huge_fl' in timm): 3x3 downsampling, channel attention v2.
        self.davit = DaVit(embed_dims=embed_dims, depths=depths, num_heads=num_heads, window_size=window_size,
                           down_kernel_size=down_kernel_size, channel_attn_v2=channel_attn_v2,
                           named_blocks=named_blocks, num_classes=0)
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.embed_dim = embed_dims[-1]
        self.native_size = img_size

    def forward_features(self, images: torch.Tensor, masks: torch.Tensor | None = None,
                         layers: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
        """cls = LayerNorm(mean of last-stage tokens), MI2's pooled image feature (DaViT has no class token);
        patch = the last-stage tokens."""
        if masks is not None:
            raise ValueError("DaViT encoder does not take iBOT masks")
        fmap = self.davit.forward_features(self.normalize(images))     # [B, C, h, w], head norm not applied
        pooled = self.davit.head.norm(fmap.mean((2, 3), keepdim=True)).flatten(1)
        return {"cls": pooled, "patch": fmap.flatten(2).transpose(1, 2)}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)["cls"]
