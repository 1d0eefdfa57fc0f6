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


@pytest.fixture
def two_checkpoints(tmp_path) -> tuple[str, str]:
    """The same encoder's weights from seeds 0 and 1: the comparisons must tell them apart."""
    paths = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    for seed, path in enumerate(paths):
        save_random_encoder(ENC, path, seed=seed)
    return paths


CPU = torch.device("cpu")


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
    assert out["seg_tokens"] == [64, 4 * 96] and out["seg_max_abs_diff"] <= 1e-3   # eval's seg_layers = 4
    assert torch.get_num_threads() == threads               # the bare loop's thread setting is restored
    import ray
    assert ray.is_initialized()                             # an instance the bench did not start stays up


def test_both_sides_compute_the_same_features_per_image(ray_local, two_checkpoints):
    images = synthetic_images(80, 64, seed=3)
    same, other = two_checkpoints
    ours = radscale_loop(ENC, same, images, 16, 1, 0.0, 4, False, 16, 1)
    assert list(ours["ids"]) == [str(i) for i in range(80)]
    bare = bare_loop(ENC, same, images, 16, CPU, 4, False, 16, 1)
    assert ours["features"].shape == bare["features"].shape == (80, 5 * 96)     # 4 CLS ++ mean patch, D=96
    np.testing.assert_allclose(ours["features"], bare["features"], atol=1e-5, rtol=0)
    # The comparison can fail: other weights give other features.
    wrong = bare_loop(ENC, other, images, 16, CPU, 4, False, 16, 1)
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


def test_both_sides_extract_the_same_segmentation_tokens(ray_local, two_checkpoints):
    images = synthetic_images(80, 64, seed=4)
    same, other = two_checkpoints
    ours = radscale_loop(ENC, same, images, 16, 1, 0.0, 4, True, 16, 1, seg_layers=4)
    bare = bare_loop(ENC, same, images, 16, CPU, 4, True, 16, 1, seg_layers=4)
    assert ours["seg"].shape == bare["seg"].shape == (80, 64, 4 * 96)       # 8x8 grid, 4 blocks of D=96
    np.testing.assert_allclose(ours["seg"].astype(np.float32), bare["seg"].astype(np.float32), atol=1e-3, rtol=0)
    wrong = bare_loop(ENC, other, images, 16, CPU, 4, True, 16, 1, seg_layers=4)
    assert np.abs(ours["seg"].astype(np.float32) - wrong["seg"].astype(np.float32)).max() > 1e-2
    assert bare_loop(ENC, same, images, 16, CPU, 4, True, 16, 1)["seg"] is None      # seg_layers 1: none


def test_davit_segmentation_stage_is_timed_on_both_sides():
    out = run_extract_bench("mi2-tiny", batch_size=16, images=96, device="cpu", without_ray=True, seg_stage=-3)
    assert (out["seg_tokens"], out["seg_stage"]) == ([64, 48], -3)           # stride 8 at 64 px, width 48
    assert out["seg_max_abs_diff"] == 0.0 and out["features_max_abs_diff"] == 0.0
    off = run_extract_bench("mi2-tiny", batch_size=16, images=96, device="cpu", without_ray=True, seg_stage=-1)
    assert off["seg_tokens"] is None and off["seg_max_abs_diff"] is None


def test_bad_segmentation_option_is_one_line_error():
    with pytest.raises(RadscaleError, match="--seg-stage -5 in -4..-1"):
        run_extract_bench(ENC, batch_size=16, images=96, device="cpu", seg_stage=-5)


def test_extraction_keeps_segmentation_tokens_of_the_requested_images_only(ray_local, two_checkpoints):
    from radscale.orchestrate.bench_extract import image_dataset
    from radscale.orchestrate.ingest import extract_features

    ds = image_dataset(synthetic_images(80, 64, seed=5))
    model = [(ENC, two_checkpoints[0])]
    every = extract_features(ds, model, 16, 1, 0.0, seg_layers=4)
    wanted = {str(i) for i in range(0, 80, 7)}
    some = extract_features(ds, model, 16, 1, 0.0, seg_layers=4, seg_ids=wanted)
    assert sorted(every.seg_ids) == sorted(every.ids) and len(some.ids) == 80 and set(some.seg_ids) == wanted
    assert some.seg[0].shape == (len(wanted), 64, 4 * 96) and some.patches[0].shape[0] == 80
    row = {i: k for k, i in enumerate(every.ids)}
    np.testing.assert_array_equal(some.seg[0], every.seg[0][[row[i] for i in some.seg_ids]])
