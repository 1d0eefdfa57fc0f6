"""DeepSpeed engine for a task, with the optimizer schedules applied from budget progress each step."""
from __future__ import annotations

import os

import torch
from torch import nn

from radscale.config.specs import TrainSpec
from radscale.train.schedules import cosine, warmup_cosine


def deepspeed_config(train: TrainSpec, world_size: int, bf16: bool) -> dict:
    """`bf16` = DeepSpeed's torch_autocast (float32 weights, bf16 matmuls; ZeRO reduces Linear/Conv gradients in
    bf16), never its `bf16` mode, which casts the weights (models/precision.py says why)."""
    return {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "train_batch_size": train.batch_size * world_size,
        "gradient_accumulation_steps": 1,
        # ZeRO-0: the worker clips (torch's foreach clip, `clip_gradients`). DeepSpeed 0.19's own clip of
        # unpartitioned gradients launches two kernels per parameter, all-reduces the norm over the data-parallel
        # group and copies two Python scalars to the device (blocking) every step.
        "gradient_clipping": train.grad_clip if train.zero_stage > 0 else 0.0,
        "zero_optimization": {"stage": train.zero_stage},
        "zero_allow_untested_optimizer": True,   # torch AdamW as client optimizer (no cpu_adam build on CPU)
        "torch_autocast": {"enabled": bf16, "dtype": "bfloat16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def build_engine(task: nn.Module, train: TrainSpec, objective: str, world_size: int, use_gpu: bool,
                 bf16: bool = False):
    """deepspeed.initialize inside the worker (torch.distributed is already set up by the caller); `bf16` as
    `models.precision.uses_bf16` decides for the worker's device."""
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    if objective == "dinov2":
        groups = task.param_groups(train.dinov2.layer_decay, train.dinov2.patch_embed_lr_mult)
    else:
        groups = task.param_groups()
    # fused: one kernel per group on CUDA and on the CPU; the unfused CPU path reads every step count back
    opt = torch.optim.AdamW(groups, lr=train.lr, betas=(0.9, 0.999), fused=True)
    engine, optimizer, _, _ = deepspeed.initialize(model=task, optimizer=opt,
                                                   config=deepspeed_config(train, world_size, bf16),
                                                   dist_init_required=False)
    return engine, optimizer


def clip_gradients(task: nn.Module, train: TrainSpec) -> None:
    """Between `engine.backward` (gradients already averaged over ranks at ZeRO-0) and `engine.step`; ZeRO-1/2
    clip inside DeepSpeed, over the partitioned gradients."""
    if train.zero_stage == 0:
        params = [p for p in task.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, train.grad_clip, foreach=True)


def apply_schedules(optimizer, train: TrainSpec, objective: str, progress: float) -> dict:
    """lr: warm-up + cosine; weight decay: cosine (DINOv2 0.04 -> 0.4) or constant; last head layer frozen early."""
    lr = warmup_cosine(progress, train.lr, train.warmup, train.lr * train.min_lr_ratio)
    if objective == "dinov2":
        wd = cosine(progress, *train.dinov2.weight_decay)
        frozen = progress < train.dinov2.freeze_last_layer
    else:
        wd, frozen = train.clip.weight_decay, False
    for g in optimizer.param_groups:
        # lr 0 also stops AdamW's decoupled weight decay, so a frozen group does not move at all.
        g["lr"] = 0.0 if (frozen and g.get("last_layer")) else lr * g.get("lr_scale", 1.0)
        g["weight_decay"] = wd * g.get("wd_scale", 1.0)
    return {"lr": lr, "weight_decay": wd}
