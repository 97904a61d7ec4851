"""Detection metrics: average mAP over tIoU, Recall@kx (ActionFormer and official Ego4D).

Numpy only. All times are seconds; segments are `[N, 2]` float64 `(start, end)`.

Semantics (see docs/ and the reference notes):
- `average_map` is ActionFormer's `ANETdetection` (libs/utils/metrics.py): GT annotations shorter
  than 1e-3 s and same-label duplicates within 1e-3 s of an earlier kept one are removed
  (`remove_duplicates=True`); classes are the sorted unique GT labels; per class the
  predictions are sorted by descending score (stable: file order on ties); a prediction in a
  video without GT of its class is a false positive (this includes videos absent from the
  GT); otherwise it takes the unmatched GT of highest tIoU if that tIoU >= threshold, else it
  is a false positive; AP is VOC-2011 all-point interpolated with npos = #GT; a class without
  predictions has AP 0 and is still averaged. Unlike the reference, prediction labels that
  are not GT classes are ignored (counted in `n_pred_unknown_label`), never remapped onto
  another class.
- `topkx_recall` is ActionFormer's Recall@kx: per class and video the top `k·n_gt`
  predictions by score; a GT is recalled if one of them has tIoU >= threshold; divided by the
  class's GT count, then averaged over classes.
- `ego4d_recall` is the official Ego4D Moment Queries recall as the ASL training loop reports
  it (`get_retrieval_performance.Moment_Retrieval`): no duplicate removal, per (video, label)
  the first `k·n_gt` same-label predictions in score order (stable), retrieved if
  `tIoU > threshold` (strict), averaged over all GT instances (micro).

The matching is vectorised: all classes at once, one greedy round per prediction rank within
its (class, video) group, each round handling every group and every threshold together.
"""
import dataclasses
from typing import Dict, List, Optional

import numpy as np
from absl import logging

__all__ = ["GroundTruth", "Predictions", "parse_tiou", "default_tious",
           "remove_duplicate_annotations", "segment_iou", "interpolated_ap", "average_map",
           "topkx_recall", "ego4d_recall", "evaluate_detections", "DEFAULT_TIOU"]

# Default tIoU sets per dataset, as START:STOP:NUM for np.linspace (issue rulings).
DEFAULT_TIOU = {
    "thumos14": "0.3:0.7:5",
    "anet": "0.5:0.95:10",
    "ego4d": "0.1:0.5:5",
    "epic": "0.1:0.5:5",
    "multithumos": "0.1:0.9:9",
    "charades": "0.1:0.9:9",
}


def parse_tiou(spec) -> np.ndarray:
    """`"START:STOP:NUM"` -> `np.linspace(START, STOP, NUM)` (float64); a sequence passes through."""
    if isinstance(spec, str):
        parts = spec.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            start, stop, num = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise ValueError(f"--tiou: expected START:STOP:NUM (e.g. 0.3:0.7:5), got {spec!r}")
        if num < 1 or not (0 < start <= 1 and 0 < stop <= 1):
            raise ValueError(f"--tiou: thresholds must lie in (0, 1] and NUM >= 1, got {spec!r}")
        return np.linspace(start, stop, num)
    arr = np.asarray(spec, np.float64).reshape(-1)
    if arr.size == 0 or np.any(~np.isfinite(arr)) or np.any(arr <= 0) or np.any(arr > 1):
        raise ValueError(f"tIoU thresholds must lie in (0, 1], got {spec!r}")
    return arr


def default_tious(dataset: str) -> np.ndarray:
    if dataset not in DEFAULT_TIOU:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DEFAULT_TIOU)}")
    return parse_tiou(DEFAULT_TIOU[dataset])


