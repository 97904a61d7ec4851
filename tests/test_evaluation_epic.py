"""EPIC-KITCHENS-100 action detection scorer (official C2-Action-Detection semantics)."""
import csv
import json

import numpy as np
import pytest

import eval_loop_reference as ref
from conftest import FIXTURES
from asl_tf.eval_epic import evaluate_epic, read_epic_ground_truth, read_epic_submission

GT = FIXTURES / "eval_extra" / "epic100_validation_subset.csv"


def _ts(t):
    h, m, s = t.split(":")
    return float(h) * 3600 + float(m) * 60 + float(s)


def _gt_rows():
    with open(GT, newline="") as f:
        return list(csv.DictReader(f))


def _submission(entries):
    return {"version": "0.2", "challenge": "action_detection", "sls_pt": 1, "sls_tl": 1,
            "sls_td": 1, "results": entries}


def test_gt_as_predictions_scores_100(tmp_path):
    res = {}
    for r in _gt_rows():
        res.setdefault(r["video_id"], []).append({
            "verb": int(r["verb_class"]), "noun": int(r["noun_class"]),
            "action": f"{r['verb_class']},{r['noun_class']}", "score": 1.0,
            "segment": [_ts(r["start_timestamp"]), _ts(r["stop_timestamp"])]})
    p = tmp_path / "sub.json"
    p.write_text(json.dumps(_submission(res)))
    out = evaluate_epic(GT, p)
    for task in ("verb", "noun", "action"):
        assert out[task]["mAP_per_tiou"] == [1.0] * 5
        assert out[task]["average_mAP"] == 1.0


def test_gt_reader_times_and_labels():
    gt = read_epic_ground_truth(GT)
    rows = _gt_rows()
    assert len(gt["segments"]) == len(rows) == 208
    assert gt["segments"][0].tolist() == [0.0, 1.89]
    assert gt["verb"][1] == 1 and gt["noun"][1] == 2
    assert len(gt["video_ids"]) == 11


@pytest.mark.parametrize("seed", [0, 1])
def test_perturbed_submission_matches_loop_reference(tmp_path, seed):
    rng = np.random.default_rng(seed)
    rows = _gt_rows()
    res = {}
    flat = []  # (video, s, e, verb, noun, action_verb, action_noun, score)
    for r in rows:
        if rng.random() < 0.2:
            continue
        s, e = _ts(r["start_timestamp"]), _ts(r["stop_timestamp"])
        ln = max(e - s, 0.1)
        s2 = s + rng.uniform(-0.3, 0.3) * ln
        e2 = max(e + rng.uniform(-0.3, 0.3) * ln, s2 + 0.01)
        v, n = int(r["verb_class"]), int(r["noun_class"])
        if rng.random() < 0.15:
            v = int(rng.integers(0, 97))
        if rng.random() < 0.15:
            n = int(rng.integers(0, 300))
        av, an = (v, n) if rng.random() < 0.9 else (int(rng.integers(0, 97)), n)
        sc = float(np.round(rng.random(), 3))
        flat.append((r["video_id"], s2, e2, v, n, av, an, sc))
    flat.append(("P99_99", 1.0, 4.0, 0, 2, 0, 2, 0.99))  # unknown video: false positive
    for vid, s, e, v, n, av, an, sc in flat:
        res.setdefault(vid, []).append({"verb": v, "noun": n, "action": f"{av},{an}",
                                        "score": sc, "segment": [s, e]})
    p = tmp_path / "sub.json"
    p.write_text(json.dumps(_submission(res)))
    out = evaluate_epic(GT, p)

    tious = np.linspace(0.1, 0.5, 5)
    gts = [(r["video_id"], _ts(r["start_timestamp"]), _ts(r["stop_timestamp"]),
            int(r["verb_class"]), int(r["noun_class"])) for r in rows]
    # submission order: grouped by video in the JSON
    order = []
    for vid in res:
        order += [t for t in flat if t[0] == vid]
    for task in ("verb", "noun", "action"):
        if task == "verb":
            g = [(a, s, e, v) for a, s, e, v, n in gts]
            q = [(t[0], t[1], t[2], t[3], t[7]) for t in order]
        elif task == "noun":
            g = [(a, s, e, n) for a, s, e, v, n in gts]
            q = [(t[0], t[1], t[2], t[4], t[7]) for t in order]
        else:
            g = [(a, s, e, v * 300 + n) for a, s, e, v, n in gts]
            q = [(t[0], t[1], t[2], t[5] * 300 + t[6], t[7]) for t in order]
        ap = ref.loop_average_map(g, q, tious, dedup=False)
        np.testing.assert_allclose(out[task]["ap_per_tiou_per_class"], ap, atol=1e-12, rtol=0)
        np.testing.assert_allclose(out[task]["mAP_per_tiou"], ap.mean(axis=1), atol=1e-12)
    assert out["verb"]["n_pred_unknown_video"] == 1
    assert out["action"]["n_pred_unknown_label"] > 0  # random actions absent from the GT


def test_bad_submissions_refused(tmp_path):
    good = {"verb": 0, "noun": 2, "action": "0,2", "score": 0.5, "segment": [0.0, 1.0]}
    cases = [
        (dict(good, verb=97), "outside the class map"),
        (dict(good, noun=-1), "outside the class map"),
        (dict(good, action="0;2"), "verb,noun"),
        (dict(good, score=float("nan")), "score"),
        (dict(good, segment=[2.0, 1.0]), "end < start"),
        (dict(good, segment=[1.0]), "2 timestamps"),
        ({k: v for k, v in good.items() if k != "score"}, "missing 'score'"),
        (dict(good, verb="0"), "integer class id"),
    ]
    for i, (entry, msg) in enumerate(cases):
        p = tmp_path / f"bad{i}.json"
        p.write_text(json.dumps(_submission({"P01_11": [entry]})))
        with pytest.raises(ValueError, match=msg):
            read_epic_submission(p)
    p = tmp_path / "nores.json"
    p.write_text(json.dumps({"version": "0.2"}))
    with pytest.raises(ValueError, match="results"):
        read_epic_submission(p)
    p = tmp_path / "empty.json"
    p.write_text(json.dumps(_submission({})))
    out = evaluate_epic(GT, p)
    assert out["action"]["average_mAP"] == 0.0
    p = tmp_path / "notepic.csv"
    p.write_text("video-id,t-start,t-end,label\nv,1,2,3\n")
    with pytest.raises(ValueError, match="missing column"):
        read_epic_ground_truth(p)
