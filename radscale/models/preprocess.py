"""Single-channel CXR in [0,1] -> the 3-channel normalised input the open-weight towers expect."""
from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    def __init__(self, mean: float | tuple[float, float, float], std: float | tuple[float, float, float]):
        super().__init__()
        mean = (mean,) * 3 if isinstance(mean, (int, float)) else tuple(mean)
        std = (std,) * 3 if isinstance(std, (int, float)) else tuple(std)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
