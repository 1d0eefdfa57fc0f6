"""CLIP contrastive loss (Radford et al. 2021, Eq. in Fig. 3): symmetric InfoNCE over image-text pairs.

Features are gathered from all ranks (with gradient) so every rank scores each image against the texts of
the whole global batch; the loss value is then the single-process loss on the concatenated batch. See
:func:`radscale.objectives.distributed.all_gather_with_grad` for why the gradients come out right under
data-parallel averaging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from radscale.objectives.distributed import all_gather_with_grad

__all__ = ["clip_logits", "clip_loss"]


def clip_logits(image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Global-batch logits S = s * U V^T in at least float32 (features gathered from all ranks in rank order).

    ``logit_scale`` is the multiplier s itself (i.e. ``exp`` of a learnable log-scale, as open_clip passes it).
    """
    if image_features.dim() != 2 or text_features.dim() != 2 or image_features.shape[1] != text_features.shape[1]:
        raise ValueError(
            f"clip_logits: expected [B_img, D] and [B_txt, D] features, got {tuple(image_features.shape)} and "
            f"{tuple(text_features.shape)}"
        )
    dtype = torch.promote_types(image_features.dtype, torch.float32)
    images = all_gather_with_grad(image_features).to(dtype)
    texts = all_gather_with_grad(text_features).to(dtype)
    scale = logit_scale.to(dtype) if isinstance(logit_scale, Tensor) else float(logit_scale)
    # Under autocast a matmul runs in bf16 whatever its inputs; the similarities are computed in fp32.
    with torch.autocast(images.device.type, enabled=False):
        return scale * images @ texts.t()


def clip_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Mean of image->text and text->image cross-entropy with the matching pair as the target.

    Args:
        image_features: [B, D] L2-normalised image embeddings of this rank.
        text_features: [B, D] L2-normalised text embeddings of this rank; row i is the text of image i.
        logit_scale: multiplier s (already exponentiated), float or scalar tensor (learnable).

    Returns:
        Scalar loss over the global batch, at least float32.
    """
    if image_features.shape[0] != text_features.shape[0]:
        raise ValueError(
            f"clip_loss: need one text per image, got {image_features.shape[0]} images and "
            f"{text_features.shape[0]} texts"
        )
    logits = clip_logits(image_features, text_features, logit_scale)
    targets = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))
