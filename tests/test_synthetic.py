"""Synthetic features on real annotation timings (asl_tf/data/synthetic.py)."""
import dataclasses
import json

import numpy as np
import pytest

from asl_tf.data import synthetic as S
from conftest import FIXTURES, REPO

THUMOS = FIXTURES / "data" / "thumos14" / "thumos14.json"

def _small_cfg(**kw):
    base = dict(annotation_file=str(THUMOS), num_train_videos=6, num_test_videos=3,
                max_duration=200.0, feature_rate=2.0, input_dim=16, seed=3)
    base.update(kw)
    return S.SyntheticConfig(**base)


@pytest.fixture(scope="module")
def source():
    cfg = _small_cfg()
    return S.load_source(cfg)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, source):
    out = tmp_path_factory.mktemp("syn")
    cfg = _small_cfg()
    summary = S.write_dataset(cfg, out)
    return cfg, out, summary


def test_uses_real_timings(dataset, source):
    cfg, out, summary = dataset
    train, test, names = source
    src = {r.video_id: r for r in train + test}
    db = json.loads((out / "annotations.json").read_text())["database"]
    assert len(db) == summary["train_videos"] + summary["test_videos"] == 9
    subsets = {v["subset"].lower() for v in db.values()}
    assert subsets == {"validation", "test"}
    for vid, v in db.items():
        r = src[vid]
        assert v["duration"] == pytest.approx(float(r.duration))
        assert v["fps"] == pytest.approx(float(r.fps))
        segs = np.array([a["segment"] for a in v["annotations"]]).reshape(-1, 2)
        np.testing.assert_allclose(segs, np.asarray(r.segments, float).reshape(-1, 2))
        assert [a["label_id"] for a in v["annotations"]] == [int(x) for x in r.labels]
        assert [a["label"] for a in v["annotations"]] == [names[int(x)] for x in r.labels]
        feats = np.load(out / "features" / f"{vid}.npy")
        expect_t = int(np.floor((r.duration * r.fps - cfg.num_frames) / cfg.feat_stride)) + 1
        assert feats.shape == (expect_t, cfg.input_dim) and feats.dtype == np.float32
        assert np.isfinite(feats).all()
    meta = json.loads((out / "synthetic_meta.json").read_text())
    assert meta["class_names"] == names and meta["feat_stride"] == cfg.feat_stride == 15


def test_stratified_selection_covers_classes(source):
    train, _, names = source
    cfg = _small_cfg(num_train_videos=len(names))
    sel = S.select_videos(train, len(names), cfg, salt=1)
    assert len(sel) == len(names)
    covered = {int(k) for r in sel for k in r.labels}
    assert len(covered) >= len(names) - 1  # one class may only occur in too-long videos
    assert [r.video_id for r in sel] == [r.video_id for r in S.select_videos(train, len(names), cfg, 1)]


def test_deterministic_and_seeded(source):
    train, _, names = source
    r = next(x for x in train if len(x.labels) >= 3 and x.duration < 200)
    cfg = _small_cfg()
    p = S.make_prototypes(cfg, len(names))
    a = S.generate_video(r.segments, r.labels, r.duration, r.fps, cfg, p, r.video_id)
    b = S.generate_video(r.segments, r.labels, r.duration, r.fps, cfg, S.make_prototypes(cfg, len(names)),
                         r.video_id)
    np.testing.assert_array_equal(a, b)
    cfg2 = dataclasses.replace(cfg, seed=4)
    c = S.generate_video(r.segments, r.labels, r.duration, r.fps, cfg2, S.make_prototypes(cfg2, len(names)),
                         r.video_id)
    assert a.shape == c.shape and np.abs(a - c).mean() > 0.3


def _proj(feats, vec):
    return feats @ (vec / np.linalg.norm(vec))


def test_evidence_structure(source):
    """Key sub-phases carry the class; the rest of an instance is weak; boundaries light up."""
    train, _, names = source
    cfg = _small_cfg(input_dim=64, feature_rate=4.0, distractor_rate=4.0)
    p = S.make_prototypes(cfg, len(names))
    key_on, weak_on, bg, on_start, off_start, dis_on = [], [], [], [], [], []
    n_dis = 0
    for r in [x for x in train if 20 < x.duration < 200][:12]:
        feats, lat = S.generate_video(r.segments, r.labels, r.duration, r.fps, cfg, p, r.video_id,
                                      return_latent=True)
        t = lat["times"]
        n_dis += len(lat["distractors"])
        inside_any = lat["weak"] + lat["key"] > 0.2
        for (s, e), k in zip(np.asarray(r.segments).reshape(-1, 2), r.labels):
            m = (t >= s) & (t <= e)
            proj = _proj(feats, p.key[k])
            key_on.extend(proj[m & (lat["key"] > 0.8)])
            weak_on.extend(proj[m & (lat["key"] < 0.05)])
            g = p.group(k)
            near = np.abs(t - s) < 0.5 * cfg.boundary_width
            on_start.extend(_proj(feats, p.onset[g])[near])
            off_start.extend(_proj(feats, p.offset[g])[near])
            bg.extend(proj[~inside_any & (lat["distractor"] < 0.05)])
        for s, e, k in lat["distractors"]:
            m = (t >= s) & (t <= e)
            dis_on.extend(_proj(feats, p.key[k])[m])
    key_on, weak_on, bg = np.mean(key_on), np.mean(weak_on), np.mean(bg)
    # prototype entries have unit variance: a strength a gives a projection of about a*sqrt(C)
    scale = np.sqrt(cfg.input_dim)
    assert key_on > 0.6 * cfg.key_strength * scale
    assert weak_on < 0.5 * key_on
    assert abs(bg) < 0.15 * key_on
    assert np.mean(on_start) > 0.4 * cfg.boundary_strength * scale
    assert np.mean(on_start) > np.mean(off_start) + 0.3 * cfg.boundary_strength * scale
    assert n_dis > 0
    # distractors resemble actions: partial key evidence of their class
    assert 0.2 * key_on < np.mean(dis_on) < key_on


def test_independent_of_selection(tmp_path, source):
    cfg = _small_cfg(num_train_videos=2, num_test_videos=1)
    S.write_dataset(cfg, tmp_path / "a")
    cfg_b = dataclasses.replace(cfg, num_train_videos=6, num_test_videos=3)
    S.write_dataset(cfg_b, tmp_path / "b")
    for f in (tmp_path / "a" / "features").glob("*.npy"):
        np.testing.assert_array_equal(np.load(f), np.load(tmp_path / "b" / "features" / f.name))


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="synthetic.bogus"):
        S.SyntheticConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="synthetic.input_dim"):
        S.SyntheticConfig.from_dict({"input_dim": "wide"})
    with pytest.raises(ValueError, match="synthetic.noise"):
        S.SyntheticConfig.from_dict({"noise": -1.0})
    with pytest.raises(FileNotFoundError):
        S.write_dataset(S.SyntheticConfig(annotation_file=str(tmp_path / "none.json")), tmp_path)
    cfg = S.SyntheticConfig.from_yaml(REPO / "configs" / "demo_synthetic.yaml")
    assert cfg.input_dim == 64 and cfg.annotation_file == str(THUMOS)
