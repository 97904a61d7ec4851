"""Test helper: tiny detectors with the exported-model contract (INTERFACES §5), and
synthetic videos.

TensorFlow side only: this module is imported by the test process that *builds* models; the edge
code under test never imports it. The model is hand-constructed (no training) so that it detects
real segments on synthetic features:

features `[T, C]` with C = K + 2 + n_noise:
- channel k < K: 1 inside a ground-truth segment of class k (plus noise);
- channel K, K+1: distance (feature steps / DIST_SCALE) to the segment's start / end, inside it;
- the rest: noise.

The model: a kernel-3 conv that smooths the class channels (so context matters at window edges),
then per FPN level l a strided slice (point i of level l reads step i·2^l, as the reference's
mask downsampling does) and a dense layer to `cls_logits` `[1, ΣT_l, K]` and
`offsets` `[1, ΣT_l, 2]` (ReLU, in stride units). Outputs at masked positions are 0, as in the
reference. The model is fully convolutional, so the same Keras model runs on a whole video.
"""
import json
import os
import pathlib

import numpy as np

DIST_SCALE = 32.0
TEST_CFG = {
    "pre_nms_thresh": 0.001, "pre_nms_topk": 2000, "iou_threshold": 0.1, "min_score": 0.001,
    "max_seg_num": 2000, "nms_method": "soft", "nms_sigma": 0.5, "duration_thresh": 0.05,
    "multiclass_nms": True, "ext_score_file": None, "voting_thresh": 0.75,
}


def synthetic_video(num_steps, num_classes=3, n_noise=3, seed=0, noise=0.3, dist_noise=0.02,
                    min_len=4, max_len=24, gap=(6, 30)):
    """A synthetic feature video and its ground truth (feature-grid units).

    noise: std of the class and noise channels; dist_noise: std of the boundary-distance
    channels (x DIST_SCALE steps).

    Returns (feats [T, C] float32, segments [N, 2] float steps, labels [N] int).
    """
    rng = np.random.default_rng(seed)
    c = num_classes + 2 + n_noise
    feats = rng.normal(0.0, noise, size=(num_steps, c)).astype(np.float32)
    feats[:, num_classes:num_classes + 2] *= dist_noise / noise
    segs, labels = [], []
    t = int(rng.integers(*gap))
    while True:
        length = int(rng.integers(min_len, max_len + 1))
        if t + length >= num_steps:
            break
        k = int(rng.integers(num_classes))
        idx = np.arange(t, t + length)
        feats[idx, k] += 1.0
        # distance to the segment boundaries in "half-open" grid units (segment [t, t+length]).
        feats[idx, num_classes] += (idx - t + 0.5) / DIST_SCALE
        feats[idx, num_classes + 1] += (t + length - idx - 0.5) / DIST_SCALE
        segs.append([t - 0.5, t + length - 0.5])  # step i spans [i - 0.5, i + 0.5]
        labels.append(k)
        t += length + int(rng.integers(*gap))
    return feats, np.asarray(segs, np.float32).reshape(-1, 2), np.asarray(labels, np.int64)


def build_keras_model(input_dim=8, num_classes=3, num_levels=3, seed=0):
    """The tiny detector as a Keras functional model with `feats`/`mask` inputs (any T)."""
    import keras
    from keras import layers, ops

    k = num_classes
    feats = keras.Input((None, input_dim), name="feats")
    mask = keras.Input((None,), dtype="bool", name="mask")
    conv = layers.Conv1D(input_dim, 3, padding="same", name="smooth")
    x = conv(feats)
    kern = np.zeros((3, input_dim, input_dim), np.float32)
    for ch in range(input_dim):
        if ch < k:
            kern[:, ch, ch] = [0.25, 0.5, 0.25]
        else:
            kern[1, ch, ch] = 1.0
    conv.set_weights([kern, np.zeros(input_dim, np.float32)])
    m = ops.cast(mask, "float32")[..., None]
    cls_out, off_out = [], []
    for lvl in range(num_levels):
        stride = 2 ** lvl
        xl, ml = x[:, ::stride], m[:, ::stride]
        cls_dense = layers.Dense(k, name=f"cls_{lvl}")
        reg_dense = layers.Dense(2, name=f"reg_{lvl}")
        cls_out.append(cls_dense(xl) * ml)
        off_out.append(ops.relu(reg_dense(xl)) * ml)
        w = np.zeros((input_dim, k), np.float32)
        w[:k, :k] = 10.0 * np.eye(k)
        cls_dense.set_weights([w, np.full(k, -6.0, np.float32)])
        w = np.zeros((input_dim, 2), np.float32)
        w[k, 0] = w[k + 1, 1] = DIST_SCALE / stride
        reg_dense.set_weights([w, np.zeros(2, np.float32)])
    out = {"cls_logits": ops.concatenate(cls_out, axis=1),
           "offsets": ops.concatenate(off_out, axis=1)}
    return keras.Model({"feats": feats, "mask": mask}, out, name="tiny_detector")


