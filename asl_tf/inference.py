"""The one inference step of the library: model outputs -> `edge.postprocess` -> detections.

`outputs(model, feats, mask)`: eval-mode forward, numpy out. `detect_window` post-processes
batch item 0 of an already padded window; `detect_video` pads one video's features first
(the reference padding, or the trimmed one with the same outputs). Detections are
`{"segments" [N, 2] seconds, "scores" [N], "labels" [N]}` as `edge.postprocess` returns them,
so the server and the device produce the same detections from the same outputs.
"""
import numpy as np

from asl_tf.data.pipeline import pad_for_eval
from edge import postprocess as pp


def outputs(model, feats, mask):
    """Eval-mode forward. feats [B, T, C] float32, mask [B, T] bool ->
    {"cls_logits" [B, ΣT_l, K], "offsets" [B, ΣT_l, 2], "mask" [B, ΣT_l] bool,
     "points" [ΣT_l, 4] ([t, reg_lo, reg_hi, stride])}, numpy, levels finest first."""
    import keras

    x = {"feats": feats, "mask": mask}
    if keras.backend.backend() == "jax":
        # one jitted function per input shape instead of op-by-op dispatch
        out = model.predict_on_batch({k: np.asarray(v) for k, v in x.items()})
    else:
        out = model(x, training=False)
    return {"cls_logits": np.asarray(out["cls_logits"], np.float32),
            "offsets": np.asarray(out["offsets"], np.float32),
            "mask": np.asarray(out["mask"]).astype(bool),
            "points": np.asarray(model.points(int(feats.shape[1])))}


def detect_window(model, feats, mask, fps, feat_stride, num_frames, duration):
    """Detections (seconds) of batch item 0 of a padded window feats [1, T, C], mask [1, T],
    with the model's test_cfg; fps, feat_stride (frames), num_frames (frames per feature),
    duration (seconds) place the feature grid on the video's time axis."""
    out = outputs(model, feats, mask)
    t = int(feats.shape[1])
    return pp.postprocess(out["cls_logits"][0], out["offsets"][0], out["mask"][0], out["points"],
                          list(model.level_lengths(t)), dict(model.test_cfg), float(fps),
                          float(feat_stride), float(num_frames), float(duration))


def detect_video(model, feats, fps, feat_stride, num_frames, duration, trim=False):
    """Detections (seconds) of one whole video, feats [T, C]: padded as the reference's batch-1
    eval (trim=True: the shortest padding with the same outputs, fewer frames to run)."""
    x, m = pad_for_eval(model, np.asarray(feats, np.float32), trim=trim)
    return detect_window(model, x, m, fps, feat_stride, num_frames, duration)
