"""Phantom corpus: determinism, caching, manifest schema, masks, report/label agreement, prevalences, learnability."""
from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from radscale.data.phantom import phrases as P
from radscale.data.phantom.anatomy import dome_y, sample_anatomy
from radscale.data.phantom.canvas import View
from radscale.data.phantom.devices import sample_devices
from radscale.data.phantom.findings import sample_patient, sample_study
from radscale.data.phantom.generate import PROFILES, generate_phantom
from radscale.data.phantom.pngfile import encode_png
from radscale.data.phantom.tubes import device_path
from radscale.data.vocab import DEFAULT_VOCABULARY, DEVICE_TYPES

LABELS = DEFAULT_VOCABULARY.labels
N_CORPUS = 500


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pa.Table:
    out = tmp_path_factory.mktemp("phantom")
    return pq.read_table(generate_phantom(out, N_CORPUS, seed=0, image_size=128))


def _rx(words) -> re.Pattern:
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b")


NEG_BEFORE, NEG_AFTER = _rx(P.NEGATION_BEFORE), _rx(P.NEGATION_AFTER)
UNC_BEFORE, UNC_AFTER = _rx(P.UNCERTAIN_BEFORE), _rx(P.UNCERTAIN_AFTER)
RANZCR = {"ett": ("ett_abnormal", "ett_borderline", "ett_normal"),
          "ngt": ("ngt_abnormal", "ngt_borderline", "ngt_incompletely_imaged", "ngt_normal"),
          "cvc": ("cvc_abnormal", "cvc_borderline", "cvc_normal")}


def _sentences(report: str) -> list[str]:
    text = report.lower()
    return [s for s in re.split(r"(?<=[.;])\s+|\n+", text[text.index("findings:"):]) if s]


def _polarity(sentence: str, start: int, end: int) -> int:
    if NEG_BEFORE.search(sentence[:start]) or NEG_AFTER.search(sentence[end:]):
        return 0
    if UNC_BEFORE.search(sentence[:start]) or UNC_AFTER.search(sentence[end:]):
        return -1
    return 1


def parse_report(report: str) -> dict[str, int | None]:
    """Labels read back from a report with the mention / cue contract documented in phrases.py."""
    sentences = _sentences(report)
    out: dict[str, int | None] = {}
    for label, words in P.MENTIONS.items():
        seen = {_polarity(s, m.start(), m.end()) for s in sentences for m in _rx(words).finditer(s)}
        out[label] = None if not seen else (1 if 1 in seen else (-1 if -1 in seen else 0))
    for kind, labels in RANZCR.items():
        category, negated = None, False
        for s in sentences:
            m = _rx(P.DEVICE_MENTIONS[kind]).search(s)
            if m is None:
                continue
            if _polarity(s, m.start(), m.end()) == 0:
                negated = True
            else:
                category = next((c for c, cues in P.CATEGORY_CUES.items() if _rx(cues).search(s)), "normal")
        for label in labels:
            out[label] = int(label == f"{kind}_{category}") if category else (0 if negated else None)
    return out


def _label(row: dict, name: str) -> int | None:
    return None if row[name] is None else int(row[name])


def test_manifest_schema_and_dtypes(corpus):
    expected = ["image_id", "patient_id", "study_id", "uri", "view", "report", "mask_uri", *LABELS,
                "source_height", "source_width"]
    assert corpus.column_names == expected
    for name in expected[:7]:
        assert corpus.schema.field(name).type == pa.string(), name
    for name in LABELS:
        assert corpus.schema.field(name).type == pa.int8(), name
        assert set(corpus[name].drop_null().to_pylist()) <= {-1, 0, 1}, name
    assert corpus.schema.field("source_height").type == pa.int32()
    rows = corpus.to_pylist()
    assert len(rows) == N_CORPUS and len({r["image_id"] for r in rows}) == N_CORPUS
    assert {r["view"] for r in rows} == {"AP", "PA"}
    for r in rows[:50]:
        assert Path(r["uri"]).is_absolute() and Path(r["uri"]).exists()
        assert (r["source_height"], r["source_width"]) == (128, 128)
        assert (r["mask_uri"] is not None) == (r["support_devices"] == 1)
    assert all(corpus[name].null_count > 0 for name in ("nodule", "ett_normal")), "some labels stay unmentioned"


def test_patients_have_several_studies(corpus):
    df = corpus.select(["patient_id", "study_id"]).to_pandas()
    assert df.patient_id.str.fullmatch(r"P\d{6}").all()
    per_patient = df.groupby("patient_id").study_id.nunique()
    assert per_patient.max() == 4 and per_patient.min() == 1 and per_patient.mean() > 2.0
    assert df.study_id.is_unique


