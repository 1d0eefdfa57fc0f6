"""`radscale bench extract`: radscale's frozen-feature extraction vs a bare PyTorch inference loop.

Both sides run in one process on the same encoder weights (a seeded random init saved as a radscale `encoder.pt`),
the same synthetic uint8 images of the encoder's input size, the same batch size and device, fp32:
- radscale: `orchestrate.ingest.extract_features` — the Ray Data actor pool with `evaluate.extract.
  FeatureExtractor` that evaluation runs — over a materialised dataset (as `eval_images` hands it over);
- bare: `torch.inference_mode()`, the images already in memory, `forward_features` per batch, the same feature
  vector (CLS of the last `layers` blocks ++ mean patch token; DaViT: its pooled feature ++ mean patch token, so
  radscale additionally averages the earlier stage maps) and, with patch tokens, the same pooled float16 tokens,
  copied to the host, and the segmentation tokens evaluation extracts for rows with masks (`--seg-layers`,
  `--seg-stage`; defaults as `eval`): ViT the last blocks' patch tokens, each pooled, concatenated; DaViT the
  stage map, kept by a forward hook.
`features_max_abs_diff` is the largest difference between the two sides' features (same image id; the columns
both have), `seg_max_abs_diff` between their segmentation tokens: the checks that both sides did the same work.

`--without-ray` swaps the radscale side for `FeatureExtractor` called in-process on the same batches (the actor's
callable without Ray Data's transport): the compute path alone, for machines without ray (a bare GPU box).
`--precision bf16` runs both sides under bf16 autocast on a GPU (`eval.precision`); features are float32 either way.

Warm-up is excluded on both sides: the first batch. Bare: one untimed batch, then `repeats` timed full passes.
radscale: an actor pool starts per pass (process, imports, model load), so each pass is timed from the arrival
in the driver of its first output batch (one 64-row input block, or `batch_size` rows when larger) to the
return of `extract_features`, over the images after that batch; the time to the first batch (the per-pass
startup an evaluation pays) is `radscale_first_batch_s`. A few batches may be in flight when the first one
arrives, so give `images` many blocks (the default, 2048, is 32).
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import torch

from radscale.config.specs import EvalSpec
from radscale.errors import RadscaleError
from radscale.evaluate.extract import FeatureExtractor, pool_patch_tokens, pooled_f16
from radscale.models.precision import uses_bf16
from radscale.models.registry import build_image_encoder, get_flavour
from radscale.models.vit import ViTEncoder

if TYPE_CHECKING:      # ray is imported where it is used: `--without-ray` runs where ray is not installed
    import ray.data

CPU_ACTOR_THREADS = 2   # what extract_features gives each CPU actor; the bare loop gets the same
BLOCK_ROWS = 64         # eval_images decodes in batches of 64: one block each, and a task's output is per block


def synthetic_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def save_random_encoder(name: str, path: str | Path, seed: int = 0) -> None:
    """A seeded random init in the format trials write for evaluation (`encoder.pt`: a plain state dict)."""
    with torch.random.fork_rng(devices=[]):         # the caller's RNG stream is left as it was
        torch.manual_seed(seed)
        model = build_image_encoder(name)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(path))


def image_dataset(images: np.ndarray) -> "ray.data.Dataset":
    """{'image_id': str, 'image': uint8 [S,S]} rows in blocks of BLOCK_ROWS, materialised like `eval_images`."""
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    tables = [pa.table({"image_id": pa.array([str(i) for i in range(s, min(s + BLOCK_ROWS, len(images)))]),
                        "image": ArrowTensorArray.from_numpy(images[s:s + BLOCK_ROWS])})
              for s in range(0, len(images), BLOCK_ROWS)]
    return ray.data.from_arrow(tables).materialize()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def bare_features(model: torch.nn.Module, images: torch.Tensor, device: torch.device, layers: int,
                  patch_tokens: bool, max_patch_grid: int, bf16: bool = False, seg_layers: int = 1,
                  stage_maps: list[torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One batch, uint8 [B,S,S] on the host -> (features [B,F] float32, pooled patch tokens float16, pooled
    segmentation tokens float16 or None) on the host. stage_maps: where a DaViT stage hook (`_stage_hook`)
    leaves its map."""
    x = images.to(device).unsqueeze(1).float() / 255.0
    seg_parts: list[torch.Tensor] = []
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        if isinstance(model, ViTEncoder):
            depth = len(model.vit.blocks)
            taken = tuple(range(max(0, depth - layers), depth))
            seg_taken = tuple(range(max(0, depth - seg_layers), depth)) if patch_tokens and seg_layers > 1 else ()
            f = model.forward_features(x, layers=taken, patch_layers=seg_taken)
            cls = [f[f"layer{j}"] for j in taken]
            seg_parts = [pool_patch_tokens(f[f"patch{j}"], max_patch_grid) for j in seg_taken]
        else:
            f = model.forward_features(x)
            cls = [f["cls"]]
            if stage_maps:
                seg_parts = [stage_maps.pop()]
    feats = torch.cat([c.float() for c in cls] + [f["patch"].float().mean(1)], dim=1).cpu()
    patch = pooled_f16(f["patch"], max_patch_grid) if patch_tokens else None
    seg = pooled_f16(torch.cat(seg_parts, -1), max_patch_grid) if seg_parts else None
    return feats, patch, seg


