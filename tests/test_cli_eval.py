"""asl-eval command line: the acceptance interface, JSON output, bad input exits 2."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import FIXTURES, REPO

EVAL = FIXTURES / "golden" / "eval"
DATA = FIXTURES / "data"


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "asl_tf.cli.eval", *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def expected():
    return json.loads((EVAL / "visible_expected.json").read_text())


@pytest.mark.parametrize("dataset,tiou,key", [
    ("thumos14", "0.3:0.7:5", "thumos_0.3:0.7:0.1"),
    ("anet", "0.5:0.95:10", "anet_0.5:0.95:0.05"),
    ("ego4d", "0.1:0.5:5", "ego4d_0.1:0.5:0.1"),
])
def test_acceptance_interface(tmp_path, expected, dataset, tiou, key):
    out = tmp_path / "out.json"
    r = _run("--gt", EVAL / "visible_gt.json", "--pred", EVAL / "visible_pred.csv",
             "--dataset", dataset, "--split", "validation", "--tiou", tiou, "--json", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    exp = expected["actionformer_ANETdetection"][key]
    np.testing.assert_allclose(res["tiou_thresholds"], exp.get("tiou_thresholds",
                                                               res["tiou_thresholds"]))
    np.testing.assert_allclose(res["mAP_per_tiou"], exp["mAP_per_tiou"], atol=1e-9, rtol=0)
    assert abs(res["average_mAP"] - exp["average_mAP"]) <= 1e-9
    assert "mAP" in r.stdout and f"{100 * exp['average_mAP']:.2f}" in r.stdout
    if dataset == "ego4d":
        e = expected["ego4d_asl_Moment_Retrieval_recall"]["recall_at_1x_tiou_0.5"]
        assert abs(res["recall_at_1x_tiou_0.5"] - e) <= 1e-9
    else:
        assert "recall_at_1x_tiou_0.5" not in res
    # the prediction rows for the video absent from the GT are reported
    assert res["n_pred_unknown_video"] == 2 and "v101_not_in_gt" in r.stderr


def test_default_tiou_and_real_thumos(tmp_path):
    out = tmp_path / "o.json"
    r = _run("--gt", DATA / "thumos14" / "thumos14.json",
             "--pred", DATA / "golden_eval" / "thumos14_test_perturbed_preds.csv",
             "--dataset", "thumos14", "--split", "Test", "--json", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    np.testing.assert_allclose(res["tiou_thresholds"], np.linspace(0.3, 0.7, 5))
    assert round(100 * res["average_mAP"], 4) == 51.5011
    assert "51.50" in r.stdout


def test_epic_cli(tmp_path):
    import csv
    gt = FIXTURES / "eval_extra" / "epic100_validation_subset.csv"
    res = {}
    with open(gt, newline="") as f:
        for row in csv.DictReader(f):
            ts = [sum(float(x) * m for x, m in zip(row[k].split(":"), (3600, 60, 1)))
                  for k in ("start_timestamp", "stop_timestamp")]
            res.setdefault(row["video_id"], []).append({
                "verb": int(row["verb_class"]), "noun": int(row["noun_class"]),
                "action": f"{row['verb_class']},{row['noun_class']}", "score": 1.0,
                "segment": ts})
    sub = tmp_path / "sub.json"
    sub.write_text(json.dumps({"version": "0.2", "challenge": "action_detection", "sls_pt": 0,
                               "sls_tl": 0, "sls_td": 0, "results": res}))
    out = tmp_path / "o.json"
    r = _run("--gt", gt, "--pred", sub, "--dataset", "epic", "--json", out)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    for task in ("verb", "noun", "action"):
        assert d[task]["average_mAP"] == 1.0 and len(d[task]["mAP_per_tiou"]) == 5
    assert "100.00" in r.stdout


def test_empty_prediction_file_scores_zero(tmp_path):
    pred = tmp_path / "empty.csv"
    pred.write_text("video-id,t-start,t-end,label,score\n")
    out = tmp_path / "o.json"
    r = _run("--gt", EVAL / "visible_gt.json", "--pred", pred, "--dataset", "ego4d",
             "--json", out)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["average_mAP"] == 0.0 and d["recall_at_1x_tiou_0.5"] == 0.0


@pytest.mark.parametrize("content,args,msg", [
    (None, ("--split", "training"), "available splits: validation"),
    ("video-id,t-start,t-end,label,score\nv101_000,1,2,3,nan\n", (), "score"),
    ("video-id,t-start,t-end,label,score\nv101_000,3,2,3,0.5\n", (), "t-end < t-start"),
    ("video-id,t-start,t-end,label,score\nv101_000,1,2,77,0.5\n", (), "outside the class map"),
    (None, ("--tiou", "0.3:0.7"), "START:STOP:NUM"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, content, args, msg):
    pred = EVAL / "visible_pred.csv"
    if content is not None:
        pred = tmp_path / "p.csv"
        pred.write_text(content)
    out = tmp_path / "o.json"
    r = _run("--gt", EVAL / "visible_gt.json", "--pred", pred, "--dataset", "thumos14",
             "--json", out, *args)
    assert r.returncode == 2
    err_lines = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(err_lines) == 1 and msg in err_lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_missing_gt_file_exits_2(tmp_path):
    r = _run("--gt", tmp_path / "nope.json", "--pred", EVAL / "visible_pred.csv",
             "--dataset", "anet")
    assert r.returncode == 2 and "nope.json" in r.stderr and "Traceback" not in r.stderr


def test_gt_through_data_readers_and_dashed_flags(tmp_path):
    """A super-events GT (not read by the scorer itself) goes through read_annotations;
    `--gt-format` / `--label-offset` are accepted with dashes."""
    gt = tmp_path / "se.json"
    gt.write_text(json.dumps({
        "a": {"subset": "testing", "duration": 30.0, "actions": [[2, 1.0, 5.0], [3, 10.0, 20.0]]},
        "b": {"subset": "training", "duration": 30.0, "actions": [[1, 0.0, 3.0]]}}))
    pred = tmp_path / "p.csv"
    pred.write_text("video-id,t-start,t-end,label,score\na,1.0,5.0,1,0.9\na,10.0,19.0,2,0.8\n"
                    "a,0.0,2.0,2,0.95\n")
    out = tmp_path / "o.json"
    r = _run("--gt", gt, "--pred", pred, "--dataset", "charades", "--gt-format", "superevents",
             "--label-offset", "1", "--split", "TESTING", "--tiou", "0.5:0.5:1", "--json", out)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["n_videos"] == 1 and d["classes"] == [1, 2]
    # class 1: one TP -> AP 1; class 2: FP (score .95) then TP -> AP 0.5
    assert d["ap_per_tiou_per_class"] == [[1.0, 0.5]]
    r = _run("--gt", gt, "--pred", pred, "--dataset", "charades", "--split", "val")
    assert r.returncode == 2 and "testing" in r.stderr and "training" in r.stderr