@dataclasses.dataclass
class GroundTruth:
    """Ground-truth instances of the evaluated videos, as flat arrays.

    `video_ids`: the evaluated videos (also those without annotations), in file order.
    `video`: `[G]` int index into `video_ids`; `segments`: `[G, 2]` float64 seconds;
    `labels`: `[G]` int64 class ids; `class_names`: optional `{id: name}`.
    """
    video_ids: List[str]
    video: np.ndarray
    segments: np.ndarray
    labels: np.ndarray
    class_names: Optional[Dict[int, str]] = None

    def __post_init__(self):
        self.video = np.asarray(self.video, np.int64).reshape(-1)
        self.segments = np.asarray(self.segments, np.float64).reshape(-1, 2)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        if not (len(self.video) == len(self.segments) == len(self.labels)):
            raise ValueError("GroundTruth: video, segments and labels differ in length")

    @classmethod
    def from_records(cls, records, class_names=None):
        """From `VideoRecord`-like objects (`video_id`, `segments [N,2]` s, `labels [N]`)."""
        vids, vid_idx, segs, labels = [], [], [], []
        for i, rec in enumerate(records):
            vids.append(str(rec.video_id))
            s = np.asarray(rec.segments, np.float64).reshape(-1, 2)
            segs.append(s)
            labels.append(np.asarray(rec.labels, np.int64).reshape(-1))
            vid_idx.append(np.full(len(s), i, np.int64))
        if isinstance(class_names, (list, tuple)):
            class_names = dict(enumerate(class_names))
        cat = (lambda xs, shape, dt: np.concatenate(xs) if xs else np.zeros(shape, dt))
        return cls(vids, cat(vid_idx, (0,), np.int64), cat(segs, (0, 2), np.float64),
                   cat(labels, (0,), np.int64), class_names)

    def dedup(self, tol=1e-3) -> "GroundTruth":
        keep = remove_duplicate_annotations(self.video, self.segments, self.labels, tol)
        return GroundTruth(self.video_ids, self.video[keep], self.segments[keep],
                           self.labels[keep], self.class_names)


@dataclasses.dataclass
class Predictions:
    """Flat predictions: `video_ids [P]` str, `segments [P,2]` s, `labels [P]` int64, `scores [P]`."""
    video_ids: np.ndarray
    segments: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        self.video_ids = np.asarray(self.video_ids, dtype=object).reshape(-1)
        self.segments = np.asarray(self.segments, np.float64).reshape(-1, 2)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, np.float64).reshape(-1)
        n = len(self.video_ids)
        if not (len(self.segments) == len(self.labels) == len(self.scores) == n):
            raise ValueError("Predictions: video_ids, segments, labels and scores differ in length")

    def __len__(self):
        return len(self.video_ids)

    @classmethod
    def from_detections(cls, detections):
        """From a list of `{"video_id", "segments" [M,2] s, "scores" [M], "labels" [M]}`
        (what `edge.postprocess.postprocess` returns, plus the video id)."""
        vids, segs, labels, scores = [], [], [], []
        for det in detections:
            s = np.asarray(det["segments"], np.float64).reshape(-1, 2)
            vids.extend([str(det["video_id"])] * len(s))
            segs.append(s)
            labels.append(np.asarray(det["labels"], np.int64).reshape(-1))
            scores.append(np.asarray(det["scores"], np.float64).reshape(-1))
        if not segs:
            return cls([], np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0))
        return cls(vids, np.concatenate(segs), np.concatenate(labels), np.concatenate(scores))

    def validate(self, source="predictions"):
        """Refuse NaN/inf scores or times and end < start, naming the first bad row."""
        bad = ~np.isfinite(self.scores)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{source}: row {i} (video {self.video_ids[i]}): score is "
                             f"{self.scores[i]} ({int(bad.sum())} non-finite scores)")
        bad = ~np.isfinite(self.segments).all(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{source}: row {i} (video {self.video_ids[i]}): segment "
                             f"{self.segments[i].tolist()} is not finite")
        bad = self.segments[:, 1] < self.segments[:, 0]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{source}: row {i} (video {self.video_ids[i]}): t-end < t-start "
                             f"{self.segments[i].tolist()} ({int(bad.sum())} such rows)")


def remove_duplicate_annotations(video, segments, labels, tol=1e-3):
    """Boolean keep-mask of ActionFormer's `remove_duplicate_annotations`, per video:
    drop instances with `end - start < tol` and those within `tol` (both ends) of an
    earlier *kept* instance of the same label. `[G]`, `[G,2]`, `[G]` -> `[G]` bool."""
    video = np.asarray(video)
    keep = np.zeros(len(video), bool)
    if len(video) == 0:
        return keep
    segments = np.asarray(segments, np.float64)
    labels = np.asarray(labels)
    order = np.argsort(video, kind="stable")
    bounds = np.flatnonzero(np.diff(video[order])) + 1
    for grp in np.split(order, bounds):
        kept = []
        for g in grp:
            s, e = segments[g]
            if not (e - s) >= tol:
                continue
            if kept:
                k = np.asarray(kept)
                dup = ((np.abs(s - segments[k, 0]) <= tol) & (np.abs(e - segments[k, 1]) <= tol)
                       & (labels[k] == labels[g]))
                if dup.any():
                    continue
            kept.append(g)
        keep[kept] = True
    return keep


