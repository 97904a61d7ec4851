"""Typed experiment configs, loaded from YAML with `_base_` inheritance and overrides.

A config file is a YAML mapping with (any of) the sections `dataset`, `model`, `train_cfg`,
`test_cfg`, `opt`, `asl`, plus the top-level keys `name` and `output_folder`. Key names follow
ActionFormer (`libs/core/config.py`) where the concept is the same, so an ActionFormer user can
read them.

- `_base_: path` (or a list of paths, relative to the file) names files merged first; later
  files and the file itself override earlier ones key by key (mappings merge, lists replace).
- `load_config(path, overrides=("train_cfg.epochs=3", "model.n_mha_win_size=[9,9,9,9,9,9]"))`
  applies `key.sub=value` overrides last; values are YAML scalars/lists, parsed to the field's
  declared type.
- An unknown key or a value of the wrong type raises `ValueError` naming the key and the
  file (or the override) it came from.

The dataclass defaults below are ActionFormer's `DEFAULTS` (happyharrycn/actionformer_release
@ 61ea7eb, `libs/core/config.py`); `configs/_base_/actionformer.yaml` spells the same values
out, and a test keeps the two equal.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any, List, Optional, Union

import yaml
from asl_tf.data.annotations import FORMATS
from asl_tf.fileio import atomic_write

from asl_tf.fileio import atomic_write

__all__ = [
    "DatasetConfig", "ModelConfig", "TrainConfig", "TestConfig", "OptimizerConfig",
    "ASLConfig", "ExperimentConfig", "load_config", "config_from_dict", "parse_override",
    "model_defaults", "train_defaults", "test_defaults", "asl_model_defaults", "ASL_OFF",
]



def _default_regression_range():
    return [[0.0, 4.0], [4.0, 8.0], [8.0, 16.0], [16.0, 32.0], [32.0, 64.0], [64.0, 10000.0]]


@dataclass
class DatasetConfig:
    """Where the data is and how features map to time.

    Times in annotation files are seconds; a feature index i covers frames starting at
    `i * feat_stride` and spanning `num_frames` frames (grid = (sec*fps - 0.5*num_frames)/feat_stride).
    """
    name: str = "epic"                      # dataset name (ActionFormer `dataset_name`)
    format: str = "actionformer"            # annotation format, one of asl_tf.data.annotations.FORMATS
    json_file: str = ""                     # annotation file (any format, ActionFormer's key name)
    val_json_file: Optional[str] = None     # annotation file of val_split when it is another file (EPIC)
    video_info: Optional[str] = None        # durations/fps side file (anet_bsn, epic, epic_c2)
    class_file: Optional[str] = None        # class-name CSV (EPIC_100_{verb,noun}_classes.csv)
    label: str = "verb"                     # EPIC label kind: verb | noun | action
    label_offset: int = 0                   # subtracted from super-events labels (MultiThumos: 1)
    feat_folder: List[str] = field(default_factory=list)  # one folder (or .h5 file) per stream
    file_prefix: str = ""                   # feature file name = prefix + video_id + ext
    file_ext: str = ".npy"                  # .npy | .npz | .h5
    npz_key: str = "feats"                  # array name inside .npz files
    train_split: List[str] = field(default_factory=lambda: ["training"])
    val_split: List[str] = field(default_factory=lambda: ["validation"])
    feat_stride: float = 16                 # frames between consecutive features
    num_frames: float = 32                  # frames seen by one feature
    default_fps: Optional[float] = None     # overrides the annotation's fps when set
    input_dim: int = 2304                   # feature width (all streams concatenated)
    num_classes: int = 97
    downsample_rate: int = 1                # keep every n-th feature (feat_stride *= n)
    max_seq_len: int = 2304                 # training window, in features
    trunc_thresh: float = 0.5               # min kept fraction of a GT cut by the window
    crop_ratio: Optional[List[float]] = None  # e.g. [0.9, 1.0]: random crop of short videos
    force_upsampling: bool = False          # resize every video to max_seq_len (ANet)
    class_names: Optional[List[str]] = None  # index = label id; filled from the annotations if None


@dataclass
class ModelConfig:
    """ActionFormer `model` section (`make_meta_arch('LocPointTransformer', **model)`)."""
    backbone_type: str = "convTransformer"
    fpn_type: str = "identity"
    backbone_arch: List[int] = field(default_factory=lambda: [2, 2, 5])  # (embd convs, stem, branch)
    scale_factor: int = 2
    regression_range: List[List[float]] = field(default_factory=_default_regression_range)
    n_head: int = 4
    n_mha_win_size: Union[int, List[int]] = -1  # <= 1: global attention; list: one per level
    embd_kernel_size: int = 3
    embd_dim: int = 512
    embd_with_ln: bool = True
    fpn_dim: int = 512
    fpn_with_ln: bool = True
    fpn_start_level: int = 0
    head_dim: int = 512
    head_kernel_size: int = 3
    head_num_layers: int = 3
    head_with_ln: bool = True
    max_buffer_len_factor: float = 6.0
    use_abs_pe: bool = False
    use_rel_pe: bool = False
    input_pdrop: float = 0.0                # dropout on the input features (OpenTAD Charades: 0.3)
    # Derived from `dataset` when None (ActionFormer `_update_config`); if set, must agree.
    input_dim: Optional[int] = None
    num_classes: Optional[int] = None
    max_seq_len: Optional[int] = None


@dataclass
class TrainConfig:
    """ActionFormer `train_cfg` keys, plus the training-loop keys."""
    center_sample: str = "radius"
    center_sample_radius: float = 1.5
    loss_weight: float = 1.0
    cls_prior_prob: float = 0.01
    init_loss_norm: float = 2000
    clip_grad_l2norm: float = -1
    head_empty_cls: List[int] = field(default_factory=list)
    dropout: float = 0.0
    droppath: float = 0.1
    label_smoothing: float = 0.0
    # training loop (ActionFormer keeps these in `opt`/`loader`/top level)
    epochs: int = 30                        # after warm-up
    warmup_epochs: int = 5
    batch_size: int = 8
    ema_decay: float = 0.999
    seed: int = 1234567891                  # ActionFormer init_rand_seed
    eval_every: int = 1                     # epochs between evaluations (0: only at the end)
    remat: bool = False                     # recompute attention/MLP activations in backward


@dataclass
class TestConfig:
    """ActionFormer `test_cfg` keys (a plain dict of these goes to `edge.postprocess`)."""
    pre_nms_thresh: float = 0.001
    pre_nms_topk: int = 5000
    iou_threshold: float = 0.1
    min_score: float = 0.01
    max_seg_num: int = 1000
    nms_method: str = "soft"                # soft | hard | none
    nms_sigma: float = 0.5
    duration_thresh: float = 0.05
    multiclass_nms: bool = True
    ext_score_file: Optional[str] = None
    voting_thresh: float = 0.75


@dataclass
class OptimizerConfig:
    """ActionFormer `opt` keys (epochs live in `train_cfg`)."""
    type: str = "AdamW"
    momentum: float = 0.9
    weight_decay: float = 0.0
    learning_rate: float = 1e-3
    eta_min: float = 1e-8
    warmup: bool = True
    schedule_type: str = "cosine"
    schedule_steps: List[int] = field(default_factory=list)
    schedule_gamma: float = 0.1


@dataclass
class ASLConfig:
    """Action Sensitivity Learning switches; every switch off = plain ActionFormer."""
    class_level: bool = True
    class_mode: str = "normalized"          # normalized | authors
    instance_level: bool = True
    quality_loss_weight: float = 1.0
    combine: str = "product"                # product | sum
    quality_normalize: bool = True          # q / its mean over each instance's positives
    contrastive: bool = True
    contrastive_weight: float = 0.1
    temperature: float = 0.07
    topk: int = 3
    num_bg_samples: int = 16


#: the TrainConfig keys that are ActionFormer's `train_cfg` (the rest drive the training loop)
ACTIONFORMER_TRAIN_KEYS = ("center_sample", "center_sample_radius", "loss_weight",
                           "cls_prior_prob", "init_loss_norm", "clip_grad_l2norm",
                           "head_empty_cls", "dropout", "droppath", "label_smoothing")
#: the three ASL switches; a model section that does not set one runs plain ActionFormer there
ASL_SWITCHES = ("class_level", "instance_level", "contrastive")
ASL_OFF = {k: False for k in ASL_SWITCHES}


def model_defaults() -> dict:
    """ActionFormer's DEFAULTS for a `model` section, read from the dataclasses above:
    ModelConfig's keys (input_dim, num_classes, max_seq_len from DatasetConfig) as a plain
    dict, without the non-ActionFormer `input_pdrop`."""
    d = dataclasses.asdict(ModelConfig())
    del d["input_pdrop"]
    for key in ("input_dim", "num_classes", "max_seq_len"):
        d[key] = getattr(DatasetConfig(), key)
    return d


def train_defaults() -> dict:
    """ActionFormer's `train_cfg` DEFAULTS (TrainConfig's ActionFormer keys) as a plain dict."""
    d = dataclasses.asdict(TrainConfig())
    return {k: d[k] for k in ACTIONFORMER_TRAIN_KEYS}


def test_defaults() -> dict:
    """ActionFormer's `test_cfg` DEFAULTS (TestConfig) as a plain dict."""
    return dataclasses.asdict(TestConfig())


