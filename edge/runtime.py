"""Run an exported asl-tf detector on a device: a TFLite or ONNX model plus its sidecar JSON.

numpy + `ai_edge_litert` (for `.tflite`) or `onnxruntime` (for `.onnx`) only; no TensorFlow.
Everything the device needs is read from the model file and its `<file>.meta.json` sidecar
(INTERFACES.md §5): the window length `T`, the feature width `C` and the class count `K` come
from the model's own input/output details, looked up by name (`feats`, `mask`, `cls_logits`,
`offsets`), never by position, and are checked against the sidecar.

    model = EdgeModel("model.tflite", num_threads=1)
    out = model.run(feats)            # feats [T, C] float32 (T == model.window), mask optional
    out["cls_logits"]                 # [ΣT_l, K] float32 logits
    out["offsets"]                    # [ΣT_l, 2] float32, stride units
"""
import json
import math
import os
import sys

import numpy as np

INPUTS = ("feats", "mask")
OUTPUTS = ("cls_logits", "offsets")
META_KEYS = ("window", "input_dim", "num_classes", "fpn_strides", "level_lengths",
             "regression_range", "test_cfg")
# Video-meta defaults of the training data; null in a sidecar means "the caller must give it".
VIDEO_KEYS = ("feat_stride", "num_frames", "fps")
_TFLITE_MAGIC = b"TFL3"


def meta_path_for(model_path):
    """The sidecar path of a model file: `<file>.meta.json`."""
    return str(model_path) + ".meta.json"


def _clean_name(name):
    """`serving_default_feats:0` / `feats:0` -> `feats` (names as exporters write them)."""
    name = name.split(":", 1)[0]
    for prefix in ("serving_default_",):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_meta_types(meta, path):
    """Each sidecar field has the type the runtime needs; raise ValueError naming the field."""
    def bad(field, want):
        raise ValueError(f"{path}: field '{field}' must be {want}, got {meta.get(field)!r}")

    for key in ("window", "input_dim", "num_classes"):
        if not (_is_num(meta[key]) and int(meta[key]) == meta[key] and meta[key] > 0):
            bad(key, "a positive integer")
    for key in ("fpn_strides", "level_lengths"):
        v = meta[key]
        if not (isinstance(v, list) and v and all(_is_num(x) and int(x) == x and x > 0
                                                  for x in v)):
            bad(key, "a non-empty list of positive integers")
    rr = meta["regression_range"]
    if not (isinstance(rr, list) and all(isinstance(r, list) and len(r) == 2 and
                                         all(isinstance(x, (int, float)) and not
                                             isinstance(x, bool) for x in r) for r in rr)):
        bad("regression_range", "a list of [low, high] number pairs")
    cfg = meta["test_cfg"]
    if not isinstance(cfg, dict):
        bad("test_cfg", "an object")
    if "nms_method" in cfg and cfg["nms_method"] not in ("soft", "hard", "none"):
        raise ValueError(f"{path}: field 'test_cfg.nms_method' must be soft, hard or none, got "
                         f"{cfg['nms_method']!r}")
    for key in VIDEO_KEYS:
        v = meta.get(key)
        if v is not None and not (_is_num(v) and v > 0):
            bad(key, "a positive number or null")
    names = meta.get("class_names")
    if names is not None and not (isinstance(names, list) and
                                  all(isinstance(n, str) for n in names)):
        bad("class_names", "a list of strings or null")


def load_meta(path, model_path):
    """Read and check a sidecar JSON; raise ValueError naming the file and the field."""
    if not os.path.exists(path):
        raise ValueError(f"{model_path}: not an asl-tf model: its sidecar {path} is missing")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a valid sidecar JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != "asl-tf":
        raise ValueError(f"{path}: field 'format' must be 'asl-tf' (not an asl-tf sidecar)")
    if meta.get("version") != 1:
        raise ValueError(f"{path}: field 'version' is {meta.get('version')!r}, this runtime "
                         "reads version 1")
    for key in META_KEYS:
        if key not in meta:
            raise ValueError(f"{path}: missing field '{key}'")
    _check_meta_types(meta, path)
    if len(meta["fpn_strides"]) != len(meta["level_lengths"]):
        raise ValueError(f"{path}: fields 'fpn_strides' and 'level_lengths' differ in length")
    if len(meta["regression_range"]) != len(meta["level_lengths"]):
        raise ValueError(f"{path}: fields 'regression_range' and 'level_lengths' differ in length")
    names = meta.get("class_names")
    if names is not None and len(names) != meta["num_classes"]:
        raise ValueError(f"{path}: field 'class_names' has {len(names)} names for "
                         f"num_classes={meta['num_classes']}")
    return meta


