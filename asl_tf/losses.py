"""Training losses of ActionFormer and ASL, in `keras.ops` (every Keras backend).

- `sigmoid_focal_loss`: the reference's (fvcore) focal loss, alpha 0.25, gamma 2, elementwise.
  Keras' `BinaryFocalCrossentropy` smooths labels as `0.5*ls` and averages over the last axis,
  while the reference smooths as `y*(1-ls) + ls/(K+1)` and sums; we write the few lines here.
- `ctr_diou_loss_1d`: 1D distance-IoU on (left, right) offsets, eps 1e-8 clamps.
- `update_normalizer`: `N <- m*N + (1-m)*max(num_pos, 1)`, updated BEFORE use.
- `base_losses`: cls / reg / final, optionally reweighted per point (ASL sensitivity).
- `detector_loss(model, x, y, y_pred, training)`: the whole loss of `ASLDetector`
  (assignment + base losses + the ASL terms of `asl_tf.model.sensitivity`), used by
  `ASLDetector.compute_loss` and by the TensorFlow `train_step` of `asl_tf.training`.

With every ASL switch off the result equals the reference ActionFormer loss
(`tests/fixtures/golden/model/visible_losses.json`, 1e-5 relative).
"""
from keras import ops

from asl_tf.assign import assign_labels
from asl_tf.config import train_defaults

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
NORMALIZER_MOMENTUM = 0.9
DIOU_EPS = 1e-8

def sigmoid_focal_loss(logits, targets, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA):
    """Elementwise sigmoid focal loss (fvcore / reference formula), same shape as `logits`.

    `ce = BCE-with-logits`, `p_t = p*y + (1-p)*(1-y)`, `loss = alpha_t * ce * (1-p_t)^gamma`
    with `alpha_t = alpha*y + (1-alpha)*(1-y)`; targets may be soft (label smoothing).
    """
    logits = ops.cast(logits, "float32")
    targets = ops.cast(targets, "float32")
    p = ops.sigmoid(logits)
    # stable BCE with logits: max(x,0) - x*y + log(1 + exp(-|x|))
    ce = ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))
    p_t = p * targets + (1.0 - p) * (1.0 - targets)
    loss = ce * ops.power(1.0 - p_t, gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1.0 - alpha) * (1.0 - targets)) * loss
    return loss


def ctr_diou_loss_1d(pred, target, eps=DIOU_EPS):
    """1D DIoU between offsets `pred` and `target` `[..., 2]` (left, right >= 0) -> `[...]`.

    `1 - I/U + (rho/len_c)^2`, `I = min(lp,lg)+min(rp,rg)`, `U = lp+rp+lg+rg-I`,
    `rho = 0.5*(rp-lp-rg+lg)`, `len_c = max(lp,lg)+max(rp,rg)`; U and len_c clamped at eps.
    """
    pred = ops.cast(pred, "float32")
    target = ops.cast(target, "float32")
    lp, rp = pred[..., 0], pred[..., 1]
    lg, rg = target[..., 0], target[..., 1]
    inter = ops.minimum(lp, lg) + ops.minimum(rp, rg)
    union = (lp + rp) + (lg + rg) - inter
    iou = inter / ops.maximum(union, eps)
    len_c = ops.maximum(lp, lg) + ops.maximum(rp, rg)
    rho = 0.5 * (rp - lp - rg + lg)
    return 1.0 - iou + ops.square(rho / ops.maximum(len_c, eps))


def update_normalizer(normalizer, num_pos, momentum=NORMALIZER_MOMENTUM):
    """EMA loss normaliser: `m*N + (1-m)*max(num_pos, 1)` (scalar float32)."""
    num_pos = ops.cast(num_pos, "float32")
    return momentum * ops.cast(normalizer, "float32") + (1.0 - momentum) * ops.maximum(num_pos, 1.0)


