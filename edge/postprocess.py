"""Post-processing of detector outputs: decoding, NMS (hard / Gaussian soft), voting, seconds.

The one numpy implementation used by training-time evaluation, the exports' verification and
the device runtime, so server and device produce the same detections from the same outputs.
Imports numpy and the standard library only (a device has no TensorFlow).

Semantics follow ActionFormer's inference path (`LocPointTransformer.inference_single_video`,
`postprocessing`, `libs/utils/nms.py` and its C++ extension `nms_cpu.cpp`), reimplemented
here without a compiled extension. Arithmetic is float32 like the reference, so decisions
taken at thresholds agree with it.

Units: segments are in feature-grid units (the input-feature index axis, no half-stride
offset) until `to_seconds`; scores are probabilities in [0, 1]; labels are int64 class ids.
"""
import numpy as np

__all__ = ["make_points", "decode", "batched_nms", "to_seconds", "postprocess",
           "sigmoid", "segment_iou_1d", "DEFAULT_TEST_CFG"]

# ActionFormer's test_cfg defaults (libs/core/config.py); a caller's dict overrides these.
DEFAULT_TEST_CFG = {
    "pre_nms_thresh": 0.001,
    "pre_nms_topk": 5000,
    "iou_threshold": 0.1,
    "min_score": 0.01,
    "max_seg_num": 1000,
    "nms_method": "soft",
    "nms_sigma": 0.5,
    "duration_thresh": 0.05,
    "multiclass_nms": True,
    "voting_thresh": 0.75,
}


def _cfg(test_cfg):
    cfg = dict(DEFAULT_TEST_CFG)
    if test_cfg:
        cfg.update({k: v for k, v in dict(test_cfg).items() if v is not None})
    return cfg


def sigmoid(x):
    """Numerically stable logistic function in the input's float dtype."""
    x = np.asarray(x)
    out = np.empty_like(x)
    pos = x >= 0
    # exp of a non-positive number never overflows.
    e = np.exp(-np.abs(x))
    one = x.dtype.type(1)
    out[pos] = one / (one + e[pos])
    out[~pos] = e[~pos] / (one + e[~pos])
    return out


def make_points(level_lengths, strides, regression_range):
    """Anchor points of every pyramid level, concatenated finest first.

    Args:
      level_lengths: `[L]` ints, T_l of each level.
      strides: `[L]` ints, stride s_l of each level (in input-feature steps).
      regression_range: `[L, 2]` (lo, hi) regression range per level (feature-grid units).
    Returns:
      `[ΣT_l, 4]` float32 rows `[t, reg_lo, reg_hi, stride]` with `t = i·s_l`.
    """
    level_lengths = [int(t) for t in level_lengths]
    if not (len(level_lengths) == len(strides) == len(regression_range)):
        raise ValueError(
            f"make_points: level_lengths ({len(level_lengths)}), strides ({len(strides)}) and "
            f"regression_range ({len(regression_range)}) must have one entry per level")
    rows = []
    for t_l, s_l, (lo, hi) in zip(level_lengths, strides, regression_range):
        pts = np.empty((t_l, 4), np.float32)
        pts[:, 0] = np.arange(t_l, dtype=np.float32) * np.float32(s_l)
        pts[:, 1] = lo
        pts[:, 2] = hi
        pts[:, 3] = s_l
        rows.append(pts)
    if not rows:
        return np.zeros((0, 4), np.float32)
    return np.concatenate(rows, axis=0)


