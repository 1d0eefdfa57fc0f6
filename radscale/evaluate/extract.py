"""Frozen-feature extraction as a callable class: Ray Data builds one per actor, so models load once.

Several encoders can share one pass over the images (one decode, one read of the batch): each model's
features land in their own column, `features_<i>`.
"""
from __future__ import annotations

import numpy as np
import torch

from radscale.models.checkpoints import load_into, load_state
from radscale.models.registry import build_image_encoder


def load_frozen_encoder(encoder_name: str, checkpoint: str, device: torch.device) -> torch.nn.Module:
    model = build_image_encoder(encoder_name)
    load_into(model, load_state(checkpoint), checkpoint, strict=True)
    return model.eval().to(device)


class FeatureExtractor:
    """batch {'image_id', 'image' uint8 [B,S,S]} -> {'image_id', 'features_<i>' float32 [B, 2D_i]}.

    Features are CLS ++ mean patch token of the last layer (the linear-probe protocol of DINOv2).
    """

    def __init__(self, models: list[tuple[str, str]], device: str = "cpu", threads: int = 0):
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.models = [load_frozen_encoder(name, ckpt, self.device) for name, ckpt in models]

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = torch.as_tensor(np.asarray(batch["image"])).to(self.device).unsqueeze(1).float() / 255.0
        out = {"image_id": np.asarray(batch["image_id"])}
        for i, model in enumerate(self.models):
            f = model.forward_features(images)
            out[f"features_{i}"] = torch.cat([f["cls"], f["patch"].mean(1)], dim=1).float().cpu().numpy()
        return out