class _TFLiteBackend:
    """ai_edge_litert interpreter driven through its signature (names, not positions)."""

    def __init__(self, path, num_threads):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # pragma: no cover - depends on the install
            raise ValueError(f"{path}: a .tflite model needs ai-edge-litert "
                             "(pip install ai-edge-litert)") from None
        try:
            self.interp = Interpreter(model_path=str(path), num_threads=num_threads)
            sigs = self.interp.get_signature_list()
            if not sigs:
                raise ValueError("the model has no signature")
            key = "serving_default" if "serving_default" in sigs else sorted(sigs)[0]
            self.runner = self.interp.get_signature_runner(key)
            ins = self.runner.get_input_details()
            outs = self.runner.get_output_details()
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"{path}: not a usable TFLite model ({err})") from None
        self.inputs = {_clean_name(n): d for n, d in ins.items()}
        self.outputs = {_clean_name(n): d for n, d in outs.items()}
        self._in_key = {_clean_name(n): n for n in ins}
        self._out_key = {_clean_name(n): n for n in outs}
        # The signature runner resizes and re-allocates every tensor on each call (about as
        # long as the model itself for a large window); when the signature is the primary
        # subgraph, allocate once and drive the interpreter by tensor index instead.
        # (The runner holds the interpreter's internals; drop it before allocating.)
        self._direct = getattr(self.runner, "_subgraph_index", None) == 0
        if self._direct:
            self.runner = None
            self.interp.allocate_tensors()

    def shape(self, kind, name):
        d = (self.inputs if kind == "in" else self.outputs)[name]
        return [int(v) for v in d["shape"]], np.dtype(d["dtype"])

    def __call__(self, feeds):
        kwargs = {}
        for name, value in feeds.items():
            d = self.inputs[name]
            scale, zero = d.get("quantization", (0.0, 0))
            if np.dtype(d["dtype"]) in (np.int8, np.uint8) and scale:
                info = np.iinfo(d["dtype"])
                value = np.clip(np.round(value / scale + zero), info.min, info.max)
            kwargs[self._in_key[name]] = value.astype(d["dtype"])
        if self._direct:
            for key, value in kwargs.items():
                self.interp.set_tensor(self.inputs[_clean_name(key)]["index"], value)
            self.interp.invoke()
            res = {self._out_key[n]: self.interp.get_tensor(self.outputs[n]["index"])
                   for n in OUTPUTS}
        else:
            res = self.runner(**kwargs)
        out = {}
        for name in OUTPUTS:
            d = self.outputs[name]
            value = res[self._out_key[name]]
            scale, zero = d.get("quantization", (0.0, 0))
            if np.issubdtype(value.dtype, np.integer) and scale:
                value = (value.astype(np.float32) - zero) * scale
            out[name] = np.asarray(value, np.float32)
        return out


