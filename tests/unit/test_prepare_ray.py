"""`prepare` as a Ray Data job on a local 2-CPU Ray: shards, quarantine, resume, and a sweep reading them.

One Ray instance for the whole module (RAY.md: `ray.init` costs 8-10 s here). RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
is set by tests/conftest.py before Ray is imported, so everything stays on loopback.
"""
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from radscale.config.specs import JobSpec
from radscale.data.images import decode_image
from radscale.data.phantom.generate import generate_phantom
from radscale.data.shards import IMAGE_BYTES, SHARD, SHARD_ROW
from radscale.data.splits import subset_mask
from radscale.data.sweep_data import prepare_sweep_data
from radscale.errors import RadscaleError
from radscale.train.batches import square_uint8

SHORT_SIDE, ROWS_PER_SHARD, DECODE = 64, 16, 48


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from radscale.orchestrate.ray_env import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    """60 phantom images plus one corrupt file, as one valid manifest."""
    root = tmp_path_factory.mktemp("phantom")
    table = pq.read_table(generate_phantom(root / "ph", 60, seed=0, image_size=96))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    bad = pa.table({"image_id": ["broken"], "patient_id": ["Pbroken"], "study_id": ["Sbroken"],
                    "uri": [str(root / "broken.png")]})
    path = root / "manifest.parquet"
    pq.write_table(pa.concat_tables([table, bad], promote_options="default"), path)
    return str(path)


@pytest.fixture(scope="module")
def prepared(ray_local, source, tmp_path_factory):
    from radscale.orchestrate.prepare import prepare_shards

    out = tmp_path_factory.mktemp("prepared") / "shards"
    return out, prepare_shards(source, str(out), SHORT_SIDE, ROWS_PER_SHARD)


def test_prepare_writes_shards_quarantine_and_manifest(prepared):
    out, summary = prepared
    assert (summary.rows, summary.shards, summary.shards_written, summary.shards_skipped) == (61, 4, 4, 0)
    assert (summary.images, summary.images_written, summary.quarantined) == (60, 60, 1)
    assert summary.images_per_s > 0 and summary.seconds > 0
    assert sorted(p.name for p in (out / "shards").glob("*.parquet")) == [
        "part-0000000000-0000000016.parquet", "part-0000000016-0000000032.parquet",
        "part-0000000032-0000000048.parquet", "part-0000000048-0000000061.parquet"]
    [record] = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert record["image_id"] == "broken" and record["stage"] == "prepare" and "png" in record["reason"]
    manifest = pq.read_table(summary.manifest)
    assert manifest.num_rows == 60 and IMAGE_BYTES not in manifest.column_names
    assert max(manifest.column("height").to_pylist() + manifest.column("width").to_pylist()) == SHORT_SIDE
    row = manifest.slice(7, 1).to_pylist()[0]
    shard = pq.read_table(out / row[SHARD]).slice(row[SHARD_ROW], 1).to_pylist()[0]
    assert shard["image_id"] == row["image_id"]
    assert json.loads((out / "prepared.json").read_text())["images"] == 60


def test_rerun_skips_finished_shards_and_other_settings_are_refused(prepared, source):
    from radscale.orchestrate.prepare import prepare_shards

    out, _ = prepared
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.parquet")}
    (out / "shards" / "part-0000000016-0000000032.done").unlink()          # as if that task had crashed
    again = prepare_shards(source, str(out), SHORT_SIDE, ROWS_PER_SHARD)
    assert (again.shards_written, again.shards_skipped, again.images, again.quarantined) == (1, 3, 60, 1)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.parquet")}
    assert [name for name in stamps if after[name] != stamps[name]] == ["part-0000000016-0000000032.parquet"]
    third = prepare_shards(source, str(out), SHORT_SIDE, ROWS_PER_SHARD)
    assert (third.shards_written, third.shards_skipped, third.images_per_s) == (0, 4, 0.0)
    with pytest.raises(RadscaleError, match="other settings .*short_side"):
        prepare_shards(source, str(out), 32, ROWS_PER_SHARD)


