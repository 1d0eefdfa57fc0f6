"""`radscale bench extract` end to end on a local 2-CPU Ray: the real actor-pool extraction and the bare loop
do the same work (equal features per image id); no timing assertions beyond "it measured something".

One Ray instance for the module (`ray.init` costs 8-10 s here); the bench leaves an instance it did not start.
"""
import json

import numpy as np
import pytest
import torch

from radscale.cli.main import main
from radscale.errors import RadscaleError
from radscale.orchestrate.bench_extract import (bare_loop, radscale_loop, run_extract_bench, save_random_encoder,
                                                synthetic_images)

ENC = "rad-dino-tiny"


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from radscale.orchestrate.ray_env import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_cli_prints_one_json_line_with_both_rates(ray_local, capsys):
    threads = torch.get_num_threads()
    assert main(["bench", "extract", "--device", "cpu", "--images", "192", "--batch-size", "16"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert {"bench", "encoder", "device", "device_name", "batch_size", "images", "radscale_images_per_s",
            "bare_images_per_s", "ratio", "actors", "radscale_first_batch_s", "features_max_abs_diff"} <= set(out)
    assert (out["bench"], out["encoder"], out["device"], out["batch_size"], out["images"], out["actors"]) == \
        ("extract", ENC, "cpu", 16, 192, 1)
    assert out["radscale_images_per_s"] > 0 and out["bare_images_per_s"] > 0
    assert out["ratio"] == pytest.approx(out["radscale_images_per_s"] / out["bare_images_per_s"])
    assert out["features_max_abs_diff"] <= 1e-5            # same weights, same images, same features
    assert torch.get_num_threads() == threads               # the bare loop's thread setting is restored
    import ray
    assert ray.is_initialized()                             # an instance the bench did not start stays up


def test_both_sides_compute_the_same_features_per_image(ray_local, tmp_path):
    images = synthetic_images(80, 64, seed=3)
    same, other = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    save_random_encoder(ENC, same, seed=0)
    save_random_encoder(ENC, other, seed=1)
    cpu = torch.device("cpu")
    ours = radscale_loop(ENC, same, images, 16, 1, 0.0, 4, False, 16, 1)
    assert list(ours["ids"]) == [str(i) for i in range(80)]
    bare = bare_loop(ENC, same, images, 16, cpu, 4, False, 16, 1)
    assert ours["features"].shape == bare["features"].shape == (80, 5 * 96)     # 4 CLS ++ mean patch, D=96
    np.testing.assert_allclose(ours["features"], bare["features"], atol=1e-5, rtol=0)
    # The comparison can fail: other weights give other features.
    wrong = bare_loop(ENC, other, images, 16, cpu, 4, False, 16, 1)
    assert np.abs(ours["features"] - wrong["features"]).max() > 1e-2


def test_too_few_images_is_one_line_error():
    with pytest.raises(RadscaleError, match="--images 64 must exceed --batch-size 16 and 64"):
        run_extract_bench(ENC, batch_size=16, images=64, device="cpu")


def test_without_ray_times_the_actor_callable_on_the_same_work():
    out = run_extract_bench(ENC, batch_size=16, images=96, device="cpu", without_ray=True)
    assert (out["radscale_path"], out["actors"], out["precision"]) == ("feature-extractor", 0, "fp32")
    assert out["radscale_images_per_s"] > 0 and out["features_max_abs_diff"] == 0.0


def test_bad_precision_is_one_line_error():
    with pytest.raises(RadscaleError, match="--precision 'fp16': expected fp32 or bf16"):
        run_extract_bench(ENC, batch_size=16, images=96, device="cpu", precision="fp16")
