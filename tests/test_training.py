"""Training loop pieces on a tiny 2-level toy detector: train step, optimizer, callbacks."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import REPO
from training_toy import toy_batches, toy_model
from asl_tf import training
from asl_tf.assign import assign_labels


def _compiled(model, steps_per_epoch=2, eager=True, **tc):
    """Tests run eagerly (a graph trace costs ~30 s on 2 shared cores, an eager step ~1 s);
    the first test runs the traced graph step once."""
    train_cfg = {"epochs": 2, "warmup_epochs": 1, "clip_grad_l2norm": 1.0, "ema_decay": 0.9, **tc}
    opt = training.build_optimizer(model, {"learning_rate": 1e-2, "weight_decay": 0.05}, train_cfg, steps_per_epoch)
    model.compile(optimizer=opt, run_eagerly=eager)
    return opt


def _ds(x, y, batch=2):
    import tensorflow as tf
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


@pytest.mark.slow
def test_train_step_logs_normaliser_and_learning():
    model = toy_model()
    _compiled(model, eager=False)
    x, y = toy_batches(4)
    h = model.fit(_ds(x, y), epochs=4, verbose=0)
    for k in ("loss", "cls_loss", "reg_loss", "grad_norm", "loss_normalizer", "num_pos"):
        assert k in h.history, k
    assert h.history["loss"][-1] < h.history["loss"][0]
    # the normaliser followed the EMA of the per-step positive counts (updated before use)
    pts = model.points(32)
    n = 10.0
    valid = np.asarray(model(x)["mask"])
    for _ in range(4):
        for b in (slice(0, 2), slice(2, 4)):
            t = assign_labels(pts, y["gt_segments"][b], y["gt_labels"][b], 3)
            num_pos = float((np.asarray(t["pos_mask"]) & valid[b]).sum())
            n = 0.9 * n + 0.1 * max(num_pos, 1.0)
    np.testing.assert_allclose(float(model.loss_normalizer.numpy()), n, rtol=1e-5)


def test_weight_decay_rule_and_schedule():
    model = toy_model(asl={"class_level": True, "class_mode": "authors"})
    opt = _compiled(model, steps_per_epoch=10)
    decayed = {v.path for v in model.trainable_variables if opt._use_weight_decay(v)}
    for v in model.trainable_variables:
        if len(v.shape) >= 2:
            assert v.path in decayed, v.path
        elif "class_sensitivity" in v.path:
            assert v.path in decayed, v.path          # authors' mode decays the Gaussians
        else:
            assert v.path not in decayed, v.path      # biases, norms, scales
    model2 = toy_model(asl={"class_level": True})
    opt2 = _compiled(model2, steps_per_epoch=10)
    assert not any(opt2._use_weight_decay(v) for v in model2.class_sensitivity.trainable_variables)
    # warm-up from 0 over 10 steps to the peak, cosine to eta_min over 20 more
    sched = opt.learning_rate if callable(opt.learning_rate) else opt._learning_rate
    lr = [float(sched(s)) for s in (0, 5, 10, 20, 30)]
    np.testing.assert_allclose(lr, [0.0, 5e-3, 1e-2, 5e-3, 1e-8], rtol=1e-4, atol=1e-9)


def test_clip_and_grad_norm():
    """The logged norm is the unclipped global norm; the applied update uses the clipped one."""
    import tensorflow as tf
    x, y = toy_batches(2)
    moves = {}
    for clip in (1e-2, -1):
        keras.utils.set_random_seed(3)
        model = toy_model()
        built = training.build_optimizer(model, {"learning_rate": 1e-2}, {
            "epochs": 1, "warmup_epochs": 0, "clip_grad_l2norm": clip, "ema_decay": 0}, 1)
        # the config's clip reaches the TF train step (which clips), not the optimizer
        assert built.asl_clip_norm == clip and built.global_clipnorm is None
        opt = keras.optimizers.SGD(1.0)  # plain SGD: the update IS the (clipped) gradient
        opt.asl_clip_norm = built.asl_clip_norm
        model.compile(optimizer=opt, run_eagerly=True)
        before = [v.numpy() for v in model.trainable_variables]
        h = model.fit(_ds(x, y), epochs=1, verbose=0)
        delta = np.sqrt(sum(((b - v.numpy()) ** 2).sum() for b, v in zip(before, model.trainable_variables)))
        moves[clip] = (h.history["grad_norm"][0], delta)
    np.testing.assert_allclose(moves[-1][1], moves[-1][0], rtol=1e-4)    # unclipped: |update| = |g|
    assert moves[-1][0] > 0.1
    np.testing.assert_allclose(moves[1e-2][1], 1e-2, rtol=1e-3)           # clipped to 1e-2
    np.testing.assert_allclose(moves[1e-2][0], moves[-1][0], rtol=1e-5)   # logged before clipping


def test_nan_loss_stops_naming_the_step():
    model = toy_model()
    _compiled(model)
    x, y = toy_batches(4)
    x["feats"][2:] = np.nan
    with pytest.raises(training.NonFiniteLossError, match="at step 2"):
        model.fit(_ds(x, y), epochs=1, verbose=0, callbacks=[training.NonFiniteLossStop()])


def test_ema_weights_swap():
    model = toy_model()
    _compiled(model)
    x, y = toy_batches(4)
    model.fit(_ds(x, y), epochs=2, verbose=0)
    raw = [v.numpy() for v in model.trainable_variables]
    ema = [np.asarray(e) for e in model.optimizer._model_variables_moving_average]
    assert any(not np.allclose(a, b) for a, b in zip(raw, ema))  # fit did not overwrite
    with training.EMAWeights(model):
        for v, e in zip(model.trainable_variables, ema):
            np.testing.assert_array_equal(v.numpy(), e)
    for v, r in zip(model.trainable_variables, raw):
        np.testing.assert_array_equal(v.numpy(), r)


MIRRORED = r"""
import os, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
tf.config.experimental.enable_op_determinism()
import numpy as np, keras
from training_toy import toy_model, toy_batches
from asl_tf import training
out = {}
x, y = toy_batches(8, seed=3)
for name in ("multi_worker", "default", "mirrored"):   # multi_worker first: it must be created at start
    keras.utils.set_random_seed(1)
    strat = training.make_strategy(name)
    with strat.scope():
        m = toy_model(asl={"class_level": True, "instance_level": True, "contrastive": True})
        opt = training.build_optimizer(m, {"learning_rate": 1e-2, "weight_decay": 0.05},
                                       {"epochs": 2, "warmup_epochs": 1, "clip_grad_l2norm": 1.0}, 2)
        m.compile(optimizer=opt, run_eagerly=True)
    ds = training.distributable(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), strat)
    h = m.fit(ds, epochs=2, verbose=0)
    out[name] = {"replicas": strat.num_replicas_in_sync, "hist": h.history,
                 "w": [float(np.abs(v.numpy()).sum()) for v in m.trainable_variables],
                 "norm": float(m.loss_normalizer.numpy())}
