"""DINO self-distillation loss on class tokens (Caron et al. 2021, Oquab et al. 2023 "DINOv2", §4).

The student sees every crop (globals first, then locals); the teacher sees only the global crops. Each
(teacher global view g, student view s) pair with s != g contributes the cross-entropy

    H(t_g, s_s) = mean_b [ -sum_k t_g[b, k] * log_softmax(s_s[b] / tau_s)[k] ],

and the loss is the plain mean of H over all such pairs: with 2 globals and 8 locals, 2 * (1 + 8) = 18 pairs.
This equals DINOv2's reference scaling, where the global term (teacher views swapped, counted twice) and the
local term are each divided by the total number of terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["dino_loss", "n_dino_pairs"]


def n_dino_pairs(n_student_views: int, n_teacher_views: int) -> int:
    """Number of (teacher view, different student view) pairs the DINO loss averages over."""
    return n_teacher_views * n_student_views - n_teacher_views


def dino_loss(student_logits: Tensor, teacher_probs: Tensor, student_temp: float = 0.1) -> Tensor:
    """Mean DINO cross-entropy over all (teacher global g, student view s != g) pairs.

    Args:
        student_logits: [S, B, K] head outputs of the student; views 0..G-1 are the global crops in the same
            order as the teacher's, views G..S-1 the local crops.
        teacher_probs: [G, B, K] centred, sharpened teacher probabilities (no gradient is taken through them).
        student_temp: student softmax temperature tau_s.

    Returns:
        Scalar loss, computed in at least float32 (head outputs may be bf16; a 65k-way log-softmax must not be).
    """
    if student_logits.dim() != 3 or teacher_probs.dim() != 3:
        raise ValueError(
            f"dino_loss: expected student [S, B, K] and teacher [G, B, K], got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_probs.shape)}"
        )
    n_student, batch, k = student_logits.shape
    n_teacher = teacher_probs.shape[0]
    if teacher_probs.shape[1:] != (batch, k) or n_teacher > n_student:
        raise ValueError(
            f"dino_loss: teacher {tuple(teacher_probs.shape)} does not match student {tuple(student_logits.shape)}"
            " (need G <= S and equal B, K)"
        )
    n_pairs = n_dino_pairs(n_student, n_teacher)
    if n_pairs < 1:
        raise ValueError(f"dino_loss: {n_student} student and {n_teacher} teacher views form no pair with s != g")

    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_p = F.log_softmax(student_logits.to(dtype) / student_temp, dim=-1)
    t = teacher_probs.detach().to(dtype)
    # sum_{g, s != g} <t_g, log p_s> = <sum_g t_g, sum_s log p_s> - sum_g <t_g, log p_g>:
    # two reductions instead of an S x G loop, with the same value.
    all_pairs = (t.sum(0) * log_p.sum(0)).sum()
    same_view = (t * log_p[:n_teacher]).sum()
    return -(all_pairs - same_view) / (batch * n_pairs)
