"""The Action Sensitivity Evaluator of ASL (class level, instance level) and the ASCL loss.

Everything is `keras.ops`, vectorised over the batch and the padded GT axis (no Python loop
per instance), and each part sits behind an `asl` config switch (`ASLConfig`); with all of
them off the detector trains exactly as ActionFormer.

Class level (`class_level`, the authors' Ego4D code): per class three Gaussians
`g(x; mu, sigma) = exp(-(x - mu)^2 / (2 sigma^2))`, classification (mu 0, sigma 1),
start / end (mu -0.5 / +0.5, sigma 1), evaluated at `x = (c - t) / (s * len)` for a positive
point t of stride s assigned to the GT of centre c and length len, with that GT's class.
`w_cls = g_cls`, `w_reg = (g_start + g_end) / 2 * g_cls` at positives, 1 elsewhere.

- `class_mode="authors"`: exactly the above with raw `sigma` parameters, learnt through the
  weights (and decayed by AdamW like the authors'). Nothing keeps the weights up: the loss
  falls by shrinking them, so `sigma -> 0` and `|x - mu|` grows, driving the weighted loss to 0.
- `class_mode="normalized"` (DEFAULT): `sigma = sigma_min + softplus(rho)` (always > 0.05)
  and each weight is divided by its mean over the positive points of the same GT instance,
  so every instance keeps total weight = its number of positive points, exactly as in
  ActionFormer; the Gaussians only redistribute weight inside an instance and the loss
  cannot collapse (computed in log space, shifted by the instance max, so it never
  underflows). Measured (tests/test_sensitivity.py::test_authors_mode_collapses: the
  golden batch's fixed head outputs, Adam lr 0.1 on the Gaussian parameters only, 100
  steps): authors' mode, loss 0.792 -> 0.176 and the mean positive w_cls 0.995 -> 0.0000
  (the loss is switched off, nothing is learnt); normalised mode, mean w_cls stays 1.0000
  and the loss moves only 0.841 -> 0.785 (weight redistributed inside instances). Sensitivity parameters
  are excluded from weight decay in the normalised mode, included in the authors' mode.

Instance level (`instance_level`; not in the authors' code, built from the paper): a light
branch on the neck features, two masked convs (k3, ReLU in between) shared across levels,
predicts `q = (q_cls, q_loc)` in (0, 1) per point (`QualityBranch`, model output
`"quality"`). Targets without gradient: `q_cls* = sigmoid(logit of the assigned GT class)`,
`q_loc* = tIoU(decoded segment, assigned GT)` (1D IoU of the offsets, same anchor point).
Loss: `sum over positives of (q_cls - q_cls*)^2 + (q_loc - q_loc*)^2`, divided by the loss
normaliser (~ mean over positives; exact under tf.distribute), weight `quality_loss_weight`.
Combined sensitivity at positives (q detached): `combine="product"`: `h_cls = w_cls * q_cls`,
`h_reg = w_reg * q_loc`; `combine="sum"`: `h = w + q`. h replaces w in the focal / DIoU loss.
`quality_normalize=True` (DEFAULT) first divides q by its mean over the positive points of the
same GT instance (as the class-level normalised mode does), so q redistributes weight inside an
instance and never scales an instance's total. Why: measured with bench/ablation.py (synthetic
features on real THUMOS'14 timings, 3 seeds, 280 steps), the raw product scored 14.7 +- 2.0
average mAP against the baseline's 28.3 +- 2.9: q_cls* copies the model's own low, flat early
probability (0.09-0.18), so the raw product shrinks the positives' focal loss 6-10x while the
negatives keep full weight, a self-reinforcing loss of recall. `quality_normalize=False` is
the raw product of the paper's description.

ASCL (`contrastive`; paper's description, the authors' code has only a disabled variant):
- per valid GT instance (label >= 0 with >= 1 positive point), the classification feature
  `f_cls` is the mean neck feature (`fpn_feats`) over its `topk` positive points with the
  highest `h_cls`; the localization feature `f_loc` is the mean over the `topk` positive
  points with the highest `h_reg` in the start half (t <= c) and the `topk` in the end half
  (t > c), i.e. near each boundary (up to 2*topk points);
- background: per video the `num_bg_samples` valid points outside every GT (t not in any
  [s, e]) with the highest detached max class logit (hard negatives; deterministic);
- all features L2-normalised; anchors are the 2 features of every instance; the positives
  of an anchor are the other features of instances of the same class anywhere in the batch
  (its twin included); the negatives are every other feature (other classes, background);
- loss (SupCon / InfoNCE, temperature `temperature`): for anchor i,
  `-mean_{p in P(i)} [s_ip/T - logsumexp_{j != i} s_ij/T]`, averaged over anchors; 0 when the
  batch has no instance. Weight `contrastive_weight`.
"""
import math