def test_reports_state_exactly_the_labels(corpus):
    rows = corpus.to_pylist()
    for r in rows:
        parsed = parse_report(r["report"])
        for name in LABELS:
            assert parsed[name] == _label(r, name), (r["image_id"], name)
    text = " ".join(r["report"].lower() for r in rows)
    for cue in ("no", "without", "resolved", "possible", "cannot exclude", "may represent",
                "cm above the carina", "coiled in the esophagus", "terminates in the svc"):
        assert re.search(rf"\b{cue}\b", text), cue


def test_masks_match_devices_and_brighten_the_image(corpus):
    bright, ring = [], []
    for r in [r for r in corpus.to_pylist() if r["mask_uri"]][:60]:
        mask = np.asarray(Image.open(r["mask_uri"]))
        image = np.asarray(Image.open(r["uri"])).astype(np.float32)
        assert mask.dtype == np.uint8 and mask.shape == image.shape
        drawn = {kind for bit, kind in enumerate(DEVICE_TYPES) if (mask >> bit & 1).any()}
        stated = {kind for kind, labels in RANZCR.items() if any(r[n] == 1 for n in labels)}
        stated |= {"swan_ganz"} if r["swan_ganz_present"] == 1 else set()
        chest_tube = any(_polarity(s, m.start(), m.end()) == 1 for s in _sentences(r["report"])
                         for m in _rx(P.DEVICE_MENTIONS["chest_tube"]).finditer(s))
        stated |= {"chest_tube"} if chest_tube else set()
        assert drawn == stated, r["image_id"]
        assert mask.max() < 2 ** len(DEVICE_TYPES)
        on = mask > 0
        near = np.zeros_like(on)  # pixels 2 px beside the line
        for dy, dx in ((2, 0), (-2, 0), (0, 2), (0, -2)):
            near |= np.roll(on, (dy, dx), axis=(0, 1))
        bright.append(image[on].mean())
        ring.append(image[near & ~on].mean())
    assert np.mean(bright) > np.mean(ring) + 5


def test_tube_tips_follow_their_categories():
    rng, view = np.random.default_rng(0), View(256, 40.0, 0.0, 0.0, 0.0)
    seen = set()
    for _ in range(300):
        a = sample_anatomy(rng)
        for kind, dev in sample_devices(PROFILES["default"].device_rates, True, None, "", rng).present.items():
            seen.add((kind, dev.position))
            tip = device_path(dev, a, view)[-1]
            below_dome = tip[1] - float(dome_y(a, np.array([tip[0]], dtype=np.float32))[0])
            inside = ((view.to_pixels(tip[None]) >= 0) & (view.to_pixels(tip[None]) < 256)).all()
            if kind == "ett":  # tip height above the carina, cm
                above = round(a.carina_y - tip[1], 6)
                ok = {"normal": 3.0 <= above <= 7.0, "borderline": 1.2 <= above <= 2.5 or 7.5 <= above <= 8.5,
                      "abnormal": above <= 0.8 or above >= 9.5}[dev.position]
            elif kind == "ngt":
                ok = {"normal": inside and below_dome >= 2.0, "borderline": inside and 0.0 < below_dome < 2.0,
                      "abnormal": inside and below_dome < 0.0, "incomplete": not inside}[dev.position]
            elif kind == "cvc" and dev.position == "normal":  # lower SVC / cavoatrial junction
                ok = a.carina_y + 1.0 <= tip[1] <= a.carina_y + 3.5 and tip[0] < a.mid_x
            else:
                ok = inside
            assert ok, (kind, dev)
    assert len(seen) == 12  # every category of every device occurred


def test_uncertain_findings_drawn_faintly_half_the_time():
    rates, rng = PROFILES["default"].rates, np.random.default_rng(1)
    strengths = []
    for _ in range(400):
        patient = sample_patient(rates, 0.5, rng)
        strengths += [f.strength for f in sample_study(patient, None, rates, 0.5, rng).values() if f.label == -1]
    assert set(strengths) == {0.0, 0.5} and 0.4 < np.mean(np.asarray(strengths) > 0) < 0.6


# Per-image P(label = 1) on the default profile (targets in findings.DEFAULT_RATES / profiles.py).
STATED_RANGES = {"pleural_effusion": (0.10, 0.40), "cardiomegaly": (0.02, 0.12), "pneumothorax": (0.01, 0.09),
                 "support_devices": (0.40, 0.62)}


def test_prevalences_within_stated_ranges(corpus):
    n = corpus.num_rows
    prevalence = {name: (np.asarray(corpus[name].fill_null(0)) == 1).sum() / n for name in LABELS}
    for name, (lo, hi) in STATED_RANGES.items():
        assert lo <= prevalence[name] <= hi, (name, prevalence[name])
    drawn = [f for f in PROFILES["default"].rates if f not in STATED_RANGES]
    for name in drawn:
        assert 0.04 <= prevalence[name] <= 0.25, (name, prevalence[name])
    mask_bits = np.zeros(len(DEVICE_TYPES))
    for uri in corpus["mask_uri"].drop_null().to_pylist():
        mask = np.asarray(Image.open(uri))
        mask_bits += [(mask >> bit & 1).any() for bit in range(len(DEVICE_TYPES))]
    assert (mask_bits / n >= 0.15).all(), dict(zip(DEVICE_TYPES, mask_bits / n, strict=True))


