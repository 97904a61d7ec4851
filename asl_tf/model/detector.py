"""`ASLDetector`: the ActionFormer single-stage detector (backbone -> neck -> shared heads) as a
Keras 3 model, with the hooks the ASL training code attaches to.

Built from the merged ActionFormer `model` section (`build_detector(model_dict)`, INTERFACES §2):
the reference's model keys with `train_cfg` / `test_cfg` nested, plus optional `asl` (dict) and
`class_names` (list). Missing keys take ActionFormer's DEFAULTS.

model({"feats": [B,T,C] float32, "mask": [B,T] bool}, training) -> dict:
  cls_logits [B, sum T_l, num_classes] float32, offsets [B, sum T_l, 2] float32
  (ReLU(scale_l * raw), stride units), mask [B, sum T_l] bool, fpn_feats [B, sum T_l, fpn_dim];
levels concatenated finest first.
"""
import copy

import keras
import numpy as np
from keras import ops

from asl_tf import config as config_lib
from asl_tf.model import points as points_lib
from asl_tf.model.backbone import ConvBackbone, ConvTransformerBackbone
from asl_tf.model.heads import ClsHead, RegHead
from asl_tf.model.layers import PACKAGE
from asl_tf.model.neck import FPN1D, FPNIdentity

#: ActionFormer `libs/core/config.py` DEFAULTS for the model section; the values live in the
#: typed configs (`asl_tf.config`), these are plain-dict views of them.
MODEL_DEFAULTS = config_lib.model_defaults()
TRAIN_DEFAULTS = config_lib.train_defaults()
TEST_DEFAULTS = config_lib.test_defaults()
BACKBONES = ("convTransformer", "conv")
NECKS = ("identity", "fpn")


