"""Open-weight loading: RAD-DINO (DINOv2 layout, Hugging Face Dinov2Model), MI2, radscale encoder.pt.

The Hugging Face model is the reference: radscale's ViTEncoder loaded from its files must reproduce its
last_hidden_state (after the final layernorm) on the same input, with and without iBOT masks.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from radscale.config.specs import Dinov2Spec
from radscale.errors import RadscaleError
from radscale.models.checkpoints import load_open_weights
from radscale.models.clip_model import TwoTowerModel
from radscale.models.heads import DINOHead, dinov2_head_state
from radscale.models.open_weights import detect_format, inspect_checkpoint, load_open_weights_into
from radscale.models.registry import build_image_encoder, build_text_encoder
from radscale.models.text import tokenize
from radscale.models.vit import ViTEncoder
from radscale.models.weights_dinov2 import convert_hf_dinov2_state
from radscale.models.weights_mi2 import convert_mi2_state
from radscale.objectives.dinov2_task import DINOv2Task

MEAN, STD = 0.5, 0.25


@pytest.fixture(scope="module", autouse=True)
def _hub_offline():
    """Everything here is local; a hub call would be a bug (restored after this module)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random HF Dinov2Model (non-trivial layer scale, norms and mask token) saved with save_pretrained."""
    from transformers import Dinov2Config, Dinov2Model
    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                       patch_size=14, image_size=56, layerscale_value=0.5)
    model = Dinov2Model(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "mask_token" in name or "lambda1" in name or "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    d = tmp_path_factory.mktemp("hf")
    model.save_pretrained(d)
    return d, model


def _vit(img_size: int = 56) -> ViTEncoder:
    return ViTEncoder(img_size=img_size, patch_size=14, embed_dim=64, depth=2, num_heads=2, mean=MEAN, std=STD,
                      init_values=1e-5).eval()


def _hf_features(model, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=((x - MEAN) / STD).expand(-1, 3, -1, -1), bool_masked_pos=masks).last_hidden_state


def _assert_matches_hf(encoder: ViTEncoder, hf_model) -> None:
    torch.manual_seed(1)
    x = torch.rand(2, 1, 56, 56)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[0, ::3], masks[1, 5:9] = True, True
    for m in (None, masks):
        with torch.no_grad():
            ours = encoder.forward_features(x, masks=m)
        ref = _hf_features(hf_model, x, m)
        assert torch.allclose(ours["cls"], ref[:, 0], atol=1e-5)
        assert torch.allclose(ours["patch"], ref[:, 1:], atol=1e-5)
    for size in (28, 42, 84):       # crops: the position embedding resized as HF resizes it (no antialiasing)
        x = torch.rand(2, 1, size, size)
        with torch.no_grad():
            ours = encoder.forward_features(x)
        ref = _hf_features(hf_model, x)
        assert torch.allclose(ours["cls"], ref[:, 0], atol=1e-5), size
        assert torch.allclose(ours["patch"], ref[:, 1:], atol=1e-5), size


def _write_dinov2_layout(hf_dir: Path, out: Path) -> dict[str, torch.Tensor]:
    """The same weights in DINOv2's own key layout (as RAD-DINO's backbone_compatible.safetensors)."""
    hf = load_file(str(hf_dir / "model.safetensors"))
    st = {"cls_token": hf["embeddings.cls_token"], "pos_embed": hf["embeddings.position_embeddings"],
          "mask_token": hf["embeddings.mask_token"],
          "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
          "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
          "norm.weight": hf["layernorm.weight"], "norm.bias": hf["layernorm.bias"]}
    for i in range(2):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for leaf in ("weight", "bias"):
            st[dst + f"attn.qkv.{leaf}"] = torch.cat([hf[src + f"attention.attention.{p}.{leaf}"]
                                                      for p in ("query", "key", "value")])
            st[dst + f"attn.proj.{leaf}"] = hf[src + f"attention.output.dense.{leaf}"]
            for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                st[dst + f"{name}.{leaf}"] = hf[src + f"{name}.{leaf}"]
        st[dst + "ls1.gamma"] = hf[src + "layer_scale1.lambda1"]
        st[dst + "ls2.gamma"] = hf[src + "layer_scale2.lambda1"]
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in st.items()}, str(out / "backbone_compatible.safetensors"))
    return st


# --- RAD-DINO / DINOv2 -----------------------------------------------------------------------------------
def test_hf_dinov2_directory_reproduces_reference_features(hf_dir):
    d, hf_model = hf_dir
    encoder = _vit()
    report = load_open_weights_into(encoder, d)
    assert report.format == "hf-dinov2" and report.complete and report.n_loaded == report.n_target == 35
    _assert_matches_hf(encoder, hf_model)
    assert encoder.mask_token.abs().sum() > 0           # iBOT's mask token kept (timm's filter drops it)
    assert torch.equal(encoder.mask_token, hf_model.embeddings.mask_token.detach())
    # transformers 5 names q/k/v `attention.q_proj` in memory, `attention.attention.query` on disk: same result
    in_memory, unmapped = convert_hf_dinov2_state(hf_model.state_dict())
    assert not unmapped and all(torch.equal(v, encoder.state_dict()[k]) for k, v in in_memory.items())


def test_dinov2_layout_with_head_into_dinov2_task(hf_dir, tmp_path):
    d, hf_model = hf_dir
    src = _write_dinov2_layout(d, tmp_path / "rad-dino")
    torch.manual_seed(2)
    head = DINOHead(64, 32, 48, 16, 3)
    with torch.no_grad():
        head.last_layer.parametrizations.weight.original0.mul_(1.5)
    save_file({k: v.contiguous() for k, v in dinov2_head_state(head).items()},
              str(tmp_path / "rad-dino" / "dino_head.safetensors"))
    task = DINOv2Task(_vit(), Dinov2Spec(n_prototypes=32, head_hidden=48, head_bottleneck=16, head_layers=3))
    assert detect_format(tmp_path / "rad-dino").format == "dinov2"
    out = load_open_weights(task, SimpleNamespace(weights=str(tmp_path / "rad-dino")))
    report = out["report"]
    assert report.complete and report.head == "from dino_head.safetensors"
    assert report.n_loaded == 35 + len(head.state_dict())
    _assert_matches_hf(task.student.backbone.eval(), hf_model)
    assert torch.equal(task.student.backbone.mask_token, src["mask_token"])
    for k, v in head.state_dict().items():
        assert torch.equal(task.student.head.state_dict()[k], v), k


def test_missing_and_mismatched_keys_refuse_in_one_line_unless_partial(hf_dir, tmp_path):
    d, _ = hf_dir
    st = _write_dinov2_layout(d, tmp_path / "bad")
    del st["blocks.1.ls2.gamma"]
    st["norm.weight"] = torch.ones(65)
    st["register_tokens"] = torch.zeros(1, 4, 64)
    path = tmp_path / "bad" / "backbone_compatible.safetensors"
    save_file({k: v.contiguous() for k, v in st.items()}, str(path))
    encoder = _vit()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    with pytest.raises(RadscaleError) as e:
        load_open_weights_into(encoder, path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert "1 missing, 1 unexpected, 1 shape-mismatched" in msg
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())   # refused = untouched
    report = load_open_weights_into(encoder, path, allow_partial=True)
    assert report.missing == ("vit.blocks.1.ls2.gamma",) and report.unexpected == ("register_tokens",)
    assert report.shape_mismatches == (("vit.norm.weight", (65,), (64,)),)
    assert report.n_loaded == 33 and torch.equal(encoder.vit.cls_token, st["cls_token"])
    assert "missing     1" in report.describe() and "vit.norm.weight" in report.describe()


def test_position_embeddings_resampled_to_target_grid(hf_dir):
    d, _ = hf_dir
    encoder = _vit(img_size=28)                               # 2x2 grid instead of the file's 4x4
    report = load_open_weights_into(encoder, d)
    assert report.complete and len(report.resampled) == 1 and "vit.pos_embed" in report.resampled[0]
    src = load_file(str(d / "model.safetensors"))["embeddings.position_embeddings"]
    assert encoder.vit.pos_embed.shape == (1, 5, 64)
    assert torch.equal(encoder.vit.pos_embed[:, 0], src[:, 0])   # the class-token position is not resampled


def test_preprocessing_constants_reported_and_checked(hf_dir, tmp_path):
    d, _ = hf_dir
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((d / name).read_bytes())
    cfg = {"image_mean": [0.5307] * 3, "image_std": [0.2583] * 3, "crop_size": {"height": 518, "width": 518}}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(cfg))
    report = load_open_weights_into(_vit(), tmp_path)
    assert report.image_mean == (0.5307,) * 3 and report.image_std == (0.2583,) * 3
    assert not [w for w in report.warnings if "preprocessor" in w]
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**cfg, "image_mean": [0.485, 0.456, 0.406]}))
    report = load_open_weights_into(_vit(), tmp_path)
    assert any("preprocessor_config.json mean" in w for w in report.warnings)
    assert "preprocess  mean [0.485, 0.456, 0.406]" in report.describe()


def test_inspect_checkpoint_uses_registry_shapes_without_loading(tmp_path):
    from transformers import Dinov2Config, Dinov2Model
    torch.manual_seed(3)
    cfg = Dinov2Config(hidden_size=96, num_hidden_layers=4, num_attention_heads=3, intermediate_size=384,
                       patch_size=8, image_size=64, layerscale_value=1e-5)     # = the 'rad-dino-tiny' flavour
    Dinov2Model(cfg).save_pretrained(tmp_path)
    report = inspect_checkpoint(str(tmp_path), "rad-dino-tiny")
    assert report.complete and report.format == "hf-dinov2" and report.n_loaded == report.n_target
    assert "random init" in report.head and "loaded      " in report.describe()
    with pytest.raises(RadscaleError, match=r"shape-mismatched keys"):
        inspect_checkpoint(str(tmp_path), "rad-dino")
    wide = inspect_checkpoint(str(tmp_path), "rad-dino", allow_partial=True)
    assert wide.shape_mismatches and wide.missing and wide.n_loaded == 0
    with pytest.raises(RadscaleError, match="need a ViT image encoder, target is DaViTEncoder"):
        inspect_checkpoint(str(tmp_path), "mi2-tiny")


def test_radscale_encoder_pt_and_unrecognised_files(tmp_path, caplog):
    torch.manual_seed(4)
    src = build_image_encoder("rad-dino-tiny")
    torch.save(src.state_dict(), tmp_path / "encoder.pt")
    assert detect_format(tmp_path).format == "radscale"
    assert inspect_checkpoint(str(tmp_path), "rad-dino-tiny").complete
    target = build_image_encoder("rad-dino-tiny")
    load_open_weights(target, SimpleNamespace(weights=str(tmp_path / "encoder.pt")))
    assert all(torch.equal(target.state_dict()[k], v) for k, v in src.state_dict().items())
    from radscale.config.specs import EncoderSpec, TrainSpec
    from radscale.objectives.build import build_task
    with caplog.at_level("WARNING", logger="radscale.models.checkpoints"):   # into a task: say what stays new
        build_task(EncoderSpec(name="rad-dino-tiny", objective="dinov2", weights=str(tmp_path / "encoder.pt")),
                   TrainSpec(), 0)
    assert any("holds the image encoder only" in r.getMessage() for r in caplog.records)
    torch.save({"foo.bar": torch.zeros(2)}, tmp_path / "odd.pt")
    with pytest.raises(RadscaleError, match="unrecognised key layout"):
        detect_format(tmp_path / "odd.pt")
    with pytest.raises(RadscaleError, match="not found"):
        inspect_checkpoint(str(tmp_path / "nope.safetensors"), "rad-dino")


# --- MI2 -------------------------------------------------------------------------------------------------
_MI2_BLOCK = {"cpe1.proj": "conv1.fn.dw", "cpe2.proj": "conv2.fn.dw", "norm1": "{a}.norm", "attn.qkv": "{a}.fn.qkv",
              "attn.proj": "{a}.fn.proj", "norm2": "ffn.norm", "mlp.fc1": "ffn.fn.net.fc1", "mlp.fc2": "ffn.fn.net.fc2"}


def _mi2_image_name(k: str) -> str:
    """timm DaVit key -> MI2's Florence-style DaViT key (UniCLModel.image_encoder)."""
    parts, leaf = k.split("."), k.rsplit(".", 1)[1]
    if parts[0] == "stem":
        return f"convs.0.{'proj' if parts[1] == 'conv' else 'norm'}.{leaf}"
    if parts[0] == "head":
        return f"norms.{leaf}"
    if parts[2] == "downsample":
        return f"convs.{parts[1]}.{'proj' if parts[3] == 'conv' else 'norm'}.{leaf}"
    stage, block, kind, module = parts[1], parts[3], parts[4], ".".join(parts[5:-1])
    attn = "window_attn" if kind == "spatial_block" else "channel_attn"
    return f"blocks.{stage}.{block}.{kind}.{_MI2_BLOCK[module].format(a=attn)}.{leaf}"