def decode(cls_logits, offsets, mask, points, level_lengths, test_cfg):
    """Per-level thresholding, top-k and decoding of one video's head outputs.

    Args:
      cls_logits: `[ΣT_l, K]` float logits, levels concatenated finest first.
      offsets: `[ΣT_l, 2]` float distances to start/end, in stride units (after ReLU·scale).
      mask: `[ΣT_l]` bool validity of each point.
      points: `[ΣT_l, 4]` rows `[t, reg_lo, reg_hi, stride]` (see `make_points`).
      level_lengths: `[L]` ints, T_l of each level (they must sum to ΣT_l).
      test_cfg: dict with `pre_nms_thresh`, `pre_nms_topk`, `duration_thresh`.
    Returns:
      `(segs [N,2] float32 feature-grid units, scores [N] float32, labels [N] int64)`,
      levels concatenated in order; within a level sorted by descending score.
    """
    cfg = _cfg(test_cfg)
    cls_logits = np.asarray(cls_logits, np.float32)
    offsets = np.asarray(offsets, np.float32)
    points = np.asarray(points, np.float32)
    mask = np.asarray(mask).astype(bool)
    if cls_logits.ndim != 2:
        raise ValueError(f"decode: cls_logits must be [ΣT, K], got shape {cls_logits.shape}")
    total, num_classes = cls_logits.shape
    lengths = [int(t) for t in level_lengths]
    if sum(lengths) != total or offsets.shape != (total, 2) or mask.shape != (total,) \
            or points.shape != (total, 4):
        raise ValueError(
            f"decode: inconsistent shapes: cls_logits {cls_logits.shape}, offsets "
            f"{offsets.shape}, mask {mask.shape}, points {points.shape}, "
            f"sum(level_lengths)={sum(lengths)}")
    thresh = float(cfg["pre_nms_thresh"])
    topk = int(cfg["pre_nms_topk"])
    dur_thresh = float(cfg["duration_thresh"])

    segs_all, scores_all, labels_all = [], [], []
    start = 0
    for t_l in lengths:
        sl = slice(start, start + t_l)
        start += t_l
        prob = (sigmoid(cls_logits[sl]) * mask[sl, None].astype(np.float32)).reshape(-1)
        keep = np.flatnonzero(prob > thresh)
        kept = prob[keep]
        # Descending sort; stable so exact ties keep the flat index order t*K + c.
        order = np.argsort(-kept, kind="stable")[:max(topk, 0)]
        flat = keep[order]
        score = kept[order]
        pt = flat // num_classes
        cls = flat % num_classes
        off = offsets[sl][pt]
        pts = points[sl][pt]
        left = pts[:, 0] - off[:, 0] * pts[:, 3]
        right = pts[:, 0] + off[:, 1] * pts[:, 3]
        ok = (right - left) > dur_thresh
        segs_all.append(np.stack([left, right], axis=-1)[ok])
        scores_all.append(score[ok])
        labels_all.append(cls[ok].astype(np.int64))
    if not segs_all:
        return (np.zeros((0, 2), np.float32), np.zeros((0,), np.float32),
                np.zeros((0,), np.int64))
    return (np.concatenate(segs_all).astype(np.float32, copy=False),
            np.concatenate(scores_all).astype(np.float32, copy=False),
            np.concatenate(labels_all))


def segment_iou_1d(seg, segs, eps=1e-6):
    """IoU of one segment `[2]` against `segs [N,2]`, float32, as the C++ NMS computes it.

    Lengths get `+eps` (the reference adds 1e-6 to every area).
    """
    x1, x2 = seg[0], seg[1]
    area = (x2 - x1) + np.float32(eps)
    areas = (segs[:, 1] - segs[:, 0]) + np.float32(eps)
    inter = np.maximum(np.float32(0), np.minimum(x2, segs[:, 1]) - np.maximum(x1, segs[:, 0]))
    return inter / (area + areas - inter)


def _hard_nms(segs, scores, iou_threshold, min_score, max_num):
    """Greedy hard NMS; returns indices into the inputs, in descending score order."""
    idx = np.arange(scores.shape[0])
    if min_score > 0:
        idx = idx[scores > np.float32(min_score)]
    if idx.size == 0:
        return idx
    order = idx[np.argsort(-scores[idx], kind="stable")]
    s = segs[order]
    areas = (s[:, 1] - s[:, 0]) + np.float32(1e-6)
    alive = np.ones(order.size, bool)
    thr = np.float32(iou_threshold)
    n_kept = 0
    for i in range(order.size):
        if not alive[i]:
            continue
        n_kept += 1
        if max_num > 0 and n_kept >= max_num:
            break  # later rounds cannot change the first max_num kept segments
        rest = i + 1 + np.flatnonzero(alive[i + 1:])
        if rest.size == 0:
            break
        inter = np.maximum(np.float32(0), np.minimum(s[i, 1], s[rest, 1])
                           - np.maximum(s[i, 0], s[rest, 0]))
        ovr = inter / (areas[i] + areas[rest] - inter)
        alive[rest[ovr >= thr]] = False
    keep = order[alive]
    if max_num > 0:
        keep = keep[:max_num]
    return keep


