"""Test helpers for the export tests: a tiny stand-in detector with the model contract.

`StandInDetector` follows docs/INTERFACES.md §2 (inputs dict feats/mask, outputs dict
cls_logits/offsets/mask/fpn_feats, the attributes the exporters read) and holds the ops that
make export hard: a masked conv embedding, LayerNorm (eps 1e-5) over padded frames, a masked
softmax attention with an additive -1e4 key mask and zeroed padded query rows, an erf GELU MLP,
a stride-2 level, shared conv heads and ReLU(scale * raw) offsets. It is used where a real
`ASLDetector` is not needed (bad-input tests) and as a fallback.
"""
import numpy as np

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="asl_tf_tests")
class StandInDetector(keras.Model):
    """Tiny two-level detector: feats [B,T,C] float32, mask [B,T] bool -> dict of outputs.

    Outputs: cls_logits [B, T + T/2, K], offsets [B, T + T/2, 2] (stride units), mask
    [B, T + T/2] bool, fpn_feats [B, T + T/2, dim].
    """

    def __init__(self, input_dim=8, dim=16, num_classes=3, max_seq_len=32, class_names=None,
                 test_cfg=None,
                 transposed_key_mask=False, keras_gelu=False, **kwargs):
        super().__init__(**kwargs)
        self.input_dim, self.dim, self.num_classes = input_dim, dim, num_classes
        self.max_seq_len = max_seq_len
        self.transposed_key_mask = transposed_key_mask
        self.keras_gelu = keras_gelu
        self.fpn_strides = [1, 2]
        self.max_div_factor = 4
        self.regression_range = [[0.0, 4.0], [4.0, 10000.0]]
        self.class_names = class_names
        self.test_cfg = test_cfg or {
            "pre_nms_thresh": 0.001, "pre_nms_topk": 200, "iou_threshold": 0.1, "min_score": 0.001,
            "max_seg_num": 30, "nms_method": "soft", "nms_sigma": 0.5, "duration_thresh": 0.05,
            "multiclass_nms": True, "ext_score_file": None, "voting_thresh": 0.75}
        # === Layers ===
        self.embd = layers.Conv1D(dim, 3, padding="same", use_bias=False)
        self.embd_ln = layers.LayerNormalization(epsilon=1e-5)
        self.ln1 = layers.LayerNormalization(epsilon=1e-5)
        self.q, self.k, self.v = (layers.Dense(dim) for _ in range(3))
        self.proj = layers.Dense(dim)
        self.ln2 = layers.LayerNormalization(epsilon=1e-5)
        self.fc1, self.fc2 = layers.Dense(4 * dim), layers.Dense(dim)
        self.neck_ln = layers.LayerNormalization(epsilon=1e-5)
        self.cls1 = layers.Conv1D(dim, 3, padding="same")
        self.cls_out = layers.Conv1D(num_classes, 3, padding="same",
                                     bias_initializer=keras.initializers.Constant(-1.0))
        self.reg1 = layers.Conv1D(dim, 3, padding="same")
        self.reg_out = layers.Conv1D(2, 3, padding="same")
        self.scales = [self.add_weight(shape=(), initializer=keras.initializers.Constant(1.0 + 0.25 * i),
                                       name=f"scale_{i}") for i in range(2)]

    def level_lengths(self, t):
        return [int(t) // s for s in self.fpn_strides]

    def points(self, t):
        rows = []
        for length, s, (lo, hi) in zip(self.level_lengths(t), self.fpn_strides, self.regression_range):
            tt = np.arange(length, dtype=np.float32) * s
            rows.append(np.stack([tt, np.full_like(tt, lo), np.full_like(tt, hi), np.full_like(tt, s)], 1))
        return np.concatenate(rows, 0)

    def _block(self, x, m):
        mf = ops.cast(m, x.dtype)[..., None]                          # [B,T,1]
        h = self.ln1(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        att = ops.matmul(q, ops.transpose(k, (0, 2, 1))) / np.sqrt(self.dim).astype("float32")
        if self.transposed_key_mask:
            # `1 - transpose(m)`: the TF 2.21 TFLite converter computes `transpose(m) - 1` here
            # (operands of SUB swapped); kept as a switch to prove the verification catches it.
            att = att + (1.0 - ops.transpose(mf, (0, 2, 1))) * -1e4
        else:
            att = att + (1.0 - ops.cast(m, x.dtype))[:, None, :] * -1e4  # additive key mask
        att = ops.softmax(att, axis=-1) * mf                          # padded query rows -> 0
        x = x + self.proj(ops.matmul(att, v)) * mf
        h = self.fc1(self.ln2(x))
        if self.keras_gelu:  # lowers to TF Erfc, which tf2onnx cannot convert (TOOLCHAIN.md)
            h = keras.activations.gelu(h, approximate=False)
        else:
            h = 0.5 * h * (1.0 + ops.erf(h * 0.70710678))             # exact GELU, ONNX friendly
        return x + self.fc2(h) * mf

    def call(self, inputs, training=False):
        feats, mask = inputs["feats"], inputs["mask"]
        mf = ops.cast(mask, "float32")[..., None]
        x = ops.relu(self.embd_ln(self.embd(feats) * mf)) * mf
        x = self._block(x, mask)
        levels, masks = [x, x[:, ::2]], [mask, mask[:, ::2]]
        cls, off, feats_out = [], [], []
        for i, (xl, ml) in enumerate(zip(levels, masks)):
            mlf = ops.cast(ml, "float32")[..., None]
            f = self.neck_ln(xl)                                      # LN over padded frames too
            c = self.cls_out(ops.relu(self.cls1(f) * mlf)) * mlf
            r = self.reg_out(ops.relu(self.reg1(f) * mlf)) * mlf
            cls.append(c)
            off.append(ops.relu(self.scales[i] * r))
            feats_out.append(f)
        return {"cls_logits": ops.concatenate(cls, 1), "offsets": ops.concatenate(off, 1),
                "mask": ops.concatenate(masks, 1), "fpn_feats": ops.concatenate(feats_out, 1)}

    def get_config(self):
        return {"input_dim": self.input_dim, "dim": self.dim, "num_classes": self.num_classes,
                "max_seq_len": self.max_seq_len, "class_names": self.class_names,
                "test_cfg": self.test_cfg, "transposed_key_mask": self.transposed_key_mask,
                "keras_gelu": self.keras_gelu,
                "name": self.name}


def make_standin(seed=0, **kwargs):
    """A built stand-in with spread-out weights (so the detections are not all ties)."""
    keras.utils.set_random_seed(seed)
    model = StandInDetector(**kwargs)
    t = model.max_seq_len
    model({"feats": np.zeros((1, t, model.input_dim), "float32"), "mask": np.ones((1, t), bool)})
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if "scale" not in w.path:
            w.assign(w.numpy() + 0.1 * rng.standard_normal(w.shape).astype("float32"))
    return model


TINY_MODEL = {
    "input_dim": 16, "num_classes": 4, "max_seq_len": 64, "embd_dim": 16, "fpn_dim": 16,
    "head_dim": 16, "n_head": 2, "backbone_arch": [2, 1, 2], "n_mha_win_size": 5,
    "regression_range": [[0, 4], [4, 8], [8, 10000]],
    "train_cfg": {"droppath": 0.0, "dropout": 0.0, "init_loss_norm": 100},
    "test_cfg": {"pre_nms_thresh": 0.001, "pre_nms_topk": 200, "iou_threshold": 0.1,
                 "min_score": 0.001, "max_seg_num": 30, "nms_method": "soft", "nms_sigma": 0.5,
                 "duration_thresh": 0.05, "multiclass_nms": True, "voting_thresh": 0.75},
    "class_names": ["run", "jump", "throw", "swim"],
}


def make_tiny_detector(seed=0):
    """A tiny real `ASLDetector` (3 levels, strides 1/2/4, local window 5 -> max_div_factor 16,
    max_seq_len 64) with seeded weights that do not depend on the model's initializers (so
    the tests do not move when those change): kernels N(0, 1/fan_in), LayerNorm gamma 1+0.2N,
    beta 0.1N, biases 0.05N, the cls bias -2+0.5N, the last cls kernel x2 (spread logits),
    per-level scales U[0.5, 1.5)."""
    from asl_tf.model.detector import build_detector
    keras.utils.set_random_seed(seed)
    model = build_detector(TINY_MODEL)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        path, shape = w.path, tuple(w.shape)
        n = rng.standard_normal(shape).astype("float32")
        if "loss_normalizer" in path:
            continue
        if path.endswith("kernel"):
            v = n / np.sqrt(max(1, int(np.prod(shape[:-1]))))
            if path.endswith("cls_head/cls_head/kernel"):
                v = 2.0 * v
        elif path.endswith("gamma"):
            v = 1.0 + 0.2 * n
        elif path.endswith("cls_head/cls_head/bias"):
            v = -2.0 + 0.5 * n
        elif len(shape) == 0:
            v = rng.uniform(0.5, 1.5, shape).astype("float32")
        else:
            v = 0.1 * n if path.endswith("beta") else 0.05 * n
        w.assign(v)
    return model


def write_feature_dir(path, input_dim, lengths, seed=0):
    """Write `[T_i, C]` float32 `.npy` feature files (smooth random walks) into `path`."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(lengths):
        x = np.cumsum(rng.standard_normal((t, input_dim)), 0) / np.sqrt(np.arange(1, t + 1))[:, None]
        np.save(path / f"video_{i:02d}.npy", x.astype("float32"))
    return path


def toy_protos(seed=0):
    """Per-class feature prototypes [K, C] of the toy detection videos (fixed by `seed`)."""
    c, k = TINY_MODEL["input_dim"], TINY_MODEL["num_classes"]
    return np.random.default_rng(seed).normal(size=(k, c)).astype("float32") * 2


def toy_video(rng, t, protos, n_actions=2):
    """One toy detection video: N(0, 1) features [t, C] plus the class prototype inside each of
    `n_actions` GT segments. Returns feats, segments [n, 2] (feature steps), labels [n]."""
    feats = rng.normal(size=(t, protos.shape[1])).astype("float32")
    segs = np.zeros((n_actions, 2), "float32")
    labels = np.zeros(n_actions, "int32")
    for j in range(n_actions):
        s = float(rng.integers(0, t - 20))
        e = s + float(rng.integers(4, 18))
        cls = int(rng.integers(0, len(protos)))
        segs[j], labels[j] = (s, e), cls
        feats[int(s):int(e)] += protos[cls]
    return feats, segs, labels


def write_toy_video_dir(path, lengths, seed=1):
    """Write toy detection videos (`toy_video`, one action per 32 steps) as `[T_i, C]` `.npy`
    files into `path`; returns (path, {video name: (segments, labels)})."""
    rng = np.random.default_rng(seed)
    protos = toy_protos()
    path.mkdir(parents=True, exist_ok=True)
    gt = {}
    for i, t in enumerate(lengths):
        x, segs, labels = toy_video(rng, t, protos, max(1, t // 32))
        np.save(path / f"video_{i:02d}.npy", x)
        gt[f"video_{i:02d}"] = (segs, labels)
    return path, gt


def train_a_few_steps(model, steps=40, seed=0, batch=2):
    """Train `model` (the tiny detector) for `steps` steps of the real ASL train step on seeded
    toy videos (`toy_video`) whose features carry class evidence inside their GT, so the
    exports below are of a trained model. Returns the per-epoch losses."""
    import keras

    from asl_tf import training
    t = TINY_MODEL["max_seq_len"]
    rng = np.random.default_rng(seed + 100)
    protos = toy_protos()
    n = steps * batch
    videos = [toy_video(rng, t, protos) for _ in range(n)]
    x = {"feats": np.stack([v[0] for v in videos]), "mask": np.ones((n, t), bool)}
    y = {"gt_segments": np.stack([v[1] for v in videos]), "gt_labels": np.stack([v[2] for v in videos])}
    model.compile(optimizer=training.build_optimizer(
        model, {"learning_rate": 5e-3}, {"epochs": 1, "warmup_epochs": 0, "ema_decay": 0.9}, steps))
    keras.utils.set_random_seed(seed)
    hist = model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return hist.history["loss"]
