"""`radscale bench train`: the radscale training path vs a bare PyTorch loop on the same task, batch and device.

Both sides run the *same* task module (model + loss + on-device augmentation) on the same synthetic uint8
batches for the same wall-clock seconds after a warm-up step; the radscale side goes through DeepSpeed and the
budgeted loop (collectives, schedules, reporting), the bare side is `loss.backward(); clip; opt.step()`. The ratio of
images/s is the overhead of radscale's machinery. FLOPs per sample are counted once with FlopCounterMode.
`compile=True` compiles the image encoder's blocks on both sides alike (`train.worker.compile_encoders`, as
`train.compile` does); compilation happens in the warm-up step, outside the timed part on both sides.
"""
from __future__ import annotations

import json
import tempfile
import time
from typing import get_args

import torch

from radscale.config.specs import JobSpec, TrainSpec
from radscale.config.trial import TrialSpec
from radscale.models.precision import uses_bf16
from radscale.models.registry import get_flavour
from radscale.objectives.build import build_task
from radscale.train.flops import count_flops_per_sample
from radscale.train.worker import compile_encoders

FULL_SIZE_DINO = {"global_size": 224, "local_size": 98, "local_crops": 8}


def _job(encoder: str, objective: str, batch: int, seconds: float, precision: str, use_gpu: bool,
         compile_opts: dict | None = None) -> JobSpec:
    dino = FULL_SIZE_DINO if get_flavour(encoder).img_size >= 224 else {
        "global_size": 64, "local_size": 32, "local_crops": 4, "n_prototypes": 1024, "head_hidden": 256,
        "head_bottleneck": 64}
    return JobSpec.model_validate({
        "sweep": {"name": "bench"}, "encoders": [{"name": encoder, "objective": objective}], "sizes": [10**9],
        "budget": {"value": seconds}, "hardware": {"use_gpu": use_gpu},
        "train": {"batch_size": batch, "precision": precision, "report_every_s": 1e9, "dinov2": dino,
                  **(compile_opts or {})}})


def _batches(job: JobSpec, objective: str, decode: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    b = job.train.batch_size
    batch = {"image": torch.randint(0, 255, (b, decode, decode), dtype=torch.uint8, generator=g)}
    if objective != "dinov2":
        from radscale.models.text import tokenize
        batch["tokens"] = tokenize(["no acute cardiopulmonary process. " * 4] * b, job.train.clip.context_length)
        batch["labels"] = (torch.rand(b, 23, generator=g) < 0.2).to(torch.int8)
    return batch


def _inputs(objective: str, batch: dict, device: torch.device) -> dict:
    out = {"images": batch["image"].to(device)}
    if objective != "dinov2":
        out.update(tokens=batch["tokens"].long().to(device), labels=batch["labels"].to(device))
    return out


def bare_loop(job: JobSpec, objective: str, batch: dict, device: torch.device, seconds: float) -> dict:
    task = build_task(job.encoders[0], job.train, 0).to(device)
    if job.train.compile:
        compile_encoders(task, job.train.compile_mode, job.train.compile_backend)
    params = [p for p in task.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=job.train.lr, fused=True)          # as train.engine
    inputs = _inputs(objective, batch, device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=job.train.precision == "bf16")

    def step():
        with amp:
            loss, _ = task(**inputs, progress=0.5)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, job.train.grad_clip)     # the recipe clips; DeepSpeed does too
        opt.step()
        opt.zero_grad(set_to_none=True)
        task.after_step(0.5)

    t_warm = time.perf_counter()
    step()                                   # warm-up (and compilation), as on the radscale side
    _sync(device)
    warm_s = time.perf_counter() - t_warm
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    _sync(device)
    dt = time.perf_counter() - t0
    return {"images_per_s": n * job.train.batch_size / dt, "steps": n, "warmup_s": warm_s}


def radscale_loop(job: JobSpec, objective: str, batch: dict, device: torch.device) -> dict:
    from radscale.train.local import LocalRuntime
    from radscale.train.worker import train_trial

    def epochs(_):
        while True:
            yield batch

    with tempfile.TemporaryDirectory() as tmp:
        # no final checkpoint: for the full-size MI2 that is ~9 GB written (and copied) after the timing
        rt = LocalRuntime(epochs, tmp, device=device, saves_checkpoints=False)
        final = train_trial(job, TrialSpec("bench", job.encoders[0], 10**9, 0), 10**9, rt)
    return {"images_per_s": final["images_per_s"], "steps": final["steps"], "flops_per_sample":
            final.get("flops_per_sample", 0.0), "budget_deviation": final["budget_deviation"],
            "startup_s": final["startup_s"]}


