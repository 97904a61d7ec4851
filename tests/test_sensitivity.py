"""Action Sensitivity Evaluator (class level, instance level) and ASCL, against loop-based numpy."""
import keras
import numpy as np
import pytest

from conftest import FIXTURES
from test_losses import _gold, fake_model
from asl_tf import losses
from asl_tf.assign import assign_labels
from asl_tf.model import sensitivity as sens

GOLD_TRAIN = FIXTURES / "golden" / "model" / "visible_train.npz"
ALL_OFF = {"class_level": False, "instance_level": False, "contrastive": False}


def _with_class_level(points, mode):
    m = fake_model(points, asl={**ALL_OFF, "class_level": True, "class_mode": mode})
    m.class_sensitivity = sens.ClassSensitivity(5, mode=mode)
    m.class_sensitivity.build()
    return m


def _np_targets(points, y, num_classes=5, radius=1.5, tie_eps=1e-3):
    """Loop-based label assignment written from the reference semantics (SEMANTICS.md, label
    assignment), independent of `asl_tf.assign`: per video and point, the candidate GTs are those
    whose centre-sampling window [c - 1.5 s, c + 1.5 s] clipped to [s, e] holds the point strictly
    inside and whose max(left, right) lies in the point's regression range; the first
    shortest candidate is assigned and every candidate within 1e-3 of its length adds its label.
    Returns numpy pos_mask, gt_index, gt_center, gt_length, gt_class, cls_targets, reg_targets."""
    segs, labels = np.asarray(y["gt_segments"]), np.asarray(y["gt_labels"])
    n_b, n_p = labels.shape[0], len(points)
    t = {"pos_mask": np.zeros((n_b, n_p), bool), "gt_index": np.full((n_b, n_p), -1, np.int64),
         "gt_center": np.zeros((n_b, n_p)), "gt_length": np.zeros((n_b, n_p)),
         "gt_class": np.zeros((n_b, n_p), np.int64),
         "cls_targets": np.zeros((n_b, n_p, num_classes), np.float32),
         "reg_targets": np.zeros((n_b, n_p, 2), np.float32)}
    for b in range(n_b):
        gts = [g for g in range(labels.shape[1]) if labels[b, g] >= 0]
        for p in range(n_p):
            pt, lo, hi, stride = (float(v) for v in points[p])
            cands = []
            for g in gts:
                s, e = float(segs[b, g, 0]), float(segs[b, g, 1])
                c = (s + e) / 2
                a, z = max(c - radius * stride, s), min(c + radius * stride, e)
                if a < pt < z and lo <= max(pt - s, e - pt) <= hi:
                    cands.append(g)
            if not cands:
                continue
            lens = {g: float(segs[b, g, 1] - segs[b, g, 0]) for g in cands}
            best = min(cands, key=lambda g: (lens[g], g))
            s, e = (float(v) for v in segs[b, best])
            t["pos_mask"][b, p] = True
            t["gt_index"][b, p] = best
            t["gt_center"][b, p], t["gt_length"][b, p] = (s + e) / 2, e - s
            t["gt_class"][b, p] = labels[b, best]
            t["reg_targets"][b, p] = ((pt - s) / stride, (e - pt) / stride)
            for g in cands:
                if lens[g] <= lens[best] + tie_eps:
                    t["cls_targets"][b, p, labels[b, g]] = 1.0
    return t


def test_loop_assignment_reference_matches_golden_targets():
    """The loop reference above reproduces the PyTorch reference's targets (visible_train.npz),
    so the tests below compare the library with an independently checked assignment."""
    points, _, y, y_pred, _ = _gold()
    gold = np.load(GOLD_TRAIN)
    t = _np_targets(points, y)
    valid = y_pred["mask"]
    np.testing.assert_array_equal(t["pos_mask"] & valid, gold["pos_mask"])
    np.testing.assert_array_equal(t["cls_targets"], gold["gt_cls_targets"])
    pos = gold["pos_mask"]
    np.testing.assert_allclose(t["reg_targets"][pos], gold["gt_offsets"][pos], rtol=1e-5, atol=1e-5)
    assert pos.sum() > 10 and (gold["gt_cls_targets"].sum(-1) > 1).any()


