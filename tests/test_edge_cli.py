"""edge/cli.py (`asl-edge run|bench`), also in a subprocess where TensorFlow, Keras and asl_tf
cannot be imported (a device)."""
import json
import subprocess
import sys

import numpy as np
import pytest

import edge_models as em
from conftest import REPO
from edge import cli
from edge.runtime import EdgeModel
from edge.stream import detect_video


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return em.cached_models(tmp_path_factory)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    feats, _, _ = em.synthetic_video(300, seed=21, noise=0.4, dist_noise=0.07)
    path = tmp_path_factory.mktemp("edge_video") / "clip_01.npy"
    np.save(path, feats)
    return path, feats


def _device_run(args, tmp_path, code=None):
    """`python -m edge.cli ...` where importing tensorflow/keras/asl_tf raises."""
    env = em.device_env(tmp_path, REPO)
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "edge.cli", *args]
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)


def test_run_offline_json(models, video, tmp_path):
    path, feats = video
    out = tmp_path / "dets.json"
    assert cli.main(["run", "--model", models["tflite"], "--features", str(path), "--out",
                     str(out), "--hop", "32", "--duration", "40.0"]) == 0
    doc = json.loads(out.read_text())
    assert doc["video_id"] == "clip_01"
    dets = doc["detections"]
    assert len(dets) > 10
    assert set(dets[0]) == {"segment", "score", "label", "label_name"}
    scores = [d["score"] for d in dets]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= d["segment"][0] <= d["segment"][1] <= 40.0 for d in dets)
    assert all(d["label_name"] == f"cls_{d['label']}" for d in dets)
    ref = detect_video(EdgeModel(models["tflite"]), feats, hop=32, duration=40.0)
    assert [d["score"] for d in ref] == pytest.approx(scores)
    # the fps / stride / frames overrides are applied: twice the fps halves the times
    out2 = tmp_path / "dets2.json"
    assert cli.main(["run", "--model", models["onnx"], "--features", str(path), "--out",
                     str(out2), "--hop", "32", "--fps", "60", "--duration", "40.0"]) == 0
    d2 = json.loads(out2.read_text())["detections"]
    seg30, seg60 = np.asarray([d["segment"] for d in dets]), np.asarray([d["segment"] for d in d2])
    inside = seg30[:, 1] < 40.0  # not clamped at the duration
    assert inside.sum() > 10
    np.testing.assert_allclose(seg60[inside], seg30[inside] / 2, rtol=1e-4, atol=1e-4)


def test_run_stream_json_lines(models, video, tmp_path):
    path, feats = video
    out = tmp_path / "dets.jsonl"
    assert cli.main(["run", "--model", models["tflite"], "--features", str(path), "--out",
                     str(out), "--stream", "--hop", "32", "--chunk", "5"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) > 10
    assert {"video_id", "segment", "score", "label", "label_name", "latency_steps",
            "latency_s", "emitted_at"} <= set(lines[0])
    assert [d["emitted_at"] for d in lines] == sorted(d["emitted_at"] for d in lines)
    ref = detect_video(EdgeModel(models["tflite"]), feats, hop=32)
    assert sorted(d["score"] for d in lines) == pytest.approx(sorted(d["score"] for d in ref))


def test_bench(models, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--model", models["tflite"], "--threads", "1", "--windows", "5",
                     "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["window_steps"] == em.WINDOW and rep["threads"] == 1
    for key in ("model_ms_per_window_median", "model_ms_per_video_second",
                "stream_ms_per_video_second", "real_time_factor", "peak_rss_mb"):
        assert rep[key] > 0, key
    assert rep["stream_windows"] == 5
    assert json.loads(capsys.readouterr().out) == rep


def test_cli_user_errors_one_line_exit_2(models, video, tmp_path, capsys, caplog):
    path, feats = video
    np.save(tmp_path / "wide.npy", np.zeros((100, 9), np.float32))
    nan = feats.copy()
    nan[[40, 41, 90]] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    cases = [
        (["--model", str(junk), "--features", str(path)], "not a TFLite"),
        (["--model", models["tflite"], "--features", str(tmp_path / "wide.npy")], "width 9"),
        (["--model", models["tflite"], "--features", str(path), "--hop", "65"],
         "larger than the model's window"),
        (["--model", models["tflite"], "--features", str(tmp_path / "none.npy")], "not found"),
        (["--model", models["tflite"], "--features", str(tmp_path / "nan.npy")],
         "3 feature steps contain NaN/inf (first: step 40)"),
    ]
    for args, msg in cases:
        capsys.readouterr()
        assert cli.main(["run", *args, "--out", str(tmp_path / "o.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("asl-edge: error:") and msg in err and "\n" not in err, err
    assert not (tmp_path / "o.json").exists()  # nothing written half
    for argv in (["run", "--model", "m.tflite"], ["bench", "--model", "m", "--threads", "0"]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.startswith("asl-edge: error:") and err.count("\n") == 1
    # in stream mode the NaN chunks are dropped with a warning and the stream goes on
    out = tmp_path / "nan.jsonl"
    assert cli.main(["run", "--model", models["tflite"], "--features", str(tmp_path / "nan.npy"),
                     "--out", str(out), "--stream", "--chunk", "10"]) == 0
    assert "dropping a chunk of 10 steps at step 40" in caplog.text
    assert len(out.read_text().splitlines()) > 10


def test_runs_on_a_device_without_tensorflow(models, video, tmp_path):
    """Issue item 5: the blocker works, and the edge CLI runs without TF/Keras/asl_tf."""
    probe = _device_run(None, tmp_path, code="import tensorflow")
    assert probe.returncode != 0 and "not available on the device" in probe.stderr
    probe = _device_run(None, tmp_path, code="import asl_tf")
    assert probe.returncode != 0 and "not available on the device" in probe.stderr
    path, _ = video
    for fmt in ("tflite", "onnx"):
        out = tmp_path / f"dev_{fmt}.json"
        res = _device_run(["run", "--model", models[fmt], "--features", str(path), "--out",
                           str(out), "--hop", "32"], tmp_path)
        assert res.returncode == 0, res.stderr
        dets = json.loads(out.read_text())["detections"]
        assert len(dets) > 10
    out = tmp_path / "dev_stream.jsonl"
    res = _device_run(["run", "--model", models["tflite"], "--features", str(path), "--out",
                       str(out), "--stream"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(out.read_text().splitlines()) > 10
    res = _device_run(["bench", "--model", models["tflite"], "--windows", "3"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["peak_rss_mb"] > 0
    # which of our modules the device process loaded: edge only
    code = ("import sys, edge.cli, edge.stream, edge.runtime\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'asl_tf', 'export')]\n"
            "assert not bad, bad\n")
    res = _device_run(None, tmp_path, code=code)
    assert res.returncode == 0, res.stderr
