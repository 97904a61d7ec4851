"""asl_tf.evaluation against the ANETdetection / Ego4D goldens and the real THUMOS14 golden."""
import json

import numpy as np
import pytest

import eval_loop_reference as ref
from conftest import FIXTURES
from asl_tf.eval_io import ClassMap, load_ground_truth, load_predictions
from asl_tf.evaluation import (GroundTruth, Predictions, average_map, ego4d_recall,
                               evaluate_detections, parse_tiou, remove_duplicate_annotations,
                               topkx_recall)

EVAL = FIXTURES / "golden" / "eval"
DATA = FIXTURES / "data"
SETS = [("thumos_0.3:0.7:0.1", "0.3:0.7:5"), ("anet_0.5:0.95:0.05", "0.5:0.95:10"),
        ("ego4d_0.1:0.5:0.1", "0.1:0.5:5")]


@pytest.fixture(scope="module")
def expected():
    return json.loads((EVAL / "visible_expected.json").read_text())


@pytest.fixture(scope="module")
def visible():
    gt, classes = load_ground_truth(EVAL / "visible_gt.json", split="validation")
    return gt, classes


@pytest.mark.parametrize("pred_file", ["visible_pred.csv", "visible_pred.json"])
@pytest.mark.parametrize("key,spec", SETS)
def test_anetdetection_golden(visible, expected, pred_file, key, spec):
    gt, classes = visible
    preds = load_predictions(EVAL / pred_file, classes)
    res = evaluate_detections(gt, preds, spec)
    exp = expected["actionformer_ANETdetection"][key]
    np.testing.assert_allclose(res["tiou_thresholds"], np.linspace(*map(float, spec.split(":")[:2]),
                                                                   int(spec.split(":")[2])))
    np.testing.assert_allclose(res["ap_per_tiou_per_class"], exp["ap_per_tiou_per_class"],
                               atol=1e-9, rtol=0)
    np.testing.assert_allclose(res["mAP_per_tiou"], exp["mAP_per_tiou"], atol=1e-9, rtol=0)
    assert abs(res["average_mAP"] - exp["average_mAP"]) <= 1e-9
    assert res["recall_top_k"] == exp["recall_top_k"]
    np.testing.assert_allclose(res["mean_recall_per_tiou_per_k"],
                               exp["mean_recall_per_tiou_per_k"], atol=1e-9, rtol=0)
    np.testing.assert_allclose(res["recall_per_tiou_per_k_per_class"],
                               exp["recall_per_tiou_per_k_per_class"], atol=1e-9, rtol=0)
    # the prediction rows for the video absent from the GT are counted and reported
    assert res["unknown_videos"] == [expected["edge_cases"]["predictions_for_video_not_in_gt"]]
    assert res["n_pred_unknown_video"] > 0


@pytest.mark.parametrize("gt_file,pred_file", [
    ("visible_gt.json", "visible_pred.csv"),
    ("visible_gt.json", "visible_pred.json"),
    ("visible_gt_ego4d_format.json", "visible_pred_ego4d_format.json"),
])
def test_ego4d_official_recall_golden(expected, gt_file, pred_file):
    gt, classes = load_ground_truth(EVAL / gt_file, split="validation")
    preds = load_predictions(EVAL / pred_file, classes)
    res = ego4d_recall(gt, preds)
    exp = expected["ego4d_asl_Moment_Retrieval_recall"]
    np.testing.assert_allclose(res["recall_per_tiou_per_rank"], exp["recall_per_tiou_per_rank"],
                               atol=1e-9, rtol=0)
    assert abs(res["recall_at_1x_tiou_0.5"] - exp["recall_at_1x_tiou_0.5"]) <= 1e-9
    assert abs(res["recall_at_5x_tiou_0.5"] - exp["recall_at_5x_tiou_0.5"]) <= 1e-9


def test_ego4d_recall_differs_from_actionformer_recall(visible, expected):
    """Guards that the two recalls are distinct definitions (pooled/strict/no dedup vs per class)."""
    gt, classes = visible
    preds = load_predictions(EVAL / "visible_pred.csv", classes)
    af = topkx_recall(gt, preds, [0.5])["mean_recall_per_tiou_per_k"][0][0]
    eg = ego4d_recall(gt, preds)["recall_at_1x_tiou_0.5"]
    assert abs(af - eg) > 1e-3


