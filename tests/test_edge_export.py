"""The edge runtime on real exports: an ASLDetector of the egocentric preset's architecture
(configs/ego4d_mq_edge.yaml, shrunk widths, random init) exported by `export.api.export_model`
to TFLite and ONNX, read back by `edge.runtime.EdgeModel` and streamed by `edge.stream`."""
import numpy as np
import pytest

from conftest import REPO
from edge.runtime import EdgeModel
from edge.stream import StreamingDetector, detect_video

pytestmark = pytest.mark.slow  # exports two models (~30-75 s on 2 busy cores)

SMALL = ["dataset.input_dim=32", "dataset.num_classes=7", "model.embd_dim=16",
         "model.fpn_dim=16", "model.head_dim=16"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras

    from asl_tf.config import load_config
    from asl_tf.model.detector import build_detector
    from export.api import export_model

    cfg = load_config(REPO / "configs" / "ego4d_mq_edge.yaml", overrides=SMALL)
    keras.utils.set_random_seed(0)
    model = build_detector(cfg.model_dict())
    d = tmp_path_factory.mktemp("edge_export")
    ds = cfg.dataset
    meta = {"feat_stride": ds.feat_stride, "num_frames": ds.num_frames, "fps": ds.default_fps}
    paths = {}
    for fmt in ("tflite", "onnx"):
        paths[fmt] = str(d / f"ego_small.{fmt}")
        export_model(model, fmt, paths[fmt], verify=False, video_meta=meta)
    return model, cfg, paths


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_runtime_reads_a_real_export(exported, fmt):
    model, cfg, paths = exported
    m = EdgeModel(paths[fmt], num_threads=1)
    assert (m.window, m.input_dim, m.num_classes) == (256, 32, 7)
    assert m.fpn_strides == [1, 2, 4, 8, 16, 32]
    assert m.level_lengths == [256, 128, 64, 32, 16, 8]
    assert (m.fps, m.feat_stride, m.num_frames) == (30.0, 16.0, 32.0)
    assert m.test_cfg["nms_sigma"] == pytest.approx(0.9)
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((256, 32)).astype(np.float32)
    mask = np.arange(256) < 200
    feats[~mask] = 0.0
    out = m.run(feats, mask)
    ref = model({"feats": feats[None], "mask": mask[None]}, training=False)
    np.testing.assert_allclose(out["cls_logits"], np.asarray(ref["cls_logits"])[0], atol=1e-3)
    np.testing.assert_allclose(out["offsets"], np.asarray(ref["offsets"])[0], atol=1e-3)


def test_stream_a_real_export(exported):
    _, _, paths = exported
    m = EdgeModel(paths["tflite"], num_threads=1)
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((700, 32)).astype(np.float32)
    det = StreamingDetector(m, hop=192, test_cfg={"max_seg_num": 100})
    dets = []
    for i in range(0, len(feats), 50):
        dets += det.push(feats[i:i + 50])
        assert det.buffered <= 256 + 192
    dets += det.flush()
    assert det.windows_run == 4 and dets
    offline = detect_video(m, feats, hop=192, test_cfg={"max_seg_num": 100000})
    # seconds from the grid by the reference rule (grid * feat_stride + num_frames / 2) / fps,
    # clamped to the duration ((T - 1) * feat_stride + num_frames) / fps (preset: 16, 32, 30 fps)
    duration = ((700 - 1) * 16 + 32) / 30
    assert len(offline) > len(dets)
    for d in offline:
        want = np.clip((np.asarray(d["segment_grid"]) * 16 + 16) / 30, 0.0, duration)
        np.testing.assert_allclose(d["segment"], want, rtol=1e-6, atol=1e-6)  # float32 seconds
    assert [d["score"] for d in offline] == sorted((d["score"] for d in offline), reverse=True)
    # the stream, pushed in 50-step chunks and capped at 100, keeps the offline run's detections
    top = {(round(d["segment_grid"][0], 4), d["label"], round(d["score"], 6)) for d in offline}
    assert {(round(d["segment_grid"][0], 4), d["label"], round(d["score"], 6)) for d in dets} <= top