def segment_iou(target, candidates):
    """tIoU of `target [2]` (or `[N,2]` row-wise against `candidates [N,2]`), as the
    ActivityNet/ActionFormer `segment_iou`: `inter / (len_c + len_t - inter)`."""
    target = np.asarray(target, np.float64)
    candidates = np.asarray(candidates, np.float64)
    t0, t1 = target[..., 0], target[..., 1]
    tt1 = np.maximum(t0, candidates[..., 0])
    tt2 = np.minimum(t1, candidates[..., 1])
    inter = (tt2 - tt1).clip(0)
    union = (candidates[..., 1] - candidates[..., 0]) + (t1 - t0) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def interpolated_ap(prec, rec):
    """VOC-2011 all-point interpolated AP of one precision/recall curve (1-D arrays)."""
    mprec = np.hstack([[0.0], prec, [0.0]])
    mrec = np.hstack([[0.0], rec, [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


# ----------------------------------------------------------------------------------------------
# grouping helpers

def _stable_int_argsort(x):
    """Stable argsort of non-negative ints; 16-bit keys use numpy's O(n) radix sort."""
    x = np.asarray(x)
    if x.size and x.min() >= 0 and x.max() < 65536:
        return np.argsort(x.astype(np.uint16), kind="stable")
    return np.argsort(x, kind="stable")


class _Matching:
    """Predictions and GT grouped by (class, video), with all (prediction, GT) pairs of a group.

    Attributes (predictions restricted to GT classes, in class-then-score order `q`):
      p_src [Q]: index into the input predictions; p_cls [Q]: class index; p_rank [Q]: rank
      within its (class, video) group; p_ngt [Q]: GT count of its group.
      pair_q [R], pair_g [R], pair_iou [R]: pairs ordered by (rank, q, GT file order).
      g_ngt [G]: GT count of each GT's group.
    """

    def __init__(self, gt: GroundTruth, preds: Predictions, classes, iou_fn):
        n_cls = len(classes)
        self.n_cls = n_cls
        # videos: GT videos first, then unknown prediction videos (in order of appearance)
        vid_index = {v: i for i, v in enumerate(gt.video_ids)}
        if len(preds):
            names, first_pos, inv = np.unique(preds.video_ids.astype(str), return_index=True,
                                              return_inverse=True)
            code = np.array([vid_index.get(v, -1) for v in names.tolist()], np.int64)
            unknown = np.flatnonzero(code < 0)
            unknown = unknown[np.argsort(first_pos[unknown], kind="stable")]
            code[unknown] = len(vid_index) + np.arange(len(unknown))
            pv = code[inv.reshape(-1)]
            self.unknown_videos = sorted(names[unknown].tolist())
        else:
            pv = np.zeros(0, np.int64)
            self.unknown_videos = []
        self.n_pred_unknown_video = int(np.sum(pv >= len(vid_index)))
        n_vid = len(vid_index) + len(self.unknown_videos) + 1

        classes = np.asarray(classes, np.int64)
        g_cls = np.searchsorted(classes, gt.labels).astype(np.int64)
        pos = np.minimum(np.searchsorted(classes, preds.labels), max(n_cls - 1, 0))
        known = (classes[pos] == preds.labels) if n_cls else np.zeros(len(preds), bool)
        p_cls_all = np.where(known, pos, -1).astype(np.int64)
        self.n_pred_unknown_label = int(np.sum(~known))
        self.unknown_labels = sorted(set(np.unique(preds.labels[~known]).tolist()))

        # predictions of GT classes, sorted by class then descending score (stable)
        src = np.flatnonzero(known)
        src = src[np.argsort(-preds.scores[src], kind="stable")]
        src = src[_stable_int_argsort(p_cls_all[src])]
        self.p_src = src
        self.p_cls = p_cls_all[src]
        p_key = self.p_cls * n_vid + pv[src]
        # GT grouped by key
        g_key = g_cls * n_vid + gt.video
        g_order = np.argsort(g_key, kind="stable")
        g_key_sorted = g_key[g_order]
        uniq, g_start, g_count = np.unique(g_key_sorted, return_index=True, return_counts=True)
        self.g_cls = g_cls
        self.npos = np.bincount(g_cls, minlength=n_cls).astype(np.float64)
        # GT count of each GT's group
        self.g_ngt = np.empty(len(g_key), np.int64)
        self.g_ngt[g_order] = np.repeat(g_count, g_count)
        # rank of each prediction within its group (score order is kept by the stable sort)
        q = len(src)
        pv_src = pv[src]
        by_vid = _stable_int_argsort(pv_src)
        grp_order = by_vid[_stable_int_argsort(self.p_cls[by_vid])]  # (class, video, score)
        pk_sorted = p_key[grp_order]
        first = np.r_[True, pk_sorted[1:] != pk_sorted[:-1]] if q else np.zeros(0, bool)
        start_pos = np.maximum.accumulate(np.where(first, np.arange(q), 0)) if q else first
        rank = np.empty(q, np.int64)
        rank[grp_order] = np.arange(q) - start_pos
        self.p_rank = rank
        # GT group of each prediction
        pos = np.searchsorted(uniq, p_key)
        pos_c = np.minimum(pos, max(len(uniq) - 1, 0))
        has = (pos < len(uniq)) & (uniq[pos_c] == p_key) if len(uniq) else np.zeros(q, bool)
        ngt = np.where(has, g_count[pos_c] if len(uniq) else 0, 0)
        self.p_ngt = ngt
        gstart = np.where(has, g_start[pos_c] if len(uniq) else 0, 0)
        # all pairs (prediction q, GT g) of the same group
        pair_q = np.repeat(np.arange(q), ngt)
        offs = np.arange(len(pair_q)) - np.repeat(np.cumsum(ngt) - ngt, ngt)
        pair_g = g_order[np.repeat(gstart, ngt) + offs]
        p_segs = preds.segments[src]
        pair_iou = iou_fn(p_segs[pair_q], gt.segments[pair_g])
        # pairs are generated in prediction order, GTs in file order within a prediction;
        # a stable sort by rank keeps that order inside each rank block
        srt = _stable_int_argsort(self.p_rank[pair_q])
        self.pair_q = pair_q[srt]
        self.pair_g = pair_g[srt]
        self.pair_iou = pair_iou[srt]
        self.n_gt = len(g_key)


def _greedy_tp(m: _Matching, tious):
    """`[T, Q]` bool true positives of the ANETdetection greedy matching."""
    n_t = len(tious)
    q = len(m.p_src)
    tp = np.zeros((n_t, q), bool)
    if len(m.pair_q) == 0:
        return tp
    locked = np.zeros((n_t, m.n_gt), bool)
    thr = np.asarray(tious, np.float64)[:, None]
    ranks = m.p_rank[m.pair_q]
    # blocks of pairs with the same prediction rank (pairs are sorted by rank first)
    cuts = np.flatnonzero(np.diff(ranks)) + 1
    starts = np.r_[0, cuts]
    ends = np.r_[cuts, len(ranks)]
    for b0, b1 in zip(starts, ends):
        pq = m.pair_q[b0:b1]
        pg = m.pair_g[b0:b1]
        iou = m.pair_iou[b0:b1]
        cand = (iou[None, :] >= thr) & ~locked[:, pg]
        nb = b1 - b0
        seg_first = np.r_[0, np.flatnonzero(np.diff(pq)) + 1]
        # the walk in descending tIoU takes the unlocked GT of highest tIoU >= thr
        # (first in GT order on an exact tie; the reference's tie order is unspecified)
        masked = np.where(cand, iou[None, :], -1.0)
        top = np.maximum.reduceat(masked, seg_first, axis=1)  # [T, n_preds_in_block]
        seg_of = np.cumsum(np.r_[0, np.diff(pq) != 0])
        is_top = cand & (masked == top[:, seg_of])
        pos = np.where(is_top, np.arange(nb)[None, :], nb)
        best = np.minimum.reduceat(pos, seg_first, axis=1)
        t_idx, s_idx = np.nonzero(best < nb)
        chosen = best[t_idx, s_idx]
        tp[t_idx, pq[chosen]] = True
        locked[t_idx, pg[chosen]] = True
    return tp


def average_map(gt: GroundTruth, preds: Predictions, tiou_thresholds,
                remove_duplicates=True, warn=True, _matching=None):
    """ActionFormer `ANETdetection` average mAP (see the module docstring).

    Returns a dict: `tiou_thresholds [T]`, `classes [C]` (GT label ids, sorted),
    `ap_per_tiou_per_class [T][C]`, `mAP_per_tiou [T]`, `average_mAP` (fractions in [0, 1]),
    `n_pred_unknown_video`, `unknown_videos`, `n_pred_unknown_label`, `unknown_labels`.
    """
    tious = parse_tiou(tiou_thresholds)
    m = _matching or _prepare(gt, preds, remove_duplicates)
    classes = m.classes
    tp = _greedy_tp(m, tious)
    ap = np.zeros((len(tious), len(classes)))
    if len(m.p_src):
        bounds = np.searchsorted(m.p_cls, np.arange(len(classes) + 1))
        for c in range(len(classes)):
            s, e = bounds[c], bounds[c + 1]
            if e == s:
                continue  # no predictions: AP 0
            tpc = tp[:, s:e].astype(np.float64)
            tp_cum = np.cumsum(tpc, axis=1)
            fp_cum = np.cumsum(1.0 - tpc, axis=1)
            rec = tp_cum / m.npos[c]
            prec = tp_cum / (tp_cum + fp_cum)
            for t in range(len(tious)):
                ap[t, c] = interpolated_ap(prec[t], rec[t])
    mAP = ap.mean(axis=1)
    if warn:
        _warn_unknowns(m)
    return {
        "tiou_thresholds": tious.tolist(),
        "classes": [int(c) for c in classes],
        "ap_per_tiou_per_class": ap.tolist(),
        "mAP_per_tiou": mAP.tolist(),
        "average_mAP": float(mAP.mean()),
        "n_predictions": int(len(preds)),
        "n_pred_unknown_video": m.n_pred_unknown_video,
        "unknown_videos": m.unknown_videos,
        "n_pred_unknown_label": m.n_pred_unknown_label,
        "unknown_labels": m.unknown_labels,
    }


def _prepare(gt, preds, remove_duplicates):
    """Duplicate removal + grouping/pairing shared by mAP and Recall@kx."""
    if remove_duplicates:
        gt = gt.dedup()
    classes = np.unique(gt.labels)
    if len(classes) == 0:
        raise ValueError("no ground-truth instances to evaluate against")
    m = _Matching(gt, preds, classes, segment_iou)
    m.classes = classes
    return m


def _warn_unknowns(m):
    if m.n_pred_unknown_video:
        logging.warning("%d predictions are for %d videos absent from the ground truth "
                        "(counted as false positives): %s%s", m.n_pred_unknown_video,
                        len(m.unknown_videos), ", ".join(m.unknown_videos[:5]),
                        " ..." if len(m.unknown_videos) > 5 else "")
    if m.n_pred_unknown_label:
        logging.warning("%d predictions have labels without ground truth in this split "
                        "(ignored): %s", m.n_pred_unknown_label, m.unknown_labels[:20])


def topkx_recall(gt: GroundTruth, preds: Predictions, tiou_thresholds, top_k=(1, 5),
                 remove_duplicates=True, _matching=None):
    """ActionFormer Recall@kx (per class, then averaged over classes).

    Returns `recall_per_tiou_per_k_per_class [T][K][C]` and `mean_recall_per_tiou_per_k [T][K]`.
    """
    tious = parse_tiou(tiou_thresholds)
    m = _matching or _prepare(gt, preds, remove_duplicates)
    classes = m.classes
    n_t, top_k = len(tious), tuple(int(k) for k in top_k)
    # smallest rank (within the group) of a prediction with tIoU >= thr, per GT
    big = np.iinfo(np.int64).max
    min_rank = np.full((n_t, m.n_gt), big, np.int64)
    prank = m.p_rank[m.pair_q]
    for t in range(n_t):
        ok = m.pair_iou >= tious[t]
        np.minimum.at(min_rank[t], m.pair_g[ok], prank[ok])
    recall = np.zeros((n_t, len(top_k), len(classes)))
    has_pred = np.bincount(m.p_cls, minlength=len(classes)) > 0
    for ki, k in enumerate(top_k):
        hit = min_rank < (k * m.g_ngt)[None, :]  # [T, G]
        for t in range(n_t):
            tp = np.bincount(m.g_cls, weights=hit[t], minlength=len(classes))
            recall[t, ki] = np.where(has_pred, tp / m.npos, 0.0)
    return {
        "recall_top_k": list(top_k),
        "recall_per_tiou_per_k_per_class": recall.tolist(),
        "mean_recall_per_tiou_per_k": recall.mean(axis=2).tolist(),
    }


def _hull_iou(a, b):
    """Ego4D recall tIoU: intersection over the hull `max(ends) - min(starts)`."""
    inter = np.maximum(0.0, np.minimum(a[:, 1], b[:, 1]) - np.maximum(a[:, 0], b[:, 0]))
    union = np.maximum(0.0, np.maximum(a[:, 1], b[:, 1]) - np.minimum(a[:, 0], b[:, 0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 * inter / union


def ego4d_recall(gt: GroundTruth, preds: Predictions, tious=(0.1, 0.2, 0.3, 0.4, 0.5),
                 ranks=(1, 5)):
    """Official Ego4D MQ Recall@kx (instances pooled, strict `>`, no duplicate removal).

    Predictions are taken per (video, label) in descending score order (stable w.r.t. the
    input order, which is the order of the official submission files).
    Returns `recall_per_tiou_per_rank [T][R]` and `recall_at_{k}x_tiou_{t}` entries.
    """
    tious = np.asarray(tious, np.float64)
    classes = np.unique(gt.labels)
    m = _Matching(gt, preds, classes, _hull_iou)
    n_missing = len(set(gt.video_ids) - set(preds.video_ids))
    if n_missing:
        logging.warning("%d ground-truth videos have no predictions (their instances count as "
                        "not retrieved; the official script raises KeyError)", n_missing)
    big = np.iinfo(np.int64).max
    out = np.zeros((len(tious), len(ranks)))
    prank = m.p_rank[m.pair_q]
    n_gt = max(m.n_gt, 1)
    for t, thr in enumerate(tious):
        ok = m.pair_iou > thr
        min_rank = np.full(m.n_gt, big, np.int64)
        np.minimum.at(min_rank, m.pair_g[ok], prank[ok])
        for r, k in enumerate(ranks):
            out[t, r] = np.sum(min_rank < k * m.g_ngt) / n_gt if m.n_gt else 0.0
    res = {"tiou_thresholds": tious.tolist(), "recall_ranks": list(ranks),
           "recall_per_tiou_per_rank": out.tolist()}
    for t, thr in enumerate(tious):
        for r, k in enumerate(ranks):
            res[f"recall_at_{k}x_tiou_{round(float(thr), 2)}"] = float(out[t, r])
    return res


def evaluate_detections(gt, preds, tiou_thresholds, top_k=(1, 5), ego4d=False, warn=True):
    """All metrics of one dataset: ANETdetection mAP + ActionFormer Recall@kx, plus the
    official Ego4D recall when `ego4d`.

    `gt`: a `GroundTruth` or a list of `VideoRecord`-like objects; `preds`: a `Predictions`
    or a list of `{"video_id", "segments", "scores", "labels"}` dicts.
    """
    if not isinstance(gt, GroundTruth):
        gt = GroundTruth.from_records(gt)
    if not isinstance(preds, Predictions):
        preds = Predictions.from_detections(preds)
    preds.validate()
    if len(preds) == 0 and warn:
        logging.warning("no predictions: every AP is 0")
    m = _prepare(gt, preds, remove_duplicates=True)
    res = average_map(gt, preds, tiou_thresholds, warn=warn, _matching=m)
    res.update(topkx_recall(gt, preds, tiou_thresholds, top_k, _matching=m))
    if ego4d:
        res["ego4d_recall"] = ego4d_recall(gt, preds)
        res["recall_at_1x_tiou_0.5"] = res["ego4d_recall"]["recall_at_1x_tiou_0.5"]
    return res