def _stage_hook(model: torch.nn.Module, seg_stage: int, maps: list[torch.Tensor]):
    """A forward hook on a DaViT stage, registered once per loop, appending its map [B, h*w, C] to `maps`."""
    return model.davit.stages[seg_stage].register_forward_hook(
        lambda _m, _i, out: maps.append(out.flatten(2).transpose(1, 2)))


def bare_loop(encoder: str, checkpoint: str, images: np.ndarray, batch_size: int, device: torch.device,
              layers: int, patch_tokens: bool, max_patch_grid: int, repeats: int, bf16: bool = False,
              seg_layers: int = 1, seg_stage: int = -1) -> dict:
    """Median images/s over `repeats` full passes after one warm-up batch, and the features (and segmentation
    tokens, or None) of the last pass."""
    model = build_image_encoder(encoder)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True), strict=True)
    model = model.eval().to(device)
    host = torch.from_numpy(images)
    maps: list[torch.Tensor] = []
    hook = _stage_hook(model, seg_stage, maps) if patch_tokens and seg_stage != -1 and \
        not isinstance(model, ViTEncoder) else None
    args = (device, layers, patch_tokens, max_patch_grid, bf16, seg_layers, maps)
    try:
        bare_features(model, host[:batch_size], *args)          # warm-up (allocator, kernels), untimed
        _sync(device)
        rates, outs = [], []
        for _ in range(repeats):
            outs = []
            t0 = time.perf_counter()
            for s in range(0, len(host), batch_size):
                outs.append(bare_features(model, host[s:s + batch_size], *args))
            _sync(device)
            rates.append(len(host) / (time.perf_counter() - t0))
    finally:
        if hook is not None:
            hook.remove()
    seg = [o[2] for o in outs if o[2] is not None]
    return {"images_per_s": statistics.median(rates), "features": torch.cat([o[0] for o in outs]).numpy(),
            "seg": torch.cat(seg).numpy() if seg else None}


class _FirstBatchClock:
    """Wraps the input dataset of `extract_features` to see its driver-side loop, `images.map_batches(...)
    .iter_batches(...)`, and note when the first output batch arrives; the pipeline itself is unchanged."""

    def __init__(self, ds: "ray.data.Dataset"):
        self._ds = ds
        self.first_t: float | None = None
        self.first_rows = 0

    def __getattr__(self, name: str):
        return getattr(self._ds, name)

    def map_batches(self, *args, **kwargs) -> "_Observed":
        return _Observed(self._ds.map_batches(*args, **kwargs), self)


class _Observed:
    def __init__(self, ds: "ray.data.Dataset", clock: _FirstBatchClock):
        self._ds, self._clock = ds, clock

    def __getattr__(self, name: str):
        return getattr(self._ds, name)

    def iter_batches(self, *args, **kwargs):
        for batch in self._ds.iter_batches(*args, **kwargs):
            if self._clock.first_t is None:
                self._clock.first_t = time.perf_counter()
                self._clock.first_rows = len(batch["image_id"])
            yield batch


def callable_loop(encoder: str, checkpoint: str, images: np.ndarray, batch_size: int, device: torch.device,
                  layers: int, patch_tokens: bool, max_patch_grid: int, repeats: int, precision: str,
                  seg_layers: int = 1, seg_stage: int = -1) -> dict:
    """`--without-ray`: the actor's callable (`FeatureExtractor`) in-process, timed like `bare_loop` (one untimed
    warm-up batch, then `repeats` full passes; each batch's numpy output is on the host when it returns)."""
    fx = FeatureExtractor([(encoder, checkpoint)], device=str(device), n_layers=layers,
                          max_patch_grid=max_patch_grid, patch_tokens=patch_tokens, precision=precision,
                          seg_layers=seg_layers, seg_stage=seg_stage)
    batches = [{"image_id": np.arange(s, min(s + batch_size, len(images))).astype(str),
                "image": images[s:s + batch_size]} for s in range(0, len(images), batch_size)]
    fx(batches[0])
    rates, pass_s, outs = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        outs = [fx(b) for b in batches]
        t1 = time.perf_counter()
        rates.append(len(images) / (t1 - t0))
        pass_s.append(t1 - t0)
    # No per-pass startup in-process: the model loaded once above (an actor pays it per pass).
    return {"images_per_s": statistics.median(rates), "first_batch_s": 0.0, "pass_s": statistics.median(pass_s),
            "features": np.concatenate([o["features_0"] for o in outs]),
            "seg": np.concatenate([o["seg_0"] for o in outs]) if "seg_0" in outs[0] else None,
            "ids": np.concatenate([o["image_id"] for o in outs])}


