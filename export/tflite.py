"""TFLite export at a fixed window: fp32, fp16, dynamic-range and full-integer int8.

Builtin ops only (no Flex). Conversion goes through a fixed-window SavedModel
(`from_saved_model`; `from_concrete_functions` silently writes a broken file, TOOLCHAIN.md).
Inputs and outputs stay float32 / bool and are picked by name through the
`serving_default` signature (the converter orders inputs alphabetically).
For int8 the representative dataset yields dicts keyed by input name, built from real
calibration windows.
"""
import collections
import contextlib
import os
import tempfile

import numpy as np
import tensorflow as tf
from absl import logging

from export.saved_model import save_fixed_window


#: LayerNorm epsilon floor in the int8 graph (TOOLCHAIN.md: LayerNorm over all-zero padded
#: frames gives rsqrt(1e-5) = 316 and wrecks the int8 ranges; eps 1e-3 keeps them sane).
INT8_LN_EPSILON = 1e-3


#: Additive attention-mask constants in the int8 graph. The model uses -1e4 (padded keys) and
#: -1e30 (keys outside the local band): an ADD whose calibrated range reaches -1e30 leaves one
#: int8 step for all real logits. -30 still gives a masked key exp(-30) ~ 1e-13 of the weight.
INT8_MASK_VALUE = -30.0
#: Ops kept in float inside the int8 model (LayerNorm statistics, residual adds, mask and
#: scale multiplies); convs, fully-connected layers, attention matmuls, softmax and GELU run in
#: int8. Measured on the trained demo model (configs/demo.yaml): all-int8 lost 5.3 mAP points
#: against Keras, this split 0.4 (denying only SOFTMAX/BATCH_MATMUL or GELU: still -4.9/-5.3).
INT8_FLOAT_OPS = ("MEAN", "RSQRT", "SUB", "ADD", "MUL")


@contextlib.contextmanager
def _layer_overrides(model, wanted):
    """Temporarily set attributes of the layers of `model`: `wanted(layer)` returns a dict of
    {attribute: value} for the layer (empty: leave it). Restored on exit; yields the number of
    layers changed. The graph-building code reads these attributes when it is traced."""
    changed = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        values = wanted(layer)
        if values:
            changed.append((layer, {k: getattr(layer, k) for k in values}))
            for k, v in values.items():
                setattr(layer, k, v)
    try:
        yield len(changed)
    finally:
        for layer, old in changed:
            for k, v in old.items():
                setattr(layer, k, v)


def int8_mask_constants(model, value=INT8_MASK_VALUE):
    """Context: the additive attention-mask constants (`pad_key`, `out_of_range`) of every
    attention layer of `model` set to `value` (yields the number of layers changed)."""
    def wanted(layer):
        if hasattr(layer, "pad_key") and hasattr(layer, "out_of_range"):
            return {"pad_key": float(value), "out_of_range": float(value)}
        return {}
    return _layer_overrides(model, wanted)


def int8_layernorm_epsilon(model, floor=INT8_LN_EPSILON):
    """Context: the epsilon of every LayerNorm layer of `model` raised to `floor` (yields the
    number of layers changed)."""
    def wanted(layer):
        eps = getattr(layer, "epsilon", None)
        if "LayerNorm" in type(layer).__name__ and isinstance(eps, float) and eps < floor:
            return {"epsilon": floor}
        return {}
    return _layer_overrides(model, wanted)


def convert(model, window, quantize="none", representative=None, float_ops=INT8_FLOAT_OPS):
    """Convert `model` at [1, window, C] to TFLite bytes.

    representative: for int8, a `Windows`-like object with feats [N, T, C] and mask [N, T].
    float_ops: TFLite op names left in float in the int8 model (empty: full integer, strict
    TFLITE_BUILTINS_INT8).
    """
    if quantize == "int8" and (representative is None or len(representative) == 0):
        raise ValueError("--quantize int8 needs calibration windows (--calibration)")
    with tempfile.TemporaryDirectory(prefix="asl-tflite-") as tmp:
        if quantize == "int8":
            with int8_layernorm_epsilon(model), int8_mask_constants(model):
                sm = save_fixed_window(model, os.path.join(tmp, "sm"), window)
        else:
            sm = save_fixed_window(model, os.path.join(tmp, "sm"), window)
        conv = tf.lite.TFLiteConverter.from_saved_model(sm)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "fp16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        elif quantize == "dynamic":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantize == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]

            def gen():
                for f, m in zip(representative.feats, representative.mask):
                    yield {"feats": f[None].astype(np.float32), "mask": m[None]}

            conv.representative_dataset = gen
            if float_ops:
                # Selective quantization: calibrate, then quantize all but `float_ops`
                # (TF's QuantizationDebugger path; builtin ops only, float interface).
                opts = tf.lite.experimental.QuantizationDebugOptions(
                    denylisted_ops=list(float_ops))
                dbg = tf.lite.experimental.QuantizationDebugger(converter=conv,
                                                                 debug_options=opts)
                return dbg.get_nondebug_quantized_model()
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        try:
            return conv.convert()
        except Exception as err:  # the converter raises ConverterError and friends
            if quantize != "int8":
                raise
            # Some ops (bool logic on the mask) have no int8 kernel: allow float builtins for them.
            logging.warning("strict int8 conversion failed (%s); retrying with float builtins "
                            "allowed for the ops that have no int8 kernel", str(err).splitlines()[0])
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                              tf.lite.OpsSet.TFLITE_BUILTINS]
            return conv.convert()


def _interpreter(path_or_bytes, threads):
    from ai_edge_litert.interpreter import Interpreter
    if isinstance(path_or_bytes, (bytes, bytearray)):
        return Interpreter(model_content=bytes(path_or_bytes), num_threads=threads)
    return Interpreter(model_path=os.fspath(path_or_bytes), num_threads=threads)


def op_counts(path_or_bytes):
    """{op name: count} of a TFLite model (e.g. to see which ops stay float in int8)."""
    interp = _interpreter(path_or_bytes, 1)
    return dict(collections.Counter(d["op_name"] for d in interp._get_ops_details()))


class TFLiteRunner:
    """Run a TFLite export by input/output name: (feats [1,T,C], mask [1,T]) -> dict."""

    def __init__(self, path_or_bytes, threads=1):
        self.interp = _interpreter(path_or_bytes, threads)
        self.runner = self.interp.get_signature_runner("serving_default")
        names = set(self.runner.get_input_details())
        if names != {"feats", "mask"}:
            raise ValueError(f"TFLite inputs are {sorted(names)}, expected feats and mask")

    def __call__(self, feats, mask):
        out = self.runner(feats=np.asarray(feats, np.float32), mask=np.asarray(mask, bool))
        return {"cls_logits": out["cls_logits"], "offsets": out["offsets"]}