def _legacy_image_name(k: str) -> str:
    """Florence DaViT key -> the older DaViT names MI2's loader also accepts."""
    k = k.replace("convs.", "conv_embeds.", 1)
    for kind, idx in (("spatial_block", "0"), ("channel_block", "1")):
        attn = "window_attn" if idx == "0" else "channel_attn"
        for new, old in ((f"{kind}.conv1.fn.dw.", f"{idx}.cpe.0.proj."), (f"{kind}.conv2.fn.dw.", f"{idx}.cpe.1.proj."),
                         (f"{kind}.{attn}.fn.", f"{idx}.attn."), (f"{kind}.{attn}.norm.", f"{idx}.norm1."),
                         (f"{kind}.ffn.norm.", f"{idx}.norm2."), (f"{kind}.ffn.fn.net.", f"{idx}.mlp.")):
            k = k.replace(new, old)
    return k.replace("blocks.", "main_blocks.", 1) if k.startswith("blocks.") else k


def _mi2_state(model: TwoTowerModel, legacy: bool = False) -> dict[str, torch.Tensor]:
    img, txt = ("visual.", "text.") if legacy else ("image_encoder.", "lang_encoder.")
    out = {}
    for k, v in model.image_encoder.davit.state_dict().items():
        name = _mi2_image_name(k)
        out[img + (_legacy_image_name(name) if legacy else name)] = v
    for k, v in model.text_encoder.tower.state_dict().items():
        if k == "text_projection":
            out["text_projection" if legacy else "lang_projection"] = v
        else:
            out[txt + k.replace("transformer.resblocks.", "resblocks.")] = v
    out["vision_projection" if legacy else "image_projection"] = model.image_proj.weight.t()
    out["logit_scale"] = model.logit_scale.reshape(())
    return out


