"""tf.data pipelines: grid conversion, reference truncation, padding, seeded order, eval padding."""
import numpy as np
import pytest

from asl_tf.config import DatasetConfig, ModelConfig
from asl_tf.data import pipeline as P
from asl_tf.data.annotations import VideoRecord
from asl_tf.data.features import FeatureReader


def _rec(vid, segs, labels, duration=100.0, fps=30.0):
    segs = np.asarray(segs, np.float64).reshape(-1, 2)
    return VideoRecord(vid, "training", duration, fps, 4, 16, segs, np.asarray(labels, np.int64),
                       [str(l) for l in labels])


def _cfg(**kw):
    base = dict(feat_stride=4, num_frames=16, input_dim=3, num_classes=5, max_seq_len=32,
                trunc_thresh=0.5, crop_ratio=[0.9, 1.0])
    base.update(kw)
    return DatasetConfig(**base)


def test_seconds_grid_round_trip():
    g = P.sec_to_grid([1.0, 2.5], fps=30.0, feat_stride=4, num_frames=16)
    np.testing.assert_allclose(g, [(30 - 8) / 4, (75 - 8) / 4])
    np.testing.assert_allclose(P.grid_to_sec(g, 30.0, 4, 16), [1.0, 2.5])


def test_max_div_factor_and_eval_padding():
    assert P.max_div_factor(ModelConfig(n_mha_win_size=19)) == 32 * 18  # 2^5 * (19//2)*2
    assert P.max_div_factor(ModelConfig(n_mha_win_size=9, backbone_arch=[2, 2, 6])) == 64 * 8
    assert P.max_div_factor(ModelConfig(n_mha_win_size=[7, 7, 7, 7, 7, -1])) == 16 * 6
    assert P.max_div_factor(ModelConfig(n_mha_win_size=-1)) == 32
    assert P.max_div_factor({"backbone_arch": [2, 2, 5], "scale_factor": 2, "fpn_start_level": 0,
                             "n_mha_win_size": 9}) == 256  # golden visible_config max_div_factor
    assert P.eval_padded_length(181, 256, 256) == 256
    assert P.eval_padded_length(300, 256, 256) == 512  # golden long video: 300 -> 512
    assert P.eval_padded_length(2304, 2304, 576) == 2304
    # trimmed (max_stride): one padded position at every level, then the next multiple of div
    assert P.eval_padded_length(1229, 2304, 576, 32) == 1728   # needs 32 * (39 + 1) = 1280
    assert P.eval_padded_length(575, 2304, 576, 32) == 1152    # 576 would leave level 5 full
    assert P.eval_padded_length(2300, 2304, 576, 32) == 2304   # capped at max_seq_len
    assert P.eval_padded_length(3000, 2304, 576, 32) == 3456   # longer videos: reference rule


def test_truncate_keeps_a_gt_and_shifts():
    rng = np.random.default_rng(0)
    feats = np.arange(100, dtype=np.float32)[:, None]
    segs = np.array([[50.0, 52.0]], np.float32)
    for _ in range(20):
        f, s, l = P.truncate(feats, segs, np.array([3]), 10, 1.0, 0.0, None, rng)
        st = int(f[0, 0])
        assert f.shape == (10, 1) and 42 <= st <= 50  # the only windows that keep the GT whole
        np.testing.assert_allclose(s, segs - st)
        assert list(l) == [3]


def test_truncate_clips_to_window_plus_offset():
    rng = np.random.default_rng(1)
    feats = np.zeros((50, 2), np.float32)
    segs = np.array([[-3.0, 6.0], [20.0, 45.0]], np.float32)
    f, s, l = P.truncate(feats, segs, np.array([0, 1]), 20, 0.3, 0.5, None, rng)
    assert f.shape == (20, 2)
    assert s.min() >= -0.5 - 1e-6 and s.max() <= 20.5 + 1e-6 and len(l) >= 1


