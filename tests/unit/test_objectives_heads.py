"""DINOHead: weight-normalised prototypes, last-layer freezing, DINOv2 state-dict layout."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from radscale.models.heads import DINOHead, dinov2_head_state, load_dinov2_head_state

DINOV2_KEYS = {
    "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
    "last_layer.weight_g", "last_layer.weight_v",
}  # fmt: skip


def _released_like_state(in_dim: int, out_dim: int, hidden: int, bottleneck: int, seed: int) -> dict:
    """A state dict in the layout of DINOv2's dino_head (old torch weight_norm: weight_g [K, 1], weight_v)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "mlp.0.weight": (hidden, in_dim), "mlp.0.bias": (hidden,),
        "mlp.2.weight": (hidden, hidden), "mlp.2.bias": (hidden,),
        "mlp.4.weight": (bottleneck, hidden), "mlp.4.bias": (bottleneck,),
        "last_layer.weight_g": (out_dim, 1), "last_layer.weight_v": (out_dim, bottleneck),
    }  # fmt: skip
    state = {k: torch.randn(s, generator=g) * 0.1 for k, s in shapes.items()}
    state["last_layer.weight_g"] = state["last_layer.weight_g"].abs() + 0.5  # a trained gain need not be 1
    return state


def _head_formula(state: dict, x: torch.Tensor) -> torch.Tensor:
    """Forward pass written from the DINOv2 head definition, on a DINOv2-layout state dict."""
    gelu = nn.functional.gelu
    h = gelu(x @ state["mlp.0.weight"].t() + state["mlp.0.bias"])
    h = gelu(h @ state["mlp.2.weight"].t() + state["mlp.2.bias"])
    h = h @ state["mlp.4.weight"].t() + state["mlp.4.bias"]
    h = h / h.norm(dim=-1, keepdim=True)
    v = state["last_layer.weight_v"]
    w = state["last_layer.weight_g"] * v / v.norm(dim=1, keepdim=True)
    return h @ w.t()


def test_head_prototypes_have_unit_norm_and_fixed_gain() -> None:
    head = DINOHead(in_dim=12, out_dim=40, hidden_dim=16, bottleneck_dim=8)
    out = head(torch.randn(5, 12))
    assert out.shape == (5, 40)
    assert out.abs().max() <= 1.0 + 1e-6  # unit bottleneck x unit prototypes = cosines
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(40), atol=1e-6)
    trainable = {n for n, p in head.named_parameters() if p.requires_grad}
    assert "last_layer.parametrizations.weight.original0" not in trainable  # g fixed at 1
    assert "last_layer.parametrizations.weight.original1" in trainable
    free = DINOHead(in_dim=12, out_dim=40, hidden_dim=16, bottleneck_dim=8, norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad


def test_head_last_layer_can_be_frozen() -> None:
    head = DINOHead(in_dim=6, out_dim=10, hidden_dim=8, bottleneck_dim=4)
    assert head.last_layer_parameters() == [head.last_layer.parametrizations.weight.original1]
    head.set_last_layer_trainable(False)
    head(torch.randn(3, 6)).sum().backward()
    assert head.last_layer.parametrizations.weight.original1.grad is None
    assert head.mlp[0].weight.grad is not None
    head.set_last_layer_trainable(True)
    assert all(p.requires_grad for p in head.last_layer_parameters())


def test_head_loads_released_dinov2_layout() -> None:
    state = _released_like_state(12, 30, 16, 8, seed=0)
    head = DINOHead(in_dim=12, out_dim=30, hidden_dim=16, bottleneck_dim=8)
    load_dinov2_head_state(head, state)
    x = torch.randn(4, 12)
    assert torch.allclose(head(x), _head_formula(state, x), atol=1e-5)
    exported = dinov2_head_state(head)
    assert set(exported) == DINOV2_KEYS
    assert all(torch.equal(exported[k], state[k]) for k in DINOV2_KEYS)
    other = DINOHead(in_dim=12, out_dim=30, hidden_dim=16, bottleneck_dim=8)
    load_dinov2_head_state(other, {f"teacher.dino_head.{k}": v for k, v in state.items()})
    assert torch.allclose(other(x), head(x))


def test_head_layout_matches_torch_legacy_weight_norm_keys() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy API is deprecated; only its key names matter here
        legacy = nn.utils.weight_norm(nn.Linear(8, 30, bias=False))
    legacy_keys = {f"last_layer.{k}" for k in legacy.state_dict()}
    assert legacy_keys == {"last_layer.weight_g", "last_layer.weight_v"}
    head = DINOHead(in_dim=12, out_dim=30, hidden_dim=16, bottleneck_dim=8)
    exported = dinov2_head_state(head)
    assert exported["last_layer.weight_g"].shape == legacy.weight_g.shape
    assert exported["last_layer.weight_v"].shape == legacy.weight_v.shape


def test_head_load_rejects_wrong_keys_and_shapes() -> None:
    state = _released_like_state(12, 30, 16, 8, seed=1)
    head = DINOHead(in_dim=12, out_dim=30, hidden_dim=16, bottleneck_dim=8)
    with pytest.raises(ValueError, match="missing key 'last_layer.weight_g'"):
        load_dinov2_head_state(head, {k: v for k, v in state.items() if k != "last_layer.weight_g"})
    with pytest.raises(ValueError, match="shape"):
        load_dinov2_head_state(DINOHead(in_dim=12, out_dim=31, hidden_dim=16, bottleneck_dim=8), state)
