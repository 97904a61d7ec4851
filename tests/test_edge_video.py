"""`asl-edge run --video`: frames -> exported encoder -> detector, also on a device without
TensorFlow. Fast tier: a tiny Keras frame encoder (32x32 -> 8-d) exported with the project's
encoder exporter, and the tiny detector of tests/edge_models.py (8-d input)."""
import fractions
import json
import subprocess
import sys

import numpy as np
import pytest

import edge_models as em
import video_fixtures as vf
from conftest import REPO

BIKES = str(REPO / "tests" / "fixtures" / "videos" / "bikes.mp4")
# the tiny detector's grid for these tests: 10 fps, a snippet every 2 frames, 3 frames long
GRID = ["--fps", "10", "--feat-stride", "2", "--num-frames", "3"]


def _tiny_encoder(dim, seed=0):
    import keras
    keras.utils.set_random_seed(seed)
    x = keras.Input((32, 32, 3))
    h = keras.layers.Rescaling(1 / 128.0, offset=-1.0)(x)
    h = keras.layers.Conv2D(6, 3, strides=2, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(x, keras.layers.Dense(dim)(h))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from export.encoder import convert_tflite
    d = tmp_path_factory.mktemp("edge_video_models")
    out = em.cached_models(tmp_path_factory)
    for dim in (8, 6):
        keras_enc = _tiny_encoder(dim)
        (d / f"enc{dim}.tflite").write_bytes(convert_tflite(keras_enc, "none"))
        out[f"enc{dim}"], out[f"keras_enc{dim}"] = str(d / f"enc{dim}.tflite"), keras_enc
    return out


def _device_run(args, tmp_path):
    """`python -m edge.cli ...` where importing tensorflow/keras/asl_tf raises."""
    return subprocess.run([sys.executable, "-m", "edge.cli", *args],
                          env=em.device_env(tmp_path, REPO), cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)


def test_features_are_the_encoder_on_the_right_frames(models):
    """Independent reference: every frame of bikes.mp4 decoded here, the one on screen at each
    snippet's centre (1.5 + 2i resampled frames, +0.5 -> seconds at 10 fps) picked by its
    timestamp, resized by FFmpeg, through the Keras encoder."""
    import av

    from edge.encoder import FrameEncoder
    from edge.frames import SnippetGrid, VideoReader
    from edge.video import snippet_features
    got = np.stack([f for _, f in snippet_features(VideoReader(BIKES), SnippetGrid(10, 2, 3),
                                                   FrameEncoder(models["enc8"]))])
    with av.open(BIKES) as c:
        frames = [(f.time, f.to_ndarray(width=32, height=32, format="rgb24",
                                        interpolation="BILINEAR")) for f in c.decode(video=0)]
    times = np.array([t for t, _ in frames]) - frames[0][0]
    assert len(got) == (100 - 3) // 2 + 1  # 10 s -> 100 frames at 10 fps -> 49 snippets
    idx = [np.searchsorted(times, (2 * i + 1 + 0.5) / 10, side="right") - 1
           for i in range(len(got))]
    ref = np.asarray(models["keras_enc8"](np.stack([frames[j][1] for j in idx]).astype(
        np.float32)))
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_video_json_equals_features_json(models, tmp_path):
    """`run --video` writes the JSON `run --features` writes on that video's features."""
    from edge import cli
    from edge.encoder import FrameEncoder
    from edge.frames import SnippetGrid, VideoReader
    from edge.video import snippet_features
    feats = np.stack([f for _, f in snippet_features(VideoReader(BIKES), SnippetGrid(10, 2, 3),
                                                     FrameEncoder(models["enc8"]))])
    np.save(tmp_path / "bikes.npy", feats)
    a, b, rep = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "rep.json"
    assert cli.main(["run", "--model", models["tflite"], "--video", BIKES, "--encoder",
                     models["enc8"], *GRID, "--hop", "32", "--out", str(a), "--report",
                     str(rep)]) == 0
    assert cli.main(["run", "--model", models["tflite"], "--features", str(tmp_path / "bikes.npy"),
                     *GRID, "--hop", "32", "--out", str(b)]) == 0
    doc = json.loads(a.read_text())
    assert doc == json.loads(b.read_text())
    assert doc["video_id"] == "bikes" and len(doc["detections"]) > 0
    r = json.loads(rep.read_text())
    assert (r["snippets"], r["frames_decoded"], r["frames_encoded"]) == (49, 250, 49)
    assert r["video_s"] == pytest.approx(10.0) and r["real_time_factor"] > 0
    assert r["peak_rss_mb"] > 0


def test_stream_lines_and_device_without_tensorflow(models, tmp_path):
    from edge import cli
    out = tmp_path / "s.jsonl"
    assert cli.main(["run", "--model", models["tflite"], "--video", BIKES, "--encoder",
                     models["enc8"], *GRID, "--hop", "16", "--stream", "--out", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    off = tmp_path / "o.json"
    assert cli.main(["run", "--model", models["tflite"], "--video", BIKES, "--encoder",
                     models["enc8"], *GRID, "--hop", "16", "--out", str(off)]) == 0
    ref = json.loads(off.read_text())["detections"]
    assert len(lines) > 0
    assert {"latency_s", "latency_steps", "emitted_at", "video_time_s", "wall_s"} <= set(lines[0])
    assert sorted(d["score"] for d in lines) == pytest.approx(sorted(d["score"] for d in ref))
    assert all(0 <= d["video_time_s"] <= 10.0 + 1e-6 for d in lines)
    # the same on a device: no TensorFlow, Keras or asl_tf importable; ONNX detector too
    for fmt, extra in (("tflite", []), ("onnx", []), ("tflite", ["--stream"])):
        dev = tmp_path / f"dev_{fmt}{len(extra)}.json"
        res = _device_run(["run", "--model", models[fmt], "--video", BIKES, "--encoder",
                           models["enc8"], *GRID, "--hop", "16", *extra, "--out", str(dev)],
                          tmp_path)
        assert res.returncode == 0, res.stderr
        assert "x real time" in res.stderr and "peak RSS" in res.stderr
        if not extra:
            assert json.loads(dev.read_text())["detections"]


def test_camera_stops_sending_on_a_device(models, tmp_path):
    """A network camera sends 4 s then stalls: the device run ends cleanly with what it had."""
    url = vf.camera_server(vf.camera_stream(tmp_path / "cam.ts", frames=40), stall_s=30)
    rep = tmp_path / "rep.json"
    res = _device_run(["run", "--model", models["tflite"], "--video", url, "--encoder",
                       models["enc8"], *GRID, "--stream", "--timeout", "1", "--out", "-",
                       "--report", str(rep)], tmp_path)
    assert res.returncode == 0, res.stderr
    r = json.loads(rep.read_text())
    # 4 s -> 40 frames at 10 fps -> (40 - 3) // 2 + 1 = 19 snippets
    assert (r["frames_decoded"], r["snippets"]) == (40, 19)
    assert r["stopped_by"] == "timeout: no data for 1.0 s"


def test_bad_input_one_line_exit_2(models, tmp_path, capsys):
    from edge import cli
    text = tmp_path / "notes.mp4"
    text.write_text("hello\n" * 50)
    wav = vf.write_audio_only(tmp_path / "a.wav")
    one = vf.write_video(tmp_path / "one.nut", [0], fractions.Fraction(1, 10), container="nut")
    short = vf.write_video(tmp_path / "short.nut", np.arange(2), fractions.Fraction(1, 10),
                           container="nut")
    data = open(BIKES, "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[:len(data) // 3])
    base = ["run", "--model", models["tflite"], "--encoder", models["enc8"], *GRID]
    cases = [
        ([*base, "--video", str(text)], "not a readable video"),
        ([*base, "--video", wav], "no video stream"),
        ([*base, "--video", str(tmp_path / "cut.mp4")], "not a readable video"),
        ([*base, "--video", one], "(1 frames), shorter than one snippet (0.3 s)"),
        ([*base, "--video", short, "--stream"], "(2 frames), shorter than one snippet"),
        ([*base, "--video", str(tmp_path / "nope.mp4")], "video file not found"),
        (["run", "--model", models["tflite"], "--video", BIKES], "--video needs --encoder"),
        ([*base, "--video", BIKES, "--features", "x.npy"], "exactly one of --features"),
        ([*base, "--video", BIKES, "--frames-per-snippet", "2"], "cannot sit symmetrically"),
        # width mismatch: refused before the video is even opened (it does not exist)
        (["run", "--model", models["tflite"], "--encoder", models["enc6"], *GRID, "--video",
          str(tmp_path / "nope.mp4")], "makes 6-d features, the detector"),
        (["run", "--model", models["tflite"], "--encoder", models["tflite"], "--video", BIKES],
         "not a frame encoder"),
    ]
    for args, msg in cases:
        capsys.readouterr()
        out = tmp_path / "o.json"
        assert cli.main([*args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("asl-edge: error:") and msg in err and "\n" not in err, err
        assert not out.exists()
