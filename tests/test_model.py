"""Forward parity of ASLDetector with the PyTorch reference goldens (tests/fixtures/golden/model).

Tolerances (SEMANTICS.md): outputs, points and masks within 1e-5; detections: segments 1e-4 s,
scores 1e-5 relative, labels and order exact.
"""
import json

import numpy as np
import pytest

from conftest import FIXTURES

G = FIXTURES / "golden" / "model"
ATOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    meta = json.loads((G / "visible_config.json").read_text())
    return {
        "meta": meta,
        "cfg": meta["config_model (merged, as passed to make_meta_arch)"],
        "inputs": dict(np.load(G / "visible_inputs.npz")),
        "outputs": dict(np.load(G / "visible_outputs.npz")),
        "long": dict(np.load(G / "visible_long_outputs.npz")),
    }


@pytest.fixture(scope="module")
def model(golden):
    from asl_tf.compat import actionformer as af

    m = af.model_from_config(golden["cfg"])
    af.load_state_dict(m, G / "visible_state_dict.npz")
    return m


def _ct(a):  # reference (B, C, T) -> channels-last (B, T, C)
    return np.transpose(a, (0, 2, 1))


def test_param_count(model, golden):
    n = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert n == golden["meta"]["n_params"] == 115245


def test_attributes(model, golden):
    meta = golden["meta"]
    assert model.fpn_strides == meta["fpn_strides"]
    assert model.max_div_factor == meta["max_div_factor"]
    assert model.mha_win_size == meta["mha_win_size"]
    assert model.level_lengths(256) == [256, 128, 64, 32, 16, 8]
    assert float(model.loss_normalizer.numpy()) == 100.0
    np.testing.assert_allclose([float(s.scale.numpy()) for s in model.reg_head.scale],
                               meta["reg_head_scales"], rtol=1e-7)


def _check_levels(model, feats, mask, ref, n_levels=6):
    lv = model.forward_levels(feats, mask, training=False)
    for lvl in range(n_levels):
        pairs = [
            ("backbone_feats", _ct(ref[f"backbone_feats_l{lvl}"])),
            ("backbone_masks", _ct(ref[f"backbone_masks_l{lvl}"]).astype(np.float32)),
            ("fpn_feats", _ct(ref[f"fpn_feats_l{lvl}"])),
            ("fpn_masks", ref[f"fpn_masks_l{lvl}"][..., None].astype(np.float32)),
            ("cls_logits", ref[f"cls_logits_l{lvl}"]),
            ("offsets_raw", _ct(ref[f"offsets_raw_l{lvl}"])),
            ("offsets_scaled", _ct(ref[f"offsets_scaled_l{lvl}"])),
            ("offsets", ref[f"offsets_l{lvl}"]),
        ]
        for key, want in pairs:
            got = np.asarray(lv[key][lvl])
            assert got.shape == want.shape, (key, lvl, got.shape, want.shape)
            np.testing.assert_allclose(got, want, rtol=0, atol=ATOL, err_msg=f"{key} l{lvl}")
    return lv


def test_every_level_matches_reference(model, golden):
    inp, ref = golden["inputs"], golden["outputs"]
    _check_levels(model, _ct(inp["batched_feats"]), inp["batched_mask"][:, 0], ref)


def test_padded_positions_follow_reference(model, golden):
    """Video 1 is padded from 181: fpn features there equal the neck LN bias, heads are 0."""
    inp = golden["inputs"]
    lv = model.forward_levels(_ct(inp["batched_feats"]), inp["batched_mask"][:, 0])
    beta = model.neck.fpn_norms[0].beta.numpy()
    np.testing.assert_allclose(np.asarray(lv["fpn_feats"][0])[1, 181:], np.broadcast_to(
        beta, (256 - 181, beta.size)), atol=1e-6)
    assert np.all(np.asarray(lv["cls_logits"][0])[1, 181:] == 0)
    assert np.all(np.asarray(lv["offsets"][0])[1, 181:] == 0)


def test_forward_concatenates_levels_and_points(model, golden):
    from asl_tf.compat import actionformer as af

    inp, ref = golden["inputs"], golden["outputs"]
    out = af.forward(model, _ct(inp["batched_feats"]), inp["batched_mask"][:, 0])
    cat = lambda key: np.concatenate([ref[f"{key}_l{i}"] for i in range(6)], 1)  # noqa: E731
    np.testing.assert_allclose(out["cls_logits"], cat("cls_logits"), rtol=0, atol=ATOL)
    np.testing.assert_allclose(out["offsets"], cat("offsets"), rtol=0, atol=ATOL)
    np.testing.assert_array_equal(out["mask"], cat("fpn_masks"))
    points = np.concatenate([ref[f"points_l{i}"] for i in range(6)], 0)
    np.testing.assert_array_equal(out["points"], points)
    assert out["cls_logits"].dtype == np.float32 and out["mask"].dtype == bool