def _plain(v):
    """JSON-friendly copy (tuples -> lists, numpy scalars -> python)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def normalize_model_dict(model_dict):
    """Fill ActionFormer defaults and validate a model section. Returns a new plain dict.

    Raises ValueError naming the field for unknown types, bad shapes of lists, and windows /
    lengths the reference cannot run (naming the level and why).
    """
    if not isinstance(model_dict, dict):
        raise ValueError(f"model config must be a dict, got {type(model_dict).__name__}")
    d = copy.deepcopy(_plain(model_dict))
    for k, v in MODEL_DEFAULTS.items():
        d.setdefault(k, copy.deepcopy(v))
    d["train_cfg"] = {**TRAIN_DEFAULTS, **(d.get("train_cfg") or {})}
    d["test_cfg"] = {**TEST_DEFAULTS, **(d.get("test_cfg") or {})}
    d["asl"] = dict(d.get("asl") or {})
    if d.get("class_names") is not None:
        d["class_names"] = [str(c) for c in d["class_names"]]
    else:
        d["class_names"] = None

    if d["backbone_type"] not in BACKBONES:
        raise ValueError(f"model.backbone_type: unknown backbone {d['backbone_type']!r} "
                         f"(known: {', '.join(BACKBONES)})")
    if d["fpn_type"] not in NECKS:
        raise ValueError(f"model.fpn_type: unknown neck {d['fpn_type']!r} "
                         f"(known: {', '.join(NECKS)})")
    for key in ("input_dim", "embd_dim"):
        if isinstance(d[key], (list, tuple)):
            raise ValueError(f"model.{key}: multi-stream inputs (a list) are not supported")
    arch = d["backbone_arch"]
    if not isinstance(arch, (list, tuple)) or len(arch) != 3:
        raise ValueError(f"model.backbone_arch must be 3 integers, got {arch!r}")
    n_levels = arch[2] + 1
    win = d["n_mha_win_size"]
    wins = [int(win)] * n_levels if isinstance(win, (int, float)) else [int(w) for w in win]
    if len(wins) != n_levels:
        raise ValueError(f"model.n_mha_win_size: {len(wins)} windows for {n_levels} levels")
    strides = points_lib.fpn_strides(d["scale_factor"], d["fpn_start_level"], arch[2])
    if len(strides) != len(d["regression_range"]):
        raise ValueError(f"model.regression_range: {len(d['regression_range'])} ranges for "
                         f"{len(strides)} pyramid levels")
    if d["scale_factor"] != 1 and d["scale_factor"] % 2:
        raise ValueError(f"model.scale_factor must be 1 or even, got {d['scale_factor']}")
    if d["embd_dim"] % d["n_head"]:
        raise ValueError(f"model.n_head={d['n_head']} does not divide embd_dim={d['embd_dim']}")
    for lvl, (s, w) in enumerate(zip(strides, wins)):
        if d["backbone_type"] == "convTransformer" and w in (2, 3):
            raise ValueError(f"model.n_mha_win_size: window {w} at level {lvl} is not supported "
                             f"by the reference local attention (window//2 must be >= 2)")
        stride = points_lib.level_divisor(s, w)
        if d["max_seq_len"] % stride:
            raise ValueError(
                f"model.max_seq_len={d['max_seq_len']} is not divisible by {stride} at level "
                f"{lvl}: stride {s} x local window span {2 * (w // 2)} (window {w}) must divide "
                f"the sequence length")
    d["n_mha_win_size"] = wins if not isinstance(win, (int, float)) else int(win)
    d["_mha_win_size"] = wins
    d["_fpn_strides"] = strides
    d["_max_div_factor"] = points_lib.max_div_factor(d["scale_factor"], d["fpn_start_level"],
                                                     arch, wins)
    return d


@keras.saving.register_keras_serializable(package=PACKAGE)
class ASLDetector(keras.Model):
    """ActionFormer/ASL detector. See the module docstring for inputs and outputs.

    Attributes: fpn_strides, max_seq_len, max_div_factor, num_classes, regression_range,
    test_cfg, train_cfg, asl_cfg, class_names, loss_normalizer (non-trainable scalar weight that
    starts at train_cfg.init_loss_norm; momentum `asl_tf.losses.NORMALIZER_MOMENTUM`).
    """

    def __init__(self, model_cfg, **kwargs):
        super().__init__(**kwargs)
        cfg = normalize_model_dict(model_cfg)
        # plain python attributes bypass Keras' attribute tracking (tracked dicts/lists hold a
        # reference to the model, which makes copy.deepcopy of them copy the whole model)
        plain = {
            "_cfg": cfg,
            "fpn_strides": list(cfg["_fpn_strides"]),
            "mha_win_size": list(cfg["_mha_win_size"]),
            "max_div_factor": int(cfg["_max_div_factor"]),
            "max_seq_len": int(cfg["max_seq_len"]),
            "num_classes": int(cfg["num_classes"]),
            "input_dim": int(cfg["input_dim"]),
            "regression_range": [list(r) for r in cfg["regression_range"]],
            "scale_factor": int(cfg["scale_factor"]),
            "fpn_start_level": int(cfg["fpn_start_level"]),
            "max_buffer_len": cfg["max_seq_len"] * cfg["max_buffer_len_factor"],
            "train_cfg": dict(cfg["train_cfg"]),
            "test_cfg": dict(cfg["test_cfg"]),
            "asl_cfg": dict(cfg["asl"]),
            "class_names": cfg["class_names"],
        }
        for key, value in plain.items():
            object.__setattr__(self, key, value)
        arch = cfg["backbone_arch"]
        tc = self.train_cfg

        # === Layers ===
        # OpenTAD's `input_pdrop` (Charades: 0.3): Dropout1d on the [B, C, T] input features,
        # i.e. whole channels of a video zeroed (the rest scaled by 1/(1-p)) in training only;
        # Keras' SpatialDropout1D is that on [B, T, C].
        p = float(cfg.get("input_pdrop", 0.0) or 0.0)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"model.input_pdrop must be in [0, 1), got {p}")
        self.input_drop = keras.layers.SpatialDropout1D(p, name="input_drop") if p > 0 else None
        if cfg["backbone_type"] == "convTransformer":
            self.backbone = ConvTransformerBackbone(
                self.input_dim, cfg["embd_dim"], cfg["n_head"], cfg["embd_kernel_size"],
                self.max_seq_len, arch, self.mha_win_size, self.scale_factor,
                cfg["embd_with_ln"], 0.0, tc["dropout"], tc["droppath"], cfg["use_abs_pe"],
                cfg["use_rel_pe"], name="backbone")
        else:
            self.backbone = ConvBackbone(self.input_dim, cfg["embd_dim"],
                                         cfg["embd_kernel_size"], arch, self.scale_factor,
                                         cfg["embd_with_ln"], name="backbone")
        neck_cls = FPNIdentity if cfg["fpn_type"] == "identity" else FPN1D
        self.neck = neck_cls([cfg["embd_dim"]] * (arch[2] + 1), cfg["fpn_dim"],
                             self.scale_factor, self.fpn_start_level, -1, cfg["fpn_with_ln"],
                             name="neck")
        self.cls_head = ClsHead(cfg["fpn_dim"], cfg["head_dim"], self.num_classes,
                                tc["cls_prior_prob"], cfg["head_num_layers"],
                                cfg["head_kernel_size"], cfg["head_with_ln"],
                                tc["head_empty_cls"], name="cls_head")
        self.reg_head = RegHead(cfg["fpn_dim"], cfg["head_dim"], len(self.fpn_strides),
                                cfg["head_num_layers"], cfg["head_kernel_size"],
                                cfg["head_with_ln"], name="reg_head")
        self.loss_normalizer = self.add_weight(
            name="loss_normalizer", shape=(), trainable=False,
            initializer=keras.initializers.Constant(float(tc["init_loss_norm"])))
        self._build_asl()
        self.build()

    # === Hooks for the ASL training code ===
    def _build_asl(self):
        """Attach the ASL branches and the per-component loss trackers (before build).

        `class_sensitivity` / `quality_branch` (or None) from `asl_cfg`, see
        asl_tf.model.sensitivity; loss trackers from asl_tf.training.attach_metrics.
        """
        from asl_tf import training
        from asl_tf.model import sensitivity
        sensitivity.attach(self)
        training.attach_metrics(self)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        from asl_tf import losses
        return losses.detector_loss(self, x, y, y_pred, training=training)

    def train_step(self, *args):
        # TensorFlow calls train_step(data); JAX calls train_step(state, data).
        if keras.backend.backend() == "tensorflow":
            from asl_tf import training
            return training.train_step(self, *args)
        return super().train_step(*args)

    # === Build ===
    def build(self, input_shape=None):
        if self.built:
            return
        c = self.input_dim
        self.backbone.build((None, None, c))
        self.neck.build(None)
        self.cls_head.build(None)
        self.reg_head.build(None)
        for layer in self._asl_layers():
            if not layer.built:
                layer.build(None)
        self.built = True

    def _asl_layers(self):
        """Layers added by `_build_asl` that need an explicit build (override if needed)."""
        return []

    # === Geometry ===
    def level_lengths(self, t):
        """Per-level lengths [T_l] for an input of length t."""
        return [int(t) // (self.scale_factor ** (i + self.fpn_start_level))
                for i in range(len(self.fpn_strides))]

    def points(self, t):
        """[sum T_l, 4] float32 numpy [t, reg_lo, reg_hi, stride] for input length t."""
        return points_lib.make_points(self.level_lengths(t), self.fpn_strides,
                                      self.regression_range, self.max_buffer_len)

    def check_length(self, t, training=False):
        """Raise ValueError if an input of length t cannot run through the pyramid."""
        t = int(t)
        if t <= 0:
            raise ValueError(f"feats: sequence length must be > 0, got T={t}")
        if training and t > self.max_seq_len:
            raise ValueError(f"feats: T={t} exceeds max_seq_len={self.max_seq_len} in training")
        n_levels = len(self.mha_win_size)
        for lvl in range(n_levels):
            s = self.scale_factor ** lvl
            w = self.mha_win_size[lvl]
            need = s * (2 * (w // 2) if w > 1 else 1)
            if t % need:
                raise ValueError(
                    f"feats: T={t} is not divisible by {need} at level {lvl} (stride {s}"
                    + (f", local window {w} needs a multiple of {2 * (w // 2)} per level"
                       if w > 1 else "") + f"); pad to a multiple of {self.max_div_factor}")
        if t > self.max_buffer_len:
            raise ValueError(f"feats: T={t} exceeds the point buffer max_seq_len*"
                             f"max_buffer_len_factor={self.max_buffer_len:g}")

    # === Forward ===
    def forward_levels(self, feats, mask, training=False):
        """Per-level forward. feats [B,T,C]; mask [B,T] bool. Returns a dict of lists over the
        levels: backbone_feats/backbone_masks (from the backbone levels, all of them),
        fpn_feats, fpn_masks ([B,T_l,1] float), cls_logits, offsets_raw, offsets_scaled,
        offsets ([B,T_l,2])."""
        static_c = feats.shape[-1]
        if static_c is not None and int(static_c) != self.input_dim:
            raise ValueError(f"feats: feature width {int(static_c)} does not match the model's "
                             f"input_dim {self.input_dim}")
        static_t = feats.shape[1]
        if static_t is not None:
            self.check_length(static_t, training=training is True and self._cfg["use_abs_pe"])
        dtype = self.compute_dtype
        x = ops.cast(feats, dtype)
        m = ops.expand_dims(ops.cast(mask, dtype), -1)
        if self.input_drop is not None:
            x = self.input_drop(x, training=training)
        b_feats, b_masks = self.backbone(x, m, training=training)
        f_feats, f_masks = self.neck(b_feats, b_masks)
        cls = self.cls_head(f_feats, f_masks)
        offsets, raw, scaled = self.reg_head(f_feats, f_masks)
        return {"backbone_feats": b_feats, "backbone_masks": b_masks, "fpn_feats": f_feats,
                "fpn_masks": f_masks, "cls_logits": cls, "offsets_raw": raw,
                "offsets_scaled": scaled, "offsets": offsets}

    def call(self, inputs, training=False):
        if not isinstance(inputs, dict) or "feats" not in inputs or "mask" not in inputs:
            raise ValueError('ASLDetector expects {"feats": [B,T,C], "mask": [B,T]}')
        lv = self.forward_levels(inputs["feats"], inputs["mask"], training=training)
        return self._assemble(lv)

    def _assemble(self, lv):
        cat = lambda xs: xs[0] if len(xs) == 1 else ops.concatenate(xs, axis=1)  # noqa: E731
        return {
            "cls_logits": ops.cast(cat(lv["cls_logits"]), "float32"),
            "offsets": ops.cast(cat(lv["offsets"]), "float32"),
            "mask": ops.squeeze(cat(lv["fpn_masks"]), -1) > 0,
            "fpn_feats": cat(lv["fpn_feats"]),
            **self._asl_outputs(lv),
        }

    def _asl_outputs(self, lv):
        """`{"quality": [B, sum T_l, 2]}` when the instance-level ASL branch is on, else {}."""
        if getattr(self, "quality_branch", None) is None:
            return {}
        from asl_tf.model import sensitivity
        return {"quality": sensitivity.quality_output(self, lv["fpn_feats"], lv["fpn_masks"])}

    # === Config ===
    def model_dict(self):
        """The (defaults-filled) model section this model was built from."""
        return {k: copy.deepcopy(v) for k, v in self._cfg.items() if not k.startswith("_")}

    def get_config(self):
        return {"model_cfg": self.model_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(config.pop("model_cfg"), **config)


def build_detector(model_dict):
    """Build an `ASLDetector` from the merged model section (INTERFACES §1/§2)."""
    return ASLDetector(model_dict)