def _soft_nms(segs, scores, sigma, min_score, max_num):
    """Gaussian soft-NMS with the exact control flow of the reference C++ `softnms_1d_cpu`.

    Each round selects the current maximum (first position on a tie, in the working array
    order), decays every remaining score by `exp(-iou²/sigma)` and drops those that fall
    below `min_score` by swapping the last element into their slot. The swaps change the
    working order, which decides ties, so they are reproduced (vectorised per round).
    Returns `(indices into the inputs, decayed scores)` in selection order.
    """
    n = scores.shape[0]
    x1 = segs[:, 0].copy()
    x2 = segs[:, 1].copy()
    sc = scores.astype(np.float32).copy()
    areas = (x2 - x1) + np.float32(1e-6)
    inds = np.arange(n)
    sig = np.float32(sigma)
    ms = np.float32(min_score)
    out_inds, out_scores = [], []
    i = 0
    while i < n:
        m = i + int(np.argmax(sc[i:n]))
        if m != i:  # swap the max into slot i
            for arr in (x1, x2, sc, areas, inds):
                arr[i], arr[m] = arr[m], arr[i]
        out_inds.append(inds[i])
        out_scores.append(sc[i])
        if max_num > 0 and len(out_inds) >= max_num:
            break  # the output is capped; later rounds cannot change earlier selections
        lo = i + 1
        if lo < n:
            inter = np.maximum(np.float32(0), np.minimum(x2[i], x2[lo:n])
                               - np.maximum(x1[i], x1[lo:n]))
            ovr = inter / (areas[i] + areas[lo:n] - inter)
            sc[lo:n] = sc[lo:n] * np.exp(-(ovr * ovr) / sig)
            drop = sc[lo:n] < ms
            if drop.any():
                k = int((~drop).sum())  # survivors fill slots lo .. lo+k-1
                holes = lo + np.flatnonzero(drop[:k])
                tail = lo + k + np.flatnonzero(~drop[k:])
                # Holes are filled, lowest first, by the survivors from the end, last first.
                src = tail[::-1]
                for arr in (x1, x2, sc, areas, inds):
                    arr[holes] = arr[src]
                n = lo + k
        i += 1
    keep = np.asarray(out_inds, np.int64)
    dec = np.asarray(out_scores, np.float32)
    if max_num > 0:
        keep, dec = keep[:max_num], dec[:max_num]
    return keep, dec


def _seg_voting(nms_segs, all_segs, all_scores, iou_threshold):
    """Refine kept segments as the IoU·score weighted mean of ALL input segments with
    IoU ≥ `iou_threshold` (reference `seg_voting`; plain lengths, no eps)."""
    inter = np.maximum(np.float32(0),
                       np.minimum(nms_segs[:, None, 1], all_segs[None, :, 1])
                       - np.maximum(nms_segs[:, None, 0], all_segs[None, :, 0]))
    len_a = (nms_segs[:, 1] - nms_segs[:, 0])[:, None]
    len_b = (all_segs[:, 1] - all_segs[:, 0])[None, :]
    iou = inter / (len_a + len_b - inter)
    w = (iou >= np.float32(iou_threshold)).astype(np.float32) * all_scores[None, :] * iou
    w = w / w.sum(axis=1, keepdims=True)
    return (w @ all_segs).astype(np.float32)


