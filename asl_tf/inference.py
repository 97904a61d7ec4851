"""The one inference step from model outputs to detections in seconds.

`postprocess_outputs` takes batch item 0 of the detector's eval outputs and runs
`edge.postprocess` (decode, per-level top-k, NMS, seconds), so training-time evaluation, the
reference-parity `detect`, the demo and the ablation all produce the same detections from the
same outputs. `detect_video` adds eval padding (`asl_tf.data.pipeline.pad_for_eval`) and the
Keras forward for one whole video.
"""
import numpy as np

from asl_tf.data.pipeline import pad_for_eval
from edge.postprocess import postprocess


def postprocess_outputs(model, out, t, fps, feat_stride, num_frames, duration):
    """Detections of batch item 0 of `out` (cls_logits [B,ΣT_l,K], offsets [B,ΣT_l,2], mask
    [B,ΣT_l]) of an input of `t` frames -> {"segments" [N,2] s, "scores" [N], "labels" [N]}.
    fps in frames/s, feat_stride and num_frames in frames, duration in seconds."""
    t = int(t)
    return postprocess(np.asarray(out["cls_logits"], np.float32)[0],
                       np.asarray(out["offsets"], np.float32)[0],
                       np.asarray(out["mask"]).astype(bool)[0],
                       np.asarray(model.points(t)), list(model.level_lengths(t)),
                       dict(model.test_cfg), float(fps), float(feat_stride), float(num_frames),
                       float(duration))


def detect_batch(model, x, fps, feat_stride, num_frames, duration):
    """Keras eval forward of a batch-1 input `x` = {"feats" [1,T,C], "mask" [1,T]} ->
    detections in seconds (see `postprocess_outputs`)."""
    out = model(x, training=False)
    return postprocess_outputs(model, out, int(x["feats"].shape[1]), fps, feat_stride,
                               num_frames, duration)


def detect_video(model, feats, fps, feat_stride, num_frames, duration, trim=True):
    """Whole-video inference: feats [T,C] -> detections in seconds. trim=True uses the
    shortest eval padding with the reference padding's outputs on the valid frames."""
    x, m = pad_for_eval(model, np.asarray(feats, np.float32), trim=trim)
    return detect_batch(model, {"feats": x, "mask": m}, fps, feat_stride, num_frames, duration)