def test_real_thumos14_golden():
    """Perturbed predictions on the real THUMOS14 test annotations: the official 51.5011 %."""
    gt, classes = load_ground_truth(DATA / "thumos14" / "thumos14.json", split="test")
    assert len(gt.video_ids) == 212 and len(gt.labels) == 3358
    preds = load_predictions(DATA / "golden_eval" / "thumos14_test_perturbed_preds.csv", classes)
    assert len(preds) == 3101
    res = average_map(gt, preds, "0.3:0.7:5")
    pct = [round(100 * v, 4) for v in res["mAP_per_tiou"]]
    assert pct == [60.4431, 60.4431, 58.9088, 50.1246, 27.5857]
    assert round(100 * res["average_mAP"], 4) == 51.5011


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_map_matches_per_prediction_loop(seed):
    """Random runs with duplicate/tiny GT, score ties, unknown videos and labels."""
    gt_rows, pred_rows = ref.random_run(6, 80, 7, seed=seed)
    # duplicate GT, tiny GT, ties, a prediction for an unknown video
    v, s, e, lab = gt_rows[0]
    gt_rows += [(v, s + 0.0005, e - 0.0004, lab), (v, 10.0, 10.0005, lab)]
    pred_rows = [(r[0], r[1], r[2], r[3], round(r[4], 1)) for r in pred_rows]
    pred_rows += [("unknown_video", 1.0, 5.0, 1, 0.9), (v, s, e, lab, 0.5)]
    tious = parse_tiou("0.1:0.7:7")
    gt, preds = ref.rows_to_arrays(gt_rows, pred_rows)
    for dedup in (True, False):
        ap_loop = ref.loop_average_map(gt_rows, pred_rows, tious, dedup=dedup)
        res = average_map(gt, preds, tious, remove_duplicates=dedup, warn=False)
        np.testing.assert_allclose(res["ap_per_tiou_per_class"], ap_loop, atol=1e-12, rtol=0)
    assert res["n_pred_unknown_video"] == 1


def test_remove_duplicate_annotations_rule():
    video = np.array([0, 0, 0, 0, 1])
    segs = np.array([[1, 5], [1.0009, 5.0009], [1.0009, 5.0009], [2, 2.0005], [1, 5]])
    labels = np.array([3, 3, 4, 3, 3])
    keep = remove_duplicate_annotations(video, segs, labels)
    assert keep.tolist() == [True, False, True, False, True]


def test_unknown_labels_are_ignored_not_remapped():
    # GT classes {3, 5}; the reference would remap a predicted label 0 onto class index 0 (= 3)
    gt = GroundTruth(["a"], [0, 0], [[0, 10], [20, 30]], [3, 5])
    p_ok = Predictions(["a"], [[0, 10]], [3], [0.9])
    p_bad = Predictions(["a", "a"], [[0, 10], [0, 10]], [0, 3], [0.95, 0.9])
    r_ok = average_map(gt, p_ok, [0.5], warn=False)
    r_bad = average_map(gt, p_bad, [0.5], warn=False)
    assert r_bad["ap_per_tiou_per_class"] == r_ok["ap_per_tiou_per_class"] == [[1.0, 0.0]]
    assert r_bad["n_pred_unknown_label"] == 1 and r_bad["unknown_labels"] == [0]


def test_empty_predictions_give_zero(visible):
    gt, _ = visible
    empty = Predictions([], np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0))
    res = evaluate_detections(gt, empty, "0.3:0.7:5", ego4d=True)
    assert res["average_mAP"] == 0.0 and res["mAP_per_tiou"] == [0.0] * 5
    assert res["recall_at_1x_tiou_0.5"] == 0.0
    assert np.all(np.asarray(res["mean_recall_per_tiou_per_k"]) == 0)


def test_bad_predictions_refused(tmp_path, visible):
    gt, classes = visible
    head = "video-id,t-start,t-end,label,score\n"
    cases = {
        "nan.csv": (head + "v101_000,1.0,2.0,3,nan\n", "score"),
        "rev.csv": (head + "v101_000,5.0,2.0,3,0.5\n", "t-end < t-start"),
        "lab.csv": (head + "v101_000,1.0,2.0,42,0.5\n", "outside the class map"),
        "name.csv": (head + "v101_000,1.0,2.0,NoSuchClass,0.5\n", "not a class"),
        "hdr.csv": ("video,start,end,label,score\nv,1,2,3,0.5\n", "lacks column"),
        "num.csv": (head + "v101_000,abc,2.0,3,0.5\n", "not a number"),
    }
    for name, (text, msg) in cases.items():
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(ValueError, match=msg) as err:
            load_predictions(p, classes)
        assert str(p) in str(err.value)
    with pytest.raises(FileNotFoundError):
        load_predictions(tmp_path / "missing.csv", classes)


