"""RAD-DINO / DINOv2 weights -> radscale ViTEncoder state (keys `mask_token`, `vit.*`).

Two released layouts (model card `microsoft/rad-dino`):
- the original DINOv2 layout (`backbone_compatible.safetensors`): `cls_token`, `pos_embed`, `mask_token`,
  `patch_embed.proj.*`, `blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}`, `norm.*`.
  timm's ViT uses the same names, so the map is a `vit.` prefix — except `mask_token`, which timm's own DINOv2
  filter drops and iBOT needs (radscale keeps it on the encoder). Training checkpoints with `block_chunks`
  (`blocks.C.N.*`, N global) are flattened.
- Hugging Face `Dinov2Model` (`config.json` + `model.safetensors`): separate q/k/v projections are concatenated
  into timm's fused `qkv` (rows ordered q, k, v, as timm splits them); `layer_scaleK.lambda1` -> `lsK.gamma`.
  Both the on-disk names (`attention.attention.query`, `attention.output.dense`) and transformers 5's in-memory
  names (`attention.q_proj`, `attention.o_proj`) are accepted.

Converters return (mapped, unmapped): unmapped source keys are reported, never dropped silently.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from radscale.errors import RadscaleError
from radscale.models.registry import RAD_DINO_MEAN, RAD_DINO_STD

_DINOV2_PREFIXES = ("teacher.backbone.", "student.backbone.", "backbone.", "module.")


def _strip_common_prefix(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    for p in prefixes:
        if state and all(k.startswith(p) for k in state):
            return {k[len(p):]: v for k, v in state.items()}
    return state


def convert_dinov2_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Original DINOv2 key layout -> ViTEncoder keys."""
    state = _strip_common_prefix(state, _DINOV2_PREFIXES)
    mapped, unmapped = {}, []
    for k, v in state.items():
        k2 = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k)        # block_chunks: index is global
        if k2 == "mask_token":
            mapped["mask_token"] = v.reshape(1, -1)                     # [1, D] in DINOv2 and here
        elif k2 in ("cls_token", "pos_embed") or k2.startswith(("patch_embed.proj.", "norm.")):
            mapped["vit." + k2] = v
        elif re.match(r"blocks\.\d+\.(norm[12]|attn\.(qkv|proj)|ls[12]\.gamma|mlp\.fc[12])\.?", k2):
            mapped["vit." + k2] = v
        else:
            unmapped.append(k)                   # e.g. register_tokens, SwiGLU w12/w3: no ViT-B counterpart
    return mapped, unmapped


_HF_LAYER = re.compile(r"encoder\.layer\.(\d+)\.(.+)$")
_HF_QKV = {"attention.attention.query.": "q", "attention.attention.key.": "k", "attention.attention.value.": "v",
           "attention.q_proj.": "q", "attention.k_proj.": "k", "attention.v_proj.": "v"}
_HF_RENAME = {"attention.output.dense.": "attn.proj.", "attention.o_proj.": "attn.proj.",
              "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
              "norm1.": "norm1.", "norm2.": "norm2.", "mlp.fc1.": "mlp.fc1.", "mlp.fc2.": "mlp.fc2."}
_HF_TOP = {"embeddings.cls_token": "vit.cls_token", "embeddings.mask_token": "mask_token",
           "embeddings.position_embeddings": "vit.pos_embed",
           "embeddings.patch_embeddings.projection.weight": "vit.patch_embed.proj.weight",
           "embeddings.patch_embeddings.projection.bias": "vit.patch_embed.proj.bias",
           "layernorm.weight": "vit.norm.weight", "layernorm.bias": "vit.norm.bias"}


