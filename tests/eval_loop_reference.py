"""Test helper: a plain per-prediction loop of ActionFormer's ANETdetection average precision
(written from the reference's description, independently of asl_tf.evaluation), plus a small
random detection-run generator, and a literal loop port of the reference's soft-NMS. Kept
inside tests/ so it travels with the Bazel test targets."""
import numpy as np

from asl_tf.evaluation import GroundTruth, Predictions


def dedup_rows(gt_rows, tol=1e-3):
    """(video, start, end, label) rows kept by ActionFormer's remove_duplicate_annotations."""
    kept = []
    for v, s, e, lab in gt_rows:
        if not (e - s) >= tol:
            continue
        if any(kv == v and kl == lab and abs(s - ks) <= tol and abs(e - ke) <= tol
               for kv, ks, ke, kl in kept):
            continue
        kept.append((v, s, e, lab))
    return kept


def _tiou(s, e, gs, ge):
    inter = max(0.0, min(e, ge) - max(s, gs))
    return inter / ((ge - gs) + (e - s) - inter)


def _voc_ap(prec, rec):
    mprec = [0.0] + list(prec) + [0.0]
    mrec = [0.0] + list(rec) + [1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    return float(np.sum([(mrec[i] - mrec[i - 1]) * mprec[i]
                         for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]]))


def loop_average_map(gt_rows, pred_rows, tious, dedup=True):
    """ap [T, C] over the sorted GT classes; pred_rows are (video, start, end, label, score).
    Predictions sorted by descending score, stable; GT visited by descending tIoU, first in
    file order on ties."""
    if dedup:
        gt_rows = dedup_rows(gt_rows)
    classes = sorted({r[3] for r in gt_rows})
    ap = np.zeros((len(tious), len(classes)))
    for ci, c in enumerate(classes):
        gts = [r for r in gt_rows if r[3] == c]
        preds = sorted([r for r in pred_rows if r[3] == c], key=lambda r: -r[4])
        if not preds:
            continue
        for t, thr in enumerate(tious):
            locked = set()
            tp = []
            for v, s, e, _, _ in preds:
                cands = [(_tiou(s, e, gs, ge), -j, j) for j, (gv, gs, ge, _) in enumerate(gts)
                         if gv == v]
                hit = False
                for iou, _, j in sorted(cands, reverse=True):
                    if iou < thr:
                        break
                    if j in locked:
                        continue
                    locked.add(j)
                    hit = True
                    break
                tp.append(1.0 if hit else 0.0)
            tp_c = np.cumsum(tp)
            fp_c = np.cumsum(1.0 - np.asarray(tp))
            ap[t, ci] = _voc_ap(tp_c / (tp_c + fp_c), tp_c / len(gts))
    return ap


def loop_soft_nms(segs, scores, sigma, min_score):
    """Literal port of the reference C++ soft-NMS loop (order effects on ties included);
    returns [(input index, score)]. Shared by tests/test_postprocess.py and bench/eval_nms.py."""
    f = np.float32
    x1 = list(segs[:, 0].astype(f))
    x2 = list(segs[:, 1].astype(f))
    sc = list(scores.astype(f))
    area = [f(b - a) + f(1e-6) for a, b in zip(x1, x2)]
    inds = list(range(len(sc)))
    n = len(sc)
    out = []
    i = 0
    while i < n:
        mx, mp = sc[i], i
        for p in range(i + 1, n):
            if mx < sc[p]:
                mx, mp = sc[p], p
        for arr in (x1, x2, sc, area, inds):
            arr[i], arr[mp] = arr[mp], arr[i]
        out.append((inds[i], sc[i]))
        p = i + 1
        while p < n:
            inter = max(f(0), min(x2[i], x2[p]) - max(x1[i], x1[p]))
            ovr = f(inter / (area[i] + area[p] - inter))
            sc[p] = f(sc[p] * f(np.exp(-(ovr * ovr) / f(sigma))))
            if sc[p] < f(min_score):
                for arr in (x1, x2, sc, area, inds):
                    arr[p] = arr[n - 1]
                n -= 1
                p -= 1
            p += 1
        i += 1
    return out


def random_run(n_videos, n_preds, n_classes, seed=0, duration=100.0, gt_per_video=4):
    """Random GT rows and predictions near them (right or wrong class) plus random ones."""
    rng = np.random.default_rng(seed)
    gt_rows, pred_rows = [], []
    for v in range(n_videos):
        vid = f"v{v:03d}"
        n_gt = int(rng.integers(1, 2 * gt_per_video))
        starts = rng.uniform(0, duration - 5, n_gt)
        lens = rng.uniform(0.5, 30, n_gt)
        labs = rng.integers(0, n_classes, n_gt)
        for s, ln, lab in zip(starts, lens, labs):
            gt_rows.append((vid, float(s), float(s + ln), int(lab)))
        for _ in range(n_preds):
            if rng.random() < 0.6:
                k = int(rng.integers(0, n_gt))
                s = starts[k] + rng.normal(0, 0.2) * lens[k]
                e = max(starts[k] + lens[k] + rng.normal(0, 0.2) * lens[k], s + 0.1)
                lab = int(labs[k]) if rng.random() < 0.7 else int(rng.integers(0, n_classes))
            else:
                s = rng.uniform(0, duration)
                e = s + rng.uniform(0.5, 30)
                lab = int(rng.integers(0, n_classes))
            pred_rows.append((vid, float(s), float(e), lab, float(rng.random())))
    return gt_rows, pred_rows


def rows_to_arrays(gt_rows, pred_rows):
    vids = sorted({r[0] for r in gt_rows})
    index = {v: i for i, v in enumerate(vids)}
    gt = GroundTruth(vids, [index[r[0]] for r in gt_rows],
                     np.asarray([[r[1], r[2]] for r in gt_rows]).reshape(-1, 2),
                     [r[3] for r in gt_rows])
    preds = Predictions([r[0] for r in pred_rows],
                        np.asarray([[r[1], r[2]] for r in pred_rows]).reshape(-1, 2),
                        [r[3] for r in pred_rows], [r[4] for r in pred_rows])
    return gt, preds