def test_prediction_formats_agree(tmp_path, visible):
    gt, classes = visible
    base = load_predictions(EVAL / "visible_pred.csv", classes)
    # underscore header, label names, ActivityNet results JSON with names
    rows = ["video_id,t_start,t_end,label,score"]
    results = {}
    for v, (s, e), lab, sc in zip(base.video_ids, base.segments.tolist(), base.labels,
                                  base.scores.tolist()):
        rows.append(f"{v},{s!r},{e!r},{classes.id_to_name[int(lab)]},{sc!r}")
        results.setdefault(v, []).append({"segment": [s, e], "score": sc,
                                          "label": classes.id_to_name[int(lab)]})
    (tmp_path / "names.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "anet.json").write_text(json.dumps(
        {"version": "1.0", "external_data": {}, "results": results}))
    ref = average_map(gt, base, "0.3:0.7:5", warn=False)
    for f in ("names.csv", "anet.json"):
        p = load_predictions(tmp_path / f, classes)
        assert len(p) == len(base)
        assert average_map(gt, p, "0.3:0.7:5", warn=False)["ap_per_tiou_per_class"] \
            == ref["ap_per_tiou_per_class"]
    (tmp_path / "empty.csv").write_text("video-id,t-start,t-end,label,score\n")
    (tmp_path / "empty2.csv").write_text("")
    (tmp_path / "empty.json").write_text('{"results": {}}')
    for f in ("empty.csv", "empty.json"):
        assert len(load_predictions(tmp_path / f, classes)) == 0
    with pytest.raises(ValueError, match="empty2.csv: the predictions file is empty"):
        load_predictions(tmp_path / "empty2.csv", classes)  # 0 bytes: a crashed writer


def test_split_matching_nothing_is_refused():
    with pytest.raises(ValueError, match="available splits: Test, Validation"):
        load_ground_truth(DATA / "thumos14" / "thumos14.json", split="training")
    gt, _ = load_ground_truth(DATA / "thumos14" / "thumos14.json", split="TEST")
    assert len(gt.video_ids) == 212
    gt_all, _ = load_ground_truth(DATA / "thumos14" / "thumos14.json")
    assert len(gt_all.video_ids) == 412


def test_parse_tiou():
    np.testing.assert_array_equal(parse_tiou("0.5:0.95:10"), np.linspace(0.5, 0.95, 10))
    for bad in ("0.3:0.7", "a:b:c", "0:0.5:5", "0.3:1.5:3"):
        with pytest.raises(ValueError, match="tiou"):
            parse_tiou(bad)


def test_from_records_and_detections():
    class Rec:
        def __init__(self, vid, segs, labels):
            self.video_id, self.segments, self.labels = vid, np.asarray(segs), np.asarray(labels)

    gt = GroundTruth.from_records([Rec("a", [[0, 10]], [1]), Rec("b", np.zeros((0, 2)), [])])
    dets = [{"video_id": "a", "segments": np.array([[0, 10.0]], np.float32),
             "scores": np.array([0.7], np.float32), "labels": np.array([1])},
            {"video_id": "b", "segments": np.array([[0, 3.0]]), "scores": [0.9], "labels": [1]}]
    res = evaluate_detections(gt, dets, [0.5])
    # FP (video b, no GT) ranked first, then the TP: AP = 0.5
    assert res["ap_per_tiou_per_class"] == [[0.5]]
    assert ClassMap({1: "x"}).resolve("x", "w") == 1


def test_asl_ego4d_map_variant_without_duplicate_removal(expected):
    """ASL's Ego4D eval_detection keeps duplicate/tiny GT: remove_duplicates=False reproduces it,
    and the ActionFormer default differs on this set."""
    gt, classes = load_ground_truth(EVAL / "visible_gt_ego4d_format.json")
    preds = load_predictions(EVAL / "visible_pred_ego4d_format.json", classes)
    exp = expected["ego4d_asl_eval_detection_ANETdetection"]
    res = average_map(gt, preds, "0.1:0.5:5", remove_duplicates=False, warn=False)
    np.testing.assert_allclose(res["mAP_per_tiou"], exp["mAP_per_tiou"], atol=1e-9, rtol=0)
    assert abs(res["average_mAP"] - exp["average_mAP"]) <= 1e-9
    af = average_map(gt, preds, "0.1:0.5:5", warn=False)["average_mAP"]
    assert abs(af - expected["actionformer_ANETdetection"]["ego4d_0.1:0.5:0.1"]["average_mAP"]) <= 1e-9
    assert abs(af - exp["average_mAP"]) > 1e-4