def test_crop_ratio_short_videos():
    feats = np.arange(40, dtype=np.float32)[:, None]
    segs = np.array([[0.0, 40.0]], np.float32)
    lengths = set()
    for k in range(60):
        f, s, _ = P.truncate(feats, segs, np.array([1]), 64, 0.5, 2.0, [0.9, 1.0], np.random.default_rng(k))
        lengths.add(f.shape[0])
        st = int(f[0, 0])
        np.testing.assert_allclose(s[0], [max(st - 2.0, 0.0) - st,
                                          min(st + f.shape[0] + 2.0, 40.0) - st])
    assert lengths <= set(range(36, 41)) and len(lengths) >= 3  # randint(round(.9*40), 40)
    f, s, _ = P.truncate(feats, segs, np.array([1]), 64, 0.5, 2.0, None, np.random.default_rng(0))
    assert f.shape[0] == 40 and np.array_equal(s, segs)


def test_training_rows_clipped_and_dropped():
    rec = _rec("v", [[-1.0, 2.0], [5.0, 5.0], [8.0, 12.0], [11.0, 13.0]], [0, 1, 2, 3], duration=10.0)
    grid = P.VideoGrid(np.zeros((70, 3), np.float32), 30.0, 4.0, 16.0)
    segs, labels = P.clean_training_segments(rec, grid, 0.5, clip_to_features=False)
    assert list(labels) == [0, 2]  # end <= start and past-the-end-only rows are dropped
    np.testing.assert_allclose(segs, P.sec_to_grid([[0.0, 2.0], [8.0, 10.0]], 30.0, 4, 16), rtol=1e-6)


def test_force_upsampling_grid():
    cfg = _cfg(max_seq_len=16, force_upsampling=True, feat_stride=16, num_frames=16)
    rec = _rec("a", [[1.0, 2.0]], [0], duration=40.0, fps=15.0)
    g = P.video_grid(rec, np.random.default_rng(0).normal(size=(37, 3)).astype(np.float32), cfg)
    assert g.feats.shape == (16, 3)
    assert g.feat_stride == pytest.approx((36 * 16 + 16) / 16) and g.num_frames == g.feat_stride
    with pytest.raises(ValueError, match="fps unknown"):
        P.video_grid(_rec("b", [[1, 2]], [0], fps=None), np.zeros((4, 3), np.float32), cfg)


@pytest.fixture()
def feature_dir(tmp_path):
    rng = np.random.default_rng(0)
    recs = []
    for i, t in enumerate([50, 20, 33, 80, 10]):
        np.save(tmp_path / f"v{i}.npy", rng.normal(size=(t, 3)).astype(np.float32))
        dur = (t * 4 + 16) / 30.0
        recs.append(_rec(f"v{i}", [[0.2 * dur, 0.5 * dur], [0.6 * dur, 0.9 * dur]][: 1 + i % 2], [i % 5, 4][: 1 + i % 2],
                         duration=dur))
    return tmp_path, recs


def test_train_dataset_shapes_and_padding(feature_dir):
    folder, recs = feature_dir
    cfg = _cfg()
    reader = FeatureReader([str(folder)], input_dim=3)
    ds = P.make_train_dataset(recs, reader, cfg, batch_size=2, seed=7, num_epochs=1)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == P.steps_per_epoch(5, 2) == 2
    x, y = batches[0]
    assert x["feats"].shape == (2, 32, 3) and x["feats"].dtype == np.float32
    assert x["mask"].dtype == bool and y["gt_segments"].shape == (2, 2, 2) and y["gt_labels"].dtype == np.int32
    for b in range(2):
        t = int(x["mask"][b].sum())
        assert x["mask"][b, :t].all() and not x["mask"][b, t:].any()
        assert np.all(x["feats"][b, t:] == 0)
        n = int((y["gt_labels"][b] >= 0).sum())
        assert n >= 1 and np.all(y["gt_labels"][b, n:] == -1) and np.all(y["gt_segments"][b, n:] == 0)
        assert np.all(y["gt_segments"][b, :n, 1] > y["gt_segments"][b, :n, 0])