def test_findings_learnable_from_32px(corpus):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    df = corpus.to_pandas()
    x = np.stack([np.asarray(Image.open(u).convert("F").resize((32, 32), Image.Resampling.BOX)).ravel()
                  for u in df.uri])
    x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)
    test = df.patient_id.str[1:].astype(int).to_numpy() % 4 == 0  # patient-level hold-out
    aurocs = {}
    for name in ("pleural_effusion", "cardiomegaly", "edema", "emphysema"):
        label = df[name].fillna(0).to_numpy()
        y, keep = (label == 1).astype(int), label != -1
        model = LogisticRegression(C=0.01, max_iter=2000).fit(x[~test & keep], y[~test & keep])
        aurocs[name] = roc_auc_score(y[test & keep], model.decision_function(x[test & keep]))
    assert sum(a > 0.75 for a in aurocs.values()) >= 3, aurocs


def _digest(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*.png")) + [out / "manifest.parquet"]}


def test_deterministic_cached_and_worker_independent(tmp_path):
    a = tmp_path / "a"
    manifest = generate_phantom(a, 24, seed=3)
    first = _digest(a)
    stamp = manifest.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert generate_phantom(a, 24, seed=3) == manifest
    assert time.perf_counter() - t0 < 0.5 and manifest.stat().st_mtime_ns == stamp  # cached: nothing rewritten
    (a / "phantom.json").unlink()
    generate_phantom(a, 24, seed=3)
    assert _digest(a) == first  # byte-identical regeneration
    b = tmp_path / "b"
    generate_phantom(b, 24, seed=3, workers=2)
    images_a = {k: v for k, v in first.items() if k.endswith(".png")}
    assert {k: v for k, v in _digest(b).items() if k.endswith(".png")} == images_a
    ta, tb = pq.read_table(manifest), pq.read_table(b / "manifest.parquet")
    assert ta.drop(["uri", "mask_uri"]).equals(tb.drop(["uri", "mask_uri"]))
    other = tmp_path / "c"
    generate_phantom(other, 24, seed=4)
    assert pq.read_table(other / "manifest.parquet")["report"] != ta["report"]


def test_changed_params_regenerate_and_smaller_corpus_is_a_prefix(tmp_path):
    small = pq.read_table(generate_phantom(tmp_path, 9, seed=1)).to_pylist()
    large = pq.read_table(generate_phantom(tmp_path, 14, seed=1)).to_pylist()
    assert len(large) == 14 and [r["image_id"] for r in large[:9]] == [r["image_id"] for r in small]
    assert [r["report"] for r in large[:9]] == [r["report"] for r in small]
    assert len(list((tmp_path / "images").rglob("*.png"))) == 14


def test_profiles_storage_depth_and_population(tmp_path):
    default = pq.read_table(generate_phantom(tmp_path / "d", 40, seed=2, image_size=64))
    scanner_b = pq.read_table(generate_phantom(tmp_path / "b", 40, seed=2, profile="scanner-b", image_size=64))
    img_d = Image.open(default["uri"][0].as_py())
    img_b = Image.open(scanner_b["uri"][0].as_py())
    assert img_d.mode == "L" and img_b.mode in ("I;16", "I;16B", "I") and img_b.size == (64, 64)
    assert np.asarray(img_b).max() > 255
    assert scanner_b["patient_id"][0].as_py().startswith("B")
    assert PROFILES["scanner-b"].bit_depth == 16 and PROFILES["default"].bit_depth == 8
    devices = [np.mean(np.asarray(t["support_devices"].fill_null(0)) == 1) for t in (default, scanner_b)]
    assert devices[1] < devices[0]


@pytest.mark.parametrize("kwargs, needle", [
    ({"n_images": 0}, "n_images"), ({"n_images": 2.5}, "n_images"), ({"n_images": True}, "n_images"),
    ({"n_images": 4, "seed": -1}, "seed"), ({"n_images": 4, "profile": "scanner-z"}, "profile"),
    ({"n_images": 4, "image_size": 8}, "image_size"), ({"n_images": 4, "workers": 0}, "workers"),
])
def test_bad_params_refused_with_one_line(tmp_path, kwargs, needle):
    with pytest.raises(ValueError) as err:
        generate_phantom(tmp_path, **kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "manifest.parquet").exists()


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "not_a_dir"
    target.write_text("x")
    with pytest.raises(ValueError, match="out_dir"):
        generate_phantom(target, 2)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_writer_round_trips(tmp_path, dtype):
    pixels = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, (37, 53), dtype=dtype, endpoint=True)
    path = tmp_path / "x.png"
    path.write_bytes(encode_png(pixels))
    assert np.array_equal(np.asarray(Image.open(path)), pixels)
