"""MI2 (MedImageInsight) released weights -> radscale DaViTEncoder / TextEncoder / TwoTowerModel state.

Released layout (established from the loader code published with the weights: `MedImageInsight/UniCLModel.py`,
`ImageEncoder/davit_v1.py`, `LangEncoder/transformer.py` and `2024.09.27/config.yaml` in lion-ai/MedImageInsights,
mirrored at github.com/visual-layer/MedImageInsight): one safetensors file, despite its `.pt` suffix,
`2024.09.27/vision_model/medimageinsigt-v1.0.0.pt` (2.46 GB = both towers in fp32), holding a `UniCLModel` state:
- `image_encoder.*`: Florence-style DaViT (`convs.I.{proj,norm}`, `blocks.I.J.{spatial,channel}_block.
  {conv1.fn.dw, window_attn|channel_attn.{norm,fn.qkv,fn.proj}, conv2.fn.dw, ffn.{norm,fn.net.fc1,fn.net.fc2}}`,
  `norms`); the loader also remaps older DaViT names (`conv_embeds`, `main_blocks`, `0.cpe.0.proj`, `0.attn` ...).
- `lang_encoder.*`: CLIP-style text transformer (`token_embedding`, `positional_embedding` [77, W],
  `resblocks.N.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}`, `ln_final`) — open_clip's names.
- `image_projection` [2048, P] and `lang_projection` [W, P] used as `x @ P`; scalar `logit_scale` (init 1.0).
  Older files say `visual.` / `text.` / `vision_projection` / `text_projection`; the loader renames them.
The released file was not downloaded (public copies are Git LFS pointers): its key names are inferred from the
module names its loader builds. Corroboration: that state for the config's shapes (DaViT 256/512/1024/2048,
depths 1/1/9/1; text width 1024 x 16 layers, vocab 49408, context 77; projection 1024), serialised as fp32
safetensors without metadata, is 2,464,060,700 bytes — the pointer's exact size (the older DaViT names give
8,960 bytes less). Everything unmapped is reported, never dropped.

radscale's towers follow MI2's semantics (QuickGELU, LayerNorm eps 1e-12 in the text tower; image feature =
LayerNorm(mean of last-stage tokens)); `mi2_semantic_notes` reports any tower that differs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

_IMAGE_PREFIXES = ("image_encoder.", "visual.")
_TEXT_PREFIXES = ("lang_encoder.", "text.")
_IMAGE_PROJ = ("image_projection", "vision_projection")
_TEXT_PROJ = ("lang_projection", "text_projection")

# Older DaViT names -> Florence names (the same renames MI2's own loader applies).
_LEGACY = [(r"^conv_embeds\.", "convs."), (r"^main_blocks\.", "blocks."),
           (r"^(blocks\.\d+\.\d+)\.0\.cpe\.0\.proj\.", r"\1.spatial_block.conv1.fn.dw."),
           (r"^(blocks\.\d+\.\d+)\.0\.cpe\.1\.proj\.", r"\1.spatial_block.conv2.fn.dw."),
           (r"^(blocks\.\d+\.\d+)\.0\.attn\.", r"\1.spatial_block.window_attn.fn."),
           (r"^(blocks\.\d+\.\d+)\.0\.norm1\.", r"\1.spatial_block.window_attn.norm."),
           (r"^(blocks\.\d+\.\d+)\.0\.norm2\.", r"\1.spatial_block.ffn.norm."),
           (r"^(blocks\.\d+\.\d+)\.0\.mlp\.", r"\1.spatial_block.ffn.fn.net."),
           (r"^(blocks\.\d+\.\d+)\.1\.cpe\.0\.proj\.", r"\1.channel_block.conv1.fn.dw."),
           (r"^(blocks\.\d+\.\d+)\.1\.cpe\.1\.proj\.", r"\1.channel_block.conv2.fn.dw."),
           (r"^(blocks\.\d+\.\d+)\.1\.attn\.", r"\1.channel_block.channel_attn.fn."),
           (r"^(blocks\.\d+\.\d+)\.1\.norm1\.", r"\1.channel_block.channel_attn.norm."),
           (r"^(blocks\.\d+\.\d+)\.1\.norm2\.", r"\1.channel_block.ffn.norm."),
           (r"^(blocks\.\d+\.\d+)\.1\.mlp\.", r"\1.channel_block.ffn.fn.net.")]

# Florence block-internal names -> timm DaVit block names.
_BLOCK = [("conv1.fn.dw.", "cpe1.proj."), ("conv2.fn.dw.", "cpe2.proj."),
          ("window_attn.norm.", "norm1."), ("channel_attn.norm.", "norm1."),
          ("window_attn.fn.qkv.", "attn.qkv."), ("window_attn.fn.proj.", "attn.proj."),
          ("channel_attn.fn.qkv.", "attn.qkv."), ("channel_attn.fn.proj.", "attn.proj."),
          ("ffn.norm.", "norm2."), ("ffn.fn.net.fc1.", "mlp.fc1."), ("ffn.fn.net.fc2.", "mlp.fc2.")]
_TEXT_KEYS = re.compile(r"^(token_embedding\.weight|positional_embedding|ln_final\.(weight|bias)|"
                        r"resblocks\.\d+\.(ln_[12]\.(weight|bias)|attn\.(in_proj_weight|in_proj_bias|"
                        r"out_proj\.(weight|bias))|mlp\.c_(fc|proj)\.(weight|bias)))$")


@dataclass(frozen=True)
class Mi2Conversion:
    """What `convert_mi2_state` could not place in a tower. `two_tower_state` holds TwoTowerModel-level
    tensors (`image_proj.weight` = image_projection.T, `logit_scale` as shape [1])."""
    two_tower_state: dict
    unmapped: tuple[str, ...]


def _image_key(k: str) -> str | None:
    for pat, rep in _LEGACY:
        k = re.sub(pat, rep, k)
    if m := re.match(r"^convs\.(\d+)\.(proj|norm)\.(weight|bias)$", k):
        stage, part, leaf = m.groups()
        part = "conv" if part == "proj" else "norm"
        return f"davit.stem.{part}.{leaf}" if stage == "0" else f"davit.stages.{stage}.downsample.{part}.{leaf}"
    if m := re.match(r"^blocks\.(\d+)\.(\d+)\.(spatial_block|channel_block)\.(.+)$", k):
        stage, block, kind, rest = m.groups()
        new = next((rest.replace(a, b, 1) for a, b in _BLOCK if rest.startswith(a)), None)
        return None if new is None else f"davit.stages.{stage}.blocks.{block}.{kind}.{new}"
    if m := re.match(r"^norms\.(weight|bias)$", k):
        return f"davit.head.norm.{m.group(1)}"       # applied after global pooling in MI2 (see module doc)
    return None


def convert_mi2_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict, Mi2Conversion]:
    """MI2 `UniCLModel` state -> (DaViTEncoder state, TextEncoder state, Mi2Conversion).

    Image keys come out as `davit.*`, text keys as `tower.*` (open_clip TextTransformer, `lang_projection` ->
    `tower.text_projection`, same `x @ P` orientation). Anything not recognised lands in `unmapped`.
    """
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    image, text, extra, unmapped = {}, {}, {}, []
    for k, v in state.items():
        if k.startswith(_IMAGE_PREFIXES):
            new = _image_key(k.split(".", 1)[1])
            if new is None:
                unmapped.append(k)
            else:
                image[new] = v
        elif k.startswith(_TEXT_PREFIXES):
            rest = k.split(".", 1)[1]
            if _TEXT_KEYS.match(rest):
                text["tower." + rest.replace("resblocks.", "transformer.resblocks.", 1)] = v
            else:
                unmapped.append(k)
        elif k in _TEXT_PROJ:
            text["tower.text_projection"] = v
        elif k in _IMAGE_PROJ:
            extra["image_proj.weight"] = v.t().contiguous()     # x @ P  ==  Linear with weight P.T
        elif k == "logit_scale":
            extra["logit_scale"] = v.reshape(1)
        else:
            unmapped.append(k)
    return image, text, Mi2Conversion(extra, tuple(unmapped))


def is_mi2_state(keys: list[str]) -> bool:
    return any(k.startswith(("image_encoder.convs.", "image_encoder.conv_embeds.", "visual.convs.",
                             "module.image_encoder.")) for k in keys) or \
        any(k.startswith(("lang_encoder.resblocks.", "text.resblocks.")) for k in keys)


def mi2_semantic_notes(text_encoder: nn.Module | None) -> list[str]:
    """Differences between MI2's towers and the radscale modules the weights go into (weights load, but
    features will not reproduce the released model exactly until these match)."""
    notes: list[str] = []
    if text_encoder is not None:
        block = text_encoder.tower.transformer.resblocks[0]
        act = type(block.mlp[1]).__name__ if len(block.mlp) > 1 else "?"
        if act != "QuickGELU":
            notes.append(f"MI2's text tower uses QuickGELU; this TextEncoder uses {act}")
        eps = getattr(text_encoder.tower.ln_final, "eps", None)
        if eps is not None and eps > 1e-9:
            notes.append(f"MI2's text LayerNorms use eps 1e-12; this TextEncoder uses {eps:g}")
    return notes