def test_train_order_is_seeded_and_resumable(feature_dir):
    folder, recs = feature_dir
    cfg = _cfg()
    reader = FeatureReader([str(folder)], input_dim=3)
    mk = lambda **kw: [b[0]["feats"] for b in P.make_train_dataset(  # noqa: E731
        recs, reader, cfg, batch_size=2, prefetch=False, **kw).as_numpy_iterator()]
    two = mk(seed=3, num_epochs=2)
    again = mk(seed=3, num_epochs=2)
    resumed = mk(seed=3, start_epoch=1, num_epochs=1)
    other = mk(seed=4, num_epochs=1)
    assert len(two) == 4
    for a, b in zip(two, again):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(two[2:], resumed):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(two[:2], other))


def test_eval_dataset_padding_and_meta(feature_dir):
    folder, recs = feature_dir
    cfg = _cfg(max_seq_len=32)
    reader = FeatureReader([str(folder)], input_dim=3)
    out = list(P.make_eval_dataset(recs, reader, cfg, max_div=16).as_numpy_iterator())
    assert [o[1]["video_id"][0].decode() for o in out] == [r.video_id for r in recs]
    lengths = [o[0]["feats"].shape[1] for o in out]
    assert lengths == [64, 32, 48, 80, 32]  # <= 32 -> 32, else next multiple of 16
    x, meta = out[0]
    assert x["mask"].sum() == 50 and x["feats"].shape == (1, 64, 3)
    np.testing.assert_array_equal(x["feats"][0, :50], np.load(folder / "v0.npy"))
    assert meta["fps"][0] == 30.0 and meta["feat_stride"][0] == 4.0 and meta["num_frames"][0] == 16.0
    assert meta["duration"][0] == pytest.approx(recs[0].duration)
    with pytest.raises(ValueError, match="video 'ghost'"):
        P.make_eval_dataset(recs + [_rec("ghost", [[1, 2]], [0])], reader, cfg, max_div=16)


def test_train_dataset_missing_features_and_empty_gt(feature_dir):
    folder, recs = feature_dir
    cfg = _cfg()
    reader = FeatureReader([str(folder)], input_dim=3)
    with pytest.raises(ValueError, match="video 'ghost'"):
        P.make_train_dataset(recs + [_rec("ghost", [[1, 2]], [0])], reader, cfg, batch_size=2, seed=0)
    # a video whose only row lies past its end trains as background (all labels -1)
    bad = _rec("v1", [[50.0, 60.0]], [1], duration=recs[1].duration)
    arrays = list(P.train_arrays([bad], reader, cfg, seed=0, epoch=0, max_gt=2))
    (f, m, s, l), = arrays
    assert np.all(l == -1) and m.sum() >= 18 and np.all(s == 0)


def test_clip_to_features_anet_rule():
    """ANet reference: drop GT starting past T + offset, keep if the inside ratio >= trunc_thresh."""
    grid = P.VideoGrid(np.zeros((10, 3), np.float32), fps=1.0, feat_stride=1.0, num_frames=1.0)  # offset 0.5
    g = np.array([[2, 4], [9, 13], [11, 12]], np.float64)
    rec = _rec("a", g + 0.5, [0, 1, 2], duration=100.0, fps=1.0)  # seconds = grid + 0.5
    segs, labels = P.clean_training_segments(rec, grid, 0.5, clip_to_features=True)
    assert list(labels) == [0]  # (10.5 - 9) / 4 = 0.375 < 0.5
    segs, labels = P.clean_training_segments(rec, grid, 0.3, clip_to_features=True)
    assert list(labels) == [0, 1]
    np.testing.assert_allclose(segs, [[2, 4], [9, 10.5]])
    segs, labels = P.clean_training_segments(rec, grid, 0.3, clip_to_features=False)
    assert list(labels) == [0, 1, 2]
