"""Import of ActionFormer / ASL (ActionFormer-architecture) PyTorch configs and checkpoints.

Acceptance interface (issue 3):
    model = model_from_config(model_cfg)   # merged ActionFormer `model` section (or YAML path)
    load_state_dict(model, source)         # .npz / .pth / .pth.tar path, or {torch_name: array}
    out = forward(model, feats, mask)      # numpy in, numpy out (+ "points")
    dets = detect(model, videos)           # reference batch-1 eval path + edge.postprocess

`torch_name_map(model)` maps every reference parameter name to the Keras variable and the two
layout converters; the gradient-parity code reuses it.
No torch is needed or imported: `.pth` files go through `asl_tf.compat.torch_pickle`.
"""
import copy
import os
import re

import numpy as np

from asl_tf import inference
from asl_tf.compat import torch_pickle
# training parity lives in actionformer_train; re-exported as part of this interface
from asl_tf.compat.actionformer_train import gradients, training_losses
from asl_tf.compat.torch_names import torch_name_map
from asl_tf.data.pipeline import pad_for_eval
from asl_tf.model.detector import (MODEL_DEFAULTS, TEST_DEFAULTS, TRAIN_DEFAULTS, ASLDetector,
                                   build_detector)

__all__ = ["model_from_config", "load_actionformer_config", "read_state_dict",
           "torch_name_map", "load_state_dict", "export_state_dict", "forward", "detect",
           "pad_for_eval", "training_losses", "gradients"]

#: modules of the ASL authors' Ego4D challenge model that ActionFormer does not have
_ASL_EGO4D_MARKERS = ("xlnet", "channel_attn", "backbone_m", "neck_m", "seg_conv",
                      "downsample_conv")
#: reference buffers that some checkpoints carry and that are not parameters here
_IGNORABLE_BUFFERS = re.compile(r"^(backbone\.pos_embd|point_generator\.buffer_points\.\d+)$")


# --------------------------------------------------------------------------------------------
# config
def _merge_defaults(defaults, cfg):
    """ActionFormer `_merge`: fill keys missing from cfg with defaults (recursively)."""
    for k, v in defaults.items():
        if k in cfg:
            if isinstance(v, dict) and isinstance(cfg[k], dict):
                _merge_defaults(v, cfg[k])
        else:
            cfg[k] = copy.deepcopy(v)


def load_actionformer_config(path):
    """Read an ActionFormer YAML config, merge ActionFormer's DEFAULTS and derive the model
    section as `libs/core/config.py::_update_config` does. Returns the merged model dict."""
    import yaml

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: config file not found")
    with open(path, encoding="utf-8") as fh:
        try:
            cfg = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    dataset_defaults = {k: MODEL_DEFAULTS[k] for k in ("input_dim", "num_classes", "max_seq_len")}
    defaults = {"dataset": dataset_defaults, "model": MODEL_DEFAULTS,
                "train_cfg": TRAIN_DEFAULTS, "test_cfg": TEST_DEFAULTS}
    _merge_defaults(defaults, cfg)
    model = dict(cfg["model"])
    for key in ("input_dim", "num_classes", "max_seq_len"):
        model[key] = cfg["dataset"][key]
    model["train_cfg"] = cfg["train_cfg"]
    model["test_cfg"] = cfg["test_cfg"]
    return model


def model_from_config(model_cfg):
    """Build an `ASLDetector` from the merged ActionFormer model section (a dict holding
    train_cfg/test_cfg), or from the path of an ActionFormer YAML config."""
    if isinstance(model_cfg, (str, os.PathLike)):
        model_cfg = load_actionformer_config(model_cfg)
    return build_detector(model_cfg)


# --------------------------------------------------------------------------------------------
# checkpoints
def _strip_module(sd):
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def read_state_dict(source, ema=False):
    """A {torch_name: np.ndarray} state dict from a path (.npz/.pth/.pth.tar/.pt) or a dict.

    A checkpoint dict holding `state_dict` / `state_dict_ema` (ActionFormer's .pth.tar) gives
    `state_dict` (ema=False) or `state_dict_ema` (ema=True); `module.` prefixes are removed.
    """
    where = "state dict"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        where = path
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: checkpoint not found")
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                obj = {k: z[k] for k in z.files}
        else:
            obj = torch_pickle.load(path)
    elif isinstance(source, dict):
        obj = source
    else:
        raise ValueError(f"checkpoint source must be a path or a dict, got "
                         f"{type(source).__name__}")
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: checkpoint holds a {type(obj).__name__}, not a state dict")
    if "state_dict" in obj or "state_dict_ema" in obj:
        key = "state_dict_ema" if ema else "state_dict"
        if key not in obj:
            raise ValueError(f"{where}: checkpoint has no '{key}' entry "
                             f"(entries: {', '.join(sorted(map(str, obj)))})")
        obj = obj[key]
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: '{key}' is not a state dict")
    elif ema:
        raise ValueError(f"{where}: ema requested but the checkpoint is a plain state dict "
                         f"without 'state_dict_ema'")
    sd = {}
    for k, v in _strip_module(obj).items():
        if not isinstance(v, np.ndarray):
            try:
                v = np.asarray(v)
            except Exception:  # noqa: BLE001
                raise ValueError(f"{where}: entry {k!r} is not a tensor") from None
        if v.dtype == object:
            raise ValueError(f"{where}: entry {k!r} is not a tensor")
        sd[str(k)] = v
    return sd


