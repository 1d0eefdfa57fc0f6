from pathlib import Path

import pytest

from radscale.config.load import apply_overrides, load_job, parse_override
from radscale.config.trial import plan_trials
from radscale.errors import RadscaleError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_jobs_validate():
    demo = load_job(ROOT / "jobs/demo.toml")
    paper = load_job(ROOT / "jobs/paper.toml")
    assert {e.key for e in paper.encoders} == {"rad-dino.dinov2", "mi2.clip", "mi2.unicl"}
    assert paper.sizes == (30000, 50000, 100000, 1000000, 3500000)
    assert demo.budget.mode == "seconds" and len(demo.sizes) >= 3
    assert Path(paper.data.manifest).is_absolute()          # resolved against the job's folder


def test_trial_ids_are_deterministic_and_include_baselines():
    job = load_job(ROOT / "jobs/demo.toml")
    ids = [t.trial_id for t in plan_trials(job)]
    assert ids[0] == "rad-dino-tiny.dinov2.n0.s0"
    assert "mi2-tiny.clip.n1000.s0" in ids and len(ids) == len(set(ids)) == 8


@pytest.mark.parametrize("item,path,value", [
    ("train.lr=1e-3", ["train", "lr"], 1e-3), ("sweep.name=x", ["sweep", "name"], "x"),
    ("sizes=[1, 2, 3]", ["sizes"], [1, 2, 3]), ("hardware.use_gpu=true", ["hardware", "use_gpu"], True),
])
def test_parse_override(item, path, value):
    assert parse_override(item) == (path, value)


def test_overrides_apply_and_do_not_mutate():
    base = {"train": {"lr": 1.0}}
    out = apply_overrides(base, ["train.lr=2.0", "budget.value=3"])
    assert out == {"train": {"lr": 2.0}, "budget": {"value": 3}} and base == {"train": {"lr": 1.0}}


@pytest.mark.parametrize("override,fragment", [
    ("train.lr=-1", "train.lr: Input should be greater than 0"),
    ("train.nonsense=1", "train.nonsense: unknown key"),
    ("budget.mode='hours'", "budget.mode"),
    ("sizes=[400, 150]", "strictly increasing"),
    ("data.splits.test=0.5", "sum to 1"),
    ("train.zero_stage=3", "train.zero_stage"),
    ("train.batch_size=1", "KoLeo"),
    ("eval.precision='fp16'", "eval.precision"),
    ("train.dinov2.blur_ref_sizes=[224, 4]", "train.dinov2.blur_ref_sizes.1: Input should be greater than or equal"),
    ("train.clip.model_ema=1.0", "train.clip.model_ema: Input should be less than 1"),
])
def test_bad_values_are_refused_in_one_line(override, fragment):
    with pytest.raises(RadscaleError) as err:
        load_job(ROOT / "jobs/demo.toml", [override])
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg and "demo.toml" in msg


def test_bad_files(tmp_path):
    with pytest.raises(RadscaleError, match="job file not found"):
        load_job(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[sweep\nname=1")
    with pytest.raises(RadscaleError, match="not valid TOML"):
        load_job(bad)
    missing = tmp_path / "m.toml"
    missing.write_text('[sweep]\nname = "x"\n')
    with pytest.raises(RadscaleError, match="encoders: Field required"):
        load_job(missing)