def asl_model_defaults() -> dict:
    """Defaults of a model's `asl` section: ASLConfig's values with every switch off, so a
    model section without `asl` (an ActionFormer config) is plain ActionFormer."""
    return {**dataclasses.asdict(ASLConfig()), **ASL_OFF}


_CHOICES = {
    ("dataset", "format"): FORMATS,
    ("dataset", "label"): ("verb", "noun", "action"),
    ("asl", "class_mode"): ("normalized", "authors"),
    ("asl", "combine"): ("product", "sum"),
    ("test_cfg", "nms_method"): ("soft", "hard", "none"),
    ("features", "pool"): ("mean",),
    ("features", "interpolation"): ("BILINEAR", "BICUBIC", "AREA", "FAST_BILINEAR", "LANCZOS"),
}


@dataclass
class FeaturesConfig:
    """How features are made from video (asl_tf.features.recipe; configs/features/*.yaml).

    The timing of a snippet is the dataset's: `default_fps` (the grid the video is resampled
    to), `feat_stride`, `num_frames`; this section says what is encoded inside a snippet."""
    encoder: str = ""                       # frame encoder ("efficientnet_lite0"); "" = not made here
    frames_per_snippet: int = 1             # frames encoded per snippet, symmetric about its centre
    size: int = 224                         # encoder input side (frames resized to size x size)
    interpolation: str = "BILINEAR"         # FFmpeg swscale resize (PyAV name)
    pool: str = "mean"                      # snippet feature = mean of its frames' features
    batch_size: int = 32                    # frames per encoder call in offline extraction