def _list(names, n=12):
    names = sorted(names)
    more = f" ... and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _module_of(name):
    parts = name.split(".")
    for i, p in enumerate(parts):
        if any(p == m or p.startswith(m) for m in _ASL_EGO4D_MARKERS):
            return ".".join(parts[:i + 1])
    return parts[0] if len(parts) == 1 else ".".join(parts[:-1])


def load_state_dict(model, source, ema=False):
    """Copy a reference state dict into `model` (every tensor mapped, layouts converted).

    Raises ValueError listing the names of missing, unexpected and wrong-shape tensors (nothing
    is assigned then), and refuses checkpoints of the ASL Ego4D challenge variant naming its
    extra modules. Returns the model.
    """
    sd = read_state_dict(source, ema=ema)
    where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "state dict"
    mapping = torch_name_map(model)
    variant = sorted({_module_of(k) for k in sd
                      if any(re.search(rf"(^|\.){m}", k) for m in _ASL_EGO4D_MARKERS)})
    if variant:
        extra = sorted({_module_of(k) for k in sd if k not in mapping
                        and not _IGNORABLE_BUFFERS.match(k)})
        raise ValueError(
            f"{where}: this is a checkpoint of the ASL authors' Ego4D challenge variant (extra "
            f"modules: {_list(extra, 20)}); only ActionFormer-architecture checkpoints can be "
            f"imported")
    unexpected = [k for k in sd if k not in mapping and not _IGNORABLE_BUFFERS.match(k)]
    missing = [k for k in mapping if k not in sd]
    wrong = []
    converted = {}
    for name, (var, to_torch, from_torch) in mapping.items():
        if name not in sd:
            continue
        arr = sd[name]
        want = tuple(to_torch(np.zeros(tuple(var.shape), np.float32)).shape)
        if tuple(arr.shape) != want:
            wrong.append(f"{name} {tuple(arr.shape)} (expected {want})")
            continue
        if not np.issubdtype(arr.dtype, np.floating):
            wrong.append(f"{name} dtype {arr.dtype} (expected floating point)")
            continue
        converted[name] = np.asarray(from_torch(arr.astype(np.float32)))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors: {_list(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensors: {_list(unexpected)}")
    if wrong:
        problems.append(f"wrong shape for {len(wrong)} tensors: {_list(wrong)}")
    if problems:
        raise ValueError(f"{where}: checkpoint does not match the model architecture; "
                         + "; ".join(problems))
    for name, (var, _, _) in mapping.items():
        var.assign(converted[name])
    return model


def export_state_dict(model):
    """The model's parameters as a reference state dict {torch_name: np.ndarray}."""
    return {name: to_torch(np.asarray(var.numpy() if hasattr(var, "numpy") else var))
            for name, (var, to_torch, _) in torch_name_map(model).items()}


# --------------------------------------------------------------------------------------------
# inference
def _check_inputs(model, feats, mask):
    feats = np.asarray(feats)
    if feats.ndim != 3:
        raise ValueError(f"feats: expected [B, T, C], got shape {feats.shape}")
    b, t, c = feats.shape
    if c != model.input_dim:
        raise ValueError(f"feats: feature width {c} does not match the model's input_dim "
                         f"{model.input_dim}")
    if t == 0:
        raise ValueError("feats: T is 0 (empty video)")
    if b == 0:
        raise ValueError("feats: batch is empty")
    if not np.all(np.isfinite(feats)):
        raise ValueError("feats: contains NaN or Inf")
    mask = np.asarray(mask)
    if mask.shape != (b, t):
        raise ValueError(f"mask: expected shape {(b, t)}, got {mask.shape}")
    mask = mask.astype(bool)
    empty = np.where(~mask.any(axis=1))[0]
    if empty.size:
        raise ValueError(f"mask: all False for batch item(s) {empty.tolist()}")
    model.check_length(t)
    return feats.astype(np.float32), mask


def forward(model, feats, mask):
    """Eval-mode forward. feats [B,T,C] float32, mask [B,T] bool (numpy) ->
    {"cls_logits" [B,ΣT_l,K], "offsets" [B,ΣT_l,2], "mask" [B,ΣT_l] bool,
     "points" [ΣT_l,4] ([t, reg_lo, reg_hi, stride])}, numpy, levels finest first."""
    return inference.outputs(model, *_check_inputs(model, feats, mask))


_VIDEO_KEYS = ("video_id", "feats", "fps", "feat_stride", "feat_num_frames", "duration")


def detect(model, videos):
    """Detections per video as the reference's batch-1 eval path computes them.

    videos: [{"video_id", "feats" [T,C] float32, "fps", "feat_stride", "feat_num_frames",
    "duration"}] -> [{"video_id", "segments" [N,2] seconds, "scores" [N], "labels" [N] int}],
    using the model's test_cfg.
    """
    results = []
    for i, video in enumerate(videos):
        for key in _VIDEO_KEYS:
            if key not in video:
                raise ValueError(f"videos[{i}]: missing field '{key}'")
        feats = np.asarray(video["feats"], np.float32)
        if feats.ndim != 2:
            raise ValueError(f"videos[{i}].feats: expected [T, C], got shape {feats.shape}")
        if feats.shape[0] == 0:
            raise ValueError(f"videos[{i}].feats: T is 0 (empty video)")
        det = inference.detect_video(model, feats, float(video["fps"]), float(video["feat_stride"]),
                                     float(video["feat_num_frames"]), float(video["duration"]))
        results.append({"video_id": video["video_id"],
                        "segments": np.asarray(det["segments"], np.float32).reshape(-1, 2),
                        "scores": np.asarray(det["scores"], np.float32),
                        "labels": np.asarray(det["labels"]).astype(np.int64)})
    return results


def is_detector(obj):
    return isinstance(obj, ASLDetector)