def _mi2_model() -> TwoTowerModel:
    return TwoTowerModel(build_image_encoder("mi2-tiny"), build_text_encoder("mi2-tiny"), 64).eval()


@pytest.fixture(scope="module")
def mi2_source() -> TwoTowerModel:
    torch.manual_seed(5)
    src = _mi2_model()
    with torch.no_grad():
        src.logit_scale.fill_(1.7)
    return src


def _save_mi2(state: dict, root: Path) -> Path:
    (root / "2024.09.27" / "vision_model").mkdir(parents=True)
    path = root / "2024.09.27" / "vision_model" / "medimageinsigt-v1.0.0.pt"     # safetensors, despite .pt
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.mark.parametrize("legacy", [False, True])
def test_mi2_layout_round_trips_into_two_tower_model(tmp_path, legacy, mi2_source):
    src = mi2_source
    _save_mi2(_mi2_state(src, legacy), tmp_path)
    target = _mi2_model()
    report = load_open_weights_into(target, tmp_path)
    assert report.format == "mi2" and report.complete and report.n_loaded == report.n_target
    # radscale's towers now follow MI2's semantics (QuickGELU, eps 1e-12, LayerNorm after pooling).
    assert not any("QuickGELU" in w or "eps" in w or "pools" in w for w in report.warnings)
    for k, v in src.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    x, tokens = torch.rand(2, 1, 64, 64), tokenize(["no acute findings", "left pleural effusion"])
    with torch.no_grad():
        assert torch.equal(target.encode_image(x), src.encode_image(x))
        assert torch.equal(target.encode_text(tokens), src.encode_text(tokens))


