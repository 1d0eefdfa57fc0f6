"""Text tower for MI2: open_clip's transformer, bidirectional with a padding mask, CLIP BPE tokenizer."""
from __future__ import annotations

from functools import partial

import torch
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import LayerNorm, QuickGELU, TextTransformer
from torch import nn


class TextEncoder(nn.Module):
    def __init__(self, *, width: int, layers: int, heads: int, output_dim: int, context_length: int = 77,
                 pool: str = "argmax"):
        super().__init__()
        # MI2's text encoder is bidirectional (no causal mask, pad tokens masked out), with QuickGELU and
        # LayerNorm eps 1e-12. Pooling at the end-of-text token ('argmax': CLIP BPE's eot has the largest id).
        self.tower = TextTransformer(context_length=context_length, vocab_size=49408, width=width, heads=heads,
                                     layers=layers, output_dim=output_dim, no_causal_mask=True,
                                     use_pad_mask=True, pad_id=0, pool_type=pool, act_layer=QuickGELU,
                                     norm_layer=partial(LayerNorm, eps=1e-12))
        self.context_length = context_length

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tower(tokens)


_TOKENIZER: SimpleTokenizer | None = None


def tokenize(texts: list[str], context_length: int = 77) -> torch.Tensor:
    """CLIP BPE (vocabulary ships in the open_clip wheel), truncated with the eot token kept.

    '!' is BPE token 0, the same id as padding, so the pad mask would hide it: it is written as '.' (a report's
    '!' carries no finding).
    """
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = SimpleTokenizer(context_length=context_length)
    return _TOKENIZER([t.replace("!", ".") for t in texts], context_length=context_length)
