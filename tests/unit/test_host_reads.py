"""Host reads of device values in a training step: each would drain a GPU's kernel queue once per step.

Counted on the CPU with `train.host_reads.HostReads` (the same aten operations are dispatched on either device).
The iBOT masks are drawn on the host by design (a CPU generator, values read by numpy-side code in
objectives/masking.py); those reads touch no device tensor and are left out.
"""
import pytest
import torch

from radscale.config.specs import JobSpec
from radscale.models.text import tokenize
from radscale.objectives.build import build_task
from radscale.train.engine import build_engine
from radscale.train.host_reads import HostReads
from radscale.train.local import init_single_process_group
from radscale.train.worker import train_step


def test_counter_sees_each_kind_of_read_and_nothing_else():
    x = torch.randn(8)
    with HostReads() as r:
        float(x.sum())
        _ = x[x > 0]
        bool((x > 5).any())
        x.nonzero()
        torch._foreach_mul_([x, x.clone()], 0.5)
        torch.nn.utils.clip_grad_norm_([torch.nn.Parameter(x.clone())], 1.0)   # no grad: nothing to read
        x.index_select(0, torch.tensor([1, 2]))
    assert r.counts == {"_local_scalar_dense": 2, "index": 1, "nonzero": 1}
    assert r.total == 4 and all(c.startswith("unit/test_host_reads.py:") for c in r.callers)


@pytest.mark.parametrize("objective", ["dinov2", "clip", "unicl"])
def test_a_zero0_training_step_reads_nothing_back(objective):
    torch.manual_seed(0)
    init_single_process_group()
    enc = "rad-dino-tiny" if objective == "dinov2" else "mi2-tiny"
    job = JobSpec.model_validate({
        "sweep": {"name": "h"}, "encoders": [{"name": enc, "objective": objective}], "sizes": [8],
        "budget": {"value": 1.0}, "train": {"batch_size": 8, "zero_stage": 0, "dinov2": {
            "global_size": 32, "local_size": 16, "local_crops": 2, "n_prototypes": 256, "head_hidden": 64,
            "head_bottleneck": 32}}})
    task = build_task(job.encoders[0], job.train, 0)
    engine, optimizer = build_engine(task, job.train, objective, 1, use_gpu=False)
    inputs = {"images": torch.randint(0, 255, (8, 40, 40), dtype=torch.uint8)}
    if objective != "dinov2":
        inputs.update(tokens=tokenize([f"report {i}" for i in range(8)]),
                      labels=(torch.rand(8, 23) < 0.3).to(torch.int8))
    train_step(engine, task, optimizer, job.train, objective, inputs, 0.3)      # first step: lazy state
    with HostReads() as r:
        out = train_step(engine, task, optimizer, job.train, objective, inputs, 0.4)
    device_reads = {c: n for c, n in r.callers.items() if not c.startswith("objectives/masking.py")}
    assert device_reads == {}
    assert torch.is_tensor(out["loss"]) and torch.isfinite(out["loss"])
