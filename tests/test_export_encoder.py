"""`asl-export --encoder`: verified frame-encoder exports (TFLite fp32/dynamic/int8, ONNX),
calibration on real frames of the fixture clips, refusal below the limits, CLI errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import FIXTURES, REPO

VIDEOS = FIXTURES / "videos"
GOLDEN = FIXTURES / "golden" / "extractor" / "visible_extractor.npz"


def _cli(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "export.cli", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_calibration_frames_are_real_and_split(tmp_path):
    from export import encoder_frames as ef
    frames = ef.load_frames(f"{VIDEOS / 'bikes.mp4'},{VIDEOS / 'carphone_pristine.mp4'}",
                            per_video=6)
    assert frames.rgb.shape == (12, 224, 224, 3) and frames.rgb.dtype == np.uint8
    assert frames.ids[0] == "bikes.mp4@0" and frames.ids[5] == "bikes.mp4@249"
    assert frames.ids[-1] == "carphone_pristine.mp4@119"
    assert frames.rgb.std() > 20  # real pictures, not a blank decode
    cal, held = ef.split(frames)
    assert len(cal) == len(held) == 6 and not set(cal.ids) & set(held.ids)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no video files"):
        ef.load_frames(tmp_path)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="bad.mp4: not a readable video"):
        ef.load_frames(bad)


@pytest.mark.slow
def test_onnx_export_matches_reference_and_writes_sidecar(tmp_path):
    from export import api
    from export import encoder as enc
    out = tmp_path / "enc.onnx"
    rep = api.export_encoder("efficientnet_lite0", "onnx", out, threads=(1,), latency_runs=1)
    assert rep["passed"] and rep["verification"]["max_diff"] <= 1e-4
    assert rep["calibration"] == "synthetic"
    meta = json.loads((tmp_path / "enc.onnx.meta.json").read_text())
    assert meta["format"] == "asl-tf-encoder" and meta["output_dim"] == 1280
    assert meta["input_size"] == 224 and meta["normalization_in_graph"] == {"mean": 127.0,
                                                                          "std": 128.0}
    golden = np.load(GOLDEN)
    got = enc.OnnxEncoder(out)(golden["frames"].astype(np.float32))
    np.testing.assert_allclose(got, golden["features"], rtol=0, atol=1e-4)
    assert "enc.onnx" in json.loads((tmp_path / "export_report.json").read_text())["exports"]


@pytest.mark.slow
def test_int8_export_calibrated_on_real_frames_then_refused_when_strict(tmp_path):
    out = tmp_path / "enc_int8.tflite"
    proc = _cli("--encoder", "efficientnet_lite0", "--format", "tflite", "--quantize", "int8",
                "--calibration", VIDEOS, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads((tmp_path / "export_report.json").read_text())["exports"]["enc_int8.tflite"]
    v = rep["verification"]
    assert v["frames"] == 48 and v["mean_cosine"] >= 0.97 and v["top1_agreement"] >= 0.8
    assert v["max_diff"] > 1e-3  # it really is quantized
    assert "mean cos" in proc.stdout and rep["size_bytes"] < 5e6
    # the same export with a limit it cannot reach is refused and writes nothing
    strict = tmp_path / "strict"
    proc = _cli("--encoder", "efficientnet_lite0", "--format", "tflite", "--quantize", "int8",
                "--calibration", VIDEOS, "--min_mean_cosine", "0.9999", "--out",
                strict / "e.tflite")
    assert proc.returncode == 2
    assert "export refused" in proc.stderr and "mean cosine" in proc.stderr
    assert not strict.exists()


def test_cli_usage_errors_exit_2(tmp_path):
    proc = _cli("--encoder", "efficientnet_lite0", "--format", "tflite", "--quantize", "int8",
                "--out", tmp_path / "e.tflite", timeout=120)
    assert proc.returncode == 2 and "needs --calibration" in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr and os.listdir(tmp_path) == []
