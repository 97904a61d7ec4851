"""A frame encoder exported by `asl-export` (TFLite or ONNX) on the device: RGB frames -> features.

numpy + ai_edge_litert (`.tflite`) or onnxruntime (`.onnx`); no TensorFlow.

    enc = FrameEncoder("lite0_int8.tflite", num_threads=1)
    feats = enc(rgb)          # rgb uint8/float [N, S, S, 3] RGB 0..255 -> [N, D] float32

`input_size` S and `output_dim` D come from the model's own tensors (and its optional
`<file>.meta.json` sidecar, `format: asl-tf-encoder`, which must agree). The graph normalises
the pixels itself (EfficientNet-Lite: (x - 127) / 128), so frames go in as 0..255.
"""
import json
import os

import numpy as np

_TFLITE_MAGIC = b"TFL3"


class FrameEncoder:
    """An exported frame encoder: `__call__(rgb [N, S, S, 3]) -> [N, D]` float32."""

    def __init__(self, path, num_threads=None):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: encoder file not found")
        self.path = path
        with open(path, "rb") as f:
            head = f.read(8)
        threads = None if num_threads is None else int(num_threads)
        if head[4:8] == _TFLITE_MAGIC:
            self.backend = "tflite"
            self._init_tflite(threads)
        elif path.lower().endswith(".onnx"):
            self.backend = "onnx"
            self._init_onnx(threads)
        else:
            raise ValueError(f"{path}: not a TFLite flatbuffer or an .onnx encoder")
        self.meta = self._read_meta()

    # --- backends ----------------------------------------------------------------------
    def _init_tflite(self, threads):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # pragma: no cover - depends on the install
            raise ValueError(f"{self.path}: a .tflite encoder needs ai-edge-litert") from None
        try:
            self._interp = Interpreter(model_path=self.path, num_threads=threads)
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"{self.path}: not a usable TFLite encoder ({err})") from None
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(f"{self.path}: not a frame encoder: it has {len(ins)} inputs and "
                             f"{len(outs)} outputs, an encoder has one of each (a detector?)")
        self._in, self._out = ins[0], outs[0]
        shape = [int(v) for v in self._in["shape_signature"]]
        self._check_shapes(shape, [int(v) for v in self._out["shape_signature"]])
        self._batch = None

    def _init_onnx(self, threads):
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - depends on the install
            raise ValueError(f"{self.path}: an .onnx encoder needs onnxruntime") from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._sess = ort.InferenceSession(self.path, sess_options=opts,
                                              providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception classes
            raise ValueError(f"{self.path}: not a usable ONNX encoder "
                             f"({str(err).splitlines()[0]})") from None
        ins, outs = self._sess.get_inputs(), self._sess.get_outputs()
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(f"{self.path}: not a frame encoder: it has {len(ins)} inputs and "
                             f"{len(outs)} outputs, an encoder has one of each (a detector?)")
        self._in_name = ins[0].name
        as_int = [v if isinstance(v, int) else -1 for v in ins[0].shape]
        self._check_shapes(as_int, [v if isinstance(v, int) else -1 for v in outs[0].shape])

    def _check_shapes(self, in_shape, out_shape):
        if len(in_shape) != 4 or in_shape[3] != 3 or in_shape[1] != in_shape[2] \
                or in_shape[1] < 1 or len(out_shape) != 2 or out_shape[1] < 1:
            raise ValueError(f"{self.path}: not a frame encoder: input {in_shape} (want "
                             f"[N, S, S, 3]), output {out_shape} (want [N, D])")
        self.input_size, self.output_dim = int(in_shape[1]), int(out_shape[1])

    def _read_meta(self):
        path = self.path + ".meta.json"
        if not os.path.exists(path):
            return {}
        try:
            with open(path, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not a valid sidecar JSON ({err})") from None
        if not isinstance(meta, dict) or meta.get("format") != "asl-tf-encoder":
            raise ValueError(f"{path}: field 'format' must be 'asl-tf-encoder' (is this the "
                             "detector's sidecar?)")
        for field, got in (("input_size", self.input_size), ("output_dim", self.output_dim)):
            if field in meta and int(meta[field]) != got:
                raise ValueError(f"{path}: field '{field}' says {meta[field]} but the encoder "
                                 f"has {got}")
        return meta

    # --- inference ---------------------------------------------------------------------
    def __call__(self, rgb):
        """rgb `[N, S, S, 3]` (uint8 or float, RGB 0..255) -> features `[N, D]` float32."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 4 or rgb.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"frames: expected [N, {self.input_size}, {self.input_size}, 3], "
                             f"got {list(rgb.shape)}")
        x = rgb.astype(np.float32, copy=False)
        if self.backend == "onnx":
            out = self._sess.run(None, {self._in_name: x})[0]
            return np.asarray(out, np.float32)
        d = self._in
        if self._batch != len(x):
            self._interp.resize_tensor_input(d["index"], list(x.shape))
            self._interp.allocate_tensors()
            self._batch = len(x)
        scale, zero = d.get("quantization", (0.0, 0))
        if np.dtype(d["dtype"]) in (np.int8, np.uint8) and scale:
            info = np.iinfo(d["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self._interp.set_tensor(d["index"], x.astype(d["dtype"]))
        self._interp.invoke()
        out = self._interp.get_tensor(self._out["index"])
        scale, zero = self._out.get("quantization", (0.0, 0))
        if np.issubdtype(out.dtype, np.integer) and scale:
            out = (out.astype(np.float32) - zero) * scale
        return np.array(out, np.float32)

    def __repr__(self):
        return (f"FrameEncoder({self.path!r}, backend={self.backend}, input_size="
                f"{self.input_size}, output_dim={self.output_dim})")
