"""Encoder registry: full-size study encoders and tiny CPU flavours of the same structure."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from radscale.errors import RadscaleError
from radscale.models.davit import DaViTEncoder
from radscale.models.text import TextEncoder
from radscale.models.vit import ViTEncoder

# RAD-DINO model card: one mean/std on all channels.
RAD_DINO_MEAN, RAD_DINO_STD = 0.5307, 0.2583


@dataclass(frozen=True)
class EncoderFlavour:
    name: str
    family: Literal["vit", "davit"]
    img_size: int
    arch: dict = field(default_factory=dict)
    text: dict = field(default_factory=dict)       # only for two-tower (MI2) flavours
    embed_dim: int = 0                              # shared projection width (MI2)


FLAVOURS: dict[str, EncoderFlavour] = {
    "rad-dino": EncoderFlavour("rad-dino", "vit", 518, dict(patch_size=14, embed_dim=768, depth=12, num_heads=12,
                                                           init_values=1e-5)),
    "rad-dino-tiny": EncoderFlavour("rad-dino-tiny", "vit", 64, dict(patch_size=8, embed_dim=96, depth=4,
                                                                    num_heads=3, init_values=1e-5)),
    "mi2": EncoderFlavour("mi2", "davit", 480, dict(embed_dims=(256, 512, 1024, 2048), depths=(1, 1, 9, 1),
                                                    num_heads=(8, 16, 32, 64), window_size=12,
                                                    down_kernel_size=3, channel_attn_v2=True, named_blocks=True),
                          text=dict(width=1024, layers=16, heads=16), embed_dim=1024),
    "mi2-tiny": EncoderFlavour("mi2-tiny", "davit", 64, dict(embed_dims=(24, 48, 96, 192), depths=(1, 1, 2, 1),
                                                             num_heads=(1, 2, 4, 8), window_size=4,
                                                             down_kernel_size=3, channel_attn_v2=True, named_blocks=True),
                               text=dict(width=64, layers=2, heads=2), embed_dim=64),
}


def get_flavour(name: str) -> EncoderFlavour:
    if name not in FLAVOURS:
        raise RadscaleError(f"unknown encoder {name!r}; known: {', '.join(sorted(FLAVOURS))}")
    return FLAVOURS[name]


def build_image_encoder(name: str) -> nn.Module:
    fl = get_flavour(name)
    if fl.family == "vit":
        return ViTEncoder(img_size=fl.img_size, mean=RAD_DINO_MEAN, std=RAD_DINO_STD, **fl.arch)
    return DaViTEncoder(img_size=fl.img_size, **fl.arch)


def build_text_encoder(name: str, context_length: int = 77) -> TextEncoder:
    fl = get_flavour(name)
    if not fl.text:
        raise RadscaleError(f"encoder {name!r} has no text tower (use objective 'dinov2')")
    return TextEncoder(output_dim=fl.embed_dim, context_length=context_length, **fl.text)
