"""A sweep folder holds one configuration: a re-run may grow the sweep, never change what its results mean."""
import json

import pytest

from radscale.config.load import validate_job
from radscale.config.rerun import changed_settings, check_rerun
from radscale.errors import RadscaleError

BASE = {"sweep": {"name": "s"}, "sizes": [100, 200], "budget": {"value": 30},
        "encoders": [{"name": "rad-dino-tiny", "objective": "dinov2"}]}


def _job(**changes):
    data = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        *head, last = dotted.split("__")
        d = data
        for k in head:
            d = d.setdefault(k, {})
        d[last] = value
    return validate_job(data)


def test_growing_a_sweep_or_changing_cost_and_scheduling_is_allowed():
    old = _job()
    grown = validate_job({**BASE, "sizes": [100, 200, 400], "sweep": {"name": "s", "seeds": [0, 1],
                                                                       "max_concurrent_trials": 4},
                          "encoders": [*BASE["encoders"], {"name": "mi2-tiny", "objective": "clip"}],
                          "hardware": {"node_price_per_hour": 3.0, "max_failures": 5},
                          "train": {"checkpoint_every_s": 600.0, "report_every_s": 5.0}})
    assert changed_settings(old, grown) == ([], [])


def test_settings_results_depend_on_are_named():
    old = _job()
    assert changed_settings(old, _job(budget__value=60)) == (["budget.value"], [])
    assert changed_settings(old, _job(train__lr=1e-3, hardware__num_workers=2))[0] == \
        ["train.lr", "hardware.num_workers"]
    weights = validate_job({**BASE, "encoders": [{"name": "rad-dino-tiny", "objective": "dinov2",
                                                  "weights": "/w/rad-dino"}]})
    assert changed_settings(old, weights)[0] == ["encoders[rad-dino-tiny.dinov2].weights"]
    assert changed_settings(old, _job(eval__seg_epochs=5)) == ([], ["eval.seg_epochs"])


def test_check_rerun_refuses_before_compute_in_one_line(tmp_path):
    check_rerun(_job(), tmp_path)                                  # a new folder: nothing to compare
    (tmp_path / "job.json").write_text(_job().model_dump_json())
    check_rerun(_job(), tmp_path)
    with pytest.raises(RadscaleError) as err:
        check_rerun(_job(budget__value=60, train__lr=1e-3), tmp_path)
    assert str(err.value) == (f"{tmp_path / 'job.json'}: this sweep was run with other settings (budget.value, "
                              "train.lr); new results would mix with the old ones: use a new sweep.name (or "
                              "output_dir)")
    check_rerun(_job(eval__seg_epochs=5), tmp_path)                # not evaluated yet: the new eval applies
    (tmp_path / "trials" / "t0").mkdir(parents=True)
    (tmp_path / "trials" / "t0" / "eval.parquet").write_bytes(b"")
    with pytest.raises(RadscaleError, match=r"evaluated with other settings \(eval.seg_epochs\); delete "):
        check_rerun(_job(eval__seg_epochs=5), tmp_path)
    (tmp_path / "job.json").write_text('{"sweep": {"name": "s"}, "budget": {"old": 1}}')
    with pytest.raises(RadscaleError, match="earlier run's settings cannot be read"):
        check_rerun(_job(), tmp_path)



def test_a_setting_the_earlier_run_did_not_record_counts_as_changed(tmp_path):
    """A job.json written before a field existed (e.g. train.clip.model_ema): the default may not be what that
    run did, so its finished trials must not be mixed with new ones; free settings stay free."""
    recorded = json.loads(_job().model_dump_json())
    del recorded["train"]["clip"]["model_ema"]
    del recorded["hardware"]["peak_tflops"]                        # free: never refused
    del recorded["encoders"][0]["weights"]
    (tmp_path / "job.json").write_text(json.dumps(recorded))
    with pytest.raises(RadscaleError) as err:
        check_rerun(_job(), tmp_path)
    assert ("other settings (train.clip.model_ema (new since that run), encoders[rad-dino-tiny.dinov2].weights "
            "(new since that run))") in str(err.value)
    recorded = json.loads(_job().model_dump_json())
    del recorded["eval"]["seg_epochs"]
    (tmp_path / "job.json").write_text(json.dumps(recorded))
    check_rerun(_job(), tmp_path)                                  # not evaluated yet
    (tmp_path / "trials" / "t0").mkdir(parents=True)
    (tmp_path / "trials" / "t0" / "eval.parquet").write_bytes(b"")
    with pytest.raises(RadscaleError, match=r"evaluated with other settings \(eval.seg_epochs \(new since"):
        check_rerun(_job(), tmp_path)
