"""In-graph post-processing for the SavedModel `detect` signature (TensorFlow ops).

This is the server-side second implementation of `edge.postprocess` (the reference, numpy):
decode -> per-level threshold + top-k -> per-class (or class-agnostic) NMS -> seconds.
Differences by construction, verified in tests against `edge.postprocess`:
- NMS uses `tf.image.non_max_suppression_with_scores` on segments written as boxes
  `[0, x1, 1, x2]`; IoU there has area `x2 - x1` (the reference adds 1e-6).
- TF's Gaussian soft-NMS decays by `exp(-0.5 * iou^2 / s)`: we pass `s = sigma / 2` for the
  reference's `exp(-iou^2 / sigma)`, and `iou_threshold = 1.0` so that TF's hard suppression
  (IoU > threshold) never fires in soft mode.
- Hard NMS suppresses at IoU > threshold (the reference: >=); scores must be > min_score.
"""
import tensorflow as tf


def pad_rule(t, max_seq_len, max_div_factor):
    """Padded length of a video of t frames: max_seq_len if t <= max_seq_len, else the next
    multiple of max_div_factor (int32 scalar tensor)."""
    t = tf.cast(t, tf.int32)
    d = tf.constant(int(max_div_factor), tf.int32)
    longer = ((t + d - 1) // d) * d
    return tf.where(t <= int(max_seq_len), tf.constant(int(max_seq_len), tf.int32), longer)


def _decode_level(logits, offsets, mask, stride, cfg):
    """One level: logits [T_l, K], offsets [T_l, 2], mask [T_l] bool -> segs [n,2], scores, labels."""
    k = tf.shape(logits)[1]
    prob = tf.sigmoid(logits) * tf.cast(mask, tf.float32)[:, None]
    flat = tf.reshape(prob, [-1])
    cand = tf.where(flat > float(cfg["pre_nms_thresh"]))[:, 0]
    cand_scores = tf.gather(flat, cand)
    n = tf.minimum(tf.size(cand_scores), int(cfg["pre_nms_topk"]))
    top = tf.math.top_k(cand_scores, k=n, sorted=True)
    idx = tf.cast(tf.gather(cand, top.indices), tf.int32)
    pt = idx // k
    labels = idx % k
    s = float(stride)
    t = tf.cast(pt, tf.float32) * s
    off = tf.gather(offsets, pt)
    segs = tf.stack([t - off[:, 0] * s, t + off[:, 1] * s], axis=1)
    keep = (segs[:, 1] - segs[:, 0]) > float(cfg["duration_thresh"])
    return (tf.boolean_mask(segs, keep), tf.boolean_mask(top.values, keep),
            tf.boolean_mask(labels, keep))


def decode(cls_logits, offsets, level_lengths, strides, input_mask, cfg):
    """cls_logits [ΣT_l, K], offsets [ΣT_l, 2], input_mask [T] bool -> candidates on the grid."""
    segs, scores, labels = [], [], []
    start = 0
    for length, stride in zip(level_lengths, strides):
        end = start + length
        lvl_mask = input_mask[::stride]
        s, p, l = _decode_level(cls_logits[start:end], offsets[start:end], lvl_mask, stride, cfg)
        segs.append(s)
        scores.append(p)
        labels.append(l)
        start = end
    return tf.concat(segs, 0), tf.concat(scores, 0), tf.concat(labels, 0)


def _nms_one(segs, scores, max_out, cfg, soft):
    """One NMS run; returns (kept indices, their output scores)."""
    boxes = tf.stack([tf.zeros_like(segs[:, 0]), segs[:, 0], tf.ones_like(segs[:, 0]), segs[:, 1]], 1)
    if soft:
        sel, sel_scores = tf.image.non_max_suppression_with_scores(
            boxes, scores, max_output_size=max_out, iou_threshold=1.0,
            score_threshold=float(cfg["min_score"]), soft_nms_sigma=float(cfg["nms_sigma"]) / 2.0)
    else:
        sel, sel_scores = tf.image.non_max_suppression_with_scores(
            boxes, scores, max_output_size=max_out, iou_threshold=float(cfg["iou_threshold"]),
            score_threshold=float(cfg["min_score"]), soft_nms_sigma=0.0)
    return sel, sel_scores


def _iou_matrix(a, b):
    """IoU between segments a [N,2] and b [M,2] with area = right - left (seg_voting)."""
    left = tf.maximum(a[:, None, 0], b[None, :, 0])
    right = tf.minimum(a[:, None, 1], b[None, :, 1])
    inter = tf.maximum(right - left, 0.0)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    return inter / union


def batched_nms(segs, scores, labels, num_classes, cfg):
    """NMS as the reference `batched_nms` (multiclass per class, or class-agnostic + voting)."""
    method = str(cfg.get("nms_method", "soft"))
    max_seg = int(cfg["max_seg_num"])
    if method == "none":
        order = tf.argsort(scores, direction="DESCENDING", stable=True)[:max_seg]
        return tf.gather(segs, order), tf.gather(scores, order), tf.gather(labels, order)
    soft = method == "soft"
    if bool(cfg.get("multiclass_nms", True)):
        out_idx, out_scores = [], []
        for c in range(int(num_classes)):  # class order = torch.unique order (ascending)
            cls_idx = tf.where(tf.equal(labels, c))[:, 0]
            sel, sel_scores = _nms_one(tf.gather(segs, cls_idx), tf.gather(scores, cls_idx),
                                       max_seg, cfg, soft)
            out_idx.append(tf.gather(cls_idx, sel))
            out_scores.append(sel_scores)
        idx = tf.concat(out_idx, 0)
        new_scores = tf.concat(out_scores, 0)
        new_segs = tf.gather(segs, idx)
    else:
        sel, new_scores = _nms_one(segs, scores, max_seg, cfg, soft)
        idx = tf.cast(sel, tf.int64)
        new_segs = tf.gather(segs, idx)
        vt = float(cfg.get("voting_thresh", 0.0) or 0.0)
        if vt > 0:
            iou = _iou_matrix(new_segs, segs)
            w = tf.cast(iou >= vt, tf.float32) * scores[None, :] * iou
            w = w / tf.reduce_sum(w, axis=1, keepdims=True)
            new_segs = tf.matmul(w, segs)
    new_labels = tf.gather(labels, idx)
    order = tf.argsort(new_scores, direction="DESCENDING", stable=True)[:max_seg]
    return tf.gather(new_segs, order), tf.gather(new_scores, order), tf.gather(new_labels, order)


def to_seconds(segs, fps, feat_stride, num_frames, duration):
    """Grid units -> seconds, clamped to [0, duration]."""
    sec = (segs * feat_stride + 0.5 * num_frames) / fps
    return tf.clip_by_value(sec, 0.0, duration)


def make_detect_fn(model, input_dim):
    """A tf.function(feats [T, C] f32, fps, feat_stride, num_frames, duration) -> detections.

    Returns {"segments" [N, 2] seconds, "scores" [N], "labels" [N] int32}, N <= max_seg_num.
    The video is padded inside the graph by the reference eval rule (pad_rule).
    """
    cfg = dict(model.test_cfg)
    strides = [int(s) for s in model.fpn_strides]
    k = int(model.num_classes)
    max_len, div = int(model.max_seq_len), int(model.max_div_factor)

    @tf.function(input_signature=[tf.TensorSpec([None, int(input_dim)], tf.float32, name="feats"),
                                  tf.TensorSpec([], tf.float32, name="fps"),
                                  tf.TensorSpec([], tf.float32, name="feat_stride"),
                                  tf.TensorSpec([], tf.float32, name="num_frames"),
                                  tf.TensorSpec([], tf.float32, name="duration")])
    def detect(feats, fps, feat_stride, num_frames, duration):
        t = tf.shape(feats)[0]
        t_pad = pad_rule(t, max_len, div)
        x = tf.pad(feats, [[0, t_pad - t], [0, 0]])[None]
        mask = tf.range(t_pad) < t
        out = model({"feats": x, "mask": mask[None]}, training=False)
        lengths = [t_pad // s for s in strides]
        segs, scores, labels = decode(out["cls_logits"][0], out["offsets"][0], lengths, strides,
                                      mask, cfg)
        segs, scores, labels = batched_nms(segs, scores, labels, k, cfg)
        return {"segments": to_seconds(segs, fps, feat_stride, num_frames, duration),
                "scores": scores, "labels": tf.cast(labels, tf.int32)}

    return detect
