"""`train.compile`: regional torch.compile of the encoder blocks in the worker (Dynamo with the 'eager' backend,
fast on CPU; Inductor is left to `radscale bench train --compile`). Checkpoints keep their keys and load strictly
into a plain encoder."""
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch._dynamo.utils import counters

from radscale.config.specs import JobSpec, TrainSpec
from radscale.config.trial import TrialSpec
from radscale.errors import RadscaleError
from radscale.models.registry import build_image_encoder
from radscale.objectives.build import build_task
from radscale.train.local import LocalRuntime
from radscale.train.worker import compile_encoders, train_trial

TINY_DINO = {"global_size": 32, "local_size": 16, "local_crops": 2, "n_prototypes": 256, "head_hidden": 64,
             "head_bottleneck": 32}


def _job(compiled: bool, encoder: str = "rad-dino-tiny", objective: str = "dinov2") -> JobSpec:
    return JobSpec.model_validate({
        "sweep": {"name": "t"}, "encoders": [{"name": encoder, "objective": objective}], "sizes": [64],
        "budget": {"value": 2.0}, "train": {"batch_size": 8, "report_every_s": 0.5, "dinov2": TINY_DINO,
                                            "compile": compiled, "compile_backend": "eager"}})


def _epochs(epoch):
    rng = np.random.default_rng(epoch)
    for _ in range(8):
        yield {"image": torch.from_numpy(rng.integers(0, 255, (8, 40, 40), dtype=np.uint8))}


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def _trial(tmp_path: Path, compiled: bool) -> tuple[dict, Path]:
    job = _job(compiled)
    rt = LocalRuntime(_epochs, tmp_path)
    final = train_trial(job, TrialSpec("t", job.encoders[0], 64, 0), 64, rt)
    return final, Path(rt.reports[-1][1])


def _ds_module_keys(ckpt: Path) -> list[str]:
    (states,) = list((ckpt / "ds").rglob("mp_rank_00_model_states.pt"))
    return sorted(torch.load(states, map_location="cpu", weights_only=False)["module"])


def test_compiled_trial_trains_and_its_checkpoint_loads_into_a_plain_encoder(tmp_path):
    captured = counters["stats"]["calls_captured"]
    final, ckpt = _trial(tmp_path / "compiled", True)
    assert counters["stats"]["calls_captured"] > captured          # Dynamo did run the blocks
    # The compiling warm-up step is startup, and it does not stop the loop early (it seeds no step estimate).
    assert final["steps"] >= 3 and final["startup_s"] > 0 and np.isfinite(final["loss"])
    assert abs(final["train_s"] - 2.0) <= final["max_step_s"] + 0.25 + 0.1      # + a late wake under load
    _, plain_ckpt = _trial(tmp_path / "plain", False)
    compiled_state = torch.load(ckpt / "encoder.pt")
    assert list(compiled_state) == list(torch.load(plain_ckpt / "encoder.pt"))
    assert not any("_orig_mod" in k for k in compiled_state)
    assert _ds_module_keys(ckpt) == _ds_module_keys(plain_ckpt)     # the restart state too
    fresh = build_image_encoder("rad-dino-tiny")
    fresh.load_state_dict(compiled_state, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in compiled_state.items())


def test_a_slow_compiling_warm_up_lands_in_startup_and_does_not_cut_the_budget(tmp_path, monkeypatch):
    def slow_compile(task, mode, backend):          # stands in for minutes of Inductor on a large encoder
        calls = []

        def first_call_compiles(module, args):
            if not calls:
                calls.append(1)
                time.sleep(4.5)
        task.register_forward_pre_hook(first_call_compiles)
        return 1

    monkeypatch.setattr("radscale.train.worker.compile_encoders", slow_compile)
    final, _ = _trial(tmp_path, True)
    assert final["startup_s"] >= 4.5
    # Seeded with the 4.5 s warm-up as a step estimate, the stop rule would end the 2 s budget before any step.
    assert abs(final["train_s"] - 2.0) <= final["max_step_s"] + 0.25 + 0.1      # + a late wake under load


@pytest.mark.parametrize("encoder,objective,blocks", [("rad-dino-tiny", "dinov2", 2 * 4), ("mi2-tiny", "unicl", 4)])
def test_compile_encoders_compiles_blocks_in_place(encoder, objective, blocks):
    job = _job(True, encoder, objective)
    task = build_task(job.encoders[0], job.train, 0)
    keys = list(task.state_dict())
    assert compile_encoders(task, backend="eager") == blocks         # ViT: student + teacher blocks; DaViT: stages
    assert list(task.state_dict()) == keys


def test_bad_compile_settings_are_refused():
    with pytest.raises(ValidationError, match="compile_mode"):
        TrainSpec(compile_mode="fastest")
    with pytest.raises(ValidationError, match="compile_backend"):               # refused when the job loads
        TrainSpec(compile_backend="nope")
    with pytest.raises(RadscaleError, match="train.compile_backend: unknown backend 'nope'"):
        compile_encoders(torch.nn.Linear(2, 2), backend="nope")
    with pytest.raises(RadscaleError, match="Linear has no ViT or DaViT image encoder"):
        compile_encoders(torch.nn.Linear(2, 2), backend="eager")