class _OnnxBackend:
    """onnxruntime session on the CPU; inputs and outputs by name."""

    _TYPES = {"tensor(float)": np.float32, "tensor(bool)": np.bool_,
              "tensor(float16)": np.float16, "tensor(double)": np.float64}

    def __init__(self, path, num_threads):
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - depends on the install
            raise ValueError(f"{path}: an .onnx model needs onnxruntime "
                             "(pip install 'asl-tf-edge[onnx]')") from None
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = int(num_threads)
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.sess = ort.InferenceSession(str(path), sess_options=opts,
                                             providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception classes
            raise ValueError(f"{path}: not a usable ONNX model ({str(err).splitlines()[0]})") \
                from None
        self.inputs = {_clean_name(i.name): i for i in self.sess.get_inputs()}
        self.outputs = {_clean_name(o.name): o for o in self.sess.get_outputs()}

    def shape(self, kind, name):
        d = (self.inputs if kind == "in" else self.outputs)[name]
        shape = [v if isinstance(v, int) else -1 for v in d.shape]
        return shape, np.dtype(self._TYPES.get(d.type, np.float32))

    def __call__(self, feeds):
        names = [self.outputs[n].name for n in OUTPUTS]
        res = self.sess.run(names, {self.inputs[n].name: v for n, v in feeds.items()})
        return {n: np.asarray(v, np.float32) for n, v in zip(OUTPUTS, res)}


class EdgeModel:
    """An exported detector and its sidecar, with input validation.

    Attributes (read from the model, checked against the sidecar): `window` (T, feature steps),
    `input_dim` (C), `num_classes` (K), `num_points` (ΣT_l); from the sidecar: `meta`,
    `class_names`, `fpn_strides`, `level_lengths`, `regression_range`, `test_cfg`,
    `feat_stride`, `num_frames`, `fps`. `backend` is "tflite" or "onnx".
    """

    def __init__(self, path, num_threads=None, meta_path=None):
        path = str(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: model file not found")
        if num_threads is not None and int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.path = path
        self.num_threads = None if num_threads is None else int(num_threads)
        with open(path, "rb") as f:
            head = f.read(8)
        if head[4:8] == _TFLITE_MAGIC:
            self.backend = "tflite"
        elif path.lower().endswith(".onnx"):
            self.backend = "onnx"
        else:
            raise ValueError(f"{path}: not a TFLite flatbuffer or an .onnx model")
        self.meta = load_meta(meta_path or meta_path_for(path), path)
        impl = _TFLiteBackend if self.backend == "tflite" else _OnnxBackend
        self._impl = impl(path, self.num_threads)
        self._read_signature()

    # --- model introspection -----------------------------------------------------------
    def _read_signature(self):
        for kind, names, have in (("input", INPUTS, self._impl.inputs),
                                  ("output", OUTPUTS, self._impl.outputs)):
            missing = [n for n in names if n not in have]
            if missing:
                raise ValueError(f"{self.path}: not an asl-tf model: {kind} {missing[0]!r} "
                                 f"not found (the model has {sorted(have)})")
        fshape, self._feats_dtype = self._impl.shape("in", "feats")
        mshape, self._mask_dtype = self._impl.shape("in", "mask")
        cshape, _ = self._impl.shape("out", "cls_logits")
        oshape, _ = self._impl.shape("out", "offsets")
        if len(fshape) != 3 or len(mshape) != 2 or len(cshape) != 3 or len(oshape) != 3:
            raise ValueError(f"{self.path}: unexpected tensor ranks feats{fshape} mask{mshape} "
                             f"cls_logits{cshape} offsets{oshape}")
        meta = self.meta
        self.window = fshape[1] if fshape[1] > 0 else int(meta["window"])
        self.input_dim = fshape[2] if fshape[2] > 0 else int(meta["input_dim"])
        self.num_classes = cshape[2] if cshape[2] > 0 else int(meta["num_classes"])
        self.num_points = cshape[1] if cshape[1] > 0 else int(sum(meta["level_lengths"]))
        checks = (("window", self.window, meta["window"]),
                  ("input_dim", self.input_dim, meta["input_dim"]),
                  ("num_classes", self.num_classes, meta["num_classes"]),
                  ("level_lengths", self.num_points, sum(meta["level_lengths"])))
        for field, got, want in checks:
            if int(got) != int(want):
                raise ValueError(f"{meta_path_for(self.path)}: field '{field}' says {want} but "
                                 f"the model has {got}")
        if oshape[2] > 0 and oshape[2] != 2:
            raise ValueError(f"{self.path}: output 'offsets' has width {oshape[2]}, expected 2")
        self.class_names = list(meta.get("class_names") or
                                [str(i) for i in range(self.num_classes)])
        self.fpn_strides = [int(s) for s in meta["fpn_strides"]]
        self.level_lengths = [int(v) for v in meta["level_lengths"]]
        self.regression_range = [list(map(float, r)) for r in meta["regression_range"]]
        self.test_cfg = dict(meta["test_cfg"])
        for key in VIDEO_KEYS:  # None when the sidecar leaves it to the caller
            value = meta.get(key)
            setattr(self, key, None if value is None else float(value))

    # --- inference ---------------------------------------------------------------------
    def validate(self, feats, mask=None):
        """Check and normalise one window.

        feats: `[T, C]` or `[1, T, C]`, a real floating dtype, finite; mask: `[T]` or `[1, T]`
        bool (default: all valid). Returns (feats [1, T, C] float32, mask [1, T] bool).
        """
        feats = np.asarray(feats)
        if feats.ndim == 2:
            feats = feats[None]
        if feats.ndim != 3 or feats.shape[0] != 1:
            raise ValueError(f"feats: expected shape [T, C] or [1, T, C], got {list(feats.shape)}")
        if feats.shape[2] != self.input_dim:
            raise ValueError(f"feats: feature width is {feats.shape[2]}, the model "
                             f"{os.path.basename(self.path)} takes {self.input_dim}")
        if feats.shape[1] != self.window:
            raise ValueError(f"feats: window length is {feats.shape[1]}, the model "
                             f"{os.path.basename(self.path)} takes {self.window} steps")
        if not np.issubdtype(feats.dtype, np.floating):
            raise ValueError(f"feats: dtype must be floating point, got {feats.dtype}")
        if not np.all(np.isfinite(feats)):
            raise ValueError("feats: contains NaN or infinite values")
        if mask is None:
            mask = np.ones((1, self.window), bool)
        mask = np.asarray(mask)
        if mask.ndim == 1:
            mask = mask[None]
        if mask.shape != (1, self.window):
            raise ValueError(f"mask: expected shape [{self.window}] or [1, {self.window}], got "
                             f"{list(mask.shape)}")
        if mask.dtype != np.bool_:
            raise ValueError(f"mask: dtype must be bool, got {mask.dtype}")
        return feats.astype(np.float32, copy=False), mask

    def run(self, feats, mask=None):
        """One window: returns {"cls_logits": [ΣT_l, K], "offsets": [ΣT_l, 2]} float32."""
        feats, mask = self.validate(feats, mask)
        out = self._impl({"feats": feats, "mask": mask.astype(self._mask_dtype)})
        return {name: value[0] for name, value in out.items()}

    def __repr__(self):
        return (f"EdgeModel({self.path!r}, backend={self.backend}, window={self.window}, "
                f"input_dim={self.input_dim}, num_classes={self.num_classes}, "
                f"threads={self.num_threads})")


def peak_rss_mb():
    """Peak resident memory of this process in MB. Linux: VmHWM of /proc/self/status (getrusage's
    ru_maxrss survives exec, so a child of a big process would report its parent's peak)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2 ** 20
