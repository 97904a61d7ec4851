"""Necks of the reference: `identity` (per-level LayerNorm) and `fpn` (lateral 1x1, top-down
nearest upsampling, depthwise 3x3, LayerNorm).

call(feats, masks) with lists over backbone levels ([B,T_l,C], [B,T_l,1]) -> (fpn_feats,
fpn_masks) for levels start_level..end_level-1. Neither neck masks its LayerNorm: padded
positions of the identity neck's output equal the LN bias, as in the reference.
"""
import keras
from keras import ops

from asl_tf.model.layers import PACKAGE, LayerNorm, MaskedConv1D


def _check_levels(in_channels, start_level, end_level):
    end = len(in_channels) if end_level == -1 else end_level
    if not (0 <= start_level < end <= len(in_channels)):
        raise ValueError(f"fpn_start_level={start_level} is outside the {len(in_channels)} "
                         f"backbone levels")
    return end


class _Neck(keras.layers.Layer):
    """The arguments and config shared by both necks (levels start_level..end_level-1)."""

    def __init__(self, in_channels, out_channel, scale_factor=2, start_level=0, end_level=-1,
                 with_ln=True, **kwargs):
        super().__init__(**kwargs)
        self.in_channels = [int(c) for c in in_channels]
        self.out_channel = int(out_channel)
        self.scale_factor, self.start_level = int(scale_factor), int(start_level)
        self.end_level = _check_levels(self.in_channels, self.start_level, int(end_level))
        self.with_ln = bool(with_ln)

    def get_config(self):
        return {**super().get_config(), "in_channels": self.in_channels,
                "out_channel": self.out_channel, "scale_factor": self.scale_factor,
                "start_level": self.start_level, "end_level": self.end_level,
                "with_ln": self.with_ln}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FPNIdentity(_Neck):
    """Reference `FPNIdentity`: LayerNorm per level (or nothing when with_ln is False)."""

    def __init__(self, in_channels, out_channel, scale_factor=2, start_level=0, end_level=-1,
                 with_ln=True, **kwargs):
        super().__init__(in_channels, out_channel, scale_factor, start_level, end_level, with_ln,
                         **kwargs)
        for i in range(self.start_level, self.end_level):
            if self.in_channels[i] != self.out_channel:
                raise ValueError(f"fpn_type 'identity' needs fpn_dim == embd_dim, got "
                                 f"fpn_dim={self.out_channel} and embd_dim={self.in_channels[i]}")
        n = self.end_level - self.start_level
        self.fpn_norms = [LayerNorm(name=f"fpn_norm_{i}") if self.with_ln else None
                          for i in range(n)]

    def build(self, input_shape):
        for norm in self.fpn_norms:
            if norm is not None:
                norm.build((None, None, self.out_channel))

    def call(self, feats, masks):
        out_f, out_m = [], []
        for i, norm in enumerate(self.fpn_norms):
            x = feats[i + self.start_level]
            out_f.append(norm(x) if norm is not None else x)
            out_m.append(masks[i + self.start_level])
        return out_f, out_m

    def torch_params(self, prefix="neck."):
        out = {}
        for i, norm in enumerate(self.fpn_norms):
            if norm is not None:
                out.update(norm.torch_params(f"{prefix}fpn_norms.{i}."))
        return out


@keras.saving.register_keras_serializable(package=PACKAGE)
class FPN1D(_Neck):
    """Reference `FPN1D`: lateral MaskedConv 1x1; laterals[i-1] += nearest-upsampled
    laterals[i] (top-down, cumulative); depthwise MaskedConv k3; LayerNorm."""

    def __init__(self, in_channels, out_channel, scale_factor=2, start_level=0, end_level=-1,
                 with_ln=True, **kwargs):
        super().__init__(in_channels, out_channel, scale_factor, start_level, end_level, with_ln,
                         **kwargs)
        n = self.end_level - self.start_level
        c = self.out_channel
        self.lateral_convs = [MaskedConv1D(c, 1, use_bias=not self.with_ln, name=f"lateral_{i}")
                              for i in range(n)]
        self.fpn_convs = [MaskedConv1D(c, 3, depthwise=True, use_bias=not self.with_ln,
                                       name=f"fpn_conv_{i}") for i in range(n)]
        self.fpn_norms = [LayerNorm(name=f"fpn_norm_{i}") if self.with_ln else None
                          for i in range(n)]

    def build(self, input_shape):
        for i in range(len(self.lateral_convs)):
            self.lateral_convs[i].build((None, None, self.in_channels[i + self.start_level]))
            self.fpn_convs[i].build((None, None, self.out_channel))
            if self.fpn_norms[i] is not None:
                self.fpn_norms[i].build((None, None, self.out_channel))

    def call(self, feats, masks):
        n = len(self.lateral_convs)
        laterals = [self.lateral_convs[i](feats[i + self.start_level],
                                          masks[i + self.start_level])[0] for i in range(n)]
        for i in range(n - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + ops.repeat(laterals[i], self.scale_factor, axis=1)
        out_f, out_m = [], []
        for i in range(n):
            x, m = self.fpn_convs[i](laterals[i], masks[i + self.start_level])
            if self.fpn_norms[i] is not None:
                x = self.fpn_norms[i](x)
            out_f.append(x)
            out_m.append(m)
        return out_f, out_m

    def torch_params(self, prefix="neck."):
        out = {}
        for i in range(len(self.lateral_convs)):
            out.update(self.lateral_convs[i].torch_params(f"{prefix}lateral_convs.{i}.conv."))
            out.update(self.fpn_convs[i].torch_params(f"{prefix}fpn_convs.{i}.conv."))
            if self.fpn_norms[i] is not None:
                out.update(self.fpn_norms[i].torch_params(f"{prefix}fpn_norms.{i}."))
        return out
