"""DINO projection head shared by the DINO and iBOT losses (Caron et al. 2021 §3; DINOv2, Oquab et al. 2023).

x -> MLP (Linear-GELU-...-Linear to a bottleneck) -> L2 normalise -> weight-normalised Linear to K prototypes.
The last layer is W = g * v / ||v|| row-wise (Salimans & Kingma 2016) with g initialised to 1. With
``norm_last_layer=True`` (default) g stays fixed, so every prototype has unit norm and logits are cosines.
Note: DINOv2's released code initialises g to 1 but leaves it trainable; ``norm_last_layer=False`` does that.

State-dict keys follow torch's parametrised weight norm (``last_layer.parametrizations.weight.original0`` = g,
``original1`` = v); :func:`load_dinov2_head_state` / :func:`dinov2_head_state` convert from / to DINOv2's
layout (``mlp.0/2/4.*``, ``last_layer.weight_g``, ``last_layer.weight_v``) used by the released
``dino_head.safetensors``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["DINOHead", "dinov2_head_state", "load_dinov2_head_state"]

_G_KEY = "last_layer.parametrizations.weight.original0"
_V_KEY = "last_layer.parametrizations.weight.original1"
_DINOV2_TO_OURS = {"last_layer.weight_g": _G_KEY, "last_layer.weight_v": _V_KEY}
_OURS_TO_DINOV2 = {v: k for k, v in _DINOV2_TO_OURS.items()}


def _build_mlp(in_dim: int, hidden_dim: int, bottleneck_dim: int, n_layers: int) -> nn.Module:
    if n_layers == 1:
        return nn.Linear(in_dim, bottleneck_dim)
    dims = [in_dim] + [hidden_dim] * (n_layers - 1)
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.GELU()]
    layers.append(nn.Linear(hidden_dim, bottleneck_dim))
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """MLP + L2-normalised bottleneck + weight-normalised prototype layer.

    Args:
        in_dim: backbone embedding size.
        out_dim: number of prototypes K (RAD-DINO / DINOv2: 65,536).
        hidden_dim: MLP hidden width.
        bottleneck_dim: size of the normalised bottleneck.
        n_layers: number of Linear layers in the MLP (>= 1).
        norm_last_layer: keep the weight-norm gain g fixed (at 1 unless loaded otherwise).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"DINOHead: n_layers must be >= 1, got {n_layers}")
        self.norm_last_layer = norm_last_layer
        self.mlp = _build_mlp(in_dim, hidden_dim, bottleneck_dim, n_layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        with torch.no_grad():
            self._gain.fill_(1.0)
        self._gain.requires_grad_(not norm_last_layer)

    @property
    def _gain(self) -> nn.Parameter:
        return self.last_layer.parametrizations.weight.original0

    def forward(self, x: Tensor) -> Tensor:
        x = self.mlp(x)
        eps = 1e-6 if x.dtype == torch.float16 else 1e-12  # 1e-12 underflows in fp16
        x = nn.functional.normalize(x, dim=-1, p=2, eps=eps)
        return self.last_layer(x)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """Parameters of the prototype layer that training may update (v, and g unless ``norm_last_layer``).

        DINOv2 "freezes" the last layer for the first part of training by giving these a learning rate of 0
        in their own optimizer group; that also suppresses AdamW's decoupled weight decay and works under
        DDP and DeepSpeed, so prefer it to toggling ``requires_grad`` on a wrapped model.
        """
        params = [self.last_layer.parametrizations.weight.original1]
        return params if self.norm_last_layer else [self._gain, *params]

    def set_last_layer_trainable(self, trainable: bool) -> None:
        """Toggle ``requires_grad`` of :meth:`last_layer_parameters` (single process or before wrapping)."""
        for p in self.last_layer_parameters():
            p.requires_grad_(trainable)


def _strip_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop a shared '<...>dino_head.' prefix such as 'teacher.dino_head.' from full SSL checkpoints."""
    keys = list(state_dict)
    marker = "dino_head."
    if keys and all(marker in k for k in keys):
        prefixes = {k[: k.index(marker) + len(marker)] for k in keys}
        if len(prefixes) == 1:
            (prefix,) = prefixes
            return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def load_dinov2_head_state(head: DINOHead, state_dict: Mapping[str, Tensor]) -> None:
    """Load a DINOv2-layout head state (``mlp.*``, ``last_layer.weight_g/_v``) into ``head``, strictly.

    Also accepts this module's own layout, and keys under one common ``...dino_head.`` prefix. The gain g is
    taken from the file as stored (a trained gain is kept, and stays frozen when ``norm_last_layer``).
    """
    mapped = {_DINOV2_TO_OURS.get(k, k): v for k, v in _strip_prefix(state_dict).items()}
    expected = head.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    if missing or unexpected:
        key = (missing or unexpected)[0]
        what = "missing" if missing else "unexpected"
        raise ValueError(f"load_dinov2_head_state: {what} key {_OURS_TO_DINOV2.get(key, key)!r} for this DINOHead")
    for key, value in mapped.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"load_dinov2_head_state: key {_OURS_TO_DINOV2.get(key, key)!r} has shape {tuple(value.shape)}, "
                f"expected {tuple(expected[key].shape)}"
            )
    head.load_state_dict(mapped, strict=True)


def dinov2_head_state(head: DINOHead) -> dict[str, Tensor]:
    """``head``'s state in DINOv2's key layout (for export or comparison with the reference)."""
    return {_OURS_TO_DINOV2.get(k, k): v for k, v in head.state_dict().items()}
