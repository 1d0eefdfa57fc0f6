"""Open-weight checkpoints from LOCAL paths into radscale models, strictly, with a report of what happened.

Formats (detected from the path and the keys, never from a hub): `dinov2` (RAD-DINO's
`backbone_compatible.safetensors`, + `dino_head.safetensors`), `hf-dinov2` (Hugging Face `Dinov2Model` directory),
`mi2` (MedImageInsight's UniCLModel safetensors, see `weights_mi2`), `radscale` (a trial's `encoder.pt`).
A load is all-or-nothing unless `allow_partial`: a silent partial load would make open weights look like
random init. `inspect_checkpoint` runs the same plan against a meta-device model (no weights materialised).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from radscale.errors import RadscaleError
from radscale.models import weights_dinov2 as dv2
from radscale.models import weights_mi2 as mi2
from radscale.models.clip_model import TwoTowerModel
from radscale.models.heads import DINOHead, load_dinov2_head_state
from radscale.models.registry import (RAD_DINO_MEAN, RAD_DINO_STD, build_image_encoder, build_text_encoder,
                                      get_flavour)

log = logging.getLogger(__name__)
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


@dataclass(frozen=True)
class InspectReport:
    path: str
    format: str                                   # dinov2 | hf-dinov2 | mi2 | radscale
    target: str
    files: tuple[str, ...]
    n_loaded: int
    n_target: int
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    shape_mismatches: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()   # (key, file, model)
    resampled: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()                 # source keys the target has no module for (e.g. text tower)
    head: str = "n/a"
    image_mean: tuple[float, ...] | None = None
    image_std: tuple[float, ...] | None = None
    warnings: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches)

    def describe(self) -> str:
        def listing(name: str, items: list[str]) -> list[str]:
            more = [f"  ... and {len(items) - 10} more"] if len(items) > 10 else []
            return [f"{name:<11} {len(items)}"] + [f"  {i}" for i in items[:10]] + more
        lines = [f"checkpoint  {self.path}", f"format      {self.format} ({', '.join(self.files)})",
                 f"target      {self.target}", f"loaded      {self.n_loaded} / {self.n_target} tensors",
                 f"head        {self.head}"]
        lines += listing("missing", list(self.missing)) + listing("unexpected", list(self.unexpected))
        lines += listing("mismatched", [f"{k}: file {list(a)} vs model {list(b)}"
                                        for k, a, b in self.shape_mismatches])
        lines += [f"resampled   {r}" for r in self.resampled]
        if self.ignored:
            lines.append(f"ignored     {len(self.ignored)} tensors the target has no module for")
        if self.image_mean is not None:
            lines.append(f"preprocess  mean {list(self.image_mean)} std {list(self.image_std)} "
                         f"(radscale {RAD_DINO_MEAN}/{RAD_DINO_STD})")
        lines += [f"warning     {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass(frozen=True)
class OpenWeightsSource:
    """What `detect_format` found: the layout and the files to read."""
    format: str
    weights: tuple[Path, ...]
    head: Path | None = None
    meta_dir: Path | None = None                  # where config.json / preprocessor_config.json live


@dataclass(frozen=True)
class _Targets:
    image: nn.Module
    head: DINOHead | None = None
    two_tower: nn.Module | None = None
    name: str = ""
    meta: bool = False                            # inspection: shapes only, nothing is loaded


# --- reading ---------------------------------------------------------------------------------------------
def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def read_state(path: str | Path, meta: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or torch file (MI2 ships safetensors named `.pt`: sniffed, not by suffix).
    meta=True returns shape-only meta tensors (safetensors: header only)."""
    path = Path(path)
    if not path.is_file():
        raise RadscaleError(f"{path}: checkpoint file not found")
    try:
        if _is_safetensors(path):
            from safetensors import safe_open
            if not meta:
                from safetensors.torch import load_file
                return load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                return {k: torch.empty(f.get_slice(k).get_shape(), device="meta",
                                       dtype=_ST_DTYPES.get(f.get_slice(k).get_dtype(), torch.float32))
                        for k in f.keys()}
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:                       # legacy (non-zip) torch files cannot be mmapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as e:
        raise RadscaleError(f"{path}: unreadable checkpoint ({type(e).__name__})") from None
    for key in ("state_dict", "model", "module", "teacher"):     # training-checkpoint wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise RadscaleError(f"{path}: not a state dict (got {type(obj).__name__})")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return {k: v.to("meta") for k, v in state.items()} if meta else state


