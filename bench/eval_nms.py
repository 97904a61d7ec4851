"""Benchmark of the scorers and the numpy NMS; prints one JSON object.

1. Average mAP (ANETdetection semantics) + ActionFormer Recall@kx on an Ego4D-sized synthetic
   run (default 500 videos x 2000 predictions, 110 classes): the vectorised
   `asl_tf.evaluation` against a straightforward per-prediction loop implementation of the
   same metric written here (`loop_average_map`), with the max difference of their APs.
2. Soft-NMS (Gaussian) on 5000 candidates x 20 classes with `edge.postprocess.batched_nms`,
   multiclass and class-agnostic, against a literal per-candidate loop port of the reference
   C++ control flow (`loop_soft_nms`; multiclass only by default, the agnostic loop is O(N^2)
   Python).

  python bench/eval_nms.py [--videos 500 --preds 2000 --classes 110 --nms-cands 5000
                            --nms-classes 20 --loop-agnostic]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from asl_tf.evaluation import (GroundTruth, Predictions, average_map,  # noqa: E402
                               topkx_recall)
from edge.postprocess import batched_nms  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from eval_loop_reference import loop_soft_nms  # noqa: E402  (the tests' literal port)


# ---------------------------------------------------------------------------------------------
# straightforward loop implementations (the baseline the vectorised code is compared with)

def loop_remove_duplicates(gt_rows, tol=1e-3):
    """gt_rows: list of (video, start, end, label) -> rows kept by ActionFormer's rule."""
    kept, by_video = [], {}
    for row in gt_rows:
        v, s, e, lab = row
        prev = by_video.setdefault(v, [])
        ok = (e - s) >= tol
        for (_, ps, pe, pl) in prev:
            if abs(s - ps) <= tol and abs(e - pe) <= tol and lab == pl:
                ok = False
                break
        if ok:
            prev.append(row)
            kept.append(row)
    return kept


def _iou(seg, gts):
    tt1 = np.maximum(seg[0], gts[:, 0])
    tt2 = np.minimum(seg[1], gts[:, 1])
    inter = (tt2 - tt1).clip(0)
    union = (gts[:, 1] - gts[:, 0]) + (seg[1] - seg[0]) - inter
    return inter / union


def _interp_ap(prec, rec):
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])


def loop_average_map(gt_rows, pred_rows, tious, dedup=True):
    """Per-prediction loop ANETdetection: gt_rows (video, s, e, label), pred_rows
    (video, s, e, label, score). Returns ap [T, C] over the sorted GT classes."""
    if dedup:
        gt_rows = loop_remove_duplicates(gt_rows)
    classes = sorted({r[3] for r in gt_rows})
    ap = np.zeros((len(tious), len(classes)))
    for ci, c in enumerate(classes):
        gts = [r for r in gt_rows if r[3] == c]
        by_vid = {}
        for gi, (v, s, e, _) in enumerate(gts):
            by_vid.setdefault(v, []).append((gi, s, e))
        preds = [r for r in pred_rows if r[3] == c]
        if not preds:
            continue
        order = sorted(range(len(preds)), key=lambda i: -preds[i][4])  # stable descending
        lock = -np.ones((len(tious), len(gts)))
        tp = np.zeros((len(tious), len(preds)))
        fp = np.zeros((len(tious), len(preds)))
        for idx, pi in enumerate(order):
            v, s, e, _, _ = preds[pi]
            if v not in by_vid:
                fp[:, idx] = 1
                continue
            cand = by_vid[v]
            gidx = [g for g, _, _ in cand]
            tiou = _iou((s, e), np.array([[a, b] for _, a, b in cand]))
            srt = np.argsort(-tiou, kind="stable")
            for t, thr in enumerate(tious):
                for j in srt:
                    if tiou[j] < thr:
                        fp[t, idx] = 1
                        break
                    if lock[t, gidx[j]] >= 0:
                        continue
                    tp[t, idx] = 1
                    lock[t, gidx[j]] = idx
                    break
                if fp[t, idx] == 0 and tp[t, idx] == 0:
                    fp[t, idx] = 1
        tp_c = np.cumsum(tp, axis=1)
        fp_c = np.cumsum(fp, axis=1)
        rec = tp_c / len(gts)
        prec = tp_c / (tp_c + fp_c)
        for t in range(len(tious)):
            ap[t, ci] = _interp_ap(prec[t], rec[t])
    return ap


def loop_batched_soft_nms(segs, scores, labels, sigma, min_score, max_seg_num, multiclass):
    parts = []
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)] if multiclass \
        else [np.arange(len(labels))]
    for idx in groups:
        sel = loop_soft_nms(segs[idx], scores[idx], sigma, min_score)[:max_seg_num]
        parts.extend((idx[i], s) for i, s in sel)
    parts.sort(key=lambda t: -t[1])
    parts = parts[:max_seg_num]
    keep = np.array([i for i, _ in parts], np.int64)
    return segs[keep], np.array([s for _, s in parts], np.float32), labels[keep]


# ---------------------------------------------------------------------------------------------
# synthetic data