@dataclass
class ExperimentConfig:
    """A whole experiment: data, model, training, inference, optimizer and ASL sections."""
    name: str = ""
    output_folder: str = "runs"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train_cfg: TrainConfig = field(default_factory=TrainConfig)
    test_cfg: TestConfig = field(default_factory=TestConfig)
    opt: OptimizerConfig = field(default_factory=OptimizerConfig)
    asl: ASLConfig = field(default_factory=ASLConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)

    def model_dict(self) -> dict:
        """The merged ActionFormer `model` section (as `make_meta_arch(**cfg['model'])` takes it).

        `input_dim`, `num_classes`, `max_seq_len` come from `dataset`; `train_cfg`, `test_cfg`
        and `asl` are nested dicts; `class_names` is added when known.
        """
        d = dataclasses.asdict(self.model)
        for key in ("input_dim", "num_classes", "max_seq_len"):
            d[key] = getattr(self.dataset, key)
        d["train_cfg"] = dataclasses.asdict(self.train_cfg)
        d["test_cfg"] = dataclasses.asdict(self.test_cfg)
        d["asl"] = dataclasses.asdict(self.asl)
        if self.dataset.class_names is not None:
            d["class_names"] = list(self.dataset.class_names)
        return d

    def to_dict(self) -> dict:
        """Plain nested dict (YAML/JSON-serializable) of every resolved value."""
        return dataclasses.asdict(self)

    def save_yaml(self, path) -> None:
        """Write the resolved config (no `_base_`) atomically: temp file, then rename."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with atomic_write(path) as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False, default_flow_style=None)


_SECTIONS = {f.name: f.type for f in dataclasses.fields(ExperimentConfig)}


def _hints(cls):
    return typing.get_type_hints(cls)


# --------------------------------------------------------------------------- type coercion

def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Return `value` converted to type `tp`, or raise ValueError naming `where`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        # try the non-None members in order; list members before scalars for lists
        for member in args:
            if member is type(None):
                continue
            try:
                return _coerce(value, member, where)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin in (list, List, tuple):
        if isinstance(value, str) and args[:1] == (str,):
            value = [value]  # a single name where a list of names is expected
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list ({_type_name(tp)}), got {value!r}")
        (item_tp,) = args[:1] or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected a bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{where}: expected an int, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads `1e-4` (no dot) as a string; accept numeric strings for floats.
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{where}: expected a float, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{where}: expected a string, got {value!r}")
    raise ValueError(f"{where}: unsupported config type {tp!r}")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# --------------------------------------------------------------------------- validation

def _check_raw(raw: dict, source: str) -> None:
    """Check the keys and value types of one YAML mapping (before merging) against the schema."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: a config file must hold a mapping, got {type(raw).__name__}")
    for key, value in raw.items():
        if key == "_base_":
            continue
        if key not in _SECTIONS:
            raise ValueError(f"{source}: unknown config key '{key}'")
        tp = _hints(ExperimentConfig)[key]
        if dataclasses.is_dataclass(tp):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ValueError(f"{source}: '{key}' must be a mapping, got {value!r}")
            hints = _hints(tp)
            for sub, v in value.items():
                if sub not in hints:
                    raise ValueError(f"{source}: unknown config key '{key}.{sub}'")
                _coerce(v, hints[sub], f"{source}: '{key}.{sub}'")
                _check_choice(key, sub, v, source)
        else:
            _coerce(value, tp, f"{source}: '{key}'")