import keras
from keras import ops

from asl_tf.config import asl_model_defaults

SIGMA_MIN = 0.05

#: defaults of a model's `asl` section: `asl_tf.config.ASLConfig`'s values, switches off
DEFAULTS = asl_model_defaults()


def asl_options(cfg):
    """Normalise the `asl` section (dict, dataclass or None) to a dict; a switch not given is
    off (None = plain ActionFormer), every other value defaults to `ASLConfig`'s."""
    out = dict(DEFAULTS)
    if cfg is None:
        return out
    if not isinstance(cfg, dict):
        import dataclasses
        cfg = dataclasses.asdict(cfg)
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"asl: unknown key(s) {sorted(unknown)}")
    out.update(cfg)
    if out["class_mode"] not in ("normalized", "authors"):
        raise ValueError(f"asl.class_mode: expected normalized|authors, got {out['class_mode']!r}")
    if out["combine"] not in ("product", "sum"):
        raise ValueError(f"asl.combine: expected product|sum, got {out['combine']!r}")
    return out


def _inv_softplus(y):
    return math.log(math.expm1(y))


@keras.saving.register_keras_serializable(package="asl_tf")
class ClassSensitivity(keras.layers.Layer):
    """Per-class learnable Gaussians (class-level action sensitivity).

    Weights (each `[K]`): `mu_cls`, `mu_start`, `mu_end` and the sigmas; in the normalised
    mode the sigmas are stored as `rho` with `sigma = 0.05 + softplus(rho)`.
    `gaussians(x [B,P], cls [B,P] int) -> (g_cls, g_start, g_end)` each `[B, P]`.
    """

    def __init__(self, num_classes, mode="normalized", **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.mode = mode

    def build(self, input_shape=None):
        k = self.num_classes
        const = keras.initializers.Constant
        s0 = 1.0 if self.mode == "authors" else _inv_softplus(1.0 - SIGMA_MIN)
        self.mu_cls = self.add_weight(name="mu_cls", shape=(k,), initializer="zeros")
        self.mu_start = self.add_weight(name="mu_start", shape=(k,), initializer=const(-0.5))
        self.mu_end = self.add_weight(name="mu_end", shape=(k,), initializer=const(0.5))
        self.sigma_cls = self.add_weight(name="sigma_cls", shape=(k,), initializer=const(s0))
        self.sigma_start = self.add_weight(name="sigma_start", shape=(k,), initializer=const(s0))
        self.sigma_end = self.add_weight(name="sigma_end", shape=(k,), initializer=const(s0))
        self.built = True

    def _sigma(self, raw):
        if self.mode == "authors":
            return raw
        return SIGMA_MIN + ops.softplus(raw)

    def log_gaussians(self, x, cls):
        """Log of the three Gaussians at `x` [B,P] for classes `cls` [B,P] -> 3 x [B,P]."""
        if not self.built:
            self.build()
        cls = ops.cast(cls, "int32")

        def lg(mu, sig):
            m = ops.take(ops.cast(mu, "float32"), cls)
            s = ops.take(ops.cast(self._sigma(sig), "float32"), cls)
            return -ops.square(x - m) / (2.0 * ops.square(s))

        return (lg(self.mu_cls, self.sigma_cls), lg(self.mu_start, self.sigma_start),
                lg(self.mu_end, self.sigma_end))

    def gaussians(self, x, cls):
        return tuple(ops.exp(v) for v in self.log_gaussians(x, cls))

    def call(self, x, cls):
        return ops.stack(self.gaussians(x, cls), axis=-1)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "mode": self.mode}


