"""Loading weights from local paths (never a hub download at run time).

Formats: a radscale `encoder.pt` (what every trial writes for evaluation). Open-weight layouts (RAD-DINO's
DINOv2 keys and Hugging Face `Dinov2Model`, MI2) load through `radscale.models.open_weights`.
Loads are strict unless the caller asks otherwise: a silent partial load would make a trained encoder look
like random init.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from radscale.errors import RadscaleError

log = logging.getLogger(__name__)


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise RadscaleError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj.get("state_dict", obj) if isinstance(obj, dict) else obj


def load_into(module: nn.Module, state: dict[str, torch.Tensor], where: str, strict: bool = True) -> dict:
    result = module.load_state_dict(state, strict=False)
    report = {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}
    if strict and (report["missing"] or report["unexpected"]):
        raise RadscaleError(f"{where}: {len(report['missing'])} missing and {len(report['unexpected'])} "
                            f"unexpected keys (e.g. {(report['missing'] + report['unexpected'])[:3]}); "
                            "refusing a partial load")
    return report


def load_open_weights(task_or_model: nn.Module, encoder) -> dict:
    """Initialise a task from `encoder.weights`: a radscale encoder.pt, or an open-weights layout (RAD-DINO
    DINOv2 / Hugging Face Dinov2Model, MI2) via `open_weights`, which also loads the DINO head or text tower."""
    from radscale.models.open_weights import detect_format, load_open_weights_into
    allow_partial = bool(getattr(encoder, "allow_partial", False))
    source = detect_format(encoder.weights)
    if source.format == "radscale":
        path = source.weights[0]
        target = _image_encoder(task_or_model)
        if target is not task_or_model:       # a trial's encoder.pt: no text tower, projections or DINO heads
            log.warning("%s: a radscale encoder.pt holds the image encoder only; the task's other parts (text "
                        "tower, projections, DINO/iBOT heads) start from their initialisation", path)
        return load_into(target, load_state(path), str(path), strict=not allow_partial)
    report = load_open_weights_into(task_or_model, encoder.weights, allow_partial=allow_partial)
    return {"missing": list(report.missing), "unexpected": list(report.unexpected), "report": report}


def _image_encoder(m: nn.Module) -> nn.Module:
    if hasattr(m, "student"):
        return m.student.backbone
    if hasattr(m, "image_encoder"):
        return m.image_encoder
    return m