def _check_choice(section, key, value, source):
    choices = _CHOICES.get((section, key))
    if choices is not None and value not in choices:
        raise ValueError(f"{source}: '{section}.{key}' must be one of {list(choices)}, got {value!r}")


def _merge(base: dict, over: dict) -> dict:
    """Deep merge: mappings merge key by key, everything else (lists too) is replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: str, _stack=()) -> dict:
    """Read one YAML config, resolve its `_base_` chain, and return the merged raw dict."""
    path = os.path.abspath(os.fspath(path))
    if path in _stack:
        raise ValueError(f"{path}: circular _base_ chain: {' -> '.join(_stack + (path,))}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}".replace("\n", " ")) from None
    raw = {} if raw is None else raw
    _check_raw(raw, path)
    bases = raw.get("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ValueError(f"{path}: '_base_' must be a path or a list of paths, got {bases!r}")
    merged: dict = {}
    for base in bases:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        merged = _merge(merged, _read_yaml(base_path, _stack + (path,)))
    own = {k: v for k, v in raw.items() if k != "_base_"}
    return _merge(merged, own)


def parse_override(text: str):
    """`'train_cfg.epochs=3'` -> (['train_cfg', 'epochs'], 3). Values are parsed as YAML."""
    if "=" not in text:
        raise ValueError(f"override '{text}': expected key.sub=value")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ValueError(f"override '{text}': empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def _apply_override(raw: dict, text: str) -> dict:
    keys, value = parse_override(text)
    source = f"override '{text}'"
    if len(keys) == 1:
        snippet = {keys[0]: value}
    elif len(keys) == 2:
        snippet = {keys[0]: {keys[1]: value}}
    else:
        raise ValueError(f"{source}: keys are section.key (two levels at most)")
    _check_raw(snippet, source)
    return _merge(raw, snippet)


def config_from_dict(raw: dict, source: str = "<dict>") -> ExperimentConfig:
    """Build an ExperimentConfig from a nested dict (no `_base_`), validating keys and types."""
    raw = {k: v for k, v in (raw or {}).items() if k != "_base_"}
    _check_raw(raw, source)
    kwargs = {}
    for name, tp in _hints(ExperimentConfig).items():
        value = raw.get(name)
        if dataclasses.is_dataclass(tp):
            hints = _hints(tp)
            sub = {k: _coerce(v, hints[k], f"{source}: '{name}.{k}'") for k, v in (value or {}).items()}
            kwargs[name] = tp(**sub)
        elif name in raw:
            kwargs[name] = _coerce(value, tp, f"{source}: '{name}'")
    cfg = ExperimentConfig(**kwargs)
    _check_consistency(cfg, source)
    return cfg


def _check_consistency(cfg: ExperimentConfig, source: str) -> None:
    ds, m = cfg.dataset, cfg.model
    for key in ("input_dim", "num_classes", "max_seq_len"):
        mv = getattr(m, key)
        if mv is not None and mv != getattr(ds, key):
            raise ValueError(f"{source}: 'model.{key}' = {mv} disagrees with "
                             f"'dataset.{key}' = {getattr(ds, key)} (set it in dataset only)")
    if ds.crop_ratio is not None and len(ds.crop_ratio) != 2:
        raise ValueError(f"{source}: 'dataset.crop_ratio' must be [lo, hi], got {ds.crop_ratio}")
    if len(m.backbone_arch) != 3:
        raise ValueError(f"{source}: 'model.backbone_arch' must have 3 entries, got {m.backbone_arch}")
    n_levels = m.backbone_arch[2] + 1
    if len(m.regression_range) != n_levels:
        raise ValueError(f"{source}: 'model.regression_range' has {len(m.regression_range)} levels, "
                         f"backbone_arch {m.backbone_arch} makes {n_levels}")
    if isinstance(m.n_mha_win_size, list) and len(m.n_mha_win_size) != n_levels:
        raise ValueError(f"{source}: 'model.n_mha_win_size' has {len(m.n_mha_win_size)} entries, "
                         f"expected {n_levels}")
    if ds.class_names is not None and len(ds.class_names) != ds.num_classes:
        raise ValueError(f"{source}: 'dataset.class_names' has {len(ds.class_names)} names, "
                         f"num_classes is {ds.num_classes}")
    # model's derived keys are always the dataset's after loading
    m.input_dim, m.num_classes, m.max_seq_len = ds.input_dim, ds.num_classes, ds.max_seq_len


def load_config(path, overrides=()) -> ExperimentConfig:
    """Load a YAML config with its `_base_` chain, apply `key.sub=value` overrides, validate.

    Raises FileNotFoundError for a missing file, ValueError (naming key and file) for an unknown
    key, a wrong type or an invalid choice.
    """
    raw = _read_yaml(path)
    for text in overrides or ():
        raw = _apply_override(raw, text)
    source = os.fspath(path)
    if overrides:
        source += " (after override " + ", ".join(repr(o) for o in overrides) + ")"
    return config_from_dict(raw, source=source)