def detect_format(path: str | Path) -> OpenWeightsSource:
    """Which layout `path` (a directory or a weights file) holds; keys are read from the header only."""
    p = Path(path)
    if p.is_dir():
        head = p / "dino_head.safetensors" if (p / "dino_head.safetensors").is_file() else None
        if (p / "backbone_compatible.safetensors").is_file():       # preferred: RAD-DINO's own DINOv2 layout
            return OpenWeightsSource("dinov2", (p / "backbone_compatible.safetensors",), head, p)
        if (p / "config.json").is_file():
            model_type = dv2.read_hf_config(p).get("model_type")
            if model_type != "dinov2":
                raise RadscaleError(f"{p / 'config.json'}: model_type {model_type!r} is not supported (dinov2 only)")
            return OpenWeightsSource("hf-dinov2", dv2.hf_weight_files(p), head, p)
        vision = [d / "vision_model" for d in [p, *sorted(p.iterdir())] if (d / "vision_model").is_dir()]
        if vision:
            files = sorted(f for f in vision[0].iterdir() if f.is_file())
            if len(files) != 1:
                raise RadscaleError(f"{vision[0]}: expected one MI2 weights file, found {len(files)}")
            return OpenWeightsSource("mi2", (files[0],))
        if (p / "encoder.pt").is_file():
            return OpenWeightsSource("radscale", (p / "encoder.pt",))
        raise RadscaleError(f"{p}: no backbone_compatible.safetensors, config.json, vision_model/ or encoder.pt")
    keys = list(read_state(p, meta=True))
    head = p.parent / "dino_head.safetensors"
    head = head if head.is_file() else None
    if any(k.startswith(("vit.", "davit.")) for k in keys):
        return OpenWeightsSource("radscale", (p,))
    if any(k.endswith("embeddings.cls_token") for k in keys):
        return OpenWeightsSource("hf-dinov2", (p,), head, p.parent)
    if mi2.is_mi2_state(keys):
        return OpenWeightsSource("mi2", (p,))
    if any(k == "pos_embed" or k.endswith("backbone.pos_embed") for k in keys):
        return OpenWeightsSource("dinov2", (p,), head, p.parent)
    raise RadscaleError(f"{p}: unrecognised key layout (first keys: {keys[:3]})")


# --- planning --------------------------------------------------------------------------------------------
def _targets_of(model: nn.Module) -> _Targets:
    if hasattr(model, "student"):
        return _Targets(model.student.backbone, head=model.student.head)
    if hasattr(model, "image_encoder") and hasattr(model, "text_encoder"):
        return _Targets(model.image_encoder, two_tower=model)
    if isinstance(getattr(model, "model", None), nn.Module):
        return _targets_of(model.model)
    return _Targets(model)


def _fit(mapped: dict, target: nn.Module, pos_key: str | None):
    shapes = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    state, missing, mismatched, resampled = {}, [], [], []
    for key, shape in shapes.items():
        if key not in mapped:
            missing.append(key)
            continue
        v = mapped[key]
        if tuple(v.shape) == shape:
            state[key] = v
        elif key == pos_key and (r := dv2.resample_pos_embed(v, shape)) is not None:
            state[key] = r
            resampled.append(f"{key} {tuple(v.shape)} -> {shape} (bicubic)")
        else:
            mismatched.append((key, tuple(v.shape), shape))
    unexpected = [k for k in mapped if k not in shapes]
    return state, missing, unexpected, mismatched, resampled


def _map(src: OpenWeightsSource, raw: dict, t: _Targets) -> tuple[nn.Module, dict, list[str], list[str], list[str]]:
    """Source keys -> keys of the module to load into: (root, mapped, unmapped, ignored, warnings)."""
    where = str(src.weights[0])
    if src.format in ("dinov2", "hf-dinov2") and not hasattr(t.image, "vit"):
        raise RadscaleError(f"{where}: {src.format} weights need a ViT image encoder, target is "
                            f"{type(t.image).__name__}")
    if src.format == "mi2" and not hasattr(t.image, "davit"):
        raise RadscaleError(f"{where}: MI2 weights need a DaViT image encoder, target is {type(t.image).__name__}")
    if src.format == "dinov2":
        return (t.image, *dv2.convert_dinov2_state(raw), [], [])
    if src.format == "hf-dinov2":
        return (t.image, *dv2.convert_hf_dinov2_state(raw), [], dv2.hf_config_warnings(src.meta_dir, t.image))
    if src.format == "radscale":
        return t.image, raw, [], [], []
    image, text, conv = mi2.convert_mi2_state(raw)
    warnings = mi2.mi2_semantic_notes(getattr(t.two_tower, "text_encoder", None))
    if t.two_tower is None:                       # image-only target: text tower and projections unused
        return t.image, image, list(conv.unmapped), sorted([*text, *conv.two_tower_state]), warnings
    mapped = {**{"image_encoder." + k: v for k, v in image.items()},
              **{"text_encoder." + k: v for k, v in text.items()}, **conv.two_tower_state}
    return t.two_tower, mapped, list(conv.unmapped), [], warnings


