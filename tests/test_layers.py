"""Layer-level semantics against small numpy re-statements of the reference (SEMANTICS.md §3),
for the paths the visible golden does not cover (rel PE, global attention, abs PE
interpolation, stride 4, FPN neck, conv backbone), and serialization of every layer."""
import json

import keras
import numpy as np
import pytest

from conftest import FIXTURES


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_local_attention(q, k, v, kmask, w, nh, rel=None):
    """Reference local attention on [B,T,C] (q already scaled), dense with explicit masks."""
    b, t, c = q.shape
    hd = c // nh
    out = np.zeros_like(q)
    for bi in range(b):
        for h in range(nh):
            sl = slice(h * hd, (h + 1) * hd)
            att = np.full((t, t), -np.inf)
            for i in range(t):
                for j in range(max(0, i - w), min(t, i + w + 1)):
                    att[i, j] = q[bi, i, sl] @ k[bi, j, sl] + (0.0 if kmask[bi, j] else -1e4)
                    if rel is not None:
                        att[i, j] += rel[h, j - i + w]
            p = _softmax(att) * kmask[bi, :, None]
            out[bi, :, sl] = p @ v[bi, :, sl]
    return out


@pytest.mark.parametrize("window,rel", [(5, False), (9, True)])
def test_local_attention_kernel_matches_dense(window, rel):
    from asl_tf.model.layers import MaskedMHCA

    rng = np.random.RandomState(window)
    b, t, c, nh = 2, 24 if window == 5 else 16, 8, 2
    layer = MaskedMHCA(c, nh, window, use_rel_pe=rel)
    layer.build((None, None, c))
    relw = None
    if rel:
        relw = rng.randn(nh, window).astype(np.float32)
        layer.rel_pe.assign(relw)
    q, k, v = (rng.randn(b, t, c).astype(np.float32) for _ in range(3))
    kmask = np.ones((b, t), bool)
    kmask[1, t - 5:] = False
    got = np.asarray(layer._local(q, k, v, kmask[..., None].astype(np.float32), False))
    want = _np_local_attention(q * layer.scale, k, v, kmask, window // 2, nh, relw)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_global_attention_kernel_matches_dense():
    from asl_tf.model.layers import MaskedMHCA

    rng = np.random.RandomState(1)
    b, t, c, nh = 2, 12, 8, 4
    layer = MaskedMHCA(c, nh, -1)
    layer.build((None, None, c))
    q, k, v = (rng.randn(b, t, c).astype(np.float32) for _ in range(3))
    kmask = np.ones((b, t), bool)
    kmask[0, 7:] = False
    got = np.asarray(layer._global(q, k, v, kmask[..., None].astype(np.float32), False))
    want = _np_local_attention(q * layer.scale, k, v * kmask[..., None], kmask, t, nh)
    # the reference's global attention does not zero padded query rows (masked later)
    hd = c // nh
    for bi in range(b):
        for h in range(nh):
            sl = slice(h * hd, (h + 1) * hd)
            att = np.where(kmask[bi][None], (q[bi, :, sl] * layer.scale) @ k[bi, :, sl].T,
                           -np.inf)
            want[bi, :, sl] = _softmax(att) @ (v[bi, :, sl] * kmask[bi, :, None])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("stride", [2, 4])
def test_max_pool_skip_equals_minus_inf_padding(stride):
    from asl_tf.model.layers import max_pool_skip

    x = np.random.RandomState(stride).randn(2, 16, 3).astype(np.float32) - 5.0
    k, p = stride + 1, (stride + 1) // 2
    xp = np.pad(x, ((0, 0), (p, p), (0, 0)), constant_values=-np.inf)
    n = (16 + 2 * p - k) // stride + 1
    want = np.stack([xp[:, i * stride:i * stride + k].max(1) for i in range(n)], 1)
    np.testing.assert_array_equal(np.asarray(max_pool_skip(x, stride)), want)


def test_strided_masked_conv_reads_reference_window():
    from asl_tf.model.layers import MaskedConv1D

    rng = np.random.RandomState(0)
    x = rng.randn(1, 8, 2).astype(np.float32)
    conv = MaskedConv1D(3, 3, strides=2, use_bias=True)
    conv.build((None, None, 2))
    wt = rng.randn(3, 2, 3).astype(np.float32)  # torch (out, in, k)
    conv.kernel.assign(wt.transpose(2, 1, 0))
    conv.bias.assign(np.array([0.1, 0.2, 0.3], np.float32))
    mask = np.ones((1, 8, 1), np.float32)
    mask[0, 6:] = 0
    y, m = conv(x, mask)
    xp = np.pad(x[0], ((1, 1), (0, 0)))
    want = np.stack([np.einsum("kc,ock->o", xp[2 * i:2 * i + 3], wt) for i in range(4)]) + \
        np.array([0.1, 0.2, 0.3])
    want = want * mask[0, ::2]
    np.testing.assert_allclose(np.asarray(y)[0], want, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(m), mask[:, ::2])


def test_layer_norm_and_gelu():
    from asl_tf.model.layers import LayerNorm, gelu_exact

    x = np.random.RandomState(0).randn(2, 5, 7).astype(np.float32) * 3 + 40
    ln = LayerNorm()
    ln.build((None, None, 7))
    mu = x.mean(-1, keepdims=True)
    want = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(np.asarray(ln(x)), want, atol=2e-6)
    assert np.all(np.asarray(ln(np.zeros((1, 2, 7), np.float32))) == 0)
    from math import erf

    z = np.linspace(-6, 6, 25).astype(np.float32)
    want = np.array([0.5 * a * (1 + erf(a / np.sqrt(2))) for a in z.astype(np.float64)])
    np.testing.assert_allclose(np.asarray(gelu_exact(z)), want, atol=1e-6)


def _torch_linear_interp(table, t):
    """F.interpolate(pe (1,C,L), t, 'linear', align_corners=False) as [t, C]."""
    length = table.shape[0]
    scale = np.float32(length / t)
    out = np.zeros((t, table.shape[1]), np.float32)
    for i in range(t):
        src = max(np.float32(scale * (i + 0.5) - 0.5), 0.0)
        i0 = int(src)
        i1 = i0 + (1 if i0 < length - 1 else 0)
        lam = np.float32(src - i0)
        out[i] = (1 - lam) * table[i0] + lam * table[i1]
    return out


def test_sinusoid_table_and_interpolation():
    from asl_tf.model.layers import interpolate_pe, sinusoid_table

    tab = sinusoid_table(16, 6)
    p, j = 5, 3
    assert tab[p, j] == pytest.approx(np.cos(p / 10000 ** (2 * (j // 2) / 6)) / np.sqrt(6),
                                      abs=1e-7)
    assert tab[p, 2] == pytest.approx(np.sin(p / 10000 ** (2 / 6)) / np.sqrt(6), abs=1e-7)
    np.testing.assert_array_equal(np.asarray(interpolate_pe(tab, 16)), tab)
    np.testing.assert_array_equal(np.asarray(interpolate_pe(tab, 8)), tab[:8])
    for t in (24, 40, 64):
        np.testing.assert_allclose(np.asarray(interpolate_pe(tab, t)),
                                   _torch_linear_interp(tab, t), atol=1e-6)


def test_abs_pe_is_added_after_embedding():
    from asl_tf.compat import actionformer as af

    cfg = {"backbone_arch": [1, 0, 1], "regression_range": [[0, 4], [4, 1e4]], "n_head": 1,
           "n_mha_win_size": 5, "embd_dim": 4, "fpn_dim": 4, "head_dim": 4, "input_dim": 3,
           "num_classes": 2, "max_seq_len": 8, "use_abs_pe": True, "embd_with_ln": False,
           "train_cfg": {"droppath": 0.0}}
    m = af.model_from_config(cfg)
    x = np.random.RandomState(0).randn(1, 16, 3).astype(np.float32)
    mask = np.ones((1, 16), bool)
    mask[0, 12:] = False
    conv = m.backbone.embd[0]
    emb, _ = conv(x, mask[..., None].astype(np.float32))
    want = np.maximum(np.asarray(emb), 0) + \
        _torch_linear_interp(m.backbone.pos_embd, 16)[None] * mask[..., None]
    lv = m.forward_levels(x, mask)
    np.testing.assert_allclose(np.asarray(lv["backbone_feats"][0]), want, atol=1e-6)


def _np_fpn(feats, masks, lat, dw, ln_g, ln_b):
    """Reference FPN1D (with_ln) in numpy on channels-last lists."""
    n = len(feats)
    laterals = [(f @ lat[i]) * m for i, (f, m) in enumerate(zip(feats, masks))]
    for i in range(n - 1, 0, -1):
        laterals[i - 1] = laterals[i - 1] + np.repeat(laterals[i], 2, axis=1)
    out = []
    for i in range(n):
        xp = np.pad(laterals[i], ((0, 0), (1, 1), (0, 0)))
        y = sum(xp[:, j:j + laterals[i].shape[1]] * dw[i][j] for j in range(3)) * masks[i]
        mu = y.mean(-1, keepdims=True)
        y = (y - mu) / np.sqrt(((y - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
        out.append(y * ln_g[i] + ln_b[i])
    return out


def test_fpn_neck_matches_numpy():
    from asl_tf.model.neck import FPN1D

    rng = np.random.RandomState(0)
    neck = FPN1D([6, 6, 6], 4)
    neck.build(None)
    for var in neck.weights:
        var.assign(rng.randn(*var.shape).astype(np.float32))
    feats = [rng.randn(2, 16 >> i, 6).astype(np.float32) for i in range(3)]
    masks = []
    for i in range(3):
        m = np.ones((2, 16 >> i, 1), np.float32)
        m[1, (11 >> i) + 1:] = 0
        masks.append(m)
    got, got_m = neck(feats, masks)
    want = _np_fpn(feats, masks,
                   [neck.lateral_convs[i].kernel.numpy()[0] for i in range(3)],
                   [neck.fpn_convs[i].kernel.numpy()[:, :, 0] for i in range(3)],
                   [neck.fpn_norms[i].gamma.numpy() for i in range(3)],
                   [neck.fpn_norms[i].beta.numpy() for i in range(3)])
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), w, atol=1e-5)
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip(got_m, masks))


def test_conv_backbone_and_stride4_model_run():
    from asl_tf.compat import actionformer as af

    base = {"backbone_arch": [2, 1, 2], "regression_range": [[0, 4], [4, 16], [16, 1e4]],
            "embd_dim": 8, "fpn_dim": 8, "head_dim": 8, "input_dim": 5, "num_classes": 2,
            "max_seq_len": 64, "n_head": 2, "train_cfg": {"droppath": 0.0}}
    x = np.random.RandomState(0).randn(1, 64, 5).astype(np.float32)
    mask = np.ones((1, 64), bool)
    conv = af.model_from_config(dict(base, backbone_type="conv"))
    out = af.forward(conv, x, mask)
    assert out["cls_logits"].shape == (1, 64 + 32 + 16, 2)
    assert "backbone.stem.0.conv1.conv.weight" in af.torch_name_map(conv)
    start1 = af.model_from_config(dict(base, fpn_start_level=1, fpn_type="fpn",
                                       regression_range=base["regression_range"][:2]))
    out = af.forward(start1, x, mask)
    assert start1.fpn_strides == [2, 4] and out["cls_logits"].shape == (1, 32 + 16, 2)
    np.testing.assert_array_equal(out["points"][:3, 0], [0, 2, 4])
    s4 = af.model_from_config(dict(base, scale_factor=4, n_mha_win_size=5))
    assert s4.fpn_strides == [1, 4, 16] and s4.max_div_factor == 64
    out = af.forward(s4, np.zeros((1, 64, 5), np.float32), np.ones((1, 64), bool))
    assert out["cls_logits"].shape == (1, 64 + 16 + 4, 2)
    np.testing.assert_array_equal(out["points"][64:66, 0], [0, 4])


def test_dropout_and_droppath_only_in_training():
    from asl_tf.compat import actionformer as af

    cfg = {"backbone_arch": [1, 1, 1], "regression_range": [[0, 4], [4, 1e4]], "n_head": 2,
           "n_mha_win_size": 5, "embd_dim": 8, "fpn_dim": 8, "head_dim": 8, "input_dim": 3,
           "num_classes": 2, "max_seq_len": 8,
           "train_cfg": {"droppath": 0.5, "dropout": 0.5}}
    m = af.model_from_config(cfg)
    names = af.torch_name_map(m)
    assert "backbone.stem.0.drop_path_attn.scale" in names
    np.testing.assert_allclose(names["backbone.stem.0.drop_path_mlp.scale"][0].numpy(), 1e-4)
    for _, (var, _, _) in names.items():  # make the residual branches matter
        var.assign(np.asarray(np.random.RandomState(0).randn(*var.shape), np.float32))
    x = {"feats": np.random.RandomState(1).randn(4, 8, 3).astype(np.float32),
         "mask": np.ones((4, 8), bool)}
    a, b = m(x, training=False), m(x, training=False)
    np.testing.assert_array_equal(np.asarray(a["cls_logits"]), np.asarray(b["cls_logits"]))
    c = m(x, training=True)
    assert np.abs(np.asarray(c["fpn_feats"]) - np.asarray(a["fpn_feats"])).max() > 1e-3


def test_every_layer_serializes():
    from asl_tf.model import backbone, heads, layers, neck

    instances = [
        layers.LayerNorm(epsilon=1e-5), layers.MaskedConv1D(4, 3, 2, depthwise=True),
        layers.Scale(0.5), layers.AffineDropPath(0.1),
        layers.MaskedMHCA(8, 2, 9, 2, use_rel_pe=True), layers.TransformerBlock(8, 2, 2, 9),
        layers.ConvBlock(8, 3, 2),
        backbone.ConvTransformerBackbone(5, 8, 2, 3, 32, (2, 1, 2), (9, 9, -1), use_abs_pe=True),
        backbone.ConvBackbone(5, 8, 3, (2, 1, 2)),
        neck.FPNIdentity([8, 8], 8), neck.FPN1D([8, 8], 4, start_level=1),
        heads.ClsHead(8, 8, 3, empty_cls=[1]), heads.RegHead(8, 8, 2),
    ]
    for layer in instances:
        cfg = layer.get_config()
        json.dumps(cfg)
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(clone) is type(layer) and clone.get_config() == cfg


def test_empty_cls_and_prior_bias():
    from asl_tf.model.heads import ClsHead

    head = ClsHead(4, 4, 3, prior_prob=0.01, empty_cls=[2])
    head.build(None)
    np.testing.assert_allclose(head.cls_head.bias.numpy(),
                               [-np.log(99), -np.log(99), -np.log((1 - 1e-6) / 1e-6)], rtol=1e-6)


def test_geometry_from_golden_config():
    """From the reference's merged model config, our geometry helpers give the values the
    reference recorded beside it (visible_config.json): strides, per-level windows,
    max_div_factor and the padded length of the 300-step long video (inputs: 512)."""
    from asl_tf.data.pipeline import eval_padded_length, max_div_factor

    meta = json.loads((FIXTURES / "golden" / "model" / "visible_config.json").read_text())
    cfg = meta["config_model (merged, as passed to make_meta_arch)"]
    div = max_div_factor(cfg)
    assert div == meta["max_div_factor"] == 256
    n_levels = cfg["backbone_arch"][-1] + 1
    assert [cfg["scale_factor"] ** i for i in range(n_levels)] == meta["fpn_strides"]
    assert [cfg["n_mha_win_size"]] * n_levels == meta["mha_win_size"]
    inp = np.load(FIXTURES / "golden" / "model" / "visible_inputs.npz")
    t_long = inp["long_feats"].shape[-1]
    assert eval_padded_length(t_long, cfg["max_seq_len"], div) == meta["long_video_padded_length"]
    assert meta["long_video_padded_length"] == inp["long_padded_feats"].shape[-1]
    assert eval_padded_length(inp["feats_v1"].shape[-1], cfg["max_seq_len"], div) == 256