def test_all_off_equals_actionformer():
    points, x, y, y_pred, ref = _gold()
    out = losses.detector_loss(fake_model(points, asl=ALL_OFF), x, y, y_pred, return_components=True)
    for k, v in ref["loss_values"].items():
        np.testing.assert_allclose(float(out[k]), v, rtol=1e-5)
    with pytest.raises(ValueError, match="class_mode"):
        sens.asl_options({"class_mode": "bogus"})
    with pytest.raises(ValueError, match="unknown"):
        sens.asl_options({"nope": 1})


def _authors_weights(points, y, valid, mu=(0, -0.5, 0.5), sigma=(1, 1, 1)):
    t = _np_targets(points, y)
    pos = t["pos_mask"] & valid
    w_cls = np.ones(pos.shape)
    w_reg = np.ones(pos.shape)
    for b, p in zip(*np.nonzero(pos)):
        g = t["gt_index"][b, p]
        s, e = y["gt_segments"][b, g]
        x = ((s + e) / 2 - points[p, 0]) / (points[p, 3] * (e - s))
        gc, gl, gr = [np.exp(-(x - m) ** 2 / (2 * sg ** 2)) for m, sg in zip(mu, sigma)]
        w_cls[b, p] = gc
        w_reg[b, p] = (gl + gr) / 2 * gc
    return w_cls, w_reg, pos, t


def test_class_level_authors_mode_matches_formula():
    points, x, y, y_pred, ref = _gold()
    valid = y_pred["mask"]
    w_cls, w_reg, pos, _ = _authors_weights(points, y, valid)
    m = _with_class_level(points, "authors")
    out = losses.detector_loss(m, x, y, y_pred, return_components=True)
    # weighted sums in numpy from the plain per-point losses
    tgt = np.load(GOLD_TRAIN)
    foc = np.asarray(losses.sigmoid_focal_loss(y_pred["cls_logits"], tgt["gt_cls_targets"])).sum(-1)
    n = ref["loss_normalizer_after_this_forward"]
    np.testing.assert_allclose(float(out["cls_loss"]), (foc * w_cls * valid).sum() / n, rtol=1e-5)
    diou = np.asarray(losses.ctr_diou_loss_1d(np.where(pos[..., None], y_pred["offsets"], 1),
                                              np.where(pos[..., None], tgt["gt_offsets"], 1)))
    np.testing.assert_allclose(float(out["reg_loss"]), (diou * w_reg * pos).sum() / n, rtol=1e-5)
    assert float(out["cls_loss"]) < ref["loss_values"]["cls_loss"]  # weights < 1 at positives


def test_class_level_normalized_mean_one_per_instance():
    points, x, y, y_pred, ref = _gold()
    valid = y_pred["mask"]
    m = _with_class_level(points, "normalized")
    t = assign_labels(points, y["gt_segments"], y["gt_labels"], 5)
    t["num_gt"] = y["gt_labels"].shape[1]
    pos = np.asarray(t["pos_mask"]) & valid
    asl = sens.asl_options({**ALL_OFF, "class_level": True})
    w_cls, w_reg, _ = sens.sensitivity_weights(m, asl, points, t, pos, y_pred["cls_logits"],
                                               y_pred["offsets"], y_pred, 93.9)
    w_cls, w_reg = np.asarray(w_cls), np.asarray(w_reg)
    gi = np.asarray(t["gt_index"])
    a_cls, a_reg, _, _ = _authors_weights(points, y, valid)
    for b in range(2):
        for g in set(gi[b][pos[b]]):
            sel = pos[b] & (gi[b] == g)
            np.testing.assert_allclose(w_cls[b][sel].mean(), 1.0, rtol=1e-5)
            np.testing.assert_allclose(w_reg[b][sel].mean(), 1.0, rtol=1e-5)
            # same shape as the authors' Gaussians (sigma 1 at init), rescaled
            np.testing.assert_allclose(w_cls[b][sel] / w_cls[b][sel][0], a_cls[b][sel] / a_cls[b][sel][0], rtol=1e-4)
    assert (w_cls[~pos] == 1).all() and (w_reg[~pos] == 1).all()


