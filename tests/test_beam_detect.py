"""`asl-beam detect|evaluate` on DirectRunner with 2 worker processes (multi_processing):
detections equal the Keras model + reference post-processing, bad inputs go to dead letters,
a rerun skips finished videos, predictions.json scores like `asl-eval`."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("apache_beam")

from conftest import REPO  # noqa: E402
from export_helpers import make_tiny_detector  # noqa: E402

FPS, STRIDE, FRAMES = 30.0, 4.0, 16.0
GOOD = {"v_short": 37, "v_mid": 50, "v_window": 64, "v_long": 100}   # window = max_seq_len 64
BEAM = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _beam(*args):
    return subprocess.run([sys.executable, "-m", "asl_tf.cli.beam", *map(str, args)], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=600)


def _counters(proc):
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(lines[-1])


def _reference(model, x, duration):
    """Keras forward on the reference eval padding + edge.postprocess (the numpy reference)."""
    from edge import postprocess as pp
    from export.detect_graph import pad_rule
    n = len(x)
    t_pad = int(pad_rule(n, model.max_seq_len, model.max_div_factor))
    feats = np.zeros((1, t_pad, x.shape[1]), "float32")
    feats[0, :n] = x
    mask = np.arange(t_pad)[None] < n
    out = model({"feats": feats, "mask": mask}, training=False)
    lvl_mask = np.concatenate([mask[0, ::s] for s in model.fpn_strides])
    return pp.postprocess(np.asarray(out["cls_logits"][0]), np.asarray(out["offsets"][0]),
                          lvl_mask, model.points(t_pad), model.level_lengths(t_pad),
                          model.test_cfg, FPS, STRIDE, FRAMES, duration)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from export import api
    root = tmp_path_factory.mktemp("beam")
    model = make_tiny_detector()
    feats = root / "feats"
    feats.mkdir()
    rng = np.random.default_rng(3)
    manifest = {}
    for vid, t in GOOD.items():
        np.save(feats / f"{vid}.npy", rng.standard_normal((t, 16)).astype("float32"))
        manifest[vid] = {"fps": FPS, "feat_stride": STRIDE, "num_frames": FRAMES,
                         "duration": (t * STRIDE + FRAMES) / FPS}
    (feats / "v_corrupt.npy").write_bytes(b"\x93NUMPY garbage, not an array")
    nan = rng.standard_normal((20, 16)).astype("float32")
    nan[5, 3] = np.nan
    np.save(feats / "v_nan.npy", nan)
    np.save(feats / "v_width.npy", rng.standard_normal((20, 8)).astype("float32"))
    for vid in ("v_corrupt", "v_nan", "v_width", "v_missing"):
        manifest[vid] = dict(manifest["v_short"])
    manifest["v_badmeta"] = {"fps": "fast"}
    np.save(feats / "v_badmeta.npy", rng.standard_normal((20, 16)).astype("float32"))
    (feats / "manifest.json").write_text(json.dumps({"videos": manifest}))
    api.export_model(model, "saved_model", str(root / "serving"), verify=False,
                     video_meta={"fps": FPS, "feat_stride": STRIDE, "num_frames": FRAMES},
                     latency_runs=1)
    return {"root": root, "model": model, "feats": feats, "manifest": manifest}


@pytest.mark.slow
def test_beam_detect_equals_keras_dead_letters_rerun_and_evaluate(setup):
    root, model, feats = setup["root"], setup["model"], setup["feats"]
    out = root / "out"
    proc = _beam("detect", "--saved-model", root / "serving", "--features", feats, "--out", out,
                 *BEAM)
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = _counters(proc)
    assert c["videos_done"] == 4 and c["videos_failed"] == 5 and c["videos_skipped"] == 0, c
    expect_s = sum(setup["manifest"][v]["duration"] for v in GOOD)
    assert abs(c["video_seconds"] - expect_s) < 0.01, c

    n_dets = 0
    for vid, t in GOOD.items():
        doc = json.loads((out / f"{vid}.json").read_text())
        assert doc["video_id"] == vid and set(doc["detections"][0]) == {
            "segment", "score", "label", "label_name"}
        x = np.load(feats / f"{vid}.npy")
        ref = _reference(model, x, setup["manifest"][vid]["duration"])
        got = doc["detections"]
        if t <= model.max_seq_len:   # the promise: exactly the Keras detections
            assert len(got) == len(ref["labels"]) > 5
            np.testing.assert_array_equal([d["label"] for d in got], ref["labels"])
            np.testing.assert_allclose([d["score"] for d in got], ref["scores"], rtol=1e-5)
            np.testing.assert_allclose([d["segment"] for d in got], ref["segments"], atol=1e-4)
            assert [d["label_name"] for d in got] == [model.class_names[k] for k in ref["labels"]]
            n_dets += len(got)
    assert n_dets > 20

    failed = {p.stem: json.loads(p.read_text()) for p in (out / "_failed").glob("*.json")}
    assert set(failed) == {"v_corrupt", "v_nan", "v_width", "v_missing", "v_badmeta"}
    assert "not a .npy array" in failed["v_corrupt"]["error"]
    assert "NaN" in failed["v_nan"]["error"]
    assert "width 8" in failed["v_width"]["error"] and "input_dim" in failed["v_width"]["error"]
    assert "not found" in failed["v_missing"]["error"]
    assert "'fps'" in failed["v_badmeta"]["error"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no temp files left

    # rerun: the finished videos are skipped (files untouched), the bad ones fail again
    mtimes = {v: (out / f"{v}.json").stat().st_mtime_ns for v in GOOD}
    proc = _beam("detect", "--saved-model", root / "serving", "--features", feats, "--out", out,
                 *BEAM)
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = _counters(proc)
    assert c["videos_done"] == 0 and c["videos_skipped"] == 4 and c["videos_failed"] == 5, c
    assert mtimes == {v: (out / f"{v}.json").stat().st_mtime_ns for v in GOOD}

    # predictions.json: every finished video, readable by asl-eval; beam evaluate == asl-eval
    pred = json.loads((out / "predictions.json").read_text())
    assert set(pred["results"]) == set(GOOD)
    db = {}
    for vid in GOOD:   # pseudo ground truth: the top 2 detections of each video
        top = pred["results"][vid][:2]
        db[vid] = {"subset": "test", "duration": setup["manifest"][vid]["duration"],
                   "annotations": [{"segment": d["segment"], "label": d["label_name"],
                                    "label_id": d["label"]} for d in top]}
    gt = root / "gt.json"
    gt.write_text(json.dumps({"database": db}))
    ref_json = root / "asl_eval.json"
    res = subprocess.run([sys.executable, "-m", "asl_tf.cli.eval", "--gt", str(gt), "--pred",
                          str(out / "predictions.json"), "--dataset", "thumos14", "--json",
                          str(ref_json)], cwd=REPO, env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    proc = _beam("evaluate", "--gt", gt, "--pred", out, "--dataset", "thumos14", "--out",
                 root / "beam_eval.json", *BEAM)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = json.loads(ref_json.read_text())
    got = json.loads((root / "beam_eval.json").read_text())
    assert want["average_mAP"] > 0.3
    assert got == want


def test_beam_cli_user_errors(tmp_path):
    proc = _beam("detect", "--saved-model", tmp_path, "--features", tmp_path, "--out",
                 tmp_path / "o")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("asl-beam: error:") and "Traceback" not in proc.stderr
    assert "manifest.json" in proc.stderr or "saved_model.pb" in proc.stderr