def test_long_video_matches_reference(model, golden):
    """300 frames padded to 512 (a multiple of max_div_factor), batch 1."""
    inp, ref = golden["inputs"], golden["long"]
    assert inp["long_padded_feats"].shape[-1] == golden["meta"]["long_video_padded_length"]
    from asl_tf.compat import actionformer as af

    padded, mask = af.pad_for_eval(model, inp["long_feats"].T)
    np.testing.assert_array_equal(padded, _ct(inp["long_padded_feats"]))
    np.testing.assert_array_equal(mask, inp["long_padded_mask"][:, 0])
    lv = _check_levels(model, padded, mask, ref)
    assert [int(x.shape[1]) for x in lv["cls_logits"]] == model.level_lengths(512)


def _check_dets(got, segs, scores, labels):
    assert got["segments"].shape == segs.shape
    np.testing.assert_array_equal(got["labels"], labels)
    np.testing.assert_allclose(got["segments"], segs, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got["scores"], scores, rtol=1e-5, atol=0)


def test_detections_match_reference(model, golden):
    from asl_tf.compat import actionformer as af

    inp, meta = golden["inputs"], golden["meta"]
    videos = [dict(meta["video_meta"][0], feats=inp["feats_v0"].T),
              dict(meta["video_meta"][1], feats=inp["feats_v1"].T),
              dict(meta["long_video_meta"], feats=inp["long_feats"].T)]
    dets = af.detect(model, videos)
    assert [d["video_id"] for d in dets] == [v["video_id"] for v in videos]
    out, long = golden["outputs"], golden["long"]
    for d, (src, v) in zip(dets, [(out, 0), (out, 1), (long, 0)]):
        _check_dets(d, src[f"det_v{v}_segs"], src[f"det_v{v}_scores"], src[f"det_v{v}_labels"])
    js = json.loads((G / "visible_detections.json").read_text())
    for d, ref in zip(dets, js["batched_eval"] + js["long_video_eval"]):
        assert d["video_id"] == ref["video_id"]
        _check_dets(d, np.asarray(ref["segments"], np.float32).reshape(-1, 2),
                    np.asarray(ref["scores"], np.float32), np.asarray(ref["labels"]))


def test_train_mode_equals_eval_without_dropout(model, golden):
    inp = golden["inputs"]
    x = {"feats": _ct(inp["batched_feats"]), "mask": inp["batched_mask"][:, 0]}
    a, b = model(x, training=False), model(x, training=True)
    for k in ("cls_logits", "offsets", "fpn_feats"):
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_keras_roundtrip(model, golden, tmp_path):
    import keras

    inp = golden["inputs"]
    x = {"feats": _ct(inp["batched_feats"]), "mask": inp["batched_mask"][:, 0]}
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded).__name__ == "ASLDetector"
    assert loaded.get_config()["model_cfg"] == model.get_config()["model_cfg"]
    a, b = model(x), loaded(x)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
    assert float(loaded.loss_normalizer.numpy()) == float(model.loss_normalizer.numpy())


def test_config_stores_asl_and_class_names(golden):
    from asl_tf.model.detector import build_detector

    cfg = dict(golden["cfg"], asl={"class_level": True}, class_names=list("abcde"))
    m = build_detector(cfg)
    got = m.get_config()["model_cfg"]
    assert got["asl"] == {"class_level": True} and got["class_names"] == list("abcde")
    assert m.class_names == list("abcde") and m.asl_cfg == {"class_level": True}
    assert build_detector(golden["cfg"]).get_config()["model_cfg"]["asl"] == {}


def test_input_pdrop_drops_whole_channels_in_training_only():
    """OpenTAD's input_pdrop (Charades 0.3): Dropout1d over feature channels, training only."""
    import keras
    from asl_tf.model.detector import build_detector
    cfg = {"backbone_arch": [2, 0, 1], "n_mha_win_size": 5, "embd_dim": 16, "fpn_dim": 16,
           "head_dim": 16, "n_head": 2, "regression_range": [[0, 4], [4, 10000]],
           "input_dim": 64, "num_classes": 3, "max_seq_len": 32, "input_pdrop": 0.5,
           "train_cfg": {"droppath": 0.0}}
    keras.utils.set_random_seed(0)
    model = build_detector(cfg)
    assert model.model_dict()["input_pdrop"] == 0.5          # kept in the saved config
    x = np.random.default_rng(0).normal(size=(2, 32, 64)).astype(np.float32) + 3.0
    dropped = np.asarray(model.input_drop(x, training=True))
    zero = np.all(dropped == 0, axis=1)                       # [B, C]: channel zero at all t
    kept = ~zero
    assert 0.2 < zero.mean() < 0.8                            # about half the channels
    assert not np.array_equal(zero[0], zero[1])               # drawn per video
    np.testing.assert_allclose(dropped[:, :, :][np.broadcast_to(kept[:, None], x.shape)],
                               2.0 * x[np.broadcast_to(kept[:, None], x.shape)], rtol=1e-6)
    feats = {"feats": x, "mask": np.ones((2, 32), bool)}
    a = np.asarray(model(feats, training=False)["cls_logits"])
    np.testing.assert_array_equal(a, np.asarray(model(feats, training=False)["cls_logits"]))
    assert not np.allclose(a, np.asarray(model(feats, training=True)["cls_logits"]))
    with pytest.raises(ValueError, match="input_pdrop"):
        build_detector({**cfg, "input_pdrop": 1.0})