def convert_hf_dinov2_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Hugging Face `Dinov2Model` keys -> ViTEncoder keys (q/k/v fused into timm's qkv)."""
    state = _strip_common_prefix(state, ("dinov2.", "model."))
    mapped, unmapped = {}, []
    qkv: dict[tuple[str, str], dict[str, tuple[str, torch.Tensor]]] = {}   # (layer, weight|bias) -> q/k/v
    for k, v in state.items():
        if k in _HF_TOP:
            mapped[_HF_TOP[k]] = v.reshape(1, -1) if k == "embeddings.mask_token" else v
            continue
        m = _HF_LAYER.match(k)
        rest = m.group(2) if m else ""
        part = next((p for p in _HF_QKV if rest.startswith(p)), None)
        if part is not None:
            qkv.setdefault((m.group(1), rest[len(part):]), {})[_HF_QKV[part]] = (k, v)
            continue
        new = next((rest.replace(a, b, 1) for a, b in _HF_RENAME.items() if rest.startswith(a)), None)
        if new is None:
            unmapped.append(k)
        else:
            mapped[f"vit.blocks.{m.group(1)}.{new}"] = v
    for (layer, suffix), parts in sorted(qkv.items()):
        if set(parts) == {"q", "k", "v"}:
            mapped[f"vit.blocks.{layer}.attn.qkv.{suffix}"] = torch.cat([parts[p][1] for p in "qkv"], dim=0)
        else:
            unmapped += [name for name, _ in parts.values()]             # qkv then shows up as missing
    return mapped, unmapped


def read_hf_preprocessing(directory: Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """image_mean / image_std from a Hugging Face `preprocessor_config.json`, if shipped."""
    path = Path(directory) / "preprocessor_config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RadscaleError(f"{path}: unreadable preprocessor config ({type(e).__name__})") from None
    mean, std = cfg.get("image_mean"), cfg.get("image_std")
    if mean is None or std is None:
        return None
    as_tuple = (lambda x: tuple(float(a) for a in (x if isinstance(x, list) else [x])))
    return as_tuple(mean), as_tuple(std)


def read_hf_config(directory: Path) -> dict:
    path = Path(directory) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RadscaleError(f"{path}: unreadable Hugging Face config ({type(e).__name__})") from None


def resample_pos_embed(posemb: torch.Tensor, target_shape: tuple[int, ...]) -> torch.Tensor | None:
    """[1, 1+N, D] -> [1, 1+M, D] on square grids (bicubic, no antialiasing); None if shapes are not that."""
    if posemb.dim() != 3 or len(target_shape) != 3 or posemb.shape[-1] != target_shape[-1]:
        return None
    old, new = math.isqrt(posemb.shape[1] - 1), math.isqrt(target_shape[1] - 1)
    if old * old != posemb.shape[1] - 1 or new * new != target_shape[1] - 1:
        return None
    if posemb.is_meta:
        return torch.empty(target_shape, dtype=posemb.dtype, device="meta")
    out = resample_abs_pos_embed(posemb.float(), new_size=[new, new], old_size=[old, old], num_prefix_tokens=1,
                                 antialias=False)     # as the encoder resizes at other input sizes (vit.py)
    return out.to(posemb.dtype)


def hf_weight_files(d: Path) -> tuple[Path, ...]:
    """The weight file(s) of a Hugging Face model directory (single file, or the shards of an index)."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (d / name).is_file():
            return (d / name,)
    index = d / "model.safetensors.index.json"
    if index.is_file():
        return tuple(sorted({d / f for f in json.loads(index.read_text())["weight_map"].values()}))
    raise RadscaleError(f"{d}: Hugging Face directory without model.safetensors or pytorch_model.bin")


def hf_config_warnings(directory: Path | None, image: nn.Module) -> list[str]:
    """config.json settings the timm ViT does not follow (weights would load, features would differ)."""
    if directory is None or not (directory / "config.json").is_file():
        return []
    cfg, out = read_hf_config(directory), []
    eps = getattr(image.vit.norm, "eps", None)
    if eps is not None and abs(cfg.get("layer_norm_eps", 1e-6) - eps) > 1e-12:
        out.append(f"config.json layer_norm_eps {cfg.get('layer_norm_eps')} differs from the model's {eps}")
    if cfg.get("hidden_act", "gelu") != "gelu":
        out.append(f"config.json hidden_act {cfg.get('hidden_act')!r}; the timm ViT uses exact GELU")
    return out


def preprocessing_warnings(mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None) -> list[str]:
    """RAD-DINO normalises with one mean/std (model card ~0.5307/0.2583); warn if the shipped config differs."""
    if mean_std is None:
        return []
    mean, std = mean_std
    if any(abs(m - RAD_DINO_MEAN) > 5e-4 for m in mean) or any(abs(s - RAD_DINO_STD) > 5e-4 for s in std):
        return [f"preprocessor_config.json mean {list(mean)} / std {list(std)} differ from radscale's "
                f"{RAD_DINO_MEAN}/{RAD_DINO_STD}: features will not match the released model"]
    return []