def radscale_loop(encoder: str, checkpoint: str, images: np.ndarray, batch_size: int, actors: int,
                  actor_gpus: float, layers: int, patch_tokens: bool, max_patch_grid: int, repeats: int,
                  precision: str = "fp32", seg_layers: int = 1, seg_stage: int = -1) -> dict:
    """Median images/s of `extract_features` from its first output batch to its return, over `repeats` passes."""
    from radscale.orchestrate.ingest import extract_features

    ds = image_dataset(images)
    rates, first_s, pass_s = [], [], []
    for _ in range(repeats):
        clock = _FirstBatchClock(ds)
        t0 = time.perf_counter()
        res = extract_features(clock, [(encoder, checkpoint)], batch_size, actors, actor_gpus,
                               n_layers=layers, max_patch_grid=max_patch_grid, patch_tokens=patch_tokens,
                               precision=precision, seg_layers=seg_layers, seg_stage=seg_stage)
        ids, feats, seg = res.ids, res.features, res.seg[0]
        t1 = time.perf_counter()
        if clock.first_t is None or clock.first_rows >= len(images):
            raise RadscaleError("bench extract: no output batch after the first one (extract_features no longer "
                                "iterates map_batches(...).iter_batches(...)?); see radscale/orchestrate/"
                                "bench_extract.py")
        rates.append((len(images) - clock.first_rows) / (t1 - clock.first_t))
        first_s.append(clock.first_t - t0)
        pass_s.append(t1 - t0)
    order = np.argsort(np.asarray([int(i) for i in ids]))   # actor pools need not keep the input order
    return {"images_per_s": statistics.median(rates), "first_batch_s": statistics.median(first_s),
            "pass_s": statistics.median(pass_s), "features": feats[0][order],
            "seg": None if seg is None else seg[order], "ids": np.asarray(ids)[order]}