def _plan(src: OpenWeightsSource, t: _Targets) -> tuple[nn.Module, dict, dict | None, InspectReport]:
    """Map, fit and check against the target; returns (module to load into, its state, head state, report).
    Mutates nothing, so a refused load leaves the model as it was."""
    raw: dict[str, torch.Tensor] = {}
    for f in src.weights:
        raw.update(read_state(f, meta=t.meta))
    root, mapped, unmapped, ignored, warnings = _map(src, raw, t)
    mean_std = None
    if src.meta_dir is not None and src.format in ("dinov2", "hf-dinov2"):
        mean_std = dv2.read_hf_preprocessing(src.meta_dir)
        warnings += dv2.preprocessing_warnings(mean_std)
    pos_key = "vit.pos_embed" if hasattr(t.image, "vit") else None
    state, missing, unexpected, mismatched, resampled = _fit(mapped, root, pos_key)
    head_state, head_msg = None, "not used (target has no DINO head)"
    if t.head is not None and src.head is not None:
        head_state, head_msg = read_state(src.head, meta=t.meta), f"from {src.head.name}"
    elif t.head is not None:
        head_msg = "not in the checkpoint: random init"
        if src.format != "radscale":
            warnings.append("no dino_head.safetensors next to the backbone: DINO head starts from random init")
    elif src.head is not None:
        head_msg = f"{src.head.name} present, not used (target has no DINO head)"
    n_head = len(t.head.state_dict()) if head_state is not None else 0
    report = InspectReport(
        path=str(src.weights[0]), format=src.format, target=t.name or type(root).__name__,
        files=tuple(f.name for f in (*src.weights, *([src.head] if src.head else []))),
        n_loaded=len(state) + n_head, n_target=len(root.state_dict()) + n_head,
        missing=tuple(missing), unexpected=tuple(unmapped + unexpected), shape_mismatches=tuple(mismatched),
        resampled=tuple(resampled), ignored=tuple(ignored), head=head_msg,
        image_mean=mean_std[0] if mean_std else None, image_std=mean_std[1] if mean_std else None,
        warnings=tuple(warnings))
    return root, state, head_state, report


def _check(report: InspectReport, head: DINOHead | None, head_state: dict | None,
           allow_partial: bool) -> InspectReport:
    """Refuse an incomplete load unless allowed; validate (and, for real modules, load) the DINO head."""
    if not report.complete and not allow_partial:
        bad = [*report.missing, *report.unexpected, *(k for k, _, _ in report.shape_mismatches)]
        raise RadscaleError(
            f"{report.path}: {report.format} checkpoint does not fit {report.target}: {len(report.missing)} "
            f"missing, {len(report.unexpected)} unexpected, {len(report.shape_mismatches)} shape-mismatched keys "
            f"(e.g. {bad[:3]}); refusing a partial load (allow_partial to override)")
    if head is None or head_state is None:
        return report
    try:
        load_dinov2_head_state(head, head_state)     # checks every key and shape before copying anything
    except ValueError as e:
        if not allow_partial:
            raise RadscaleError(f"{report.path}: DINO head file does not fit: {e}") from None
        n = len(head.state_dict())
        return replace(report, head=f"not loaded: {e}", n_loaded=report.n_loaded - n,
                       n_target=report.n_target - n, warnings=report.warnings + (f"DINO head not loaded: {e}",))
    return report


# --- public API ------------------------------------------------------------------------------------------
def load_open_weights_into(model: nn.Module, path: str | Path, allow_partial: bool = False) -> InspectReport:
    """Load a local open-weights checkpoint into a DINOv2Task, TwoTowerModel/ContrastiveTask or bare encoder."""
    t = _targets_of(model)
    root, state, head_state, report = _plan(detect_format(path), t)
    report = _check(report, t.head, head_state, allow_partial)
    root.load_state_dict(state, strict=False)
    for w in report.warnings:
        log.warning("%s: %s", report.path, w)
    return report


def inspect_checkpoint(path: str, encoder: str, allow_partial: bool = False) -> InspectReport:
    """What loading `path` into registry encoder `encoder` would do, without materialising either."""
    fl = get_flavour(encoder)
    with torch.device("meta"):
        image = build_image_encoder(encoder)
        if fl.family == "vit":
            t = _Targets(image, head=DINOHead(image.embed_dim), name=f"{encoder} (ViTEncoder + DINOHead)",
                         meta=True)
        else:
            two = TwoTowerModel(image, build_text_encoder(encoder), fl.embed_dim)
            t = _Targets(image, two_tower=two, name=f"{encoder} (DaViTEncoder + TextEncoder + projections)",
                         meta=True)
    _, _, head_state, report = _plan(detect_format(path), t)
    return _check(report, t.head, head_state, allow_partial)