@keras.saving.register_keras_serializable(package="asl_tf")
class QualityBranch(keras.layers.Layer):
    """Instance-level quality branch: two masked k3 convs shared across pyramid levels.

    `call(feats, masks)`: lists of `[B, T_l, C]` features and `[B, T_l]` bool masks ->
    `[B, ΣT_l, 2]` (q_cls, q_loc) = sigmoid(conv2(relu(conv1(x)·m))) · m, levels concatenated.
    """

    def __init__(self, dim, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.kernel_size = int(kernel_size)
        self.conv1 = keras.layers.Conv1D(self.dim, self.kernel_size, padding="same", name="conv1")
        self.conv2 = keras.layers.Conv1D(2, self.kernel_size, padding="same", name="conv2")

    def build(self, input_shape):
        shape = input_shape[0] if isinstance(input_shape, (list, tuple)) and \
            isinstance(input_shape[0], (list, tuple)) else input_shape
        self.conv1.build(tuple(shape))
        self.conv2.build(tuple(shape[:-1]) + (self.dim,))
        self.built = True

    def call(self, feats, masks):
        outs = []
        for f, m in zip(feats, masks):
            mf = ops.cast(m, f.dtype)
            mf = mf[..., None] if len(mf.shape) == 2 else mf
            h = ops.relu(self.conv1(f) * mf)
            q = ops.sigmoid(self.conv2(h)) * mf
            outs.append(q)
        return ops.concatenate(outs, axis=1)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "kernel_size": self.kernel_size}


def _instance_normalized(log_w, gt_index, pos, num_gt):
    """`exp(log_w)` [B,P] divided by its mean over the positive points of the same instance.

    Computed in log space (shifted by the instance max), so it never underflows to 0/0.
    """
    sel = ops.one_hot(ops.maximum(gt_index, 0), num_gt, dtype="float32")
    sel = sel * ops.cast(pos, "float32")[..., None]                 # [B, P, G]
    inst_max = ops.max(ops.where(sel > 0, log_w[..., None], -1e30), axis=1)   # [B, G]
    inst_max = ops.stop_gradient(ops.where(inst_max > -1e29, inst_max, 0.0))
    shift = ops.sum(sel * inst_max[:, None, :], axis=-1)            # [B, P]
    w = ops.exp(ops.where(pos, log_w - shift, 0.0))
    count = ops.sum(sel, axis=1)                                    # [B, G]
    mean = ops.sum(sel * w[..., None], axis=1) / ops.maximum(count, 1.0)
    point_mean = ops.sum(sel * mean[:, None, :], axis=-1)
    return w / ops.where(pos, point_mean, 1.0)


def segment_iou(pred, target):
    """1D IoU of offset pairs (left, right) sharing their anchor point: `[..., 2] -> [...]`."""
    inter = ops.minimum(pred[..., 0], target[..., 0]) + ops.minimum(pred[..., 1], target[..., 1])
    union = ops.sum(pred, -1) + ops.sum(target, -1) - inter
    return inter / ops.maximum(union, 1e-8)