def run_extract_bench(encoder: str = "rad-dino-tiny", batch_size: int = 64, images: int = 2048, device: str = "",
                      actors: int = 1, repeats: int = 1, layers: int = EvalSpec().layers,
                      patch_tokens: bool = True, max_patch_grid: int = EvalSpec().max_patch_grid,
                      precision: str = "fp32", without_ray: bool = False, seg_layers: int = EvalSpec().seg_layers,
                      seg_stage: int = EvalSpec().seg_stage) -> dict:
    """Both sides on `images` synthetic images (see the module docstring); one flat dict of results."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type not in ("cpu", "cuda"):
        raise RadscaleError(f"bench extract: --device {device!r}: expected cpu or cuda")
    if precision not in ("fp32", "bf16"):
        raise RadscaleError(f"bench extract: --precision {precision!r}: expected fp32 or bf16")
    if min(batch_size, images, actors, repeats, layers) < 1:
        raise RadscaleError("bench extract: --batch-size, --images, --actors, --repeats and --layers must be >= 1")
    if seg_layers < 1 or not -4 <= seg_stage <= -1:
        raise RadscaleError(f"bench extract: --seg-layers {seg_layers} must be >= 1 and --seg-stage {seg_stage} "
                            f"in -4..-1")
    if images <= max(batch_size, BLOCK_ROWS):
        raise RadscaleError(f"bench extract: --images {images} must exceed --batch-size {batch_size} and "
                            f"{BLOCK_ROWS} (the first batch / block of each side is warm-up)")
    bf16 = uses_bf16(precision, dev)
    actor_gpus = min(1.0, torch.cuda.device_count() / actors) if dev.type == "cuda" else 0.0
    pixels = synthetic_images(images, get_flavour(encoder).img_size)
    seg = dict(seg_layers=seg_layers, seg_stage=seg_stage)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="radscale-bench-extract-") as tmp:
        ckpt = str(Path(tmp) / "encoder.pt")
        save_random_encoder(encoder, ckpt)
        try:
            if dev.type == "cpu":
                torch.set_num_threads(CPU_ACTOR_THREADS)
            bare = bare_loop(encoder, ckpt, pixels, batch_size, dev, layers, patch_tokens, max_patch_grid, repeats,
                             bf16, **seg)
            if without_ray:
                ours = callable_loop(encoder, ckpt, pixels, batch_size, dev, layers, patch_tokens, max_patch_grid,
                                     repeats, precision, **seg)
        finally:
            torch.set_num_threads(threads)
        if not without_ray:
            ours = _ray_side(encoder, ckpt, pixels, batch_size, dev, actors, actor_gpus, layers, patch_tokens,
                             max_patch_grid, repeats, precision, seg)
    # Same image ids; the trailing columns both sides have (all of them for ViT; DaViT: pooled ++ mean patch).
    width = min(ours["features"].shape[1], bare["features"].shape[1])
    same_ids = bool(np.array_equal(ours["ids"], np.arange(images).astype(str)))
    if (ours["seg"] is None) != (bare["seg"] is None):
        raise RadscaleError("bench extract: only one side produced segmentation tokens; see radscale/orchestrate/"
                            "bench_extract.py `bare_features`")

    def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:      # inf: the sides do not line up
        if not same_ids or a.shape != b.shape:
            return float("inf")
        return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).max())

    diff = max_abs_diff(ours["features"][:, -width:], bare["features"][:, -width:])
    seg_diff = None if bare["seg"] is None else max_abs_diff(ours["seg"], bare["seg"])
    return {"bench": "extract", "encoder": encoder, "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "radscale_path": "feature-extractor" if without_ray else "ray-data-actor-pool",
            "threads": CPU_ACTOR_THREADS if dev.type == "cpu" else threads,
            "precision": "bf16" if bf16 else "fp32",
            "batch_size": batch_size, "images": images, "actors": 0 if without_ray else actors,
            "actor_gpus": 0.0 if without_ray else actor_gpus,
            "layers": layers, "patch_tokens": patch_tokens, "repeats": repeats,
            "seg_tokens": None if bare["seg"] is None else list(bare["seg"].shape[1:]),
            "seg_layers": seg_layers, "seg_stage": seg_stage,
            "radscale_images_per_s": ours["images_per_s"], "bare_images_per_s": bare["images_per_s"],
            "ratio": ours["images_per_s"] / bare["images_per_s"],
            "radscale_first_batch_s": ours["first_batch_s"], "radscale_pass_s": ours["pass_s"],
            "features_max_abs_diff": diff, "seg_max_abs_diff": seg_diff}


def _ray_side(encoder: str, ckpt: str, pixels: np.ndarray, batch_size: int, dev: torch.device, actors: int,
              actor_gpus: float, layers: int, patch_tokens: bool, max_patch_grid: int, repeats: int,
              precision: str, seg: dict) -> dict:
    import ray

    from radscale.orchestrate.ray_env import init_ray

    if dev.type == "cuda":
        torch.cuda.empty_cache()         # the bare side's cache would crowd the actor's process
    started = not ray.is_initialized()
    init_ray()
    try:
        return radscale_loop(encoder, ckpt, pixels, batch_size, actors, actor_gpus, layers, patch_tokens,
                             max_patch_grid, repeats, precision, **seg)
    finally:
        if started:
            ray.shutdown()


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="radscale bench extract",
                                description="radscale's Ray Data extraction vs a bare PyTorch inference loop")
    p.add_argument("--encoder", default="rad-dino-tiny")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--actors", type=int, default=1, help="actor-pool size (eval.actors)")
    p.add_argument("--repeats", type=int, default=1, help="timed passes per side; the median rate is reported")
    p.add_argument("--layers", type=int, default=EvalSpec().layers, help="eval.layers")
    p.add_argument("--no-patch-tokens", action="store_true",
                   help="leave the pooled patch tokens (and the segmentation tokens) out")
    p.add_argument("--seg-layers", type=int, default=EvalSpec().seg_layers,
                   help="eval.seg_layers: ViT blocks of the segmentation tokens (1 = none)")
    p.add_argument("--seg-stage", type=int, default=EvalSpec().seg_stage,
                   help="eval.seg_stage: DaViT stage of the segmentation tokens (-1 = none)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="eval.precision: bf16 autocast on a GPU, both sides (CPU: fp32)")
    p.add_argument("--without-ray", action="store_true",
                   help="radscale side = FeatureExtractor in-process (no Ray Data transport; no ray needed)")
    a = p.parse_args(argv)
    print(json.dumps(run_extract_bench(a.encoder, a.batch_size, a.images, a.device, a.actors, a.repeats,
                                       a.layers, not a.no_patch_tokens, precision=a.precision,
                                       without_ray=a.without_ray, seg_layers=a.seg_layers,
                                       seg_stage=a.seg_stage)))
