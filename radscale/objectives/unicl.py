"""UniCL: unified contrastive learning in image-text-label space (Yang et al., CVPR 2022, Eq. 2-4).

Logits S_ij = s * u_i . v_j over the global batch. The positives of image i are a set P_i of texts (and of
text j a set Q_j of images), given as one bool matrix. Pinned convention:

    L_i2t = mean over images i with P_i non-empty of  -(1/|P_i|) sum_{j in P_i} log softmax_j(S_ij)
    L_t2i = mean over texts  j with Q_j non-empty of  -(1/|Q_j|) sum_{i in Q_j} log softmax_i(S_ij)
    L     = (L_i2t + L_t2i) / 2

With the identity as positives this is exactly the CLIP loss (open_clip ``ClipLoss``). Rows or columns
without any positive carry no target and are left out of their mean.

How a multi-label CXR becomes positives is not published; two explicit policies are offered by
:func:`positives_from_label_sets` (the run records which one). Batches are UniCL triplets: text j was made
for image j, either free text (a report) or a prompt for one label (``text_labels[j]`` = its label index,
-1 for free text).
- ``"sample_one"``: each image-label pair uses one label sampled from the image's positives; image i and
  text j are positive when they come from the same image or carry the same sampled label (UniCL's
  single-label rule applied to the sampled label).
- ``"any_shared"``: image i and text j are positive when they come from the same image or text j's label is
  among image i's positive labels.

Distributed use: pass this rank's features (they are gathered inside), and build ``positives`` over the
global batch from keys gathered with :func:`gather_keys`, which uses the same rank order as the features.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from radscale.objectives.clip import clip_logits
from radscale.objectives.distributed import all_gather_no_grad

__all__ = ["POLICIES", "gather_keys", "positives_from_keys", "positives_from_label_sets", "unicl_loss"]

POLICIES = ("sample_one", "any_shared")


def gather_keys(*keys: Tensor) -> tuple[Tensor, ...]:
    """Gather per-sample keys/labels from all ranks in the rank order used for features (no gradient)."""
    return tuple(all_gather_no_grad(k) for k in keys)


def positives_from_keys(image_keys: Tensor, text_keys: Tensor) -> Tensor:
    """[B_img, B_txt] bool: image i and text j are positive when their keys are equal."""
    if image_keys.dim() != 1 or text_keys.dim() != 1:
        raise ValueError(
            f"positives_from_keys: expected 1-D keys, got {tuple(image_keys.shape)} and {tuple(text_keys.shape)}"
        )
    return image_keys.unsqueeze(1) == text_keys.unsqueeze(0)


def positives_from_label_sets(
    image_labels: Tensor,
    text_labels: Tensor,
    policy: str,
    image_ids: Optional[Tensor] = None,
    check_range: bool = True,
    image_keys: Optional[Tensor] = None,
) -> Tensor:
    """Positives for a UniCL triplet batch under an explicit multi-label policy.

    Args:
        image_labels: [B, L] bool, image i's positive labels (multi-hot).
        text_labels: [B] long, label index that text j was made from, or -1 for free text (a report).
        policy: ``"sample_one"`` or ``"any_shared"`` (see module docstring).
        image_ids: optional [B] ids of the image behind each pair; texts made for the same image are positive
            for every copy of that image in the batch. Default: only pair i <-> text i.
        check_range: validate text_labels' range; it reads the values on the host (a device sync per step), so
            a caller whose labels are in range by construction (the training task) turns it off.
        image_keys: ``"sample_one"`` only: [B] the label sampled for the image behind row i (-1 none). Default
            text_labels (each row's own pair). A batch that repeats an image (next to its report and next to its
            label prompt) must pass the sampled label for every copy, or the copies get opposite targets.

    Returns:
        [B, B] bool positives (rows images, columns texts); the diagonal is always positive.
    """
    if policy not in POLICIES:
        raise ValueError(f"positives_from_label_sets: policy must be one of {POLICIES}, got {policy!r}")
    if image_labels.dim() != 2 or text_labels.shape != (image_labels.shape[0],):
        raise ValueError(
            f"positives_from_label_sets: expected image_labels [B, L] and text_labels [B], got "
            f"{tuple(image_labels.shape)} and {tuple(text_labels.shape)}"
        )
    n_labels = image_labels.shape[1]
    if check_range and text_labels.numel() and (int(text_labels.min()) < -1 or int(text_labels.max()) >= n_labels):
        raise ValueError(f"positives_from_label_sets: text_labels must be in [-1, {n_labels - 1}]")
    b = text_labels.shape[0]
    same = torch.eye(b, dtype=torch.bool, device=text_labels.device)
    if image_ids is not None:
        same = same | positives_from_keys(image_ids, image_ids)
    is_label_text = (text_labels >= 0).unsqueeze(0)  # [1, B] over texts
    if policy == "sample_one":
        # An image is represented by its sampled label (image_keys[i], by default its own pair's label).
        keys = text_labels if image_keys is None else image_keys
        if keys.shape != text_labels.shape:
            raise ValueError(f"positives_from_label_sets: image_keys {tuple(keys.shape)} for {b} texts")
        shared = (keys.unsqueeze(1) == text_labels.unsqueeze(0)) & is_label_text & (keys >= 0).unsqueeze(1)
    else:
        columns = text_labels.clamp(min=0)
        shared = image_labels.bool()[:, columns] & is_label_text
    return same | shared


def unicl_loss(
    image_features: Tensor,
    text_features: Tensor,
    positives: Tensor,
    logit_scale: Tensor | float,
) -> Tensor:
    """UniCL loss (module docstring convention) over the global batch, at least float32.

    Args:
        image_features: [B_img, D] L2-normalised image embeddings of this rank (gathered inside).
        text_features: [B_txt, D] L2-normalised text embeddings of this rank (gathered inside).
        positives: [B_img_global, B_txt_global] bool positives over the gathered batch.
        logit_scale: multiplier s (already exponentiated), float or scalar tensor.
    """
    logits = clip_logits(image_features, text_features, logit_scale)
    if positives.shape != logits.shape:
        raise ValueError(
            f"unicl_loss: positives {tuple(positives.shape)} must match the gathered batch {tuple(logits.shape)}"
        )
    pos = positives.to(device=logits.device, dtype=torch.bool)
    weights = pos.float()
    zero = logits.new_zeros(())
    i2t = -torch.where(pos, F.log_softmax(logits, dim=1), zero).sum(dim=1)
    t2i = -torch.where(pos, F.log_softmax(logits, dim=0), zero).sum(dim=0)
    n_row, n_col = weights.sum(dim=1), weights.sum(dim=0)
    loss_i2t = (i2t / n_row.clamp(min=1.0)).sum() / (n_row > 0).sum().clamp(min=1)
    loss_t2i = (t2i / n_col.clamp(min=1.0)).sum() / (n_col > 0).sum().clamp(min=1)
    return 0.5 * (loss_i2t + loss_t2i)