def test_a_relabelled_manifest_rewrites_the_prepared_manifest_without_decoding(prepared, source, tmp_path):
    from radscale.orchestrate.prepare import prepare_shards

    out, _ = prepared
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.parquet")}
    table = pq.read_table(source)
    ids = table.column("image_id").to_pylist()
    moved = pa.array(["P-merged" if i < 10 else p for i, p in enumerate(table.column("patient_id").to_pylist())])
    table = table.set_column(table.column_names.index("patient_id"), "patient_id", moved)
    table = table.append_column("site", pa.array([f"site{i % 3}" for i in range(table.num_rows)]))
    relabelled = tmp_path / "relabelled.parquet"
    pq.write_table(table, relabelled)
    again = prepare_shards(str(relabelled), str(out), SHORT_SIDE, ROWS_PER_SHARD)
    assert (again.shards_written, again.shards_skipped, again.images) == (0, 4, 60)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.parquet")} == stamps   # not decoded
    got = pq.read_table(out / "manifest.parquet").to_pandas().set_index("image_id")
    want = table.to_pandas().set_index("image_id")
    assert (got.loc[ids[:10], "patient_id"] == "P-merged").all() and "broken" not in got.index
    assert (got["site"] == want.loc[got.index, "site"]).all()
    assert (got["patient_id"] == want.loc[got.index, "patient_id"]).all()
    back = prepare_shards(source, str(out), SHORT_SIDE, ROWS_PER_SHARD)        # and back, for the next test
    assert back.shards_written == 0 and "site" not in pq.read_schema(out / "manifest.parquet").names


def test_sweep_trains_and_evaluates_from_the_shards(prepared, tmp_path):
    from radscale.orchestrate.ingest import eval_images, trial_dataset

    out, _ = prepared
    job = JobSpec.model_validate({
        "sweep": {"name": "shards", "output_dir": str(tmp_path)}, "sizes": [10, 20],
        "data": {"shards": str(out), "decode_size": DECODE},
        "encoders": [{"name": "rad-dino-tiny", "objective": "dinov2"}], "budget": {"value": 1.0}})
    data = prepare_sweep_data(job, tmp_path / "shards")
    table = pq.read_table(data.manifest)
    assert table.num_rows == 60 and all(os.path.isabs(p) for p in table.column(SHARD).to_pylist())
    # Shards follow the rank order of split seed 0 (prepare's default order_seed): every subset is a prefix.
    pool_ranks = table.filter(pc.equal(table.column("split"), "pretrain")).column("rank").to_pylist()
    assert pool_ranks == list(range(len(pool_ranks)))
    quarantine = str(tmp_path / "quarantine")
    rows = trial_dataset(data.manifest, 20, "dinov2", DECODE, 77, quarantine, [], seed=0).take_all()
    assert len(rows) == 20 and rows[0]["image"].shape == (DECODE, DECODE) and rows[0]["image"].dtype == np.uint8
    # The same nested subset as the uri path, and the same pixels up to the extra 96 -> 64 resize step.
    subset = table.filter(subset_mask(table, 20))
    uris = dict(zip(subset.column("image_id").to_pylist(), subset.column("uri").to_pylist()))
    direct = np.stack([square_uint8(decode_image(uris[i], short_side=DECODE, upscale=True).pixels, DECODE)
                       for i in sorted(uris)])
    # trial batches carry no ids: compare the multiset of images through their means
    got = np.sort([r["image"].mean() for r in rows])
    np.testing.assert_allclose(got, np.sort(direct.reshape(20, -1).mean(axis=1)), atol=1.5)
    assert not Path(quarantine).exists()        # nothing failed to decode
    images = eval_images(data.eval_rows, DECODE, quarantine).take_all()
    eval_ids = pq.read_table(data.eval_rows).column("eval_id").to_pylist()
    assert sorted(r["image_id"] for r in images) == sorted(eval_ids) and len(eval_ids) == int(
        pc.sum(pc.not_equal(table.column("split"), "pretrain")).as_py())


def test_demo_subsets_are_cached_and_paper_subsets_stream():
    """data.cache_max_mb: the demo's decoded subsets fit (decoded once, before training); the paper's do not."""
    from radscale.config.load import load_job
    from radscale.orchestrate.ingest import decoded_subset_mb

    root = Path(__file__).resolve().parents[2] / "jobs"
    demo, paper = load_job(root / "demo.toml"), load_job(root / "paper.toml")
    assert decoded_subset_mb(1000, "dinov2", 80, 77, 30) == pytest.approx(1000 * 80 * 80 / 2**20)
    assert decoded_subset_mb(1000, "clip", 80, 77, 30) == pytest.approx(1000 * (6400 + 616 + 30) / 2**20)
    for job, cached in ((demo, True), (paper, False)):
        for enc in job.encoders:
            for n in job.sizes:
                mb = decoded_subset_mb(n, enc.objective, job.data.decode_size, job.train.clip.context_length, 30)
                assert (mb <= job.data.cache_max_mb) is cached, (enc.name, n, mb)