@pytest.mark.parametrize("mode", ["authors", "normalized"])
@pytest.mark.slow
def test_authors_mode_collapses(mode):
    """The measurement behind the default (see sensitivity.py): train only the Gaussians."""
    import tensorflow as tf
    points, x, y, y_pred, _ = _gold()
    m = _with_class_level(points, mode)
    opt = keras.optimizers.Adam(0.1)
    layer = m.class_sensitivity
    t = assign_labels(points, y["gt_segments"], y["gt_labels"], 5)
    t["num_gt"] = 8
    pos = np.asarray(t["pos_mask"]) & y_pred["mask"]
    asl = sens.asl_options({**ALL_OFF, "class_level": True, "class_mode": mode})

    def step():  # eager: ~40 ms a step here, cheaper than a ~30 s trace
        with tf.GradientTape() as tape:
            loss = losses.detector_loss(m, x, y, y_pred)
        grads = tape.gradient(loss, layer.trainable_variables)
        opt.apply(grads, layer.trainable_variables)
        return loss

    first = float(step())
    for _ in range(99):
        last = float(step())
    w_cls, _, _ = sens.sensitivity_weights(m, asl, points, t, pos, y_pred["cls_logits"], y_pred["offsets"], y_pred, 1.0)
    mean_w = float(np.asarray(w_cls)[pos].mean())
    print(f"MEASURE {mode}: loss {first:.4f} -> {last:.4f}, mean positive w_cls {mean_w:.4f}")
    if mode == "authors":
        assert mean_w < 0.1 and last < 0.5 * first, (mean_w, first, last)
    else:
        np.testing.assert_allclose(mean_w, 1.0, rtol=1e-4)
        assert last > 0.8 * first


