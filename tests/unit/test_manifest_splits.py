import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from radscale.config.specs import SplitSpec
from radscale.data.manifest import read_manifest, require_images, validate_manifest
from radscale.data.splits import assign_splits, pool_size, subset_mask
from radscale.errors import RadscaleError


def _table(n=400, patients=100, seed=0):
    rng = np.random.default_rng(seed)
    pid = [f"P{rng.integers(0, patients):04d}" for _ in range(n)]
    return pa.table({"image_id": [f"I{i:05d}" for i in range(n)], "patient_id": pid,
                     "study_id": [f"S{i // 2:05d}" for i in range(n)], "uri": [f"/x/{i}.png" for i in range(n)],
                     "pleural_effusion": pa.array(rng.choice([1, 0, -1, None], n).tolist(), pa.int8())})


def test_valid_manifest_passes():
    validate_manifest(_table(), "m.parquet")


@pytest.mark.parametrize("kind", [pa.uint8(), pa.uint64(), pa.float32()])
def test_label_columns_of_any_numeric_type(kind):
    t = _table(8)
    validate_manifest(t.set_column(4, "pleural_effusion", pa.array([0, 1] * 4, kind)), "m.parquet")
    with pytest.raises(RadscaleError, match=r"row 3 column 'pleural_effusion': label must be 1, 0, -1 or null"):
        validate_manifest(t.set_column(4, "pleural_effusion", pa.array([0, 1, 0, 7] * 2, kind)), "m.parquet")


