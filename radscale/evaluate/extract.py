"""Frozen-feature extraction as a callable class: Ray Data builds one per actor, so the model loads once."""
from __future__ import annotations

import numpy as np
import torch

from radscale.models.checkpoints import load_into, load_state
from radscale.models.registry import build_image_encoder


class FeatureExtractor:
    """batch {'image_id', 'image' uint8 [B,S,S]} -> {'image_id', 'features' float32 [B, 2D]} (CLS ++ mean patch)."""

    def __init__(self, encoder_name: str, checkpoint: str, device: str = "cpu", threads: int = 0):
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.model = build_image_encoder(encoder_name)
        load_into(self.model, load_state(checkpoint), checkpoint, strict=True)
        self.model.eval().to(self.device)

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = torch.as_tensor(np.asarray(batch["image"])).to(self.device).unsqueeze(1).float() / 255.0
        out = self.model.forward_features(images)
        feats = torch.cat([out["cls"], out["patch"].mean(1)], dim=1).float().cpu().numpy()
        return {"image_id": np.asarray(batch["image_id"]), "features": feats}