def test_instance_level_quality_loss_and_combination():
    points, x, y, y_pred, ref = _gold()
    rng = np.random.default_rng(0)
    q = rng.uniform(0.05, 0.95, y_pred["offsets"].shape).astype(np.float32)
    yp = {**y_pred, "quality": q}
    tr = np.load(losses.__file__.replace("asl_tf/losses.py", "tests/fixtures/golden/model/visible_train.npz"))
    pos = tr["pos_mask"]
    t = _np_targets(points, y)
    n = ref["loss_normalizer_after_this_forward"]
    # numpy targets
    p = 1 / (1 + np.exp(-y_pred["cls_logits"].astype(np.float64)))
    qc = np.take_along_axis(p, t["gt_class"][..., None], -1)[..., 0]
    lp, rp = y_pred["offsets"][..., 0], y_pred["offsets"][..., 1]
    lg, rg = tr["gt_offsets"][..., 0], tr["gt_offsets"][..., 1]
    inter = np.minimum(lp, lg) + np.minimum(rp, rg)
    ql = inter / np.maximum(lp + rp + lg + rg - inter, 1e-8)
    want_q = (((q[..., 0] - qc) ** 2 + (q[..., 1] - ql) ** 2) * pos).sum() / n
    foc = np.asarray(losses.sigmoid_focal_loss(y_pred["cls_logits"], tr["gt_cls_targets"])).sum(-1)
    diou = np.asarray(losses.ctr_diou_loss_1d(np.where(pos[..., None], y_pred["offsets"], 1),
                                              np.where(pos[..., None], tr["gt_offsets"], 1)))
    valid = y_pred["mask"]
    # per-instance normalised q (quality_normalize): loop over the positive points of each GT
    qn = q.astype(np.float64).copy()
    gi = t["gt_index"]
    for b in range(pos.shape[0]):
        for g in set(gi[b][pos[b]]):
            sel = pos[b] & (gi[b] == g)
            qn[b][sel] = qn[b][sel] / qn[b][sel].mean(0)
    for combine in ("product", "sum"):
      for norm in (False, True):
        m = fake_model(points, asl={**ALL_OFF, "instance_level": True, "combine": combine,
                                    "quality_loss_weight": 0.5, "quality_normalize": norm})
        out = losses.detector_loss(m, x, y, yp, return_components=True)
        np.testing.assert_allclose(float(out["quality_loss"]), want_q, rtol=1e-5)
        qq = qn if norm else q
        h_cls = np.where(pos, qq[..., 0] if combine == "product" else 1 + qq[..., 0], 1)
        h_reg = np.where(pos, qq[..., 1] if combine == "product" else 1 + qq[..., 1], 1)
        if norm:  # mean 1 over every instance's positives
            for b in range(pos.shape[0]):
                for g in set(gi[b][pos[b]]):
                    sel = pos[b] & (gi[b] == g)
                    np.testing.assert_allclose(qn[b][sel].mean(0), 1.0, rtol=1e-9)
        np.testing.assert_allclose(float(out["cls_loss"]), (foc * h_cls * valid).sum() / n, rtol=1e-5)
        np.testing.assert_allclose(float(out["reg_loss"]), (diou * h_reg * pos).sum() / n, rtol=1e-5)
        np.testing.assert_allclose(float(out["final_loss"]),
                                   float(out["cls_loss"]) + float(out["reg_loss"]) + 0.5 * want_q, rtol=1e-5)


def test_quality_targets_carry_no_gradient():
    import tensorflow as tf
    points, x, y, y_pred, _ = _gold()
    m = fake_model(points, asl={**ALL_OFF, "instance_level": True})
    logits = tf.Variable(y_pred["cls_logits"])
    offs = tf.Variable(y_pred["offsets"])
    q = tf.Variable(np.full(y_pred["offsets"].shape, 0.5, np.float32))
    with tf.GradientTape(persistent=True) as tape:
        out = losses.detector_loss(m, x, y, {**y_pred, "cls_logits": logits, "offsets": offs, "quality": q},
                                   return_components=True)
    # quality loss reaches q only; the (detached) q changes the base losses but gets no grad from them
    assert tape.gradient(out["quality_loss"], logits) is None
    assert tape.gradient(out["quality_loss"], offs) is None
    assert tape.gradient(out["cls_loss"], q) is None
    assert np.abs(tape.gradient(out["quality_loss"], q).numpy()).sum() > 0


def _np_ascl(asl, feats, points, y, pos, valid, h_cls, h_reg, logits):
    """Loop-based reference of the ASCL sampling and SupCon loss."""
    t = _np_targets(points, y)
    k = asl["topk"]
    fs, labs = [], []
    B, G = y["gt_labels"].shape
    for b in range(B):
        for g in range(G):
            if y["gt_labels"][b, g] < 0:
                continue
            idx = np.nonzero(pos[b] & (t["gt_index"][b] == g))[0]
            if len(idx) == 0:
                continue
            top = idx[np.argsort(-h_cls[b, idx], kind="stable")[:k]]
            c = t["gt_center"][b, idx[0]]
            st = idx[points[idx, 0] <= c]
            en = idx[points[idx, 0] > c]
            st = st[np.argsort(-h_reg[b, st], kind="stable")[:k]]
            en = en[np.argsort(-h_reg[b, en], kind="stable")[:k]]
            fs += [feats[b, top].mean(0), feats[b, np.concatenate([st, en])].mean(0)]
            labs += [y["gt_labels"][b, g]] * 2
    na = len(fs)
    for b in range(B):
        segs = y["gt_segments"][b][y["gt_labels"][b] >= 0]
        inside = ((points[:, None, 0] >= segs[None, :, 0]) & (points[:, None, 0] <= segs[None, :, 1])).any(-1)
        bg = np.nonzero(valid[b] & ~inside)[0]
        hard = logits[b, bg].max(-1)
        for i in bg[np.argsort(-hard, kind="stable")[:asl["num_bg_samples"]]]:
            fs.append(feats[b, i])
            labs.append(-2)
    f = np.stack(fs).astype(np.float64)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    labs = np.array(labs)
    total, cnt = 0.0, 0
    for i in range(na):
        s = f[i] @ f.T / asl["temperature"]
        others = [j for j in range(len(f)) if j != i]
        lse = np.log(np.exp(s[others]).sum())
        P = [j for j in others if labs[j] == labs[i]]
        if P:
            total += -np.mean([s[j] - lse for j in P])
            cnt += 1
    return total / max(cnt, 1)


