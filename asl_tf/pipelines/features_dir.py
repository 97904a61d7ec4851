"""Reading a feature folder: `<video>.npy` ([T, C] float32) + `manifest.json`.

`manifest.json` (written by `asl-extract-features`) gives per video `fps` (frames/s),
`feat_stride` and `num_frames` (video frames between / per feature step) and `duration`
(seconds). Accepted layouts: `{"videos": {id: {...}}}`, `{"videos": [{"video_id": id, ...}]}`
or a plain `{id: {...}}`.
"""
import json
import os

import numpy as np

from asl_tf.errors import UserError

MANIFEST = "manifest.json"
META_KEYS = ("fps", "feat_stride", "num_frames", "duration")


def read_manifest(features_dir):
    """features_dir -> {video_id: {fps, feat_stride, num_frames, duration, ...}} (driver side).

    Raises UserError for a missing or unreadable manifest (the pipeline cannot start);
    a video with bad fields is NOT refused here: it fails alone, into the dead letters."""
    path = os.path.join(features_dir, MANIFEST)
    if not os.path.isdir(features_dir):
        raise UserError(f"--features: {features_dir} is not a folder")
    if not os.path.isfile(path):
        raise UserError(f"--features: {path} not found (asl-extract-features writes it)")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    videos = doc.get("videos", doc) if isinstance(doc, dict) else doc
    if isinstance(videos, list):
        try:
            videos = {str(v["video_id"]): v for v in videos}
        except (TypeError, KeyError):
            raise UserError(f"{path}: field 'videos': each entry needs 'video_id'") from None
    if not isinstance(videos, dict):
        raise UserError(f"{path}: expected {{video_id: {{fps, feat_stride, ...}}}}")
    return {str(k): (dict(v) if isinstance(v, dict) else {"_bad": v}) for k, v in videos.items()}


def check_meta(video_id, meta):
    """The four video fields as floats; ValueError naming the field when one is bad."""
    out = {}
    for k in META_KEYS:
        try:
            v = float(meta[k])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{MANIFEST}: video {video_id}: field {k!r} missing or not a "
                             f"number ({meta.get(k) if isinstance(meta, dict) else meta!r})") from None
        if not np.isfinite(v) or v <= 0:
            raise ValueError(f"{MANIFEST}: video {video_id}: field {k!r} must be > 0, got {v}")
        out[k] = v
    return out


def load_features(path, input_dim=None):
    """`<video>.npy` -> [T, C] float32 array; ValueError/FileNotFoundError naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: features file not found")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a .npy array ({err})") from None
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{path}: features must be [T, C] with T > 0, got shape {list(x.shape)}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{path}: features must be float, got dtype {x.dtype}")
    if input_dim is not None and x.shape[1] != int(input_dim):
        raise ValueError(f"{path}: features have width {x.shape[1]}, the model takes "
                         f"{int(input_dim)} (field input_dim)")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} feature steps contain NaN/inf (first: step "
                         f"{int(np.flatnonzero(bad)[0])})")
    return np.ascontiguousarray(x, np.float32)
