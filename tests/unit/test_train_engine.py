"""The DeepSpeed engine's numerics (real engine, CPU, gloo): bf16 precision and gradient clipping.

train.precision = "bf16" is autocast with float32 weights.

DeepSpeed's own `bf16` mode casts the module, teacher included, to bf16: the tasks' float32 crops then fail in
the first convolution, and a bf16 EMA teacher stops moving at DINOv2's momenta. radscale uses DeepSpeed's
`torch_autocast` section instead. The device rule (bf16 on CUDA only) is `models.precision.uses_bf16`; here
the engine is built with bf16 forced on, because CPU autocast runs the same code path.
"""
import copy

import deepspeed
import pytest
import torch

from radscale.config.specs import JobSpec
from radscale.models.precision import uses_bf16
from radscale.models.text import tokenize
from radscale.objectives.build import build_task
from radscale.train.engine import build_engine, clip_gradients, deepspeed_config
from radscale.train.local import init_single_process_group

DINO = {"global_size": 32, "local_size": 16, "local_crops": 2, "n_prototypes": 256, "head_hidden": 64,
        "head_bottleneck": 32}


def _job(objective: str, zero_stage: int) -> JobSpec:
    enc = "rad-dino-tiny" if objective == "dinov2" else "mi2-tiny"
    return JobSpec.model_validate({
        "sweep": {"name": "p"}, "encoders": [{"name": enc, "objective": objective}], "sizes": [64],
        "budget": {"value": 1.0}, "train": {"batch_size": 4, "precision": "bf16", "zero_stage": zero_stage,
                                            "dinov2": DINO}})


def _inputs(objective: str) -> dict:
    g = torch.Generator().manual_seed(0)
    x = {"images": torch.randint(0, 255, (4, 40, 40), dtype=torch.uint8, generator=g)}
    if objective != "dinov2":
        x["tokens"] = tokenize([f"report {i}" for i in range(4)])
        x["labels"] = (torch.rand(4, 23, generator=g) < 0.3).to(torch.int8)
    return x


def test_device_rule_and_config():
    assert uses_bf16("bf16", "cuda") and uses_bf16("bf16", torch.device("cuda", 1))
    assert not uses_bf16("bf16", "cpu") and not uses_bf16("fp32", "cuda")
    train = _job("dinov2", 2).train
    on, off = deepspeed_config(train, 4, bf16=True), deepspeed_config(train, 4, bf16=False)
    assert on["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    assert off["torch_autocast"]["enabled"] is False
    assert "bf16" not in on and "fp16" not in on              # never DeepSpeed's weight-casting modes


@pytest.mark.parametrize("objective, zero_stage", [("dinov2", 0), ("dinov2", 2), ("clip", 2), ("unicl", 0)])
def test_bf16_step_keeps_float32_weights_and_runs_matmuls_in_bf16(objective, zero_stage):
    torch.manual_seed(0)
    init_single_process_group()
    job = _job(objective, zero_stage)
    task = build_task(job.encoders[0], job.train, 0)
    engine, _ = build_engine(task, job.train, objective, 1, use_gpu=False, bf16=True)
    linear_out: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda m, i, o: linear_out.add(o.dtype))
             for m in task.modules() if isinstance(m, torch.nn.Linear)]
    teacher = [p.detach().clone() for p in task.teacher.parameters()] if objective == "dinov2" else []
    before = [p.detach().clone() for p in task.parameters() if p.requires_grad]
    for _ in range(2):
        loss, metrics = engine(**_inputs(objective), progress=0.3)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        engine.backward(loss)
        engine.step()
        task.after_step(0.999)          # momentum ~0.9995: a bf16 teacher would not move at all
    for h in hooks:
        h.remove()
    assert linear_out == {torch.bfloat16}
    assert {p.dtype for p in task.parameters()} == {torch.float32}
    moved = [not torch.equal(a, p) for a, p in zip(before, (p for p in task.parameters() if p.requires_grad))]
    assert sum(moved) > len(moved) // 2
    if objective == "dinov2":
        assert task.center.center.dtype == torch.float32
        assert any(not torch.equal(a, p) for a, p in zip(teacher, task.teacher.parameters()))


def test_why_the_teacher_stays_float32():
    # The numbers behind the rule: one EMA update at m = 0.9995 of a weight towards a student 1% away.
    t = torch.linspace(0.5, 2.0, 1001)
    s = t * 1.01
    m = 0.9995
    assert torch.equal((t.bfloat16() * m + s.bfloat16() * (1 - m)), t.bfloat16())          # stuck
    assert (t * m + s * (1 - m) - t).abs().min() > 0                                        # fp32 moves


def test_zero0_clips_like_deepspeed_without_its_per_step_host_sync():
    # ZeRO-0: the worker clips with torch's foreach clip; DeepSpeed's own clip (a per-parameter loop and a
    # .item()) must hand the optimizer the same gradients. Tiny clip so that it is active.
    torch.manual_seed(0)
    init_single_process_group()
    job = _job("dinov2", 0)
    train = job.train.model_copy(update={"grad_clip": 1e-3, "precision": "fp32"})
    base = build_task(job.encoders[0], train, 0)
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    assert deepspeed_config(train, 1, False)["gradient_clipping"] == 0.0
    assert deepspeed_config(train.model_copy(update={"zero_stage": 2}), 1, False)["gradient_clipping"] == 1e-3
    eng, _ = build_engine(ours, train, "dinov2", 1, use_gpu=False)
    opt = torch.optim.AdamW(theirs.param_groups(train.dinov2.layer_decay, train.dinov2.patch_embed_lr_mult),
                            lr=train.lr)
    ref, _, _, _ = deepspeed.initialize(model=theirs, optimizer=opt, dist_init_required=False,
                                        config={**deepspeed_config(train, 1, False), "gradient_clipping": 1e-3})
    handed: dict[str, list[torch.Tensor]] = {}
    x = _inputs("dinov2")
    for name, engine, task in (("ours", eng, ours), ("deepspeed", ref, theirs)):
        params = [p for p in task.parameters() if p.requires_grad]
        def given(opt, args, kwargs, name=name, params=params):     # the gradients the optimizer is handed
            handed[name] = [p.grad.clone() for p in params]
        engine.optimizer.register_step_pre_hook(given)
        loss, _ = engine(**x, progress=0.5)
        engine.backward(loss)
        if name == "ours":
            assert torch.nn.utils.get_total_norm([p.grad for p in params]) > 100 * train.grad_clip
            clip_gradients(task, train)
        engine.step()
    for name in ("ours", "deepspeed"):
        assert torch.nn.utils.get_total_norm(handed[name]).item() == pytest.approx(train.grad_clip, rel=1e-4)
    assert max((a - b).abs().max().item() for a, b in zip(handed["ours"], handed["deepspeed"])) < 1e-9
