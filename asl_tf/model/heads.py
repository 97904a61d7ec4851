"""Classification and regression heads of the reference, shared across pyramid levels.

Each head: (num_layers-1) x [MaskedConv(k, bias = not with_ln) -> LN -> ReLU], then a
MaskedConv(k, bias). The regression head multiplies each level by its own `Scale` and applies
ReLU.

All levels run through each conv in ONE call: the levels are concatenated along time with k//2
zero frames between them (exactly the reference's zero padding at each level's ends), and the
separators are re-zeroed after each LN/ReLU. This gives the same numbers as a per-level loop
with 1/L of the ops.

call(fpn_feats, fpn_masks): lists over levels of [B,T_l,C] and [B,T_l,1] float.
ClsHead -> list of logits [B,T_l,num_classes]; RegHead -> (offsets [B,T_l,2] = ReLU(scale_l*raw),
raw [B,T_l,2], scaled [B,T_l,2]).
"""
import math

import keras
import numpy as np
from keras import ops

from asl_tf.model.layers import PACKAGE, LayerNorm, MaskedConv1D, Scale


def concat_levels(feats, masks, gap):
    """Concatenate levels along time with `gap` zero frames between them.

    Returns (x [B,L,C], mask [B,L,1], keep [B,L,1] (0 on separators) or None, lengths).
    """
    lengths = [ops.shape(f)[1] for f in feats]
    if gap == 0 or len(feats) == 1:
        return ops.concatenate(feats, 1), ops.concatenate(masks, 1), None, lengths
    zf = ops.zeros_like(feats[0][:, :gap])
    zm = ops.zeros_like(masks[0][:, :gap])
    xs, ms, ks = [], [], []
    for i, (f, m) in enumerate(zip(feats, masks)):
        if i:
            xs.append(zf)
            ms.append(zm)
            ks.append(zm)
        xs.append(f)
        ms.append(m)
        ks.append(ops.ones_like(m))
    return (ops.concatenate(xs, 1), ops.concatenate(ms, 1), ops.concatenate(ks, 1), lengths)


def split_levels(x, lengths, gap):
    """Inverse of `concat_levels` for a [B, L, D] tensor: list of [B, T_l, D]."""
    out, start = [], 0
    for n in lengths:
        out.append(x[:, start:start + n])
        start = start + n + gap
    return out


