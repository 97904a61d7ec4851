"""Label assignment equals the reference's targets (visible_train.npz)."""
import numpy as np
import pytest

from conftest import FIXTURES
from asl_tf.assign import assign_labels

GOLD = FIXTURES / "golden" / "model"


def _batch(pad_to=9):
    inp = np.load(GOLD / "visible_inputs.npz")
    segs = np.zeros((2, pad_to, 2), np.float32)
    labels = np.full((2, pad_to), -1, np.int32)
    for b in range(2):
        s, l = inp[f"gt_segments_v{b}"], inp[f"gt_labels_v{b}"]
        segs[b, :len(s)] = s
        labels[b, :len(l)] = l
    return segs, labels


def _points():
    out = np.load(GOLD / "visible_outputs.npz")
    return np.concatenate([out[f"points_l{l}"] for l in range(6)], 0)


def test_assignment_matches_reference():
    gold = np.load(GOLD / "visible_train.npz")
    points = _points()
    np.testing.assert_array_equal(points, gold["concat_points"])
    segs, labels = _batch()
    t = assign_labels(points, segs, labels, 5)
    np.testing.assert_array_equal(np.asarray(t["cls_targets"]), gold["gt_cls_targets"])
    out = np.load(GOLD / "visible_outputs.npz")
    valid = np.concatenate([out[f"fpn_masks_l{l}"] for l in range(6)], 1)
    pos = np.asarray(t["pos_mask"]) & valid
    np.testing.assert_array_equal(pos, gold["pos_mask"])
    # the reference's offsets at every point (also negatives: they come from GT 0)
    np.testing.assert_allclose(np.asarray(t["reg_targets"]), gold["gt_offsets"], rtol=1e-6, atol=1e-6)
    # multi-label tie rule is exercised by the golden
    assert (gold["gt_cls_targets"].sum(-1) > 1).any()


def test_padding_and_no_gt():
    points = _points()
    segs, labels = _batch(pad_to=12)
    t12 = assign_labels(points, segs, labels, 5)
    segs2, labels2 = _batch(pad_to=7)
    t7 = assign_labels(points, segs2, labels2, 5)
    for k in ("cls_targets", "reg_targets", "gt_index", "gt_class"):
        np.testing.assert_array_equal(np.asarray(t12[k]), np.asarray(t7[k]))
    # a video without GT: all-zero targets, no positives
    labels[1] = -1
    t = assign_labels(points, segs, labels, 5)
    assert not np.asarray(t["pos_mask"])[1].any()
    assert not np.asarray(t["cls_targets"])[1].any()
    assert not np.asarray(t["reg_targets"])[1].any()
    # a batch with G == 0
    t0 = assign_labels(points, np.zeros((2, 0, 2), np.float32), np.zeros((2, 0), np.int32), 5)
    assert np.asarray(t0["cls_targets"]).shape == (2, len(points), 5)
    assert not np.asarray(t0["pos_mask"]).any()


def test_assigned_instance_geometry():
    points = _points()
    segs, labels = _batch()
    t = assign_labels(points, segs, labels, 5)
    idx = np.asarray(t["gt_index"])
    pos = np.asarray(t["pos_mask"])
    for b in range(2):
        for p in np.nonzero(pos[b])[0]:
            g = idx[b, p]
            assert labels[b, g] >= 0
            assert np.asarray(t["gt_class"])[b, p] == labels[b, g]
            assert np.isclose(np.asarray(t["gt_length"])[b, p], segs[b, g, 1] - segs[b, g, 0])
    assert (idx[~pos] == -1).all()


def test_bad_center_sample():
    with pytest.raises(ValueError, match="center_sample"):
        assign_labels(_points(), *_batch(), 5, center_sample="bogus")


def test_bad_gt_inputs_give_no_positives():
    """GT outside the window, zero-length GT (after truncation) and an empty batch."""
    points = _points()
    segs = np.array([[[300.0, 400.0], [-50.0, -10.0], [20.0, 20.0]]], np.float32)
    labels = np.array([[1, 2, 3]], np.int32)
    t = assign_labels(points, segs, labels, 5)
    assert not np.asarray(t["pos_mask"]).any()
    assert np.isfinite(np.asarray(t["reg_targets"])).all()
    t0 = assign_labels(points, np.zeros((0, 3, 2), np.float32), np.zeros((0, 3), np.int32), 5)
    assert np.asarray(t0["cls_targets"]).shape == (0, len(points), 5)
