"""`asl-edge run` offline (issue 17.10): a video of at most the exported window is exactly
whole-video inference (the Keras model on the video padded to the window), whatever the hop;
no extra padded tail window is run or merged."""
import json

import numpy as np
import pytest

import edge_models as em
from edge import cli
from edge.runtime import EdgeModel
from edge.stream import StreamingDetector, detect_video


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return em.cached_models(tmp_path_factory)


@pytest.mark.parametrize("steps", [em.WINDOW, em.WINDOW - 1, 50])
@pytest.mark.parametrize("hop", [None, 16, em.WINDOW])
def test_video_within_window_is_whole_video_inference(models, steps, hop):
    feats, _, _ = em.synthetic_video(steps, seed=7, noise=0.4, dist_noise=0.07)
    model = EdgeModel(models["tflite"])
    test_cfg = {"max_seg_num": 100000}
    dets = detect_video(model, feats, hop=hop, test_cfg=test_cfg)
    ref = em.keras_whole_video(models["keras"], feats, models["meta"],
                               test_cfg={**models["meta"]["test_cfg"], **test_cfg})
    assert len(dets) == len(ref["scores"]) > 3
    np.testing.assert_allclose([d["score"] for d in dets], ref["scores"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose([d["segment"] for d in dets], ref["segments"], atol=1e-3)
    assert [d["label"] for d in dets] == ref["labels"].tolist()


def test_one_window_run_for_a_video_of_window_length(models):
    feats, _, _ = em.synthetic_video(em.WINDOW, seed=7)
    det = StreamingDetector(EdgeModel(models["tflite"]), total_steps=len(feats))
    det.push(feats)
    det.flush()
    assert det.windows_run == 1


def test_cli_offline_equals_keras_on_window_length_video(models, tmp_path):
    feats, _, _ = em.synthetic_video(em.WINDOW, seed=9, noise=0.4, dist_noise=0.07)
    path = tmp_path / "v.npy"
    np.save(path, feats)
    out = tmp_path / "d.json"
    assert cli.main(["run", "--model", models["tflite"], "--features", str(path),
                     "--out", str(out)]) == 0
    dets = json.loads(out.read_text())["detections"]
    ref = em.keras_whole_video(models["keras"], feats, models["meta"])
    assert len(dets) == len(ref["scores"])
    np.testing.assert_allclose([d["score"] for d in dets], ref["scores"], rtol=1e-4, atol=1e-6)
