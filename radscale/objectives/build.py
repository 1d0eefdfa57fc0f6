"""Build a trial's training task (model + loss) from its encoder and objective specs."""
from __future__ import annotations

import torch
from torch import nn

from radscale.config.specs import EncoderSpec, TrainSpec
from radscale.data.vocab import Vocabulary
from radscale.models.clip_model import TwoTowerModel
from radscale.models.registry import build_image_encoder, build_text_encoder, get_flavour
from radscale.objectives.contrastive_task import ContrastiveTask
from radscale.objectives.dinov2_task import DINOv2Task


def build_task(encoder: EncoderSpec, train: TrainSpec, seed: int, vocabulary: Vocabulary | None = None,
               rank: int = 0) -> nn.Module:
    """Seeded init (same weights on every rank); per-rank augmentation streams."""
    from radscale.models.checkpoints import load_open_weights
    from radscale.data.vocab import prompt_label_names

    torch.manual_seed(seed)
    flavour = get_flavour(encoder.name)
    image_encoder = build_image_encoder(encoder.name)
    aug_seed = seed * 1000 + rank + 1
    if encoder.objective == "dinov2":
        if flavour.family != "vit":
            raise ValueError(f"encoder {encoder.name!r}: objective 'dinov2' needs a ViT encoder")
        task = DINOv2Task(image_encoder, train.dinov2, seed=aug_seed)
        if encoder.weights:
            load_open_weights(task, encoder)
            task.teacher.load_state_dict(task.student.state_dict())
        return task
    text = build_text_encoder(encoder.name, train.clip.context_length)
    model = TwoTowerModel(image_encoder, text, flavour.embed_dim, train.clip.logit_scale_init)
    if encoder.weights:
        load_open_weights(model, encoder)
    keys, names = prompt_label_names(vocabulary or Vocabulary())
    return ContrastiveTask(model, train.clip, encoder.objective, keys, names, flavour.img_size, seed=aug_seed)