def batched_nms(segs, scores, labels, iou_threshold, min_score, max_seg_num,
                use_soft_nms=True, multiclass=True, sigma=0.5, voting_thresh=0.75):
    """NMS over one video's candidates with the semantics of ActionFormer's `batched_nms`.

    Args:
      segs: `[N, 2]` float segments (feature-grid units or seconds; only ratios matter).
      scores: `[N]` float scores.
      labels: `[N]` int class ids.
      iou_threshold: hard-NMS suppression IoU (`>=`); unused by soft-NMS.
      min_score: hard NMS keeps `score > min_score` first (if > 0); soft-NMS drops a segment
        once its decayed score is `< min_score`.
      max_seg_num: cap per NMS call and on the final output.
      use_soft_nms: Gaussian soft-NMS (`exp(-iou²/sigma)`) instead of hard NMS.
      multiclass: run NMS per class (ascending class id) and concatenate; never votes.
      sigma: soft-NMS Gaussian width.
      voting_thresh: class-agnostic only, if > 0: each kept segment becomes the
        `(iou ≥ thr)·score·iou`-weighted mean of ALL input segments.
    Returns:
      `(segs [M,2] float32, scores [M] float32, labels [M] int64)`, sorted by descending
      score (stable), `M ≤ max_seg_num`. Soft-NMS scores are the decayed ones.
    """
    segs = np.asarray(segs, np.float32).reshape(-1, 2)
    scores = np.asarray(scores, np.float32).reshape(-1)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    n = segs.shape[0]
    if scores.shape[0] != n or labels.shape[0] != n:
        raise ValueError(f"batched_nms: segs ({n}), scores ({scores.shape[0]}) and labels "
                         f"({labels.shape[0]}) must have the same length")
    if n == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0,), np.float32), labels[:0]
    if not (np.all(np.isfinite(scores)) and np.all(np.isfinite(segs))):
        raise ValueError("batched_nms: segs and scores must be finite (found NaN or inf)")
    max_seg_num = int(max_seg_num)

    def one(idx):
        if use_soft_nms:
            keep, dec = _soft_nms(segs[idx], scores[idx], sigma, min_score, max_seg_num)
        else:
            keep = _hard_nms(segs[idx], scores[idx], iou_threshold, min_score, max_seg_num)
            dec = scores[idx][keep]
        return idx[keep], dec

    if multiclass:
        parts = [one(np.flatnonzero(labels == c)) for c in np.unique(labels)]
        keep = np.concatenate([p[0] for p in parts])
        new_scores = np.concatenate([p[1] for p in parts]).astype(np.float32)
        new_segs = segs[keep]
    else:
        keep, new_scores = one(np.arange(n))
        new_segs = segs[keep]
        if voting_thresh > 0 and keep.size:
            new_segs = _seg_voting(new_segs, segs, scores, voting_thresh)
    new_labels = labels[keep]
    order = np.argsort(-new_scores, kind="stable")[:min(max_seg_num, keep.size)]
    return new_segs[order], new_scores[order], new_labels[order]


def to_seconds(segs, fps, feat_stride, num_frames, duration):
    """Feature-grid segments `[N,2]` -> seconds: `(seg·feat_stride + 0.5·num_frames)/fps`,
    then values ≤ 0 become 0 and values ≥ `duration` become `duration` (float32)."""
    segs = np.asarray(segs, np.float32).reshape(-1, 2)
    if fps is None or not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"to_seconds: fps must be a positive number, got {fps!r}")
    out = (segs * np.float32(feat_stride) + np.float32(0.5 * num_frames)) / np.float32(fps)
    out = np.where(out <= 0, np.float32(0), out)
    if duration is not None:
        out = np.where(out >= np.float32(duration), np.float32(duration), out)
    return out.astype(np.float32, copy=False)


def postprocess(cls_logits, offsets, mask, points, level_lengths, test_cfg, fps, feat_stride,
                num_frames, duration):
    """One video's head outputs -> detections in seconds.

    Args: as `decode` (`[ΣT_l, K]`, `[ΣT_l, 2]`, `[ΣT_l]`, `[ΣT_l, 4]`, `[L]`, test_cfg) plus
      the video meta for `to_seconds`. `test_cfg["nms_method"]`: `soft`, `hard` or `none`.
    Returns:
      `{"segments": [M,2] float32 seconds, "scores": [M] float32, "labels": [M] int64}`.
    """
    cfg = _cfg(test_cfg)
    method = str(cfg["nms_method"])
    if method not in ("soft", "hard", "none"):
        raise ValueError(f"test_cfg.nms_method must be soft, hard or none, got {method!r}")
    segs, scores, labels = decode(cls_logits, offsets, mask, points, level_lengths, cfg)
    if method != "none":
        segs, scores, labels = batched_nms(
            segs, scores, labels, cfg["iou_threshold"], cfg["min_score"], cfg["max_seg_num"],
            use_soft_nms=(method == "soft"), multiclass=bool(cfg["multiclass_nms"]),
            sigma=cfg["nms_sigma"], voting_thresh=cfg["voting_thresh"])
    return {"segments": to_seconds(segs, fps, feat_stride, num_frames, duration),
            "scores": scores, "labels": labels}