def test_ascl_matches_loop_reference_and_is_padding_invariant():
    points, x, y, y_pred, _ = _gold()
    rng = np.random.default_rng(1)
    h_cls = rng.uniform(size=y_pred["mask"].shape).astype(np.float32)
    h_reg = rng.uniform(size=y_pred["mask"].shape).astype(np.float32)
    asl = sens.asl_options({"contrastive": True, "topk": 3, "num_bg_samples": 5, "temperature": 0.07})
    t = assign_labels(points, y["gt_segments"], y["gt_labels"], 5)
    valid = y_pred["mask"]
    pos = np.asarray(t["pos_mask"]) & valid
    got = sens.ascl_loss(asl, y_pred["fpn_feats"], points, t, pos, valid, y["gt_labels"], h_cls, h_reg,
                         cls_logits=y_pred["cls_logits"], gt_segments=y["gt_segments"])
    want = _np_ascl(asl, y_pred["fpn_feats"], points, y, pos, valid, h_cls, h_reg, y_pred["cls_logits"])
    np.testing.assert_allclose(float(got), want, rtol=1e-4)
    # more GT padding slots -> same loss
    segs = np.concatenate([y["gt_segments"], np.zeros((2, 3, 2), np.float32)], 1)
    labs = np.concatenate([y["gt_labels"], np.full((2, 3), -1, np.int32)], 1)
    t2 = assign_labels(points, segs, labs, 5)
    got2 = sens.ascl_loss(asl, y_pred["fpn_feats"], points, t2, pos, valid, labs, h_cls, h_reg,
                          cls_logits=y_pred["cls_logits"], gt_segments=segs)
    np.testing.assert_allclose(float(got2), float(got), rtol=1e-6)


def test_full_asl_loss_runs_with_gradients_and_no_gt():
    import tensorflow as tf
    points, x, y, y_pred, _ = _gold()
    m = fake_model(points, asl={"class_level": True, "instance_level": True, "contrastive": True})
    m.class_sensitivity = sens.ClassSensitivity(5)
    m.class_sensitivity.build()
    feats = tf.Variable(y_pred["fpn_feats"])
    q = np.full(y_pred["offsets"].shape, 0.5, np.float32)
    for labels in (y["gt_labels"], np.full_like(y["gt_labels"], -1)):
        yy = {"gt_segments": y["gt_segments"], "gt_labels": labels}
        with tf.GradientTape() as tape:
            out = losses.detector_loss(m, x, yy, {**y_pred, "fpn_feats": tf.identity(feats), "quality": q},
                                       return_components=True)
        assert all(np.isfinite(float(v)) for v in out.values())
        g = tape.gradient(out["final_loss"], feats)
        if (labels >= 0).any():
            assert float(out["ascl_loss"]) > 0 and np.abs(g.numpy()).sum() > 0
        else:
            assert float(out["ascl_loss"]) == 0.0