def _random_weights(model, seed):
    """Non-trivial weights: LayerNorm betas and biases far from 0, so that a padded frame
    (LayerNorm of 0 = beta) differs from a frame past the end (0)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if len(shape) >= 2:
            v = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        elif len(shape) == 1:
            v = (1.0 if "gamma" in w.path else 0.0) + 0.5 * rng.normal(size=shape)
        else:
            v = np.float32(1.0)
        w.assign(np.asarray(v, np.float32))


@pytest.mark.parametrize("variant", ["local_identity", "global_fpn_abspe"])
@pytest.mark.slow
def test_trimmed_eval_padding_gives_the_reference_outputs(variant):
    """`eval_padded_length(..., max_stride)`: the valid frames' outputs and the detections equal those of the
    reference padding to max_seq_len; without the one-padded-position margin they do not."""
    import math

    from asl_tf.compat import actionformer as af
    from asl_tf.data import pipeline as P
    from asl_tf.model.detector import build_detector
    from edge.postprocess import postprocess

    cfg = {"backbone_arch": [2, 1, 3], "n_mha_win_size": 5, "embd_dim": 16, "fpn_dim": 16,
           "head_dim": 16, "n_head": 2, "input_dim": 8, "num_classes": 3, "max_seq_len": 128,
           "regression_range": [[0, 4], [4, 8], [8, 16], [16, 10000]],
           "train_cfg": {"droppath": 0.0}}
    if variant == "global_fpn_abspe":
        cfg.update(n_mha_win_size=-1, fpn_type="fpn", use_abs_pe=True)
    model = build_detector(cfg)
    _random_weights(model, 1)
    s_max, div = max(model.fpn_strides), model.max_div_factor
    rng = np.random.default_rng(2)

    def run(feats, tp):
        x = np.zeros((1, tp, 8), np.float32)
        x[0, :len(feats)] = feats
        m = np.arange(tp)[None] < len(feats)
        out = model({"feats": x, "mask": m}, training=False)
        lens = model.level_lengths(tp)
        levels, start = [], 0
        for n, s in zip(lens, model.fpn_strides):
            k = math.ceil(len(feats) / s)                  # valid positions of this level
            levels.append((np.asarray(out["cls_logits"])[0, start:start + k],
                           np.asarray(out["offsets"])[0, start:start + k]))
            start += n
        dets = postprocess(np.asarray(out["cls_logits"])[0], np.asarray(out["offsets"])[0],
                           np.asarray(out["mask"])[0], np.asarray(model.points(tp)), list(lens),
                           dict(model.test_cfg), 10.0, 1.0, 1.0, len(feats) / 10.0)
        return levels, dets

    checked = 0
    for t in sorted({1, s_max - 1, s_max, s_max + 1, div - 1, div, div + 1, 2 * div - 1, 70,
                     127, 128}):
        if t > 128:
            continue
        feats = rng.normal(size=(t, 8)).astype(np.float32)
        tp = P.eval_padded_length(t, 128, div, s_max)
        assert tp % div == 0 and tp <= 128
        ref_levels, ref_dets = run(feats, P.eval_padded_length(t, 128, div))
        got_levels, got_dets = run(feats, tp)
        for (rc, ro), (gc, go) in zip(ref_levels, got_levels):
            np.testing.assert_allclose(gc, rc, atol=1e-5, rtol=1e-5)
            np.testing.assert_allclose(go, ro, atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(got_dets["labels"], ref_dets["labels"])
        np.testing.assert_allclose(got_dets["scores"], ref_dets["scores"], rtol=1e-5)
        np.testing.assert_allclose(got_dets["segments"], ref_dets["segments"], atol=1e-4)
        checked += tp < 128
    assert checked >= 3        # the trimming did shorten some of them
    # the margin matters: padding a length just under a multiple of div only to that multiple
    # leaves the coarsest level without a padded position, and its last outputs change
    t = div - 1
    feats = rng.normal(size=(t, 8)).astype(np.float32)
    ref_levels, _ = run(feats, P.eval_padded_length(t, 128, div))
    bad_levels, _ = run(feats, div)
    assert not all(np.allclose(b[0], r[0], atol=1e-5) for b, r in zip(bad_levels, ref_levels))
    # and `pad_for_eval(trim=True)` uses the same rule
    x, m = af.pad_for_eval(model, feats, trim=True)
    assert x.shape[1] == P.eval_padded_length(t, 128, div, s_max) and m.sum() == t
