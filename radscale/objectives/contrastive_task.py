"""The MI2 step: CLIP on image-report pairs ('clip'), or UniCL adding image-label pairs ('unicl').

UniCL (Yang et al., CVPR 2022) treats every text sharing a label key as a positive. How a multi-label CXR becomes
positives is not published for MI2; ours is explicit (ClipSpec.label_sampling / positive_policy):
each image gets one prompt for a label sampled uniformly from its positive labels (or the no-finding prompt);
with 'any_shared' an image is positive with every label prompt whose label it carries; with 'sample_one' only
with prompts of its own sampled label (see radscale.objectives.unicl). Reports are always unique keys, so 'clip'
is exactly the CLIP loss. As MI2, the trial keeps an EMA of the image tower (ClipSpec.model_ema) and evaluates it.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from radscale.config.specs import ClipSpec
from radscale.data import transforms as T
from radscale.models.clip_model import TwoTowerModel
from radscale.models.text import tokenize
from radscale.objectives.clip import clip_loss
from radscale.objectives.distributed import rank
from radscale.objectives.ema import ema_decay, ema_update_
from radscale.objectives.rng import generator_state, restore_generator
from radscale.objectives.unicl import gather_keys, positives_from_label_sets, unicl_loss


class ContrastiveTask(nn.Module):
    def __init__(self, model: TwoTowerModel, spec: ClipSpec, variant: str, prompt_labels: list[str],
                 prompt_names: list[str], image_size: int, seed: int = 0):
        super().__init__()
        if variant not in ("clip", "unicl"):
            raise ValueError(f"unknown contrastive variant {variant!r}")
        self.model = model
        self.spec = spec
        self.variant = variant
        self.prompt_labels = list(prompt_labels)
        self.image_size = image_size
        # Prompt tokens for every (label, template), plus the no-finding prompt as label index L.
        texts = [t.format(label=name) for name in prompt_names for t in spec.prompt_templates]
        texts.append(spec.no_finding_prompt)
        self.register_buffer("prompt_tokens", tokenize(texts, spec.context_length), persistent=False)
        self._seed = seed
        self._gen: torch.Generator | None = None
        # Only the image tower: frozen-feature probes never use the text tower's EMA (memory: one image tower).
        self.ema_image = copy.deepcopy(model.image_encoder).requires_grad_(False) if spec.model_ema else None
        self._ema_updates = 0

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device).manual_seed(self._seed)
        return self._gen

    @torch.no_grad()
    @T.full_precision
    def make_views(self, images: torch.Tensor) -> torch.Tensor:
        s, x = self.spec, T.to_float(images)
        g = self._generator(x.device)
        v = T.random_resized_crop(x, self.image_size, s.image_scale, g, antialias=s.crop_antialias)   # no flips
        v = T.brightness_contrast(v, 0.8, g)
        return T.random_erasing(v, s.random_erasing_p, g)

    @torch.no_grad()
    def _sample_prompts(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """labels [B, L] (1 = positive) -> prompt token rows [B, C] and sampled label index [B] (L = none)."""
        g = self._generator(labels.device)
        pos = labels > 0
        n_lab = pos.shape[1]
        weights = torch.cat([pos.float(), (~pos.any(1, keepdim=True)).float()], dim=1)
        key = torch.multinomial(weights, 1, generator=g).squeeze(1)
        n_t = len(self.spec.prompt_templates)
        tmpl = torch.randint(0, n_t, key.shape, generator=g, device=key.device)
        row = torch.where(key < n_lab, key * n_t + tmpl, torch.full_like(key, n_lab * n_t))
        return self.prompt_tokens[row], key

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, labels: torch.Tensor,
                progress: float) -> tuple[torch.Tensor, dict]:
        """Local features in; the losses gather them across ranks, and the positives are built from keys
        gathered in the same rank order."""
        img = self.model.encode_image(self.make_views(images))
        txt = self.model.encode_text(tokens)
        if self.variant == "clip":
            # targets are the gathered rows' own indices: no row counts, no positives matrix, no host read
            loss = clip_loss(img, txt, self._scale())
        else:
            # UniCL triplets: (image, its report, -1) and (image, prompt of a sampled label, label index).
            prompt_tokens, key = self._sample_prompts(labels)
            pos = labels > 0
            image_labels = torch.cat([pos, ~pos.any(1, keepdim=True)], dim=1)    # last column = no finding
            ids = torch.arange(img.shape[0], device=img.device) + rank() * 10**6
            texts = torch.cat([txt, self.model.encode_text(prompt_tokens)])
            text_labels = torch.cat([torch.full_like(key, -1), key])
            g_labels, g_text_labels, g_ids, g_keys = gather_keys(
                torch.cat([image_labels, image_labels]), text_labels, torch.cat([ids, ids]), torch.cat([key, key]))
            # both copies of an image carry its sampled label (sample_one), so they get the same targets
            positives = positives_from_label_sets(g_labels, g_text_labels, self.spec.positive_policy, g_ids,
                                                  check_range=False, image_keys=g_keys)   # keys in [-1, L]
            loss = unicl_loss(torch.cat([img, img]), texts, positives, self._scale())
        metrics = {"loss": loss.detach(), "logit_scale": self.model.logit_scale.detach().exp().squeeze()}
        return loss, metrics

    def _scale(self) -> torch.Tensor:
        """exp(logit_scale), capped at `max_logit_scale` (no gradient beyond the cap, as open_clip's clamp)."""
        scale = self.model.logit_scale.exp().squeeze()
        cap = self.spec.max_logit_scale
        return scale.clamp(max=cap) if cap else scale

    @torch.no_grad()
    def after_step(self, progress: float) -> float:
        """Model EMA update of the image tower (after the optimizer step); returns the decay used (0: no EMA)."""
        if self.ema_image is None:
            return 0.0
        d = ema_decay(self.spec.model_ema, self._ema_updates, self.spec.model_ema_warmup)
        self._ema_updates += 1
        ema_update_(self.ema_image.parameters(), self.model.image_encoder.parameters(), d)
        for e, b in zip(self.ema_image.buffers(), self.model.image_encoder.buffers()):
            e.copy_(b)                       # buffers are not learned: the current ones
        return d

    def eval_encoder(self) -> nn.Module:
        return self.model.image_encoder if self.ema_image is None else self.ema_image

    def forward_encoders(self) -> list[nn.Module]:
        """The image encoders the step runs (what `train.compile` compiles): not the EMA copy."""
        return [self.model.image_encoder]

    def extra_state(self) -> dict:
        return {"generator": generator_state(self._gen), "ema_updates": self._ema_updates}

    def load_extra_state(self, state: dict) -> None:
        self._gen = restore_generator(state.get("generator"), self._seed)
        self._ema_updates = int(state.get("ema_updates", 0))

    def param_groups(self, lr_decay: float = 1.0, patch_embed_mult: float = 1.0) -> list[dict]:
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or "logit_scale" in name else decay).append(p)
        return [{"params": decay, "lr_scale": 1.0, "wd_scale": 1.0, "last_layer": False},
                {"params": no_decay, "lr_scale": 1.0, "wd_scale": 0.0, "last_layer": False}]