def step_reads(job: JobSpec, objective: str, batch: dict, device: torch.device) -> dict:
    """Host reads in one radscale training step (after a first one), counted by aten op (`HostReads`, any
    device) and, on CUDA, as the synchronising calls torch's sync debug mode reports (this also sees blocking
    host-to-device copies). The iBOT masks' host-side generator reads are not device reads and are left out."""
    import warnings

    from radscale.train.engine import build_engine
    from radscale.train.host_reads import HostReads
    from radscale.train.local import init_single_process_group
    from radscale.train.worker import _inputs, train_step

    init_single_process_group("nccl" if device.type == "cuda" else "gloo")
    task = build_task(job.encoders[0], job.train, 0).to(device)
    engine, optimizer = build_engine(task, job.train, objective, 1, device.type == "cuda",
                                     bf16=uses_bf16(job.train.precision, device))
    if job.train.compile:
        compile_encoders(task, job.train.compile_mode, job.train.compile_backend)
    inputs = _inputs(objective, batch, device)
    train_step(engine, task, optimizer, job.train, objective, inputs, 0.5)
    _sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with HostReads() as reads:
                train_step(engine, task, optimizer, job.train, objective, inputs, 0.5)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    out = {"radscale_host_reads_per_step": sum(n for c, n in reads.callers.items()
                                               if not c.startswith("objectives/masking.py")),
           "radscale_host_read_sites": sorted(c for c in reads.callers if not c.startswith("objectives/masking.py"))}
    if device.type == "cuda":
        out["radscale_cuda_syncs_per_step"] = sum("synchroniz" in str(w.message) for w in caught)
    del engine, optimizer, task
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_train_bench(encoder: str = "rad-dino-tiny", objective: str = "dinov2", batch_size: int = 16,
                    seconds: float = 10.0, device: str = "", peak_tflops: float = 0.0, compile: bool = False,
                    compile_mode: str = "default", compile_backend: str = "inductor", zero_stage: int | None = None
                    ) -> dict:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = "bf16" if dev.type == "cuda" else "fp32"
    opts = {"compile": compile, "compile_mode": compile_mode, "compile_backend": compile_backend}
    if zero_stage is not None:
        opts["zero_stage"] = zero_stage
    job = _job(encoder, objective, batch_size, seconds, precision, dev.type == "cuda", opts)
    decode = max(get_flavour(encoder).img_size, job.train.dinov2.global_size) if objective == "dinov2" \
        else get_flavour(encoder).img_size
    batch = _batches(job, objective, decode, dev)
    task = build_task(job.encoders[0], job.train, 0).to(dev)
    flops = count_flops_per_sample(task, _inputs(objective, batch, dev))
    del task
    bare = bare_loop(job, objective, batch, dev, seconds)
    # The budgeted loop never starts a step that would end past the budget: give it room for a few steps when
    # one step is long (a full-size encoder on the CPU), or it would train none.
    step_s = batch_size / max(bare["images_per_s"], 1e-9)
    ours_s = max(seconds, 4 * step_s)
    if ours_s > seconds:
        job = job.model_copy(update={"budget": job.budget.model_copy(update={"value": ours_s})})
    ours = radscale_loop(job, objective, batch, dev)
    out = {"bench": "train", "encoder": encoder, "objective": objective, "device": str(dev),
           "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
           "threads": torch.get_num_threads(), "batch_size": batch_size, "precision": precision,
           "flops_per_sample": flops, "radscale_images_per_s": ours["images_per_s"],
           "bare_images_per_s": bare["images_per_s"], "ratio": ours["images_per_s"] / bare["images_per_s"],
           "radscale_budget_deviation": ours["budget_deviation"], "radscale_seconds": ours_s,
           "zero_stage": job.train.zero_stage, "compile": compile}
    if compile:
        # The bare side compiles first; the radscale side then reuses Dynamo's and Inductor's caches.
        out.update(compile_mode=compile_mode, compile_backend=compile_backend, bare_warmup_s=bare["warmup_s"],
                   radscale_startup_s=ours["startup_s"])
    out.update(step_reads(job, objective, batch, dev))
    tflops = ours["images_per_s"] * flops / 1e12
    out["radscale_tflops"] = tflops
    if peak_tflops:
        out["mfu"] = tflops / peak_tflops
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="radscale bench train")
    p.add_argument("--encoder", default="rad-dino-tiny")
    p.add_argument("--objective", default="dinov2")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--device", default="")
    p.add_argument("--peak-tflops", type=float, default=0.0)
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder blocks on both sides")
    p.add_argument("--compile-mode", default="default", help="train.compile_mode (inductor only)",
                   choices=get_args(TrainSpec.model_fields["compile_mode"].annotation))
    p.add_argument("--compile-backend", default="inductor", help="train.compile_backend ('eager': debugging)")
    p.add_argument("--zero-stage", type=int, default=None, choices=(0, 1, 2),
                   help="train.zero_stage of the radscale side (default: the config default)")
    a = p.parse_args(argv)
    print(json.dumps(run_train_bench(a.encoder, a.objective, a.batch_size, a.seconds, a.device, a.peak_tflops,
                                     a.compile, a.compile_mode, a.compile_backend, a.zero_stage)))
