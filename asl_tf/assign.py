"""Center-sampling label assignment of ActionFormer, in `keras.ops`, vectorised over batch and GT.

This is the reference's `label_points_single_video` for a whole padded batch at once, so it
runs inside the train step on every Keras backend (TensorFlow graph/XLA, JAX).

Semantics (all coordinates in feature-grid units, points shared across the batch):
- `left = t - s`, `right = e - t` for every point t and GT [s, e].
- Center sampling (`center_sample="radius"`): the point must lie strictly inside
  `[max(c - r*stride, s), min(c + r*stride, e)]`, c the GT centre; otherwise ("none") strictly
  inside [s, e].
- Regression range: `reg_lo <= max(left, right) <= reg_hi` (both inclusive).
- Among the candidate GTs the shortest wins; every GT with `len <= min_len + 1e-3` adds its
  one-hot label (clamped to 1): one point can carry several labels.
- The regression target is (left, right) of the first shortest GT, divided by the stride.
  As in the reference, points without a candidate still get the offsets of GT 0 (they are
  never used by a loss) and a video without GT gets all-zero targets.
- Padding GTs (label < 0) never match.
"""
from keras import ops

TIE_EPS = 1e-3  # reference rule: GTs within 1e-3 of the minimal length share the point


def assign_labels(points, gt_segments, gt_labels, num_classes, center_sample="radius",
                  center_sample_radius=1.5):
    """Assign classification and regression targets to every point of every video.

    Args:
        points: `[P, 4]` float32 `[t, reg_lo, reg_hi, stride]` (grid units), levels concatenated.
        gt_segments: `[B, G, 2]` float32 GT `[start, end]` in grid units.
        gt_labels: `[B, G]` int, `-1` marks padding.
        num_classes: K.
        center_sample: `"radius"` or `"none"`.
        center_sample_radius: radius in strides (1.5).

    Returns:
        dict with
        - `cls_targets` `[B, P, K]` float32 multi-hot (0/1),
        - `reg_targets` `[B, P, 2]` float32 (left, right) / stride,
        - `pos_mask` `[B, P]` bool: the point has at least one label (not masked by validity),
        - `gt_index` `[B, P]` int32: index of the assigned (first shortest) GT, -1 if none,
        - `gt_center`, `gt_length` `[B, P]` float32: centre and length of that GT (0 if none),
        - `gt_class` `[B, P]` int32: label of that GT (0 if none).
    """
    if center_sample not in ("radius", "none"):
        raise ValueError(f"train_cfg.center_sample: expected 'radius' or 'none', got {center_sample!r}")
    points = ops.convert_to_tensor(points, "float32")
    gt_segments = ops.cast(gt_segments, "float32")
    gt_labels = ops.cast(gt_labels, "int32")
    num_gt = gt_segments.shape[1]
    if num_gt is None:
        raise ValueError("gt_segments: the number of GT slots G must be static (pad to a fixed G)")
    if num_gt == 0 or gt_segments.shape[0] == 0:  # static G == 0 or B == 0: nothing to assign
        return _empty_targets(points, ops.shape(gt_segments)[0], num_classes)

    t = points[None, :, 0:1]            # [1, P, 1]
    reg_lo = points[None, :, 1:2]
    reg_hi = points[None, :, 2:3]
    stride = points[None, :, 3:4]
    start = gt_segments[:, None, :, 0]  # [B, 1, G]
    end = gt_segments[:, None, :, 1]
    valid_gt = (gt_labels >= 0)[:, None, :]  # [B, 1, G]

    left = t - start                    # [B, P, G]
    right = end - t
    lens = end - start                  # [B, 1, G]

    if center_sample == "radius":
        center = 0.5 * (start + end)
        t_min = center - stride * center_sample_radius
        t_max = center + stride * center_sample_radius
        cb_left = t - ops.maximum(t_min, start)
        cb_right = ops.minimum(t_max, end) - t
        inside = ops.minimum(cb_left, cb_right) > 0
    else:
        inside = ops.minimum(left, right) > 0
    max_dist = ops.maximum(left, right)
    in_range = ops.logical_and(max_dist >= reg_lo, max_dist <= reg_hi)
    cand = ops.logical_and(ops.logical_and(inside, in_range), valid_gt)  # [B, P, G]

    inf = ops.cast(float("inf"), "float32")
    cand_lens = ops.where(cand, ops.broadcast_to(lens, ops.shape(cand)), inf)
    min_len = ops.min(cand_lens, axis=-1, keepdims=True)               # [B, P, 1]
    has_pos = ops.any(cand, axis=-1)                                    # [B, P]
    tie = ops.logical_and(cand_lens <= min_len + TIE_EPS, cand)         # [B, P, G]

    onehot = ops.one_hot(ops.maximum(gt_labels, 0), num_classes, dtype="float32")
    onehot = onehot * ops.cast(gt_labels >= 0, "float32")[..., None]    # [B, G, K]
    cls_targets = ops.clip(ops.einsum("bpg,bgk->bpk", ops.cast(tie, "float32"), onehot), 0.0, 1.0)

    # first index of the minimum, deterministic on every backend (argmin ties are not
    # guaranteed to pick the first index); all-inf rows pick GT 0 like torch.min does
    gidx = ops.arange(num_gt, dtype="int32")[None, None, :]
    is_min = cand_lens == min_len
    first = ops.min(ops.where(is_min, gidx, num_gt), axis=-1)
    first = ops.where(first >= num_gt, 0, first)                        # [B, P]
    sel = ops.one_hot(first, num_gt, dtype="float32")                   # [B, P, G]

    reg = ops.stack([ops.sum(left * sel, -1), ops.sum(right * sel, -1)], axis=-1)
    reg = reg / points[None, :, 3:4]
    has_gt = ops.any(gt_labels >= 0, axis=-1)[:, None, None]            # [B, 1, 1]
    reg = ops.where(has_gt, reg, 0.0)

    gt_center = ops.sum(0.5 * (start + end) * sel, -1)
    gt_length = ops.sum(lens * sel, -1)
    gt_class = ops.sum(ops.cast(ops.maximum(gt_labels, 0), "float32")[:, None, :] * sel, -1)
    zero = ops.zeros_like(gt_center)
    return {
        "cls_targets": cls_targets,
        "reg_targets": reg,
        "pos_mask": has_pos,
        "gt_index": ops.where(has_pos, first, -1),
        "gt_center": ops.where(has_pos, gt_center, zero),
        "gt_length": ops.where(has_pos, gt_length, zero),
        "gt_class": ops.where(has_pos, ops.cast(gt_class, "int32"), 0),
    }


def _empty_targets(points, batch, num_classes):
    num_points = ops.shape(points)[0]
    zeros = ops.zeros((batch, num_points), "float32")
    return {
        "cls_targets": ops.zeros((batch, num_points, num_classes), "float32"),
        "reg_targets": ops.zeros((batch, num_points, 2), "float32"),
        "pos_mask": ops.zeros((batch, num_points), "bool"),
        "gt_index": ops.full((batch, num_points), -1, "int32"),
        "gt_center": zeros,
        "gt_length": zeros,
        "gt_class": ops.zeros((batch, num_points), "int32"),
    }