def make_detection_run(n_videos, n_preds, n_classes, seed=0, duration=480.0, gt_per_video=12):
    rng = np.random.default_rng(seed)
    gt_rows, pred_rows = [], []
    for v in range(n_videos):
        vid = f"clip_{v:05d}"
        n_gt = rng.integers(1, 2 * gt_per_video)
        starts = rng.uniform(0, duration - 5, n_gt)
        lens = rng.uniform(0.5, 60, n_gt)
        labs = rng.integers(0, n_classes, n_gt)
        for s, ln, lab in zip(starts, lens, labs):
            gt_rows.append((vid, float(s), float(min(s + ln, duration)), int(lab)))
        # half of the predictions near GT (right or wrong class), half random
        n_near = n_preds // 2
        k = rng.integers(0, n_gt, n_near)
        jit = rng.normal(0, 0.15, (n_near, 2)) * lens[k, None]
        ps = starts[k] + jit[:, 0]
        pe = np.maximum(starts[k] + lens[k] + jit[:, 1], ps + 0.1)
        plab = np.where(rng.random(n_near) < 0.7, labs[k], rng.integers(0, n_classes, n_near))
        n_rand = n_preds - n_near
        rs = rng.uniform(0, duration, n_rand)
        re = rs + rng.uniform(0.5, 60, n_rand)
        rlab = rng.integers(0, n_classes, n_rand)
        s_all = np.r_[ps, rs]
        e_all = np.r_[pe, re]
        l_all = np.r_[plab, rlab]
        sc_all = np.round(rng.random(n_preds), 6)
        for s, e, lab, sc in zip(s_all, e_all, l_all, sc_all):
            pred_rows.append((vid, float(s), float(e), int(lab), float(sc)))
    return gt_rows, pred_rows


def rows_to_arrays(gt_rows, pred_rows):
    vids = sorted({r[0] for r in gt_rows})
    index = {v: i for i, v in enumerate(vids)}
    gt = GroundTruth(vids, [index[r[0]] for r in gt_rows], [[r[1], r[2]] for r in gt_rows],
                     [r[3] for r in gt_rows])
    preds = Predictions([r[0] for r in pred_rows], [[r[1], r[2]] for r in pred_rows],
                        [r[3] for r in pred_rows], [r[4] for r in pred_rows])
    return gt, preds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=500)
    ap.add_argument("--preds", type=int, default=2000)
    ap.add_argument("--classes", type=int, default=110)
    ap.add_argument("--tiou", default="0.1:0.5:5")
    ap.add_argument("--nms-cands", type=int, default=5000)
    ap.add_argument("--nms-classes", type=int, default=20)
    ap.add_argument("--loop-agnostic", action="store_true",
                    help="also run the O(N^2) Python loop for class-agnostic soft-NMS")
    ap.add_argument("--skip-loop-map", action="store_true")
    args = ap.parse_args()
    out = {"machine": {"cpus": os.cpu_count()}}

    t0 = time.perf_counter()
    gt_rows, pred_rows = make_detection_run(args.videos, args.preds, args.classes)
    gt, preds = rows_to_arrays(gt_rows, pred_rows)
    tious = np.linspace(*[float(x) for x in args.tiou.split(":")[:2]], int(args.tiou.split(":")[2]))
    gen_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    res = average_map(gt, preds, tious, warn=False)
    map_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    topkx_recall(gt, preds, tious)
    rec_s = time.perf_counter() - t0
    m = {"videos": args.videos, "predictions": len(preds), "classes": args.classes,
         "gt_instances": int(len(gt.labels)), "tiou": tious.tolist(),
         "generate_s": round(gen_s, 3), "vectorised_map_s": round(map_s, 3),
         "vectorised_recall_s": round(rec_s, 3), "average_mAP": res["average_mAP"]}
    if not args.skip_loop_map:
        t0 = time.perf_counter()
        ap_loop = loop_average_map(gt_rows, pred_rows, tious)
        loop_s = time.perf_counter() - t0
        m["loop_map_s"] = round(loop_s, 3)
        m["speedup"] = round(loop_s / map_s, 1)
        m["max_abs_ap_diff_vs_loop"] = float(np.abs(ap_loop - np.asarray(
            res["ap_per_tiou_per_class"])).max())
    out["map_ego4d_sized"] = m

    rng = np.random.default_rng(1)
    n = args.nms_cands
    start = rng.uniform(0, 2000, n).astype(np.float32)
    segs = np.stack([start, start + rng.uniform(1, 100, n).astype(np.float32)], 1)
    scores = rng.random(n).astype(np.float32)
    labels = rng.integers(0, args.nms_classes, n)
    nms = {"candidates": n, "classes": args.nms_classes, "sigma": 0.5, "min_score": 0.001,
           "max_seg_num": 1000}
    for mode, multiclass in (("multiclass", True), ("agnostic", False)):
        t0 = time.perf_counter()
        s, sc, lb = batched_nms(segs, scores, labels, 0.1, 0.001, 1000, use_soft_nms=True,
                                multiclass=multiclass, sigma=0.5, voting_thresh=0.0)
        nms[f"{mode}_vectorised_s"] = round(time.perf_counter() - t0, 3)
        nms[f"{mode}_n_out"] = int(len(sc))
        if multiclass or args.loop_agnostic:
            t0 = time.perf_counter()
            ls, lsc, llb = loop_batched_soft_nms(segs, scores, labels, 0.5, 0.001, 1000,
                                                 multiclass)
            nms[f"{mode}_loop_s"] = round(time.perf_counter() - t0, 3)
            nms[f"{mode}_speedup"] = round(nms[f"{mode}_loop_s"] / nms[f"{mode}_vectorised_s"], 1)
            nms[f"{mode}_identical_to_loop"] = bool(
                len(lb) == len(llb) and np.array_equal(lb, llb) and np.array_equal(s, ls)
                and np.allclose(sc, lsc, rtol=1e-6))
    out["soft_nms"] = nms
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