def base_losses(cls_logits, offsets, valid_mask, cls_targets, reg_targets, normalizer,
                label_smoothing=0.0, loss_weight=1.0, w_cls=None, w_reg=None):
    """ActionFormer cls / reg / final loss for a batch, optionally reweighted per point.

    Args:
        cls_logits: `[B, P, K]`; offsets: `[B, P, 2]` predicted (left, right) in strides.
        valid_mask: `[B, P]` bool (level masks).
        cls_targets: `[B, P, K]` multi-hot; reg_targets: `[B, P, 2]` stride-normalised.
        normalizer: scalar, the already-updated EMA normaliser.
        label_smoothing: ls, targets become `y*(1-ls) + ls/(K+1)`.
        loss_weight: > 0 fixed weight of reg; <= 0 auto-balance `stop_grad(cls)/max(reg,0.01)`.
        w_cls, w_reg: optional `[B, P]` per-point weights (1 where not given / not positive).

    Returns:
        dict `cls_loss`, `reg_loss`, `final_loss` (scalars), `pos_mask` `[B, P]`, `num_pos`.
    """
    num_classes = ops.shape(cls_logits)[-1]
    valid = ops.cast(valid_mask, "bool")
    pos = ops.logical_and(ops.sum(cls_targets, -1) > 0, valid)
    validf = ops.cast(valid, "float32")
    posf = ops.cast(pos, "float32")

    tgt = ops.cast(cls_targets, "float32") * (1.0 - label_smoothing) + label_smoothing / (num_classes + 1)
    focal = ops.sum(sigmoid_focal_loss(cls_logits, tgt), axis=-1)      # [B, P]
    if w_cls is not None:
        focal = focal * ops.where(pos, w_cls, 1.0)
    cls_loss = ops.sum(focal * validf) / normalizer

    one = ops.ones_like(ops.cast(reg_targets, "float32"))
    safe_pred = ops.where(pos[..., None], ops.cast(offsets, "float32"), one)
    safe_tgt = ops.where(pos[..., None], ops.cast(reg_targets, "float32"), one)
    diou = ctr_diou_loss_1d(safe_pred, safe_tgt)                        # [B, P]
    if w_reg is not None:
        diou = diou * ops.where(pos, w_reg, 1.0)
    reg_loss = ops.sum(diou * posf) / normalizer

    if loss_weight > 0:
        weight = loss_weight
    else:
        weight = ops.stop_gradient(cls_loss) / ops.maximum(ops.stop_gradient(reg_loss), 0.01)
    final = cls_loss + weight * reg_loss
    return {"cls_loss": cls_loss, "reg_loss": reg_loss, "final_loss": final,
            "pos_mask": pos, "num_pos": ops.sum(posf)}


def _train_cfg(model):
    """ActionFormer `train_cfg` of `model`: its own values over `asl_tf.config`'s defaults."""
    cfg = train_defaults()
    cfg.update({k: v for k, v in (getattr(model, "train_cfg", None) or {}).items() if v is not None})
    return cfg


def _asl_options(cfg):
    from asl_tf.model.sensitivity import asl_options  # local: avoids an import cycle
    return asl_options(cfg)


def _asl_cfg(model):
    return _asl_options(getattr(model, "asl_cfg", None))


