"""Feature readers: formats, streams, resizing and the checks on bad files."""
import h5py
import numpy as np
import pytest

from asl_tf.data.annotations import VideoRecord
from asl_tf.data.features import FeatureReader, list_feature_ids, match_records, resize_features


def _rec(vid):
    return VideoRecord(vid, "test", 10.0, 30.0, 4, 16, np.zeros((0, 2)), np.zeros(0, np.int64), [])


def test_npy_npz_h5_and_streams(tmp_path):
    rgb, flow = tmp_path / "rgb", tmp_path / "flow"
    rgb.mkdir(), flow.mkdir()
    a = np.arange(12, dtype=np.float64).reshape(6, 2)
    b = np.ones((6, 3), np.float16)
    np.save(rgb / "v_x.npy", a)
    np.save(flow / "v_x.npy", b)
    r = FeatureReader([str(rgb), str(flow)], file_prefix="v_", input_dim=5)
    f = r("x")
    assert f.dtype == np.float32 and f.shape == (6, 5)
    np.testing.assert_array_equal(f[:, :2], a)
    np.testing.assert_array_equal(f[:, 2:], 1)
    assert r.video_ids() == {"x"} and r.has("x") and not r.has("y")
    np.testing.assert_array_equal(FeatureReader([str(rgb)], downsample_rate=2)("v_x"), a[::2])
    np.savez(tmp_path / "y.npz", feats=a, other=b)
    np.testing.assert_array_equal(FeatureReader([str(tmp_path)], file_ext=".npz")("y"), a)
    h5 = tmp_path / "all.h5"
    with h5py.File(h5, "w") as fh:
        fh["v_x"] = a
        fh["v_z"] = a * 2
    r5 = FeatureReader([str(h5)], file_prefix="v_", input_dim=2)
    np.testing.assert_array_equal(r5("z"), a * 2)
    assert list_feature_ids(str(h5), "v_") == {"x", "z"}
    with h5py.File(tmp_path / "one.h5", "w") as fh:
        fh["data"] = a
    np.testing.assert_array_equal(FeatureReader([str(tmp_path)], file_ext=".h5")("one"), a)


def test_resize_matches_torch_linear_align_corners_false():
    x = np.array([[0.0], [1.0], [2.0]], np.float32)
    # torch.nn.functional.interpolate(x.T[None], 5, mode='linear', align_corners=False)
    np.testing.assert_allclose(resize_features(x, 5)[:, 0], [0.0, 0.4, 1.0, 1.6, 2.0], atol=1e-6)
    y = np.arange(4, dtype=np.float32)[:, None]
    np.testing.assert_allclose(resize_features(y, 2)[:, 0], [0.5, 2.5], atol=1e-6)
    z = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_array_equal(resize_features(z, 7), z)


@pytest.mark.parametrize("arr,needle", [
    (np.zeros((0, 4), np.float32), "empty features"),
    (np.zeros(4, np.float32), "2-D"),
    (np.array([[1.0, np.nan, 0, 0]], np.float32), "NaN/inf"),
    (np.array([[1.0, np.inf, 0, 0]], np.float32), "NaN/inf"),
    (np.zeros((3, 5), np.float32), "input_dim = 4"),
    (np.array([["a", "b", "c", "d"]]), "numeric"),
])
def test_bad_feature_files(tmp_path, arr, needle):
    np.save(tmp_path / "vid.npy", arr)
    with pytest.raises(ValueError) as err:
        FeatureReader([str(tmp_path)], input_dim=4)("vid")
    assert needle in str(err.value) and "vid" in str(err.value)


def test_missing_and_unreadable(tmp_path):
    with pytest.raises(FileNotFoundError, match="feature folder not found"):
        FeatureReader([str(tmp_path / "none")])
    r = FeatureReader([str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="video 'ghost'"):
        r("ghost")
    (tmp_path / "trunc.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="trunc.npy: video 'trunc'"):
        r("trunc")
    np.savez(tmp_path / "k.npz", x=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="npz_key"):
        FeatureReader([str(tmp_path)], file_ext=".npz")("k")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    np.save(a / "v.npy", np.zeros((5, 2), np.float32))
    np.save(b / "v.npy", np.zeros((6, 2), np.float32))
    with pytest.raises(ValueError, match=r"different lengths \[5, 6\]"):
        FeatureReader([str(a), str(b)])("v")


def test_match_records(tmp_path):
    for v in ("a", "b", "extra"):
        np.save(tmp_path / f"{v}.npy", np.zeros((2, 2), np.float32))
    r = FeatureReader([str(tmp_path)])
    kept, missing = match_records([_rec("a"), _rec("b"), _rec("c")], r)
    assert [k.video_id for k in kept] == ["a", "b"] and missing == ["c"]
    with pytest.raises(ValueError, match="video 'c'"):
        match_records([_rec("a"), _rec("c")], r, require_all=True)
    with pytest.raises(ValueError, match="video 'extra' has features but no annotation"):
        match_records([_rec("a"), _rec("b")], r, features_only=True)