def test_mi2_strictness_image_only_target_and_inspect(tmp_path, mi2_source):
    src = mi2_source
    state = _mi2_state(src)
    image, text, conv = convert_mi2_state(state)
    assert len(image) == len(src.image_encoder.state_dict()) and not conv.unmapped
    assert set(conv.two_tower_state) == {"image_proj.weight", "logit_scale"}
    path = _save_mi2({**state, "image_encoder.head.weight": torch.zeros(10, 192)}, tmp_path)
    with pytest.raises(RadscaleError, match=r"0 missing, 1 unexpected"):
        inspect_checkpoint(str(path), "mi2-tiny")
    report = inspect_checkpoint(str(path), "mi2-tiny", allow_partial=True)
    assert report.unexpected == ("image_encoder.head.weight",) and report.n_loaded == report.n_target
    image_only = build_image_encoder("mi2-tiny")
    report = load_open_weights_into(image_only, path, allow_partial=True)
    assert report.n_loaded == len(image_only.state_dict())
    assert len(report.ignored) == len(text) + 2                # text tower + projection + logit scale unused
    assert torch.equal(image_only.davit.stem.conv.weight, src.image_encoder.davit.stem.conv.weight)
    with pytest.raises(RadscaleError, match="need a DaViT"):
        load_open_weights_into(_vit(), path)