def detector_loss(model, x, y, y_pred, training=False, num_pos_reduce=None,
                  return_components=False, num_replicas=1, assign_normalizer=None,
                  asl_override=None, replica=None):
    """The full training loss of `ASLDetector` (`compute_loss` delegates here).

    Args:
        model: the detector; uses `points(T)`, `num_classes`, `loss_normalizer`, `train_cfg`,
            `asl_cfg` and (with ASL on) `class_sensitivity`.
        x: `{"feats": [B,T,C], "mask": [B,T]}`; y: `{"gt_segments": [B,G,2] grid units,
            "gt_labels": [B,G] int, -1 padding}`; y_pred: the model's output dict.
        training: update `model.loss_normalizer` (EMA, before use) when True.
        num_pos_reduce: optional fn summing the positive count over replicas
            (tf.distribute); the normaliser then counts the global batch.
        return_components: return the dict of components instead of the scalar.
        assign_normalizer: write the updated normaliser into `model.loss_normalizer`
            (default: = training; the TF train step assigns it itself, replica-safe).
        asl_override: an `asl` section used instead of `model.asl_cfg` (e.g. all off for
            the reference-parity losses).
        replica: cross-replica helpers for the ASCL keys (see `sensitivity.ascl_loss`).
        num_replicas: replicas in sync; the per-replica ASCL mean is divided by it so the
            summed replica losses equal the global-batch loss.

    Returns:
        `final_loss` scalar, or a dict with `final_loss`, `cls_loss`, `reg_loss`,
        `num_pos`, `loss_normalizer` and the ASL terms that are on.
    """
    from asl_tf.model import sensitivity as sens

    cfg = _train_cfg(model)
    asl = _asl_cfg(model) if asl_override is None else _asl_options(asl_override)
    feats = x["feats"]
    seq_len = feats.shape[1]
    if seq_len is None:
        raise ValueError("detector_loss needs a static sequence length (feats.shape[1])")
    points = ops.convert_to_tensor(model.points(int(seq_len)), "float32")
    targets = assign_labels(points, y["gt_segments"], y["gt_labels"], model.num_classes,
                            center_sample=cfg["center_sample"],
                            center_sample_radius=cfg["center_sample_radius"])
    targets["num_gt"] = int(y["gt_labels"].shape[1])
    valid = ops.cast(y_pred["mask"], "bool")
    pos = ops.logical_and(targets["pos_mask"], valid)
    num_pos = ops.sum(ops.cast(pos, "float32"))
    if num_pos_reduce is not None:
        num_pos = num_pos_reduce(num_pos)
    normalizer = update_normalizer(model.loss_normalizer, num_pos)
    if training if assign_normalizer is None else assign_normalizer:
        model.loss_normalizer.assign(ops.cast(normalizer, model.loss_normalizer.dtype))
    normalizer = ops.stop_gradient(normalizer)

    cls_logits = ops.cast(y_pred["cls_logits"], "float32")
    offsets = ops.cast(y_pred["offsets"], "float32")
    w_cls = w_reg = None
    extra = {}
    if asl["class_level"] or asl["instance_level"]:
        w_cls, w_reg, extra = sens.sensitivity_weights(
            model, asl, points, targets, pos, cls_logits, offsets, y_pred, normalizer)
    out = base_losses(cls_logits, offsets, valid, targets["cls_targets"], targets["reg_targets"],
                      normalizer, label_smoothing=cfg["label_smoothing"],
                      loss_weight=cfg["loss_weight"], w_cls=w_cls, w_reg=w_reg)
    final = out["final_loss"]
    comps = {"cls_loss": out["cls_loss"], "reg_loss": out["reg_loss"]}
    if "quality_loss" in extra:
        comps["quality_loss"] = extra["quality_loss"]
        final = final + asl["quality_loss_weight"] * extra["quality_loss"]
    if asl["contrastive"]:
        ascl = sens.ascl_loss(asl, y_pred["fpn_feats"], points, targets, pos, valid,
                              y["gt_labels"], extra.get("h_cls"), extra.get("h_reg"),
                              cls_logits=cls_logits, gt_segments=ops.cast(y["gt_segments"], "float32"),
                              replica=replica)
        if replica is None:
            # a batch mean: under a strategy each replica holds 1/n of it (gradients are summed)
            ascl = ascl / num_replicas
        comps["ascl_loss"] = ascl
        final = final + asl["contrastive_weight"] * ascl
    if not return_components:
        return final
    comps.update({"final_loss": final, "num_pos": num_pos, "loss_normalizer": normalizer})
    return comps
