"""ONNX export with tf2onnx at opset 17, fixed window [1, T, C].

The export fails (ValueError) when tf2onnx logs unsupported ops, when `onnx.checker`
rejects the graph, or when onnxruntime cannot load it (TOOLCHAIN.md: a converter that
"succeeds" can still write a file onnxruntime refuses, e.g. Keras' Erfc-based GELU).
"""
import logging as pylogging
import os

import numpy as np

from export.saved_model import raw_function

OPSET = 17


class _Capture(pylogging.Handler):
    def __init__(self):
        super().__init__(level=pylogging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def convert(model, window, path):
    """Write `model` at [1, window, C] as ONNX to `path`; return the list of its op types."""
    import onnx
    import tf2onnx

    fn = raw_function(model, batch=1, window=window)
    spec = list(fn.input_signature)
    cap = _Capture()
    logger = pylogging.getLogger("tf2onnx")
    logger.addHandler(cap)
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=OPSET,
                                                 output_path=None)
    except Exception as err:
        raise ValueError(f"tf2onnx could not convert the model: {str(err).splitlines()[0]}") from None
    finally:
        logger.removeHandler(cap)
    bad = [l for l in cap.lines if "unsupported" in l.lower()]
    if bad:
        raise ValueError(f"tf2onnx reports unsupported ops: {bad[0]}")
    onnx.checker.check_model(proto)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    OnnxRunner(path)  # must load in onnxruntime
    return sorted({n.op_type for n in proto.graph.node})


class OnnxRunner:
    """onnxruntime session by input/output name: (feats [1,T,C], mask [1,T]) -> dict."""

    def __init__(self, path, threads=1):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self.sess = ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ValueError(f"{path}: onnxruntime refuses the exported graph: "
                             f"{str(err).splitlines()[0]}") from None
        names = {i.name for i in self.sess.get_inputs()}
        if names != {"feats", "mask"}:
            raise ValueError(f"{path}: ONNX inputs are {sorted(names)}, expected feats and mask")
        self.outputs = [o.name for o in self.sess.get_outputs()]

    def __call__(self, feats, mask):
        out = self.sess.run(None, {"feats": np.asarray(feats, np.float32), "mask": np.asarray(mask, bool)})
        return dict(zip(self.outputs, out))


