"""A task's random state survives a checkpoint: crops, masks and prompt draws continue where they stopped,
and the generator comes back on the device it was saved from (a CUDA state is 16 bytes, a CPU one 5,056)."""
import copy
import io

import pytest
import torch

from radscale.config.specs import JobSpec
from radscale.objectives.build import build_task
from radscale.objectives.clip import clip_logits
from radscale.objectives.rng import generator_state, restore_generator

DINO = {"global_size": 32, "local_size": 16, "local_crops": 2, "n_prototypes": 64, "head_hidden": 32,
        "head_bottleneck": 16}


def _task(objective: str):
    enc = "rad-dino-tiny" if objective == "dinov2" else "mi2-tiny"
    job = JobSpec.model_validate({
        "sweep": {"name": "p"}, "encoders": [{"name": enc, "objective": objective}], "sizes": [64],
        "budget": {"value": 1.0}, "train": {"batch_size": 4, "dinov2": DINO}})
    return build_task(job.encoders[0], job.train, 0)


def _draw(task, objective: str) -> list[torch.Tensor]:
    images = torch.arange(4 * 40 * 40, dtype=torch.int64).remainder(251).to(torch.uint8).reshape(4, 40, 40)
    if objective == "dinov2":
        return list(task.make_views(images))
    labels = torch.tensor([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=torch.int8)
    labels = torch.nn.functional.pad(labels, (0, len(task.prompt_labels) - 3))
    return [task.make_views(images), *task._sample_prompts(labels)]


@pytest.mark.parametrize("objective", ["dinov2", "unicl"])
def test_restored_state_continues_the_same_draws(objective):
    task = _task(objective)
    _draw(task, objective)                                   # the generators exist and have advanced
    saved = copy.deepcopy(task.extra_state())
    assert saved["generator"]["device"] == "cpu"
    expected = _draw(task, objective)
    resumed = _task(objective)                               # a restarted worker: fresh task, checkpoint state
    resumed.load_extra_state(torch.load(_roundtrip(saved), weights_only=False))
    for a, b in zip(expected, _draw(resumed, objective)):
        assert torch.equal(a, b)
    fresh = _draw(_task(objective), objective)               # and the state mattered
    assert not all(torch.equal(a, b) for a, b in zip(expected, fresh))


def _roundtrip(obj) -> io.BytesIO:
    """As a checkpoint stores it (DeepSpeed client_state goes through torch.save)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_restore_generator_rebuilds_on_the_saved_device_and_reads_old_states():
    g = torch.Generator().manual_seed(3)
    torch.rand(5, generator=g)
    want = torch.rand(4, generator=copy.deepcopy(g))
    assert torch.equal(torch.rand(4, generator=restore_generator(generator_state(g), seed=0)), want)
    assert torch.equal(torch.rand(4, generator=restore_generator(g.get_state(), seed=0)), want)   # bare tensor
    assert restore_generator(None, seed=0) is None and generator_state(None) is None


def test_flop_count_leaves_an_unused_generator_unused():
    from radscale.train.flops import count_flops_per_sample
    task = _task("dinov2")
    images = torch.randint(0, 255, (4, 40, 40), dtype=torch.uint8)
    count_flops_per_sample(task, {"images": images})
    assert task._gen is None and task._mask_gen is None      # the first real step draws as if never counted


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("objective", ["dinov2", "unicl"])
def test_cuda_generator_state_round_trips(objective):
    task = _task(objective).cuda()
    images = torch.randint(0, 255, (4, 40, 40), dtype=torch.uint8, device="cuda")
    task.make_views(images)
    saved = copy.deepcopy(task.extra_state())
    assert saved["generator"]["device"].startswith("cuda")
    expected = task.make_views(images)
    resumed = _task(objective).cuda()
    resumed.load_extra_state(saved)
    again = resumed.make_views(images)
    for a, b in zip(*(v if isinstance(v, tuple) else (v,) for v in (expected, again))):
        assert torch.equal(a, b)


def test_clip_logits_stay_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    v = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = clip_logits(u, v, 100.0)
    exact = 100.0 * u.double() @ v.double().t()
    assert s.dtype == torch.float32
    assert (s.double() - exact).abs().max() < 1e-4          # bf16 would be off by ~0.3 at this scale


def test_every_rank_resumes_its_own_augmentation_stream(tmp_path, monkeypatch):
    """DeepSpeed writes the client state from rank 0 only; each rank's task state is its own file, so after a
    restart rank 1 does not replay rank 0's crops (identical augmentation on every rank)."""
    import radscale.train.checkpoint as ckpt
    from radscale.train.budget import BudgetState

    class Engine:                               # DeepSpeed's checkpoint interface: rank 0's client state only
        def save_checkpoint(self, path, tag, client_state):
            if ckpt.rank() == 0:
                torch.save(client_state, tmp_path / "client.pt")

        def load_checkpoint(self, path, tag, load_module_strict):
            return None, torch.load(tmp_path / "client.pt", weights_only=False)

    job = JobSpec.model_validate({
        "sweep": {"name": "p"}, "encoders": [{"name": "rad-dino-tiny", "objective": "dinov2"}], "sizes": [64],
        "budget": {"value": 1.0}, "train": {"batch_size": 4, "dinov2": DINO}})
    tasks = [build_task(job.encoders[0], job.train, 0, rank=r) for r in (0, 1)]
    for r in (1, 0):
        _draw(tasks[r], "dinov2")
        monkeypatch.setattr(ckpt, "rank", lambda r=r: r)
        ckpt.save_checkpoint(tmp_path / "c", Engine(), tasks[r], BudgetState(), {}, is_chief=r == 0)
    expected = [_draw(t, "dinov2")[0] for t in tasks]
    assert not torch.equal(expected[0], expected[1])
    for r in (0, 1):
        fresh = build_task(job.encoders[0], job.train, 0, rank=r)
        monkeypatch.setattr(ckpt, "rank", lambda r=r: r)
        ckpt.load_checkpoint(tmp_path / "c", Engine(), fresh)
        assert torch.equal(_draw(fresh, "dinov2")[0], expected[r]), r