class _ConvHead(keras.layers.Layer):
    """Shared trunk of both heads (the `head`/`norm` lists of the reference)."""

    def __init__(self, input_dim, feat_dim, num_layers=3, kernel_size=3, with_ln=False, **kwargs):
        super().__init__(**kwargs)
        self.input_dim, self.feat_dim = int(input_dim), int(feat_dim)
        self.num_layers, self.kernel_size = int(num_layers), int(kernel_size)
        self.with_ln = bool(with_ln)
        if self.num_layers < 1:
            raise ValueError(f"head_num_layers must be >= 1, got {self.num_layers}")
        if self.num_layers == 1 and self.input_dim != self.feat_dim:
            raise ValueError(f"head_num_layers=1 needs head_dim == fpn_dim (the classifier "
                             f"reads the neck features), got {self.feat_dim} and {self.input_dim}")
        self.head = [MaskedConv1D(self.feat_dim, self.kernel_size, use_bias=not self.with_ln,
                                  name=f"head_{i}") for i in range(self.num_layers - 1)]
        self.norm = [LayerNorm(name=f"norm_{i}") if self.with_ln else None
                     for i in range(self.num_layers - 1)]

    def _build_trunk(self):
        for i, conv in enumerate(self.head):
            conv.build((None, None, self.input_dim if i == 0 else self.feat_dim))
            if self.norm[i] is not None:
                self.norm[i].build((None, None, self.feat_dim))

    def _run(self, final, feats, masks):
        gap = self.kernel_size // 2
        x, mask, keep, lengths = concat_levels(feats, masks, gap)
        for conv, norm in zip(self.head, self.norm):
            x = conv(x, mask)[0]
            if norm is not None:
                x = norm(x)
            x = ops.relu(x)
            if keep is not None:
                x = x * keep
        out = final(x, mask)[0]
        return split_levels(out, lengths, gap if keep is not None else 0)

    def _trunk_torch_params(self, prefix):
        out = {}
        for i, conv in enumerate(self.head):
            out.update(conv.torch_params(f"{prefix}head.{i}.conv."))
            if self.norm[i] is not None:
                out.update(self.norm[i].torch_params(f"{prefix}norm.{i}."))
        return out

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "feat_dim": self.feat_dim,
                "num_layers": self.num_layers, "kernel_size": self.kernel_size,
                "with_ln": self.with_ln}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClsHead(_ConvHead):
    """Reference `PtTransformerClsHead`. The classifier bias starts at -log((1-p)/p)
    (prior_prob p > 0), and at -log((1-1e-6)/1e-6) for the classes in `empty_cls`."""

    def __init__(self, input_dim, feat_dim, num_classes, prior_prob=0.01, num_layers=3,
                 kernel_size=3, with_ln=False, empty_cls=(), **kwargs):
        super().__init__(input_dim, feat_dim, num_layers, kernel_size, with_ln, **kwargs)
        self.num_classes = int(num_classes)
        self.prior_prob = float(prior_prob)
        self.empty_cls = [int(c) for c in (empty_cls or [])]
        bias = np.zeros((self.num_classes,), np.float32)
        if self.prior_prob > 0:
            bias[:] = -math.log((1 - self.prior_prob) / self.prior_prob)
        for c in self.empty_cls:
            bias[c] = -math.log((1 - 1e-6) / 1e-6)
        self._bias_init = bias
        self.cls_head = MaskedConv1D(self.num_classes, self.kernel_size, name="cls_head")

    def build(self, input_shape=None):
        self._build_trunk()
        self.cls_head.build((None, None, self.feat_dim))
        self.cls_head.bias.assign(self._bias_init)

    def call(self, feats, masks):
        return self._run(self.cls_head, feats, masks)

    def torch_params(self, prefix="cls_head."):
        out = self._trunk_torch_params(prefix)
        out.update(self.cls_head.torch_params(prefix + "cls_head.conv."))
        return out

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "prior_prob": self.prior_prob, "empty_cls": self.empty_cls}


@keras.saving.register_keras_serializable(package=PACKAGE)
class RegHead(_ConvHead):
    """Reference `PtTransformerRegHead`: 2 outputs per point, ReLU(Scale_l * raw)."""

    def __init__(self, input_dim, feat_dim, fpn_levels, num_layers=3, kernel_size=3,
                 with_ln=False, **kwargs):
        super().__init__(input_dim, feat_dim, num_layers, kernel_size, with_ln, **kwargs)
        self.fpn_levels = int(fpn_levels)
        self.scale = [Scale(name=f"scale_{i}") for i in range(self.fpn_levels)]
        self.offset_head = MaskedConv1D(2, self.kernel_size, name="offset_head")

    def build(self, input_shape=None):
        self._build_trunk()
        self.offset_head.build((None, None, self.feat_dim))
        for s in self.scale:
            s.build(())

    def call(self, feats, masks):
        if len(feats) != self.fpn_levels:
            raise ValueError(f"RegHead expects {self.fpn_levels} levels, got {len(feats)}")
        raw = self._run(self.offset_head, feats, masks)
        scaled = [s(r) for s, r in zip(self.scale, raw)]
        return [ops.relu(x) for x in scaled], raw, scaled

    def torch_params(self, prefix="reg_head."):
        out = self._trunk_torch_params(prefix)
        for i, s in enumerate(self.scale):
            out.update(s.torch_params(f"{prefix}scale.{i}."))
        out.update(self.offset_head.torch_params(prefix + "offset_head.conv."))
        return out

    def get_config(self):
        return {**super().get_config(), "fpn_levels": self.fpn_levels}
