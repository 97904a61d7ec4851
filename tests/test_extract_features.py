"""Snippet-feature recipe and `asl-extract-features` with the real EfficientNet-Lite0 encoder."""
import fractions
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import video_fixtures as vf
from conftest import REPO

CLIPS = REPO / "tests" / "fixtures" / "videos"
CARPHONE = str(CLIPS / "carphone_pristine.mp4")


def _cli(args, cwd, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "asl_tf.cli.extract", *args, "--noprogress"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _err_lines(res):
    return [ln for ln in res.stderr.splitlines() if ln.startswith("asl-extract-features")]


def test_recipe_configs():
    from asl_tf.config import load_config
    from asl_tf.errors import UserError
    from asl_tf.features.recipe import Recipe, load_recipe, recipe_from_config
    base = load_recipe(REPO / "configs" / "features" / "efficientnet_lite0.yaml")
    assert base == Recipe()  # the fallback of an install without configs/ is the same recipe
    assert load_recipe() == base
    preset = load_config(REPO / "configs" / "ego4d_mq_edge_lite0.yaml")
    assert recipe_from_config(preset) == base
    assert (preset.dataset.input_dim, preset.dataset.max_seq_len, preset.model.backbone_arch) \
        == (1280, 256, [2, 2, 5])
    # snippet centres in seconds: (i * stride + num_frames / 2) / fps, 0.5 s apart
    g = base.grid()
    assert [g.centre(i) for i in range(3)] == [0.25, 0.75, 1.25] and base.step_s == 0.5
    dense = load_recipe(REPO / "configs" / "features" / "efficientnet_lite0_dense.yaml")
    assert dense.grid().offsets == [1, 4, 7, 10, 13] and dense.grid().centre(0) == 0.75
    with pytest.raises(UserError, match="'features.encoder' is not set"):
        load_recipe(REPO / "configs" / "ego4d_mq_edge.yaml")


def test_extract_video_library_batches(tmp_path):
    """extract_video with any callable encoder (here the mean RGB of each frame): the dense
    recipe's 5 frames per snippet, encoded in batches across snippets, averaged per snippet."""
    import av

    from asl_tf.features.extract import extract_video
    from asl_tf.features.recipe import load_recipe
    recipe = load_recipe(REPO / "configs" / "features" / "efficientnet_lite0_dense.yaml")
    calls = []

    def encoder(frames):
        calls.append(len(frames))
        return frames.reshape(len(frames), -1, 3).mean(axis=1)

    feats, info = extract_video(CARPHONE, recipe, encoder)
    # 4.004 s -> 40 frames at 10 fps -> (40 - 15) // 5 + 1 = 6 snippets of 5 frames
    assert feats.shape == (6, 3) and info["T"] == 6 and info["frames_encoded"] == 30
    assert calls == [30]  # batch_size 32 -> 6 whole snippets in one call
    with av.open(CARPHONE) as c:
        frames = [(f.time, f.to_ndarray(width=224, height=224, format="rgb24",
                                        interpolation="BILINEAR")) for f in c.decode(video=0)]
    times = np.array([t for t, _ in frames]) - frames[0][0]
    for i in range(6):
        idx = [np.searchsorted(times, (5 * i + o + 0.5) / 10, side="right") - 1
               for o in (1, 4, 7, 10, 13)]
        ref = np.mean([frames[j][1].reshape(-1, 3).mean(0) for j in idx], axis=0)
        np.testing.assert_allclose(feats[i], ref, rtol=1e-5)


def test_extract_cli_bad_flag_exit_2(tmp_path):
    """absl's flag errors exit 1; this CLI's usage errors exit 2."""
    res = _cli(["--videos", CARPHONE, "--out", str(tmp_path), "--bogus"], tmp_path)
    assert res.returncode == 2 and "bogus" in res.stderr, res.stderr


@pytest.mark.slow
def test_extract_cli_real_encoder(tmp_path):
    """Features = the Keras encoder on the frames at the snippet centres (decoded here
    independently); resumable; bad videos skipped, counted, exit 1; layout read by asl_tf.data."""
    import av

    from asl_tf.data.features import FeatureReader
    from asl_tf.features import efficientnet_lite0
    vids = tmp_path / "videos"
    vids.mkdir()
    shutil.copy(CARPHONE, vids)
    (vids / "notes.mp4").write_text("not a video\n" * 30)
    vf.write_video(vids / "one.mkv", [0], fractions.Fraction(1, 10), container="matroska")
    out = tmp_path / "feats"
    res = _cli(["--videos", str(vids), "--out", str(out)], tmp_path)
    assert res.returncode == 1, res.stderr
    lines = _err_lines(res)
    assert any("notes.mp4: not a readable video" in ln for ln in lines), lines
    assert any("one.mkv: the video is" in ln and "shorter than one snippet" in ln for ln in lines)
    assert lines[-1].startswith("asl-extract-features: 3 videos: 1 extracted, 0 already done, "
                                "2 failed")
    man = json.loads((out / "manifest.json").read_text())
    info = man["videos"]["carphone_pristine"]
    # 120 frames at 30000/1001 fps = 4.004 s -> 40 frames at 10 fps -> 8 snippets
    assert (info["T"], info["frame_count"], info["fps"], info["feat_stride"],
            info["num_frames"]) == (8, 120, 10.0, 5, 5)
    assert info["duration"] == pytest.approx(4.004)
    assert sorted(man["failed"]) == ["notes", "one"]
    assert man["recipe"]["encoder"] == "efficientnet_lite0"
    assert len(man["encoder"]["weights_sha256"]) == 64
    feats = np.load(out / "carphone_pristine.npy")
    assert feats.shape == (8, 1280) and feats.dtype == np.float32
    with av.open(CARPHONE) as c:
        frames = [(f.time, f.to_ndarray(width=224, height=224, format="rgb24",
                                        interpolation="BILINEAR")) for f in c.decode(video=0)]
    times = np.array([t for t, _ in frames]) - frames[0][0]
    idx = [np.searchsorted(times, 0.25 + 0.5 * i, side="right") - 1 for i in range(8)]
    ref = np.asarray(efficientnet_lite0()(np.stack([frames[j][1] for j in idx]).astype(
        np.float32)))
    np.testing.assert_allclose(feats, ref, atol=1e-4)
    got = FeatureReader(folders=[str(out)], input_dim=1280)("carphone_pristine")
    np.testing.assert_array_equal(np.asarray(got), feats)
    # resumable: a rerun skips the finished video and leaves its file alone
    mtime = os.stat(out / "carphone_pristine.npy").st_mtime_ns
    (vids / "notes.mp4").unlink()
    (vids / "one.mkv").unlink()
    res = _cli(["--videos", str(vids), "--out", str(out)], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "1 videos: 0 extracted, 1 already done, 0 failed" in _err_lines(res)[-1]
    assert os.stat(out / "carphone_pristine.npy").st_mtime_ns == mtime
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no temp files left
    # another recipe into the same folder: a usage error (exit 2), nothing mixed
    other = tmp_path / "dense.yaml"
    other.write_text(f"_base_: {REPO}/configs/features/efficientnet_lite0_dense.yaml\n")
    res = _cli(["--videos", str(vids), "--out", str(out), "--config", str(other)], tmp_path)
    assert res.returncode == 2 and "features of another recipe" in res.stderr, res.stderr
    res = _cli(["--videos", str(tmp_path / "none"), "--out", str(out)], tmp_path)
    assert res.returncode == 2 and "no such file or folder" in res.stderr, res.stderr


@pytest.mark.slow
def test_workers_and_edge_encoder_parity(tmp_path):
    """--workers 2 gives the single-process features; the fp32 TFLite encoder on the device
    path (edge.video) gives the same features as asl-extract-features (1e-4)."""
    from export.encoder import build, convert_tflite

    from edge.encoder import FrameEncoder
    from edge.frames import SnippetGrid, VideoReader
    from edge.video import snippet_features
    res = _cli(["--videos", str(CLIPS), "--out", str(tmp_path / "w2"), "--workers", "2"],
               tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    man = json.loads((tmp_path / "w2" / "manifest.json").read_text())
    assert sorted(man["videos"]) == ["bikes", "carphone_pristine"]
    assert man["videos"]["bikes"]["T"] == 20
    enc = tmp_path / "lite0.tflite"
    enc.write_bytes(convert_tflite(build(), "none"))
    for stem, path in (("bikes", CLIPS / "bikes.mp4"), ("carphone_pristine", CARPHONE)):
        dev = np.stack([f for _, f in snippet_features(VideoReader(str(path)),
                                                       SnippetGrid(10, 5, 5),
                                                       FrameEncoder(enc, num_threads=2))])
        np.testing.assert_allclose(dev, np.load(tmp_path / "w2" / f"{stem}.npy"), atol=1e-4)


@pytest.mark.slow
def test_sigkill_mid_run_leaves_no_half_file_and_rerun_completes(tmp_path):
    """asl-extract-features killed while it writes: every visible output is complete (atomic
    writes), and the same command rerun finishes the rest with the same features."""
    import signal
    import time

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(6):                                   # the same clip six times
        os.symlink(CARPHONE, videos / f"clip{i}.mp4")
    out = tmp_path / "feats"
    cmd = [sys.executable, "-m", "asl_tf.cli.extract", "--videos", str(videos), "--out", str(out),
           "--noprogress"]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 240 and proc.poll() is None:
        if out.is_dir() and any(p.suffix == ".npy" for p in out.iterdir()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    visible = [p for p in out.iterdir() if not p.name.startswith(".")]
    done = [p for p in visible if p.suffix == ".npy"]
    assert 1 <= len(done) < 6
    for p in done:                                       # complete arrays, never half-written
        assert np.load(p).shape[1] == 1280
    if (out / "manifest.json").exists():
        json.loads((out / "manifest.json").read_text())

    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["videos"]) == [f"clip{i}" for i in range(6)]
    feats = [np.load(out / f"clip{i}.npy") for i in range(6)]
    for f in feats[1:]:
        np.testing.assert_array_equal(f, feats[0])