print("JSON" + json.dumps(out))
"""


@pytest.mark.slow
def test_mirrored_two_cpus_and_multi_worker_match_one_device():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    res = subprocess.run([sys.executable, "-c", MIRRORED, str(REPO)], capture_output=True, text=True,
                         timeout=600, env=env)
    line = [l for l in res.stdout.splitlines() if l.startswith("JSON")]
    assert line, res.stderr[-3000:]
    import json
    out = json.loads(line[0][4:])
    one, two, mw = out["default"], out["mirrored"], out["multi_worker"]
    assert one["replicas"] == 1 and two["replicas"] == 2
    # MultiWorkerMirroredStrategy without TF_CONFIG: one local worker, one replica (variables,
    # dataset and step under the strategy) -> equal to the default strategy. A real cluster
    # (several hosts) is not tested here.
    assert mw["replicas"] == 1
    for k in ("loss", "grad_norm", "num_pos"):
        np.testing.assert_allclose(mw["hist"][k], one["hist"][k], rtol=1e-5, err_msg=k)
    np.testing.assert_allclose(mw["w"], one["w"], rtol=1e-5, atol=1e-4)
    for k in ("loss", "cls_loss", "reg_loss", "quality_loss", "ascl_loss", "grad_norm", "num_pos"):
        np.testing.assert_allclose(two["hist"][k], one["hist"][k], rtol=1e-5, err_msg=k)
    np.testing.assert_allclose(two["norm"], one["norm"], rtol=1e-6)
    # per-variable sum |w|; atol for the attention key biases, whose gradient is analytically
    # zero (float noise, which Adam turns into ~lr-sized steps either way)
    np.testing.assert_allclose(two["w"], one["w"], rtol=1e-5, atol=1e-4)


JAX_SCRIPT = r"""
import os, sys, json
os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
import numpy as np, keras
from test_losses import _gold, fake_model
from training_toy import toy_batches, TOY_MODEL
from asl_tf import losses, training
from asl_tf.model.detector import ASLDetector
points, x, y, y_pred, ref = _gold()
m = fake_model(points, 100.0)
out = losses.detector_loss(m, x, y, y_pred, training=True, return_components=True)
res = {"backend": keras.backend.backend(), "gold": {k: float(out[k]) for k in ref["loss_values"]},
       "norm": float(m.loss_normalizer.numpy())}