def sensitivity_weights(model, asl, points, targets, pos, cls_logits, offsets, y_pred, normalizer):
    """Per-point loss weights from the evaluator.

    Returns `(h_cls [B,P], h_reg [B,P], extra)` where `extra` may hold `quality_loss`
    and the detached `h_cls`/`h_reg` used by the ASCL sampling. Non-positive points
    carry weight 1 (the loss applies weights only at positives).
    """
    extra = {}
    shape = ops.shape(pos)
    w_cls = ops.ones(shape, "float32")
    w_reg = ops.ones(shape, "float32")
    if asl["class_level"]:
        layer = model.class_sensitivity
        t = points[None, :, 0]
        stride = points[None, :, 3]
        length = ops.where(pos, targets["gt_length"], 1.0)
        x = (targets["gt_center"] - t) / (stride * length)
        l_cls, l_s, l_e = layer.log_gaussians(x, targets["gt_class"])
        num_gt = int(targets["num_gt"])  # static number of padded GT slots
        if asl["class_mode"] == "normalized" and num_gt > 0:
            # log of (g_s + g_e)/2 * g_cls, stable
            l_reg = ops.logaddexp(l_s, l_e) - math.log(2.0) + l_cls
            w_cls = _instance_normalized(l_cls, targets["gt_index"], pos, num_gt)
            w_reg = _instance_normalized(l_reg, targets["gt_index"], pos, num_gt)
        else:
            g_cls = ops.exp(l_cls)
            w_cls = g_cls
            w_reg = 0.5 * (ops.exp(l_s) + ops.exp(l_e)) * g_cls
        w_cls = ops.where(pos, w_cls, 1.0)
        w_reg = ops.where(pos, w_reg, 1.0)
    h_cls, h_reg = w_cls, w_reg
    if asl["instance_level"]:
        if "quality" not in y_pred:
            raise ValueError("asl.instance_level is on but the model has no 'quality' output")
        q = ops.cast(y_pred["quality"], "float32")
        cls_idx = ops.one_hot(targets["gt_class"], ops.shape(cls_logits)[-1], dtype="float32")
        q_cls_t = ops.stop_gradient(ops.sum(ops.sigmoid(cls_logits) * cls_idx, -1))
        q_loc_t = ops.stop_gradient(segment_iou(offsets, targets["reg_targets"]))
        posf = ops.cast(pos, "float32")
        err = ops.square(q[..., 0] - q_cls_t) + ops.square(q[..., 1] - q_loc_t)
        extra["quality_loss"] = ops.sum(err * posf) / normalizer
        qd = ops.stop_gradient(q)
        num_gt = int(targets["num_gt"])  # static number of padded GT slots
        if asl["quality_normalize"] and num_gt > 0:
            log_q = ops.log(ops.maximum(qd, 1e-6))
            qd = ops.stack([_instance_normalized(log_q[..., i], targets["gt_index"], pos, num_gt)
                            for i in range(2)], axis=-1)
        if asl["combine"] == "product":
            h_cls, h_reg = w_cls * qd[..., 0], w_reg * qd[..., 1]
        else:
            h_cls, h_reg = w_cls + qd[..., 0], w_reg + qd[..., 1]
        h_cls = ops.where(pos, h_cls, 1.0)
        h_reg = ops.where(pos, h_reg, 1.0)
    extra["h_cls"] = ops.stop_gradient(h_cls)
    extra["h_reg"] = ops.stop_gradient(h_reg)
    if not asl["class_level"] and not asl["instance_level"]:
        return None, None, extra
    return h_cls, h_reg, extra


def _topk_mean(feats, score, member, k):
    """Mean of `feats` [B,P,C] over the top-k `score` points among `member` [B,G,P].

    Returns `(sum [B,G,C], count [B,G])` so callers can pool several sets.
    """
    neg = ops.cast(-1e30, "float32")
    s = ops.where(member, score[:, None, :], neg)                   # [B, G, P]
    k = min(int(k), int(s.shape[-1]))
    vals, idx = ops.top_k(s, k=k)                                   # [B, G, k]
    ok = ops.cast(vals > -1e29, "float32")
    b, g = ops.shape(idx)[0], ops.shape(idx)[1]
    flat = ops.reshape(idx, (b, -1))                                # [B, G*k]
    picked = ops.take_along_axis(feats, flat[..., None], axis=1)    # [B, G*k, C]
    picked = ops.reshape(picked, (b, g, k, ops.shape(feats)[-1]))
    return ops.sum(picked * ok[..., None], axis=2), ops.sum(ok, axis=2)


