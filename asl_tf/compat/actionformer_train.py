"""Reference-comparable training losses and gradients of an `ASLDetector` (ASL switched off).

The acceptance interface (re-exported by `asl_tf.compat.actionformer`):

    losses = training_losses(model, feats, mask, gt_segments, gt_labels, loss_normalizer_init)
    grads = gradients(model, feats, mask, gt_segments, gt_labels, loss_normalizer_init)

`feats` `[B,T,C]` float32, `mask` `[B,T]` bool, `gt_segments` a list of `[N_b, 2]` float32
(feature-grid units), `gt_labels` a list of `[N_b]` int. The losses are ActionFormer's
(every ASL switch off, whatever the model's `asl` section says), computed on a deterministic
forward (training=False: dropout/droppath off, as in the goldens) with the loss normaliser
starting at `loss_normalizer_init` and updated once before use, like one reference training
forward. The model's own `loss_normalizer` is left unchanged.

`gradients` returns `{torch_name: np.ndarray}` of d final_loss / d parameter in the PyTorch
layout, for every parameter the model maps to a reference name (`torch_params`).
"""
import numpy as np

from asl_tf.compat.torch_names import torch_name_map
from asl_tf.config import ASL_OFF  # every ASL switch off


def _pad_gt(gt_segments, gt_labels):
    if len(gt_segments) != len(gt_labels):
        raise ValueError(f"gt_segments has {len(gt_segments)} videos but gt_labels has {len(gt_labels)}")
    b = len(gt_segments)
    g = max([len(np.asarray(s).reshape(-1, 2)) for s in gt_segments] + [1])
    segs = np.zeros((b, g, 2), np.float32)
    labels = np.full((b, g), -1, np.int32)
    for i, (s, lab) in enumerate(zip(gt_segments, gt_labels)):
        s = np.asarray(s, np.float32).reshape(-1, 2)
        lab = np.asarray(lab).reshape(-1)
        if len(s) != len(lab):
            raise ValueError(f"video {i}: {len(s)} gt_segments but {len(lab)} gt_labels")
        segs[i, :len(s)] = s
        labels[i, :len(lab)] = lab
    return {"gt_segments": segs, "gt_labels": labels}


def _inputs(feats, mask):
    feats = np.asarray(feats, np.float32)
    mask = np.asarray(mask).astype(bool)
    if feats.ndim != 3 or mask.shape != feats.shape[:2]:
        raise ValueError(f"feats must be [B,T,C] and mask [B,T]; got {feats.shape} and {mask.shape}")
    return {"feats": feats, "mask": mask}


def torch_variable_map(model):
    """`{torch_name: (variable, to_torch, from_torch)}` for the detector's parameters."""
    return torch_name_map(model)


def _loss_fn(model, x, y, init):
    from keras import ops

    from asl_tf import losses
    saved = float(np.asarray(model.loss_normalizer.numpy() if hasattr(model.loss_normalizer, "numpy")
                             else model.loss_normalizer))

    def run():
        model.loss_normalizer.assign(float(init))
        y_pred = model(x, training=False)
        return losses.detector_loss(model, x, y, y_pred, training=False, return_components=True,
                                    asl_override=ASL_OFF)

    def restore():
        model.loss_normalizer.assign(saved)

    return run, restore, ops


def training_losses(model, feats, mask, gt_segments, gt_labels, loss_normalizer_init):
    """ActionFormer losses as floats: cls_loss, reg_loss, final_loss, loss_normalizer_after."""
    x, y = _inputs(feats, mask), _pad_gt(gt_segments, gt_labels)
    run, restore, _ = _loss_fn(model, x, y, loss_normalizer_init)
    try:
        out = run()
    finally:
        restore()
    return {"cls_loss": float(np.asarray(out["cls_loss"])),
            "reg_loss": float(np.asarray(out["reg_loss"])),
            "final_loss": float(np.asarray(out["final_loss"])),
            "loss_normalizer_after": float(np.asarray(out["loss_normalizer"]))}


def gradients(model, feats, mask, gt_segments, gt_labels, loss_normalizer_init):
    """`{torch_name: d final_loss / d param}` in the PyTorch layouts (numpy float32)."""
    import keras
    x, y = _inputs(feats, mask), _pad_gt(gt_segments, gt_labels)
    run, restore, _ = _loss_fn(model, x, y, loss_normalizer_init)
    vmap = torch_variable_map(model)
    variables = [v for v, _, _ in vmap.values()]
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf
            with tf.GradientTape() as tape:
                tape.watch([v.value for v in variables])
                loss = run()["final_loss"]
            grads = tape.gradient(loss, [v.value for v in variables])
        elif backend == "jax":
            grads = _jax_grads(model, x, y, loss_normalizer_init, variables)
        else:
            raise ValueError(f"gradients: backend {backend!r} not supported (tensorflow, jax)")
    finally:
        restore()
    out = {}
    for (name, (var, to_torch, _)), g in zip(vmap.items(), grads):
        g = np.zeros(tuple(var.shape), np.float32) if g is None else np.asarray(g, np.float32)
        out[name] = np.asarray(to_torch(g), np.float32)
    return out


def _jax_grads(model, x, y, init, variables):
    import jax
    from keras import ops

    from asl_tf import losses
    tv = model.trainable_variables
    ntv = model.non_trainable_variables
    idx = {id(v): i for i, v in enumerate(tv)}

    def f(tvals):
        ntvals = [ops.convert_to_tensor(float(init)) if v is model.loss_normalizer else v.value for v in ntv]
        y_pred, _ = model.stateless_call(tvals, ntvals, x, training=False)
        import keras
        with keras.StatelessScope(state_mapping=list(zip(tv, tvals)) + list(zip(ntv, ntvals))):
            out = losses.detector_loss(model, x, y, y_pred, training=False, return_components=True,
                                       asl_override=ASL_OFF)
        return out["final_loss"]

    g = jax.grad(f)([v.value for v in tv])
    return [g[idx[id(v)]] if id(v) in idx else None for v in variables]
