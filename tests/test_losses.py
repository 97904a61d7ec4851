"""Base losses (focal, DIoU, EMA normaliser, final) equal the reference (visible_losses.json).

The golden head outputs (eval == train mode in the golden: dropout 0) are fed straight into
the losses, so these tests need no model.
"""
import json
import types

import keras
import numpy as np
import pytest

from conftest import FIXTURES
from asl_tf import losses

GOLD = FIXTURES / "golden" / "model"
RTOL = 1e-5


def _gold():
    out = np.load(GOLD / "visible_outputs.npz")
    inp = np.load(GOLD / "visible_inputs.npz")
    cat = lambda k: np.concatenate([out[f"{k}_l{l}"] for l in range(6)], 1)
    points = np.concatenate([out[f"points_l{l}"] for l in range(6)], 0)
    segs = np.zeros((2, 8, 2), np.float32)
    labels = np.full((2, 8), -1, np.int32)
    for b in range(2):
        s, l = inp[f"gt_segments_v{b}"], inp[f"gt_labels_v{b}"]
        segs[b, :len(s)], labels[b, :len(l)] = s, l
    y_pred = {"cls_logits": cat("cls_logits"), "offsets": cat("offsets"), "mask": cat("fpn_masks"),
              "fpn_feats": np.concatenate([out[f"fpn_feats_l{l}"].transpose(0, 2, 1) for l in range(6)], 1)}
    x = {"feats": inp["batched_feats"].transpose(0, 2, 1), "mask": inp["batched_mask"][:, 0]}
    y = {"gt_segments": segs, "gt_labels": labels}
    ref = json.loads((GOLD / "visible_losses.json").read_text())
    return points, x, y, y_pred, ref


def fake_model(points, init=100.0, train_cfg=None, asl=None, num_classes=5):
    """The attributes `detector_loss` uses, without the network."""
    m = types.SimpleNamespace()
    m.points = lambda T: points
    m.num_classes = num_classes
    m.loss_normalizer = keras.Variable(init, trainable=False, dtype="float32")
    m.train_cfg = train_cfg or {}
    m.asl_cfg = asl
    return m


def test_losses_match_reference():
    points, x, y, y_pred, ref = _gold()
    m = fake_model(points, ref["loss_normalizer_init (train_cfg.init_loss_norm)"])
    out = losses.detector_loss(m, x, y, y_pred, training=True, return_components=True)
    for k, v in ref["loss_values"].items():
        np.testing.assert_allclose(float(out[k]), v, rtol=RTOL, err_msg=k)
    assert float(out["num_pos"]) == ref["num_pos"]
    np.testing.assert_allclose(float(m.loss_normalizer.numpy()), ref["loss_normalizer_after_this_forward"], rtol=1e-6)
    # scalar form = final loss; evaluation (training=False) leaves the normaliser alone
    m2 = fake_model(points, 100.0)
    val = losses.detector_loss(m2, x, y, y_pred, training=False)
    np.testing.assert_allclose(float(val), ref["loss_values"]["final_loss"], rtol=RTOL)
    assert float(m2.loss_normalizer.numpy()) == 100.0


def test_normaliser_is_updated_before_use_and_persists():
    points, x, y, y_pred, ref = _gold()
    m = fake_model(points, 100.0)
    first = losses.detector_loss(m, x, y, y_pred, training=True, return_components=True)
    second = losses.detector_loss(m, x, y, y_pred, training=True, return_components=True)
    n2 = 0.9 * ref["loss_normalizer_after_this_forward"] + 0.1 * ref["num_pos"]
    np.testing.assert_allclose(float(second["loss_normalizer"]), n2, rtol=1e-6)
    np.testing.assert_allclose(float(second["cls_loss"]) * n2,
                               float(first["cls_loss"]) * ref["loss_normalizer_after_this_forward"], rtol=1e-5)


def test_label_smoothing_and_auto_balance():
    points, x, y, y_pred, ref = _gold()
    out0 = losses.detector_loss(fake_model(points), x, y, y_pred, return_components=True)
    m = fake_model(points, train_cfg={"label_smoothing": 0.1, "loss_weight": 0.0})
    out = losses.detector_loss(m, x, y, y_pred, return_components=True)
    # numpy re-derivation of the smoothed focal sum
    valid = y_pred["mask"]
    tgt = np.load(GOLD / "visible_train.npz")["gt_cls_targets"] * 0.9 + 0.1 / 6
    z = y_pred["cls_logits"].astype(np.float64)
    p = 1 / (1 + np.exp(-z))
    ce = np.maximum(z, 0) - z * tgt + np.log1p(np.exp(-np.abs(z)))
    pt = p * tgt + (1 - p) * (1 - tgt)
    fl = (0.25 * tgt + 0.75 * (1 - tgt)) * ce * (1 - pt) ** 2
    want = (fl.sum(-1) * valid).sum() / ref["loss_normalizer_after_this_forward"]
    np.testing.assert_allclose(float(out["cls_loss"]), want, rtol=RTOL)
    np.testing.assert_allclose(float(out["reg_loss"]), float(out0["reg_loss"]), rtol=1e-6)
    w = float(out["cls_loss"]) / max(float(out["reg_loss"]), 0.01)
    np.testing.assert_allclose(float(out["final_loss"]), float(out["cls_loss"]) * (1 + w * float(out["reg_loss"]) / float(out["cls_loss"])), rtol=RTOL)


def test_no_positive_batch():
    points, x, y, y_pred, _ = _gold()
    y = {"gt_segments": y["gt_segments"], "gt_labels": np.full_like(y["gt_labels"], -1)}
    m = fake_model(points, 100.0)
    out = losses.detector_loss(m, x, y, y_pred, training=True, return_components=True)
    assert float(out["reg_loss"]) == 0.0 and float(out["num_pos"]) == 0.0
    np.testing.assert_allclose(float(m.loss_normalizer.numpy()), 90.1, rtol=1e-6)
    assert np.isfinite(float(out["cls_loss"])) and float(out["cls_loss"]) > 0


def test_diou_known_values():
    pred = np.array([[1.0, 1.0], [2.0, 0.0], [0.5, 1.5]], np.float32)
    tgt = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]], np.float32)
    got = np.asarray(losses.ctr_diou_loss_1d(pred, tgt))
    # identical -> 0; [2,0] vs [1,1]: I=1, U=3, rho=0.5*(0-2-1+1)=-1, len_c=3
    np.testing.assert_allclose(got, [0.0, 1 - 1 / 3 + 1 / 9, 1 - 1.5 / 2.5 + (0.5 * (1.5 - 0.5)) ** 2 / 2.5 ** 2], rtol=1e-6)
