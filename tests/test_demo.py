"""`asl-demo`: a tiny version of the whole pipeline, and its user errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

TINY = ["--train_videos", "4", "--test_videos", "2", "--epochs", "1", "--warmup_epochs", "0",
        "--formats", "tflite,onnx", "--timeline_videos", "2", "--run_eagerly", "--verify_windows", "2",
        "--data_override", "max_duration=90", "--data_override", "input_dim=16",
        "--override", "dataset.max_seq_len=256", "--override", "model.embd_dim=32",
        "--override", "model.fpn_dim=32", "--override", "model.head_dim=32",
        "--override", "train_cfg.batch_size=2"]


def _demo(args, timeout):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "asl_tf.cli.demo", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_tiny_demo_end_to_end(tmp_path):
    """generate -> train (a few steps) -> evaluate -> export TFLite + ONNX (each verified against
    Keras before it is written) -> edge runtime -> report."""
    work = tmp_path / "demo"
    res = _demo(["--workdir", str(work), *TINY], timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((work / "summary.json").read_text())
    status = {k: v["status"] for k, v in summary["steps"].items()}
    assert status == {k: "done" for k in status}, status
    # every step ran for real: data, a trained model, exported file, edge detections scored
    assert len(list((work / "data" / "features").glob("*.npy"))) == 6
    assert (work / "export" / "model.tflite").stat().st_size > 10_000
    assert (work / "export" / "model.onnx").stat().st_size > 10_000
    maps = summary["mAP"]
    assert set(maps) == {"keras", "tflite", "onnx"}
    for r in maps.values():
        # THUMOS'14 protocol: tIoU 0.3:0.7:5, the average mAP is their mean (SEMANTICS.md)
        assert len(r["mAP_per_tiou"]) == 5
        np.testing.assert_allclose(r["tiou_thresholds"], [0.3, 0.4, 0.5, 0.6, 0.7])
        assert r["average_mAP"] == pytest.approx(float(np.mean(r["mAP_per_tiou"])), abs=1e-6)
    # the fp32 TFLite export through the TF-free edge runtime reproduces the Keras detections'
    # mAP (sliding windows vs whole video may differ slightly on long videos)
    for fmt in ("tflite", "onnx"):
        assert abs(maps[fmt]["average_mAP"] - maps["keras"]["average_mAP"]) < 0.02
    report = (work / "report.md").read_text()
    assert "synthetic" in report and "| keras |" in report and "| tflite |" in report
    png = (work / "timeline.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert str(work / "report.md") in res.stdout


@pytest.mark.parametrize("args, msg", [
    (["--data_override", "bogus=1"], "synthetic.bogus"),
    (["--data_override", "noise=-1"], "synthetic.noise"),
    (["--skip", "everything"], "--skip"),
    (["--formats", "pdf"], "--formats"),
    (["--config", "/nonexistent/demo.yaml"], "/nonexistent/demo.yaml"),
    (["--override", "model.bogus=1"], "model.bogus"),
])
def test_user_errors_exit_2(tmp_path, args, msg):
    res = _demo(["--workdir", str(tmp_path / "w"), *args], timeout=120)
    assert res.returncode == 2, res.stderr
    assert msg in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_timeline_lanes():
    from asl_tf.report import _lanes

    segs = np.array([[0, 5], [1, 2], [3, 4], [6, 7], [1.5, 3.5]])
    lanes = _lanes(segs)
    assert lanes == [0, 1, 1, 0, 2]
    for a in range(len(segs)):
        for b in range(a + 1, len(segs)):
            if lanes[a] == lanes[b]:
                assert segs[a, 1] <= segs[b, 0] or segs[b, 1] <= segs[a, 0]