keras.utils.set_random_seed(0)
cfg = json.loads(json.dumps(TOY_MODEL)); cfg["asl"] = {"class_level": True, "instance_level": True, "contrastive": True}
d = ASLDetector(cfg)   # on JAX: Keras' own stateless train step -> compute_loss
d.compile(optimizer=training.build_optimizer(d, {"learning_rate": 1e-2}, {"epochs": 2, "warmup_epochs": 1}, 2))
xb, yb = toy_batches(4)
h = d.fit(xb, yb, batch_size=2, epochs=3, verbose=0, shuffle=False)
res["fit_loss"] = h.history["loss"]
res["fit_norm"] = float(d.loss_normalizer.numpy())
print("JSON" + json.dumps(res))
"""


@pytest.mark.slow
def test_jax_backend_losses_and_fit():
    """keras.ops code runs on JAX: golden losses, and model.fit through compute_loss
    (the normaliser update works inside Keras' stateless JAX step)."""
    import json
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="jax", CUDA_VISIBLE_DEVICES="")
    res = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(REPO)], capture_output=True, text=True,
                         timeout=600, env=env)
    line = [l for l in res.stdout.splitlines() if l.startswith("JSON")]
    assert line, res.stderr[-3000:]
    out = json.loads(line[0][4:])
    assert out["backend"] == "jax"
    from test_losses import _gold
    ref = _gold()[-1]
    for k, v in ref["loss_values"].items():
        np.testing.assert_allclose(out["gold"][k], v, rtol=1e-5, err_msg=k)
    np.testing.assert_allclose(out["norm"], ref["loss_normalizer_after_this_forward"], rtol=1e-6)
    assert all(np.isfinite(out["fit_loss"])) and out["fit_loss"][-1] < out["fit_loss"][0]
    # the EMA normaliser followed the positives of the 6 steps (3 epochs of 2 batches), counted
    # with the loop assignment reference of test_sensitivity on the hand-built toy points
    from test_sensitivity import _np_targets
    x, y = toy_batches(4)
    points = np.concatenate([np.stack([np.arange(0, 32, s), np.full(32 // s, lo),
                                       np.full(32 // s, hi), np.full(32 // s, s)], 1)
                             for s, (lo, hi) in ((1, (0, 4)), (2, (4, 10000)))]).astype(np.float32)
    valid = np.concatenate([x["mask"][:, ::1], x["mask"][:, ::2]], 1)
    n = 10.0
    for _ in range(3):
        for b in (slice(0, 2), slice(2, 4)):
            t = _np_targets(points, {"gt_segments": y["gt_segments"][b],
                                     "gt_labels": y["gt_labels"][b]}, num_classes=3)
            n = 0.9 * n + 0.1 * max(float((t["pos_mask"] & valid[b]).sum()), 1.0)
    np.testing.assert_allclose(out["fit_norm"], n, rtol=1e-5)


def test_mixed_bfloat16_step():
    """The bf16 policy trains (losses in float32, variables float32) with ASL on."""
    try:
        assert training.set_precision("mixed_bfloat16") == "mixed_bfloat16"
        model = toy_model(asl={"class_level": True, "instance_level": True, "contrastive": True})
        _compiled(model)
        x, y = toy_batches(2)
        h = model.fit(_ds(x, y), epochs=2, verbose=0)
        assert all(np.isfinite(h.history["loss"]))
        assert model.trainable_variables[0].dtype == "float32"
        assert "float32" in str(model(x)["cls_logits"].dtype)
    finally:
        training.set_precision("off")
    with pytest.raises(ValueError, match="mixed_precision"):
        training.set_precision("fp8")


@pytest.mark.slow
def test_remat_keeps_gradients_and_refuses_dropout():
    """`train_cfg.remat` recomputes attention/MLP in the backward pass: same gradients."""
    import json
    import tensorflow as tf
    from training_toy import TOY_MODEL
    from asl_tf.model.detector import build_detector
    cfg = json.loads(json.dumps(TOY_MODEL))
    cfg["backbone_arch"] = [2, 1, 1]          # a stride-1 and a stride-2 block
    model = build_detector(cfg)
    x, _ = toy_batches(2)
    x = {"feats": tf.constant(x["feats"]), "mask": tf.constant(x["mask"])}
    rng = np.random.default_rng(1)
    out0 = model(x)
    w_cls = tf.constant(rng.normal(size=out0["cls_logits"].shape).astype(np.float32))
    w_off = tf.constant(rng.normal(size=out0["offsets"].shape).astype(np.float32))

    def grads():
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = tf.reduce_sum(out["cls_logits"] * w_cls) + tf.reduce_sum(out["offsets"] * w_off)
        return tape.gradient(loss, model.trainable_variables)

    ref = [g.numpy() for g in tf.function(grads)()]
    assert training.set_remat(model, True) == 2
    got = [g.numpy() for g in tf.function(grads)()]
    training.set_remat(model, False)
    assert len(got) == len(ref)
    for a, b, v in zip(got, ref, model.trainable_variables):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(b).max()),
                                   err_msg=v.path)
    dropout = toy_model()
    for layer in dropout._flatten_layers(include_self=False, recursive=True):
        if type(layer).__name__ == "TransformerBlock":
            layer.attn_pdrop = 0.1
    with pytest.raises(ValueError, match="remat needs attn_pdrop"):
        training.set_remat(dropout, True)


@pytest.mark.slow
def test_mixed_float16_step_uses_loss_scaling():
    """mixed_float16 (the GPU flag) runs on CPU too: Keras wraps the optimizer in a
    LossScaleOptimizer, the step unscales, and the float32 variables learn."""
    try:
        assert training.set_precision("mixed_float16") == "mixed_float16"
        model = toy_model(asl={"class_level": True, "instance_level": True, "contrastive": True})
        _compiled(model)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        before = [v.numpy().copy() for v in model.trainable_variables]
        x, y = toy_batches(4)
        h = model.fit(_ds(x, y), epochs=3, verbose=0)
        assert all(np.isfinite(h.history["loss"]))
        assert h.history["loss"][-1] < h.history["loss"][0]
        assert np.isfinite(h.history["grad_norm"]).all()
        assert model.trainable_variables[0].dtype == "float32"
        moved = [np.abs(v.numpy() - b).max() for v, b in zip(model.trainable_variables, before)]
        assert max(moved) > 0
        assert "float32" in str(model(x)["cls_logits"].dtype)
    finally:
        training.set_precision("off")
    # the logged gradient norm is unscaled: the same order as a float32 run's first epoch
    keras.utils.set_random_seed(0)
    ref = toy_model(asl={"class_level": True, "instance_level": True, "contrastive": True})
    for v, b in zip(ref.trainable_variables, before):
        v.assign(b)
    _compiled(ref)
    h32 = ref.fit(_ds(x, y), epochs=1, verbose=0)
    ratio = h.history["grad_norm"][0] / h32.history["grad_norm"][0]
    assert 0.8 < ratio < 1.25, ratio