def ascl_loss(asl, fpn_feats, points, targets, pos, valid, gt_labels, h_cls=None, h_reg=None,
              cls_logits=None, gt_segments=None, replica=None):
    """Action Sensitive Contrastive Loss (see the module docstring for the exact sampling).

    Args:
        fpn_feats: `[B, P, C]` neck features (levels concatenated); points: `[P, 4]`.
        targets: `assign_labels` output (+ `num_gt`); pos / valid: `[B, P]` bool.
        gt_labels: `[B, G]` int (-1 padding); h_cls / h_reg: `[B, P]` detached sensitivities
            (None: 1 everywhere); cls_logits `[B, P, K]` for hard background sampling;
            gt_segments `[B, G, 2]` for the outside-every-GT test.
        replica: under a tf.distribute strategy, `{"gather": all-gather along axis 0 (with
            gradient), "sum": all-reduce sum, "index": replica id}`; the keys then come from the
            whole global batch and the result is this replica's share of the global mean
            (the replica shares sum to the one-device loss).
    Returns: scalar loss.
    """
    feats = ops.cast(fpn_feats, "float32")
    gt_labels = ops.cast(gt_labels, "int32")
    num_gt = int(gt_labels.shape[1])
    if num_gt == 0:
        return ops.sum(feats) * 0.0
    ones = ops.ones(ops.shape(pos), "float32")
    h_cls = ones if h_cls is None else ops.stop_gradient(ops.cast(h_cls, "float32"))
    h_reg = ones if h_reg is None else ops.stop_gradient(ops.cast(h_reg, "float32"))
    t = points[None, :, 0]
    gidx = ops.arange(num_gt, dtype="int32")
    member = ops.logical_and(pos[:, None, :], targets["gt_index"][:, None, :] == gidx[None, :, None])
    center = ops.sum(targets["gt_center"][:, None, :] * ops.cast(member, "float32"), -1) / \
        ops.maximum(ops.sum(ops.cast(member, "float32"), -1), 1.0)  # [B, G]
    start_half = ops.logical_and(member, t[:, None, :] <= center[..., None])
    end_half = ops.logical_and(member, t[:, None, :] > center[..., None])
    k = asl["topk"]
    s_cls, n_cls = _topk_mean(feats, h_cls, member, k)
    s_st, n_st = _topk_mean(feats, h_reg, start_half, k)
    s_en, n_en = _topk_mean(feats, h_reg, end_half, k)
    f_cls = s_cls / ops.maximum(n_cls, 1.0)[..., None]
    f_loc = (s_st + s_en) / ops.maximum(n_st + n_en, 1.0)[..., None]
    inst_ok = ops.logical_and(gt_labels >= 0, n_cls > 0)            # [B, G]

    # background: valid points outside every GT, hardest by detached max logit
    start = gt_segments[:, None, :, 0]
    end = gt_segments[:, None, :, 1]
    inside_any = ops.any(ops.logical_and(ops.logical_and(t[:, :, None] >= start, t[:, :, None] <= end),
                                         (gt_labels >= 0)[:, None, :]), axis=-1)
    bg = ops.logical_and(valid, ops.logical_not(inside_any))        # [B, P]
    hard = ops.stop_gradient(ops.max(ops.cast(cls_logits, "float32"), axis=-1))
    nb = min(int(asl["num_bg_samples"]), int(bg.shape[-1]))
    s_bg = ops.where(bg, hard, -1e30)
    vals, idx = ops.top_k(s_bg, k=nb)                               # [B, nb]
    bg_ok = vals > -1e29
    f_bg = ops.take_along_axis(feats, idx[..., None], axis=1)       # [B, nb, C]

    c = ops.shape(feats)[-1]
    anchors = ops.concatenate([ops.reshape(f_cls, (-1, c)), ops.reshape(f_loc, (-1, c))], 0)
    a_lab = ops.concatenate([ops.reshape(gt_labels, (-1,))] * 2, 0)
    a_ok = ops.concatenate([ops.reshape(inst_ok, (-1,))] * 2, 0)
    allf = ops.concatenate([anchors, ops.reshape(f_bg, (-1, c))], 0)
    all_ok = ops.concatenate([a_ok, ops.reshape(bg_ok, (-1,))], 0)
    all_lab = ops.concatenate([a_lab, ops.full((ops.shape(ops.reshape(bg_ok, (-1,)))[0],), -2, "int32")], 0)
    # L2 normalisation without sqrt at 0 (empty instances are all-zero rows: sqrt'(0) = inf
    # would turn their masked-out gradient into NaN)
    allf = allf * ops.rsqrt(ops.maximum(ops.sum(ops.square(allf), -1, keepdims=True), 1e-24))
    na = ops.shape(anchors)[0]
    queries = allf[:na]
    offset = 0
    if replica is not None:
        # keys from every replica: the same positives / negatives as one device would see
        n_local = ops.shape(allf)[0]
        offset = ops.cast(replica["index"], "int32") * n_local
        allf = replica["gather"](allf)
        all_ok = ops.cast(replica["gather"](ops.cast(all_ok, "int32")), "bool")
        all_lab = replica["gather"](all_lab)
    sim = ops.matmul(queries, ops.transpose(allf)) / asl["temperature"]   # [Na, N]
    n_all = ops.shape(allf)[0]
    not_self = ops.arange(n_all, dtype="int32")[None, :] != (ops.arange(na, dtype="int32")[:, None] + offset)
    usable = ops.logical_and(not_self, all_ok[None, :])
    sim = ops.where(usable, sim, -1e9)
    log_den = ops.logsumexp(sim, axis=-1, keepdims=True)
    log_prob = sim - log_den
    posm = ops.logical_and(usable, a_lab[:, None] == all_lab[None, :])
    posm = ops.logical_and(posm, a_ok[:, None])
    posf = ops.cast(posm, "float32")
    n_pos = ops.sum(posf, -1)
    per_anchor = -ops.sum(log_prob * posf, -1) / ops.maximum(n_pos, 1.0)
    has = ops.cast(n_pos > 0, "float32")
    count = ops.sum(has)
    if replica is not None:
        count = replica["sum"](count)
    return ops.sum(per_anchor * has) / ops.maximum(count, 1.0)


