"""iBOT masked-patch loss (Zhou et al. 2022 "iBOT"; DINOv2, Oquab et al. 2023, §4).

For every global crop the student sees a block-masked image and must predict the teacher's (unmasked) patch
distribution on the masked positions. DINOv2's weighting: per image, average the cross-entropy over its
masked patches; then sum over images and divide by the number of global images N_img -- *including* images
that carry no mask, which therefore dilute the loss rather than being dropped.

Two equivalent forms are provided: a dense one on [N_img, P, K] (readable, used as the reference) and a
compact one on the masked tokens only (what training runs, since only ~15% of patch tokens go through the
65k-prototype head), with per-token weights from :func:`masked_token_weights`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ibot_patch_loss", "ibot_patch_loss_masked", "masked_token_weights"]


def masked_token_weights(masks: Tensor) -> Tensor:
    """Weight 1 / (masked patches of its image) for every masked token, in ``masks[masks]`` (row-major) order.

    Args:
        masks: [N_img, P] bool, True where the student's patch is masked.

    Returns:
        [M] float32, M = masks.sum(); sums to the number of images that have at least one masked patch.
    """
    per_image = 1.0 / masks.sum(dim=-1).clamp(min=1).float()
    return per_image.unsqueeze(-1).expand_as(masks)[masks]


def ibot_patch_loss(
    student_patch_logits: Tensor,
    teacher_patch_probs: Tensor,
    masks: Tensor,
    student_temp: float = 0.1,
) -> Tensor:
    """Dense iBOT loss: masked-patch cross-entropy, averaged per image, summed and divided by N_img.

    Args:
        student_patch_logits: [N_img, P, K] student head outputs for all patch tokens of the global crops.
        teacher_patch_probs: [N_img, P, K] teacher probabilities (only masked positions are used).
        masks: [N_img, P] bool, True where masked.
        student_temp: student softmax temperature.

    Returns:
        Scalar loss in at least float32.
    """
    if student_patch_logits.shape != teacher_patch_probs.shape or student_patch_logits.shape[:2] != masks.shape:
        raise ValueError(
            f"ibot_patch_loss: shapes student {tuple(student_patch_logits.shape)}, teacher "
            f"{tuple(teacher_patch_probs.shape)}, masks {tuple(masks.shape)} do not match [N_img, P, K]/[N_img, P]"
        )
    dtype = torch.promote_types(student_patch_logits.dtype, torch.float32)
    log_p = F.log_softmax(student_patch_logits.to(dtype) / student_temp, dim=-1)
    ce = -(teacher_patch_probs.detach().to(dtype) * log_p).sum(dim=-1)  # [N_img, P]
    m = masks.to(dtype)
    per_image = (ce * m).sum(dim=-1) / m.sum(dim=-1).clamp(min=1.0)
    return per_image.sum() / masks.shape[0]


def ibot_patch_loss_masked(
    student_masked_logits: Tensor,
    teacher_masked_probs: Tensor,
    weights: Tensor,
    n_images: int,
    student_temp: float = 0.1,
) -> Tensor:
    """Compact iBOT loss on masked tokens only; equals :func:`ibot_patch_loss` with the same masks.

    Args:
        student_masked_logits: [M, K] student head outputs of the masked tokens (``tokens[masks]`` order).
        teacher_masked_probs: [M, K] teacher probabilities of the same tokens.
        weights: [M] per-token weights, ``masked_token_weights(masks)``.
        n_images: N_img, the number of global images including those without a mask.
        student_temp: student softmax temperature.

    Returns:
        Scalar loss in at least float32.
    """
    m = student_masked_logits.shape[0]
    if teacher_masked_probs.shape != student_masked_logits.shape or weights.shape != (m,):
        raise ValueError(
            f"ibot_patch_loss_masked: shapes student {tuple(student_masked_logits.shape)}, teacher "
            f"{tuple(teacher_masked_probs.shape)}, weights {tuple(weights.shape)} do not match [M, K]/[M]"
        )
    if n_images < 1:
        raise ValueError(f"ibot_patch_loss_masked: n_images must be >= 1, got {n_images}")
    dtype = torch.promote_types(student_masked_logits.dtype, torch.float32)
    log_p = F.log_softmax(student_masked_logits.to(dtype) / student_temp, dim=-1)
    ce = -(teacher_masked_probs.detach().to(dtype) * log_p).sum(dim=-1)
    return (ce * weights.to(dtype)).sum() / n_images