@pytest.mark.parametrize("mutate,fragment", [
    (lambda t: t.drop_columns(["patient_id"]), "missing required column 'patient_id'"),
    (lambda t: t.set_column(0, "image_id", pa.array(["A"] * len(t))), "row 1 column 'image_id': duplicate id 'A'"),
    (lambda t: t.set_column(3, "uri", pa.array(["/a"] * 5 + [None] + ["/a"] * (len(t) - 6))), "row 5 column 'uri': null"),
    (lambda t: t.set_column(4, "pleural_effusion", pa.array([0] * 7 + [2] + [0] * (len(t) - 8), pa.int8())),
     "row 7 column 'pleural_effusion': label must be 1, 0, -1 or null (got 2)"),
    (lambda t: t.set_column(2, "study_id", pa.array(list(range(len(t))))), "column 'study_id' must be string"),
])
def test_bad_manifest_names_row_and_column(mutate, fragment):
    with pytest.raises(RadscaleError) as err:
        validate_manifest(mutate(_table()), "m.parquet")
    assert fragment in str(err.value) and str(err.value).startswith("m.parquet:")


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(RadscaleError, match="manifest not found"):
        read_manifest(tmp_path / "none.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(RadscaleError, match="not a readable Parquet file"):
        read_manifest(tmp_path / "junk.parquet")


def test_missing_image_is_one_line_with_row_and_id(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(b"x")
    t = pa.table({"image_id": ["a", "b"], "patient_id": ["p", "q"], "study_id": ["s", "t"],
                  "uri": [str(img), str(tmp_path / "gone.png")]})
    with pytest.raises(RadscaleError) as err:
        require_images(t, "m.parquet")
    assert str(err.value) == f"m.parquet: row 1 (image_id=b): image file not found: {tmp_path / 'gone.png'}"



def test_relative_uris_are_relative_to_the_manifest_not_the_cwd(tmp_path, monkeypatch):
    """A hand-written manifest with `img/a.png` must open the same file on a Ray worker (another cwd)."""
    from radscale.data.manifest import absolute_uris

    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    (data / "img" / "a.png").write_bytes(b"x")
    uris = ["img/a.png", "./img/b.png", "/abs/c.png", "s3://bucket/d.png", "file:///e.png"]
    t = pa.table({"image_id": list("abcde"), "patient_id": list("pqrst"), "study_id": list("vwxyz"),
                  "uri": pa.array(uris, pa.large_string()),       # what pandas 3 writes for str columns
                  "mask_uri": ["masks/a.png", None, "/m/c.png", "", None]})
    pq.write_table(t, data / "m.parquet")
    monkeypatch.chdir(tmp_path)                         # elsewhere: img/a.png does not exist from here
    got = read_manifest("data/m.parquet")
    assert got.column("uri").to_pylist() == [f"{data}/img/a.png", f"{data}/./img/b.png", *uris[2:]]
    assert got.column("mask_uri").to_pylist() == [f"{data}/masks/a.png", None, "/m/c.png", "", None]
    with pytest.raises(RadscaleError, match=r"row 1 \(image_id=b\): image file not found: .*/data/\./img/b\.png"):
        require_images(got.slice(0, 2), "m.parquet")
    remote = absolute_uris(t, "s3://bucket/cxr/manifest.parquet")
    assert remote.column("uri").to_pylist()[:3] == ["s3://bucket/cxr/img/a.png", "s3://bucket/cxr/./img/b.png",
                                                    "/abs/c.png"]
    assert absolute_uris(_table(8), "/x/m.parquet").equals(_table(8))      # absolute uris: untouched

def test_splits_are_patient_disjoint_and_roughly_sized():
    t = assign_splits(_table(4000, 1000), SplitSpec())
    by_split = {}
    for s, p in zip(t.column("split").to_pylist(), t.column("patient_id").to_pylist()):
        by_split.setdefault(s, set()).add(p)
    names = list(by_split)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not by_split[a] & by_split[b]
    frac = len(by_split["pretrain"]) / sum(len(v) for v in by_split.values())
    assert 0.6 < frac < 0.8


def test_nested_subsets_and_order_invariance():
    t = assign_splits(_table(3000, 600), SplitSpec(seed=3))
    n_pool = pool_size(t)
    sets = [set(t.filter(subset_mask(t, n)).column("image_id").to_pylist()) for n in (10, 100, 500, n_pool)]
    assert [len(s) for s in sets] == [10, 100, 500, n_pool]
    assert sets[0] < sets[1] < sets[2] < sets[3]
    ranks = t.filter(pc.equal(t.column("split"), "pretrain")).column("rank").to_numpy()
    assert sorted(ranks) == list(range(n_pool))
    # Shuffling rows changes neither a patient's split nor an image's rank.
    perm = np.random.default_rng(1).permutation(len(t))
    t2 = assign_splits(_table(3000, 600).take(pa.array(perm)), SplitSpec(seed=3))
    a = dict(zip(t.column("image_id").to_pylist(), zip(t.column("split").to_pylist(), t.column("rank").to_pylist())))
    b = dict(zip(t2.column("image_id").to_pylist(), zip(t2.column("split").to_pylist(), t2.column("rank").to_pylist())))
    assert a == b


def test_parquet_roundtrip_keeps_validation(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(assign_splits(_table(), SplitSpec()), path)
    t = read_manifest(path)
    assert "split" in t.column_names and "rank" in t.column_names


def test_prepared_sweep_data_is_reused_and_rebuilt_when_stale(tmp_path):
    import json

    import pandas as pd

    from radscale.config.specs import JobSpec
    from radscale.data.sweep_data import prepare_sweep_data

    job = JobSpec.model_validate({"sweep": {"name": "c", "output_dir": str(tmp_path)}, "sizes": [20],
                                  "encoders": [{"name": "rad-dino-tiny", "objective": "dinov2"}],
                                  "budget": {"value": 1}, "data": {"phantom": {"n_images": 60, "image_size": 32}}})
    first = prepare_sweep_data(job, tmp_path / "c")
    meta = tmp_path / "c" / "data" / "data.json"
    stamp = (tmp_path / "c" / "data" / "eval.parquet").stat().st_mtime_ns
    assert prepare_sweep_data(job, tmp_path / "c") == first
    assert (tmp_path / "c" / "data" / "eval.parquet").stat().st_mtime_ns == stamp        # reused, not rewritten
    # A cache written by an older layout (no "layout" key in its fingerprint) is rebuilt, not trusted.
    old = json.loads(meta.read_text())
    old["fingerprint"].pop("layout")
    meta.write_text(json.dumps(old))
    assert prepare_sweep_data(job, tmp_path / "c") == first
    assert (tmp_path / "c" / "data" / "eval.parquet").stat().st_mtime_ns != stamp
    assert json.loads(meta.read_text())["fingerprint"]["layout"] >= 2
    assert {"mask_uri", "report"} <= set(pd.read_parquet(first.eval_rows).columns)


def test_a_text_objective_without_reports_is_refused_before_training(tmp_path):
    from radscale.config.specs import JobSpec
    from radscale.data.sweep_data import prepare_sweep_data

    path = tmp_path / "no_reports.parquet"
    pq.write_table(_table(), path)          # ids, uri and a label: no report column
    spec = {"sweep": {"name": "t", "output_dir": str(tmp_path)}, "sizes": [20], "budget": {"value": 1},
            "data": {"manifest": str(path), "allow_missing_images": True}}
    ok = JobSpec.model_validate({**spec, "encoders": [{"name": "rad-dino-tiny", "objective": "dinov2"}]})
    assert prepare_sweep_data(ok, tmp_path / "ok").pool_size > 20
    job = JobSpec.model_validate({**spec, "encoders": [{"name": "mi2-tiny", "objective": "clip"},
                                                       {"name": "rad-dino-tiny", "objective": "dinov2"}]})
    with pytest.raises(RadscaleError) as err:
        prepare_sweep_data(job, tmp_path / "t")
    assert str(err.value) == (f"{path}: no 'report' column, which mi2-tiny.clip train on (image-report pairs); "
                              "import the reports or use objective dinov2")


def test_a_rewritten_manifest_behind_a_uri_rebuilds_the_sweep_data(tmp_path):
    """Object-store manifests (here file://) are fingerprinted by size and mtime too: `radscale prepare` into the
    same prefix rewrites manifest.parquet, and a stale cache would pair old pointers with new rows."""
    from radscale.config.specs import JobSpec
    from radscale.data.sweep_data import prepare_sweep_data

    path = tmp_path / "m.parquet"
    pq.write_table(_table(), path)
    job = JobSpec.model_validate({"sweep": {"name": "u", "output_dir": str(tmp_path)}, "sizes": [20],
                                  "budget": {"value": 1},
                                  "encoders": [{"name": "rad-dino-tiny", "objective": "dinov2"}],
                                  "data": {"manifest": path.as_uri(), "allow_missing_images": True}})
    first = prepare_sweep_data(job, tmp_path / "u")
    pq.write_table(_table(n=800, patients=200), path)
    assert prepare_sweep_data(job, tmp_path / "u").pool_size > first.pool_size
