"""Verification of an export against the Keras model, before anything is written.

For every window (batch 1): max |export - keras| of `cls_logits` and `offsets`; then both
outputs go through `edge.postprocess` (the one numpy post-processing) and the detections are
scored with `asl_tf.evaluation.average_map`. Without ground truth on the windows the Keras
detections stand in for it (the top `pseudo_gt_topk` per window), so the mAP delta measures how
much of the Keras model's output the export keeps. mAP values are in points (percent).
"""
import time

import numpy as np

from edge import postprocess as pp

#: Default limits per quantization mode: max abs diff of logits/offsets, or mAP drop (points).
DEFAULT_LIMITS = {
    "none": {"max_diff": 1e-4, "max_map_drop": None},
    "fp16": {"max_diff": 2e-2, "max_map_drop": None},
    "dynamic": {"max_diff": None, "max_map_drop": 1.0},
    "int8": {"max_diff": None, "max_map_drop": 1.0},
}
THUMOS_TIOUS = np.linspace(0.3, 0.7, 5)


class VerificationError(ValueError):
    """The export differs from the Keras model by more than its limit; `.report` holds the
    measured numbers (the export report that was not written)."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


def keras_outputs(model, feats, mask, batch=4):
    """Keras forward in small batches: feats [N,T,C], mask [N,T] -> dict of [N, ΣT_l, ...]."""
    outs = {"cls_logits": [], "offsets": []}
    for i in range(0, len(feats), batch):
        o = model({"feats": feats[i:i + batch], "mask": mask[i:i + batch]}, training=False)
        for k in outs:
            outs[k].append(np.asarray(o[k]))
    return {k: np.concatenate(v, 0) for k, v in outs.items()}


def level_mask(mask, strides):
    """Input mask [T] bool -> concatenated level masks [ΣT_l] (level l: mask[::s_l])."""
    return np.concatenate([np.asarray(mask)[::int(s)] for s in strides])


class Geometry:
    """What decoding needs at window T: level lengths, points, strides, test_cfg."""

    def __init__(self, model, window):
        self.strides = [int(s) for s in model.fpn_strides]
        self.lengths = [int(n) for n in model.level_lengths(window)]
        self.points = pp.make_points(self.lengths, self.strides, model.regression_range)
        self.test_cfg = dict(model.test_cfg)


def detections(out, mask, geo, meta):
    """One window's outputs ([ΣT_l, K], [ΣT_l, 2]) -> edge.postprocess detections (seconds)."""
    m = level_mask(mask, geo.strides)
    n_valid = int(np.asarray(mask).sum())
    duration = (n_valid * meta["feat_stride"] + 0.5 * meta["num_frames"]) / meta["fps"]
    return pp.postprocess(out["cls_logits"], out["offsets"], m, geo.points, geo.lengths,
                          geo.test_cfg, meta["fps"], meta["feat_stride"], meta["num_frames"],
                          duration)


def _gt_from(dets, ids, topk):
    """Pseudo ground truth: the Keras detections scoring at least the (topk * windows)-th best
    score over all windows (one global cut, so the Keras model itself scores ~100)."""
    from asl_tf.evaluation import GroundTruth
    all_scores = np.sort(np.concatenate([np.asarray(d["scores"], np.float64) for d in dets] +
                                        [np.zeros(0)]))[::-1]
    cut = all_scores[min(topk * len(dets), len(all_scores)) - 1] if len(all_scores) else np.inf
    vids, segs, labels, video = [], [], [], []
    for i, (vid, d) in enumerate(zip(ids, dets)):
        vids.append(vid)
        keep = np.asarray(d["scores"]) >= cut
        segs.append(np.asarray(d["segments"], np.float64).reshape(-1, 2)[keep])
        labels.append(np.asarray(d["labels"], np.int64)[keep])
        video.append(np.full(int(keep.sum()), i, np.int64))
    return GroundTruth(vids, np.concatenate(video), np.concatenate(segs), np.concatenate(labels))


def average_map(gt, dets, ids, tious=THUMOS_TIOUS):
    """Average mAP in points of per-window detections against `gt` (a GroundTruth)."""
    from asl_tf.evaluation import Predictions, average_map as avg_map
    preds = Predictions.from_detections(
        [dict(d, video_id=v) for v, d in zip(ids, dets)])
    if len(gt.labels) == 0:
        return None
    return 100.0 * avg_map(gt, preds, tious, warn=False)["average_mAP"]


