"""What a device needs besides the graph: the `<file>.meta.json` sidecar (INTERFACES.md §5).

The exported graphs return only `cls_logits [1, ΣT_l, K]` and `offsets [1, ΣT_l, 2]` (stride
units). The per-level masks are not an output: level l's mask is `input_mask[::fpn_strides[l]]`
(nearest downsampling, SEMANTICS.md), written into the sidecar as `level_mask_rule`.
"""
import json
import os

import numpy as np

from asl_tf.fileio import atomic_write

SIDECAR_SUFFIX = ".meta.json"
QUANTIZE_MODES = ("none", "fp16", "dynamic", "int8")


def _attr(model, name):
    if not hasattr(model, name):
        raise ValueError(f"model {getattr(model, 'name', model)!r} is not an asl-tf detector: "
                         f"it has no attribute {name!r}")
    return getattr(model, name)


def check_detector(model):
    """Raise ValueError unless `model` carries the detector contract (INTERFACES.md §2)."""
    for name in ("fpn_strides", "max_seq_len", "max_div_factor", "num_classes",
                 "regression_range", "test_cfg", "level_lengths"):
        _attr(model, name)
    return model


def input_dim(model):
    """Feature width C of the model's `feats` input."""
    for name in ("input_dim",):
        if getattr(model, name, None):
            return int(getattr(model, name))
    cfg = getattr(model, "model_dict", None) or {}
    if isinstance(cfg, dict) and cfg.get("input_dim"):
        return int(cfg["input_dim"])
    raise ValueError("cannot tell the model's feature width (no input_dim attribute)")


def check_window(model, seq_len):
    """Validate an export window T (frames of the feature grid); return it as int.

    Valid: a positive multiple of `max_div_factor` (every pyramid level then has an integral
    length that its local-attention window divides). `max_seq_len` is the default.
    """
    d = int(model.max_div_factor)
    t = int(model.max_seq_len) if seq_len is None else seq_len
    if isinstance(t, float) and not float(t).is_integer():
        raise ValueError(f"--seq_len {seq_len}: must be an integer")
    t = int(t)
    if t <= 0 or t % d:
        examples = ", ".join(str(d * i) for i in range(1, 4))
        raise ValueError(f"--seq_len {seq_len} is not a valid window for this model: it must be a "
                         f"positive multiple of max_div_factor={d} (e.g. {examples}, ...; "
                         f"max_seq_len={int(model.max_seq_len)})")
    return t


def _plain(x):
    """JSON-safe copy of config values (numpy scalars, tuples)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def build_sidecar(model, window, quantize="none", video_meta=None):
    """The sidecar dict of INTERFACES.md §5 for `model` exported at window `window`.

    video_meta: optional dict with the training data's `feat_stride`, `num_frames`, `fps`
    (defaults a caller may override); missing values are written as null.
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"--quantize {quantize!r}: must be one of {', '.join(QUANTIZE_MODES)}")
    check_detector(model)
    video_meta = dict(video_meta or {})
    k = int(model.num_classes)
    names = getattr(model, "class_names", None)
    names = [str(n) for n in names] if names else [str(i) for i in range(k)]
    strides = [int(s) for s in model.fpn_strides]
    lengths = [int(n) for n in model.level_lengths(window)]
    return {
        "format": "asl-tf",
        "version": 1,
        "window": int(window),
        "input_dim": input_dim(model),
        "num_classes": k,
        "class_names": names,
        "fpn_strides": strides,
        "level_lengths": lengths,
        "regression_range": [[float(lo), float(hi)] for lo, hi in _plain(model.regression_range)],
        "max_div_factor": int(model.max_div_factor),
        "test_cfg": _plain(dict(model.test_cfg)),
        "quantize": quantize,
        "feat_stride": _plain(video_meta.get("feat_stride")),
        "num_frames": _plain(video_meta.get("num_frames")),
        "fps": _plain(video_meta.get("fps")),
        "inputs": {"feats": [1, int(window), input_dim(model)], "mask": [1, int(window)]},
        "outputs": {"cls_logits": [1, sum(lengths), k], "offsets": [1, sum(lengths), 2]},
        "level_mask_rule": "level l mask = input mask[::fpn_strides[l]] (nearest downsampling)",
    }


def sidecar_path(path):
    return str(path) + SIDECAR_SUFFIX


def write_json_atomic(path, obj):
    """Write JSON to a temp file beside `path`, then rename it into place."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def read_sidecar(path):
    """Read the sidecar of exported file `path` (or a sidecar path itself)."""
    p = os.fspath(path)
    if not p.endswith(SIDECAR_SUFFIX):
        p = sidecar_path(p)
    with open(p) as f:
        return json.load(f)