def attach(model):
    """Create the ASL layers on `model` (from `ASLDetector._build_asl`, before build).

    Sets `model.class_sensitivity` (`ClassSensitivity` or None) and `model.quality_branch`
    (`QualityBranch` or None) from `model.asl_cfg`; validates the section.
    """
    asl = asl_options(getattr(model, "asl_cfg", None))
    model.class_sensitivity = None
    model.quality_branch = None
    if asl["class_level"]:
        model.class_sensitivity = ClassSensitivity(model.num_classes, mode=asl["class_mode"],
                                                   name="class_sensitivity")
        model.class_sensitivity.build()
    if asl["instance_level"]:
        dim = int(model.model_dict()["fpn_dim"]) if hasattr(model, "_cfg") else int(model.fpn_dim)
        model.quality_branch = QualityBranch(dim, name="quality_branch")
        model.quality_branch.build((None, None, dim))
    return asl


def quality_output(model, fpn_feats, fpn_masks):
    """The `"quality"` model output `[B, ΣT_l, 2]` from per-level features / masks, or None."""
    if getattr(model, "quality_branch", None) is None:
        return None
    masks = [m[..., 0] if len(m.shape) == 3 else m for m in fpn_masks]
    return ops.cast(model.quality_branch(list(fpn_feats), masks), "float32")
