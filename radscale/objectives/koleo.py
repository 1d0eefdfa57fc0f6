"""KoLeo regulariser (Sablayrolles et al. 2019 "Spreading vectors for similarity search"; DINOv2 §4).

The Kozachenko-Leonenko differential-entropy estimator, up to constants, is the mean log distance of each
point to its nearest neighbour. Maximising it spreads the L2-normalised features uniformly, so the loss is

    L = -1/B * sum_i log(d_i + eps),   d_i = min_{j != i} || x_i/|x_i| - x_j/|x_j| ||_2.

DINOv2 applies 0.1 x this to the student's backbone class token of each global crop, per rank (not gathered).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["koleo_loss"]


def koleo_loss(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Kozachenko-Leonenko loss of a batch of vectors, computed in at least float32.

    Args:
        x: [B, D] features, B >= 2.
        eps: added inside the log (and as the normalisation floor) so coincident points give a finite loss.

    Returns:
        Scalar loss.
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"koleo_loss: expected [B, D] with B >= 2, got {tuple(x.shape)}")
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    with torch.autocast(device_type=x.device.type, enabled=False):
        z = F.normalize(x, p=2, dim=-1, eps=eps)
        # For unit vectors the nearest neighbour is the largest inner product; mask self with -inf.
        with torch.no_grad():
            sims = z @ z.t()
            sims.fill_diagonal_(float("-inf"))
            nn_index = sims.argmax(dim=1)
        d = torch.linalg.vector_norm(z - z[nn_index], dim=-1)
        return -torch.log(d + eps).mean()
