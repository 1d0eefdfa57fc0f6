"""MI2-style two-tower model: image encoder + text encoder + projections + learnable logit scale."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from radscale.models.text import TextEncoder


class TwoTowerModel(nn.Module):
    def __init__(self, image_encoder: nn.Module, text_encoder: TextEncoder, embed_dim: int,
                 logit_scale_init: float = 1.0):
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_proj = nn.Linear(image_encoder.embed_dim, embed_dim, bias=False)
        # MI2 initialises the (log) logit scale to 1.0, i.e. scale e, unlike CLIP's log(1/0.07).
        # Shape [1], not a 0-dim tensor: DeepSpeed broadcasts parameters as byte views.
        self.logit_scale = nn.Parameter(torch.full((1,), float(logit_scale_init)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.image_encoder.forward_features(images)["cls"]), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_encoder(tokens), dim=-1)