def level_lengths(window, num_levels=3):
    return [-(-window // 2 ** lvl) for lvl in range(num_levels)]


def sidecar(window, input_dim=8, num_classes=3, num_levels=3, test_cfg=None, quantize="none"):
    """A sidecar dict in the INTERFACES §5 format for the tiny detector."""
    ranges = [[0.0, 4.0], [4.0, 8.0], [8.0, 10000.0]][:num_levels]
    return {
        "format": "asl-tf", "version": 1, "window": int(window), "input_dim": int(input_dim),
        "num_classes": int(num_classes), "class_names": [f"cls_{i}" for i in range(num_classes)],
        "fpn_strides": [2 ** lvl for lvl in range(num_levels)],
        "level_lengths": level_lengths(window, num_levels), "regression_range": ranges,
        "max_div_factor": 2 ** (num_levels - 1), "test_cfg": dict(test_cfg or TEST_CFG),
        "quantize": quantize, "feat_stride": 4, "num_frames": 16, "fps": 30.0,
    }


WINDOW = 64
_CACHE = {}


def as_detector(model, window=WINDOW, num_levels=3):
    """Give the tiny Keras model the detector attributes `export.api.export_model` reads
    (INTERFACES §2): strides, ranges, test config, class names, `level_lengths(T)`."""
    meta = sidecar(window, num_levels=num_levels)
    model.fpn_strides = list(meta["fpn_strides"])
    model.regression_range = [list(r) for r in meta["regression_range"]]
    model.max_seq_len = int(window)
    model.max_div_factor = int(meta["max_div_factor"])
    model.num_classes = int(meta["num_classes"])
    model.input_dim = int(meta["input_dim"])
    model.test_cfg = dict(meta["test_cfg"])
    model.class_names = list(meta["class_names"])
    model.level_lengths = lambda t: level_lengths(t, num_levels)
    return model


VIDEO_META = {"feat_stride": 4, "num_frames": 16, "fps": 30.0}


def cached_models(tmp_path_factory, window=WINDOW):
    """Build the tiny detector once per test session and export it with the project's exporter
    (`export.api.export_model`, TFLite and ONNX, sidecar included):
    {"keras", "tflite", "onnx", "dir", "meta" (the sidecar)}."""
    if window not in _CACHE:
        d = tmp_path_factory.mktemp(f"edge_models_{window}")
        model = as_detector(build_keras_model(), window)
        paths = {}
        # the project's exporter, always: an ImportError here is a failure, not a reason to
        # convert with a different converter
        from export.api import export_model
        for fmt in ("tflite", "onnx"):
            out = d / f"tiny.{fmt}"
            export_model(model, fmt, out, seq_len=window, verify=False, video_meta=VIDEO_META)
            paths[fmt] = str(out)
        meta = json.loads(pathlib.Path(paths["tflite"] + ".meta.json").read_text())
        _CACHE[window] = {"keras": model, "dir": d, "meta": meta, **paths}
    return _CACHE[window]


def keras_whole_video(model, feats, meta, test_cfg=None):
    """Reference baseline: the Keras model on the whole video, padded by the reference rule
    (to `window` = max_seq_len if shorter, else to a multiple of max_div_factor), then
    `edge.postprocess.postprocess`. Returns {"segments" (s), "scores", "labels"}."""
    from edge import postprocess as pp

    t = len(feats)
    div = int(meta["max_div_factor"])
    t_pad = meta["window"] if t <= meta["window"] else -(-t // div) * div
    x = np.zeros((1, t_pad, feats.shape[1]), np.float32)
    x[0, :t] = feats
    m = np.zeros((1, t_pad), bool)
    m[0, :t] = True
    out = model({"feats": x, "mask": m}, training=False)
    strides = meta["fpn_strides"]
    lengths = [-(-t_pad // s) for s in strides]
    lmask = np.concatenate([m[0, ::s][:n] for n, s in zip(lengths, strides)])
    points = pp.make_points(lengths, strides, meta["regression_range"])
    duration = ((t - 1) * meta["feat_stride"] + meta["num_frames"]) / meta["fps"]
    return pp.postprocess(np.asarray(out["cls_logits"])[0], np.asarray(out["offsets"])[0], lmask,
                          points, lengths, test_cfg or meta["test_cfg"], meta["fps"],
                          meta["feat_stride"], meta["num_frames"], duration)


BLOCKER = '''"""Test helper: make this interpreter a device without TensorFlow."""
import sys

BLOCKED = ("tensorflow", "keras", "asl_tf", "tf_keras", "tf2onnx")


class _DeviceBlocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not available on the device (blocked by the test)")
        return None


sys.meta_path.insert(0, _DeviceBlocker())
'''


def device_env(tmp_dir, repo):
    """Environment for a subprocess where importing tensorflow/keras/asl_tf raises."""
    block = pathlib.Path(tmp_dir) / "device_site"
    block.mkdir(exist_ok=True)
    (block / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(block), str(repo)])
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def grid_to_seconds(segs, meta):
    """Feature-grid units -> seconds with the sidecar's video meta (INTERFACES §3)."""
    return (np.asarray(segs, np.float64) * meta["feat_stride"] + 0.5 * meta["num_frames"]) \
        / meta["fps"]


def average_map(videos, detections, meta, tious=(0.3, 0.4, 0.5, 0.6, 0.7)):
    """asl_tf.evaluation average mAP of per-video detections.

    videos: {video_id: (feats, gt_segs_grid, gt_labels)}; detections: {video_id: {"segments"
    (s), "scores", "labels"}}."""
    from asl_tf import evaluation as ev

    ids = list(videos)
    gt = ev.GroundTruth(
        ids, np.concatenate([np.full(len(videos[v][1]), i) for i, v in enumerate(ids)]),
        np.concatenate([grid_to_seconds(videos[v][1], meta) for v in ids]),
        np.concatenate([videos[v][2] for v in ids]))
    preds = ev.Predictions.from_detections([dict(detections[v], video_id=v) for v in ids])
    return ev.average_map(gt, preds, np.asarray(tious))["average_mAP"]


def as_arrays(dets):
    """Edge detections (list of dicts) -> {"segments", "scores", "labels"} arrays."""
    return {"segments": np.asarray([d["segment"] for d in dets], np.float64).reshape(-1, 2),
            "scores": np.asarray([d["score"] for d in dets], np.float64),
            "labels": np.asarray([d["label"] for d in dets], np.int64)}