def compare(model, runner, windows, meta, quantize="none", limits=None, pseudo_gt_topk=5,
            gt=None):
    """Run `runner` (feats [1,T,C], mask [1,T] -> dict) and Keras on `windows`; return the
    verification dict (max diffs, mAPs, delta, limits, passed). Raises nothing."""
    lim = dict(DEFAULT_LIMITS[quantize])
    lim.update({k: v for k, v in (limits or {}).items() if v is not None})
    window = windows.feats.shape[1]
    ref = keras_outputs(model, windows.feats, windows.mask)
    geo = Geometry(model, window)
    diff = {"cls_logits": 0.0, "offsets": 0.0}
    dets_keras, dets_export = [], []
    for i in range(len(windows)):
        out = runner(windows.feats[i:i + 1], windows.mask[i:i + 1])
        for k in diff:
            d = np.abs(np.asarray(out[k], np.float32)[0] - ref[k][i])
            diff[k] = max(diff[k], float(np.max(d)) if d.size else 0.0)
        dets_keras.append(detections({k: ref[k][i] for k in diff}, windows.mask[i], geo, meta))
        dets_export.append(detections({k: np.asarray(out[k])[0] for k in diff}, windows.mask[i],
                                      geo, meta))
    if gt is None:
        gt = _gt_from(dets_keras, windows.ids, pseudo_gt_topk)
        gt_kind = f"keras top {pseudo_gt_topk}x{len(windows)} detections (pseudo ground truth)"
    else:
        gt_kind = "ground truth"
    map_keras = average_map(gt, dets_keras, windows.ids)
    map_export = average_map(gt, dets_export, windows.ids)
    delta = None if map_keras is None else map_export - map_keras
    max_diff = max(diff.values())
    reasons = []
    if lim["max_diff"] is not None and not max_diff <= lim["max_diff"]:
        reasons.append(f"max abs diff {max_diff:.3g} > limit {lim['max_diff']:.3g}")
    if lim["max_map_drop"] is not None:
        if delta is None:
            reasons.append("no detections to measure the mAP on")
        elif not delta >= -lim["max_map_drop"]:
            reasons.append(f"average mAP {delta:+.2f} points < -{lim['max_map_drop']} limit")
    return {
        "windows": len(windows), "window": int(window), "calibration": windows.source,
        "synthetic_windows": bool(windows.synthetic),
        "max_diff_cls_logits": diff["cls_logits"], "max_diff_offsets": diff["offsets"],
        "max_diff": max_diff, "mAP_keras": map_keras, "mAP_export": map_export,
        "mAP_delta": delta, "mAP_reference": gt_kind, "limits": lim,
        "passed": not reasons, "failures": reasons,
        "_detections": (dets_keras, dets_export),
    }


def compare_detect(model, sm_runner, windows, meta, seg_tol=1e-4, score_rtol=1e-5):
    """The SavedModel `detect` signature against edge.postprocess of the Keras outputs, one
    unpadded video per window (padded by the reference eval rule on both sides)."""
    from export.detect_graph import pad_rule
    geo_cache = {}
    worst = {"segments": 0.0, "scores_rel": 0.0}
    failures = []
    for i in range(len(windows)):
        n = int(windows.mask[i].sum())
        x = windows.feats[i, :n]
        t_pad = int(pad_rule(n, model.max_seq_len, model.max_div_factor))
        feats = np.zeros((1, t_pad, x.shape[1]), np.float32)
        feats[0, :n] = x
        mask = np.arange(t_pad)[None] < n
        ref = keras_outputs(model, feats, mask)
        geo = geo_cache.setdefault(t_pad, Geometry(model, t_pad))
        exp = detections({k: v[0] for k, v in ref.items()}, mask[0], geo, meta)
        duration = (n * meta["feat_stride"] + 0.5 * meta["num_frames"]) / meta["fps"]
        got = sm_runner.detect(x, meta["fps"], meta["feat_stride"], meta["num_frames"], duration)
        vid = windows.ids[i]
        if len(got["labels"]) != len(exp["labels"]) or np.any(
                np.asarray(got["labels"]) != np.asarray(exp["labels"])):
            failures.append(f"{vid}: detect gave {len(got['labels'])} detections / labels "
                            f"differ from edge.postprocess ({len(exp['labels'])})")
            continue
        if len(exp["labels"]):
            rel = np.abs(got["scores"] - exp["scores"]) / np.maximum(np.abs(exp["scores"]), 1e-12)
            worst["scores_rel"] = max(worst["scores_rel"], float(rel.max()))
            worst["segments"] = max(worst["segments"],
                                    float(np.abs(got["segments"] - exp["segments"]).max()))
    if worst["scores_rel"] > score_rtol:
        failures.append(f"detect scores differ by {worst['scores_rel']:.3g} relative > {score_rtol}")
    if worst["segments"] > seg_tol:
        failures.append(f"detect segments differ by {worst['segments']:.3g} s > {seg_tol}")
    return {"videos": len(windows), "max_segment_diff_s": worst["segments"],
            "max_score_rel_diff": worst["scores_rel"], "passed": not failures,
            "failures": failures}


def median_latency_ms(make_runner, feats, mask, threads=(1, 2), runs=5):
    """{threads: median ms} of `make_runner(threads)(feats, mask)` after one warm-up run."""
    out = {}
    for n in threads:
        run = make_runner(n)
        run(feats, mask)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            run(feats, mask)
            times.append(1e3 * (time.perf_counter() - t0))
        out[str(n)] = float(np.median(times))
    return out
