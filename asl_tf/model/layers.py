"""Building blocks of the ActionFormer pyramid, channels-last, written with `keras.ops` only.

Conventions (all layers in this module):
- features `x` are `[B, T, C]`;
- masks passed between layers are float `[B, T, 1]` (1 = valid frame, 0 = padding), in the
  compute dtype, so that masking is one multiply; the model's public boundary uses bool `[B, T]`;
- time is in feature-grid units of the layer's own level.

Each layer also knows the names and layouts of its parameters in the PyTorch reference
(`torch_params(prefix)`), so checkpoint import and gradient parity need no separate table:
it returns `{torch_name: (variable, to_torch, from_torch)}` where `to_torch(np.ndarray)`
converts the Keras value to the reference layout and `from_torch` converts back.
"""
import math

import keras
import numpy as np
from keras import ops

PACKAGE = "asl_tf"

#: torch default init for Conv1d kernels: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))
_TORCH_CONV_INIT = {"class_name": "VarianceScaling",
                    "config": {"scale": 1.0 / 3.0, "mode": "fan_in", "distribution": "uniform"}}


def _init(spec):
    return keras.initializers.get(spec)


def gelu_exact(x):
    """Exact (erf) GELU written so that it exports to ONNX and TFLite builtins (TOOLCHAIN.md)."""
    return 0.5 * x * (1.0 + ops.erf(x * 0.70710678))


def downsample_mask(mask, stride):
    """Nearest-neighbour mask downsampling: level position i reads input index i*stride.

    mask: [B, T, 1] float. Returns [B, T//stride, 1].
    """
    if stride == 1:
        return mask
    return mask[:, ::stride, :]


def _identity(a):
    return np.asarray(a)


def _t_conv(a):  # keras (k, in, out) -> torch (out, in, k)
    return np.transpose(np.asarray(a), (2, 1, 0))


def _f_conv(a):  # torch (out, in, k) -> keras (k, in, out)
    return np.transpose(np.asarray(a), (2, 1, 0))


def _t_dw(a):  # keras depthwise (k, C, 1) -> torch (C, 1, k)
    return np.transpose(np.asarray(a), (1, 2, 0))


def _f_dw(a):  # torch (C, 1, k) -> keras (k, C, 1)
    return np.transpose(np.asarray(a), (2, 0, 1))


def _t_ln(a):  # keras (C,) -> torch (1, C, 1)
    return np.asarray(a).reshape(1, -1, 1)


def _f_ln(a):
    return np.asarray(a).reshape(-1)


def _f_scalar(a):
    return np.asarray(a).reshape(())


@keras.saving.register_keras_serializable(package=PACKAGE)
class LayerNorm(keras.layers.Layer):
    """LayerNorm over channels, computed as the reference does: `(x-mu)/sqrt(var+eps)*g+b`.

    Keras' LayerNormalization folds the mean into a bias (`x*inv - mu*inv`), which differs by
    cancellation when |mu| >> std; the two-pass form here matches the reference to float32
    round-off (exact parity). Statistics are computed in float32 also under mixed precision.
    x: [B, T, C] -> [B, T, C].
    """

    def __init__(self, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        c = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(c,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(c,), initializer="zeros")

    def call(self, x):
        dtype = x.dtype
        xf = ops.cast(x, "float32")
        mu = ops.mean(xf, axis=-1, keepdims=True)
        res = xf - mu
        var = ops.mean(res * res, axis=-1, keepdims=True)
        out = res / ops.sqrt(var + self.epsilon)
        out = out * ops.cast(self.gamma, "float32") + ops.cast(self.beta, "float32")
        return ops.cast(out, dtype)

    def torch_params(self, prefix):
        return {prefix + "weight": (self.gamma, _t_ln, _f_ln),
                prefix + "bias": (self.beta, _t_ln, _f_ln)}

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedConv1D(keras.layers.Layer):
    """Reference `MaskedConv1D`: zero-padded conv (pad k//2), output multiplied by the mask.

    The input is never masked (SEMANTICS §3). Strided convs pad explicitly and use 'valid'
    (TF 'same' would read [2i, 2i+1, 2i+2] instead of the reference's [2i-1, 2i, 2i+1]).
    `depthwise=True` is the reference's `groups=C` conv. Kernel 1 runs as a matmul.

    A stride-1 conv with kernel > 1 runs as shifted matmuls (`_shifted_matmul_conv`, much
    faster gradients on CPU); strided and depthwise convs use the conv ops.

    call(x [B,T,Cin], mask [B,T,1] float or None) -> (y [B,T//s,filters], mask [B,T//s,1]).
    With mask None the output is not masked (plain Conv1d).
    torch names: `<prefix>weight`, `<prefix>bias` (prefix usually ends in "conv.").
    """

    def __init__(self, filters, kernel_size=1, strides=1, depthwise=False, use_bias=True,
                 bias_init=0.0, **kwargs):
        super().__init__(**kwargs)
        if kernel_size % 2 != 1:
            raise ValueError(f"MaskedConv1D: kernel_size must be odd, got {kernel_size}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.depthwise = bool(depthwise)
        self.use_bias = bool(use_bias)
        self.bias_init = float(bias_init)

    def build(self, input_shape):
        cin = int(input_shape[-1])
        if self.depthwise:
            if cin != self.filters:
                raise ValueError(f"{self.name}: depthwise conv needs {self.filters} input "
                                 f"channels, got {cin}")
            shape = (self.kernel_size, cin, 1)
        else:
            shape = (self.kernel_size, cin, self.filters)
        if self.depthwise:  # torch fan_in of a groups=C conv is k (Keras would use k*C)
            bound = 1.0 / math.sqrt(self.kernel_size)
            init = keras.initializers.RandomUniform(-bound, bound)
        else:
            init = _init(_TORCH_CONV_INIT)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer=init)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,),
                                        initializer=keras.initializers.Constant(self.bias_init))
        else:
            self.bias = None

    def call(self, x, mask=None):
        k, s = self.kernel_size, self.strides
        cin = self.kernel.shape[1]
        if x.shape[-1] is not None and int(x.shape[-1]) != int(cin):
            # TF would silently run a grouped conv on a multiple of the channels
            raise ValueError(f"{self.name}: expected {cin} input channels, got {x.shape[-1]}")
        kernel = ops.cast(self.kernel, x.dtype)
        if k == 1 and not self.depthwise:
            if s > 1:
                x = x[:, ::s, :]
            shape = ops.shape(x)
            y = self.dense2d(ops.reshape(x, (-1, shape[-1])))
            y = ops.reshape(y, (shape[0], shape[1], self.filters))
            if mask is None:
                return y, None
            out_mask = downsample_mask(mask, s)
            return y * out_mask, out_mask
        elif not self.depthwise and s == 1:
            y = self._shifted_matmul_conv(x, kernel)
        else:
            p = k // 2
            if p:
                x = ops.pad(x, [[0, 0], [p, p], [0, 0]])
            if self.depthwise:
                y = ops.depthwise_conv(x, kernel, strides=s, padding="valid")
            else:
                y = ops.conv(x, kernel, strides=s, padding="valid")
        if self.bias is not None:
            y = ops.add(y, ops.cast(self.bias, y.dtype))
        if mask is None:
            return y, None
        out_mask = downsample_mask(mask, s)
        return y * out_mask, out_mask

    def _shifted_matmul_conv(self, x, kernel):
        """Stride-1 'same' zero-padded conv as k matmuls followed by shifted adds.

        z_j = x @ W_j ([B*T, Cin] @ [Cin, filters]); y[t] = sum_j z_j[t + j - k//2], zero
        outside [0, T). Same sum as the conv (float32 round-off differs only in order). The
        shifts are pad + `ops.slice` (whose gradient is a cheap Pad; a strided slice's
        gradient is a slow StridedSliceGrad). Chosen by measurement (T=4538 i.e. the heads'
        concatenated levels, 512->512, kernel 3, forward + both gradients, tf.function,
        1 thread, CPU time): 0.42 s vs 0.61 s for TF's conv, whose CPU Conv2DBackpropFilter
        for 1-D kernels is ~2.5x slower than its forward; no im2col copy of x is made. The
        forward alone is about even (batch 1, 1 thread: 71 vs 67 ms at 4538x512->512,
        144 vs 173 ms at 2304x2048->512).
        x: [B, T, Cin], kernel [k, Cin, filters] -> [B, T, filters] (no bias).
        """
        k, f, p = self.kernel_size, self.filters, self.kernel_size // 2
        shape = ops.shape(x)
        b, t = shape[0], shape[1]
        x2 = ops.reshape(x, (-1, kernel.shape[1]))
        y = None
        for j in range(k):
            z = ops.reshape(ops.matmul(x2, kernel[j]), (b, t, f))
            d = j - p                      # y[t] reads z_j[t + d]
            if d < 0:
                z = ops.slice(ops.pad(z, [[0, 0], [-d, 0], [0, 0]]), [0, 0, 0], [b, t, f])
            elif d > 0:
                z = ops.slice(ops.pad(z, [[0, 0], [0, d], [0, 0]]), [0, d, 0], [b, t, f])
            y = z if y is None else y + z
        return y

    def dense2d(self, x):
        """1x1 conv on flattened frames: x [N, Cin] -> [N, filters] (matmul + bias).

        A 2-D MatMul + bias (+ an exact GELU right after it) is what TF's oneDNN remapper fuses
        into one inner-product kernel; the 3-D batch matmul is not fused.
        """
        y = ops.matmul(x, ops.cast(self.kernel[0], x.dtype))
        if self.bias is not None:
            # ops.add, not `+`: on TensorFlow it emits BiasAdd, the form the oneDNN remapper
            # fuses with the MatMul *and* a following exact GELU (`+` emits AddV2, which
            # fuses the bias only); measured 51 -> 48 ms for 2304x512->2048 + GELU, 1 thread
            y = ops.add(y, ops.cast(self.bias, y.dtype))
        return y

    def torch_params(self, prefix):
        out = {prefix + "weight": (self.kernel, _t_dw, _f_dw) if self.depthwise
               else (self.kernel, _t_conv, _f_conv)}
        if self.bias is not None:
            out[prefix + "bias"] = (self.bias, _identity, _identity)
        return out

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "depthwise": self.depthwise, "use_bias": self.use_bias,
                "bias_init": self.bias_init}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Scale(keras.layers.Layer):
    """A learnable scalar (reference `Scale`): y = scale * x. torch name `<prefix>scale` (0-d)."""

    def __init__(self, init_value=1.0, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape=None):
        self.scale = self.add_weight(name="scale", shape=(),
                                     initializer=keras.initializers.Constant(self.init_value))

    def call(self, x):
        return x * ops.cast(self.scale, x.dtype)

    def torch_params(self, prefix):
        return {prefix + "scale": (self.scale, _identity, _f_scalar)}

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


@keras.saving.register_keras_serializable(package=PACKAGE)
class AffineDropPath(keras.layers.Layer):
    """Per-channel scale (init 1e-4) followed by per-sample stochastic depth in training.

    x: [B, T, C] -> [B, T, C]. torch name `<prefix>scale` with layout (1, C, 1).
    """

    def __init__(self, drop_prob=0.0, init_scale_value=1e-4, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.drop_prob = float(drop_prob)
        self.init_scale_value = float(init_scale_value)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(int(input_shape[-1]),),
                                     initializer=keras.initializers.Constant(self.init_scale_value))

    def call(self, x, training=False):
        x = x * ops.cast(self.scale, x.dtype)
        if not training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        shape = (ops.shape(x)[0], 1, 1)
        rnd = keras.random.uniform(shape, dtype=x.dtype, seed=self.seed_generator)
        return x / keep * ops.floor(keep + rnd)

    def torch_params(self, prefix):
        return {prefix + "scale": (self.scale, _t_ln, _f_ln)}

    def get_config(self):
        return {**super().get_config(), "drop_prob": self.drop_prob,
                "init_scale_value": self.init_scale_value, "seed": self.seed}


# large negative used for keys outside [0, T) (the reference uses -inf there); finite so that
# exports and reduced precision never see inf - inf. exp() of it is exactly 0 in fp32/bf16.
_OUT_OF_RANGE = -1e30
# the reference's additive key-padding mask of local attention
_PAD_KEY = -1e4


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMHCA(keras.layers.Layer):
    """Multi-head conv attention of the reference (`LocalMaskedMHCA` for window_size > 1,
    `MaskedMHCA` otherwise).

    q, k, v: depthwise MaskedConv (kernel 3, or stride+1 when strided; stride applied to all
    three) -> LayerNorm -> 1x1 projection. Heads split channels in contiguous blocks.
    Local attention: query t attends keys t-w//2 .. t+w//2 (w = window_size); keys outside
    [0, T) are excluded, padded keys get -1e4 added to the logit, padded query rows are set to
    zero. Global attention: padded keys are excluded and v is multiplied by the key mask.

    Implementation of the local window ("blocked band"): queries are cut into blocks of 2*(w//2)
    (the length is a multiple of that, as the reference requires), each block attends to its
    keys plus w//2 on either side (4*(w//2) keys) with a static band mask. This is dense batched
    matmuls with a 2x redundancy on the (small) score tensor, and no [B, T, w, C] gather; it was
    chosen over a gathered-window implementation by measurement at T=2304, C=512, 4 heads,
    window 19, tf.function, 2 threads (bench/forward.py, "attention"): 19 ms vs 87 ms per call
    on the shared 2-core CPU, so the gathered variant lives only in the benchmark.

    call(x [B,T,C], mask [B,T,1]) -> (y [B,T//s,C], mask [B,T//s,1]).
    """

    def __init__(self, n_embd, n_head, window_size=-1, strides=1, attn_pdrop=0.0,
                 proj_pdrop=0.0, use_rel_pe=False, **kwargs):
        super().__init__(**kwargs)
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        self.n_embd, self.n_head = int(n_embd), int(n_head)
        self.window_size = int(window_size)
        self.strides = int(strides)
        self.attn_pdrop, self.proj_pdrop = float(attn_pdrop), float(proj_pdrop)
        self.use_rel_pe = bool(use_rel_pe)
        self.local = self.window_size > 1
        if self.local and self.window_size // 2 < 1:
            raise ValueError(f"window_size {self.window_size} too small")
        self.head_dim = self.n_embd // self.n_head
        self.scale = 1.0 / math.sqrt(self.head_dim)
        ks = self.strides + 1 if self.strides > 1 else 3
        c = self.n_embd
        self.query_conv = MaskedConv1D(c, ks, self.strides, depthwise=True, use_bias=False,
                                       name="query_conv")
        self.key_conv = MaskedConv1D(c, ks, self.strides, depthwise=True, use_bias=False,
                                     name="key_conv")
        self.value_conv = MaskedConv1D(c, ks, self.strides, depthwise=True, use_bias=False,
                                       name="value_conv")
        self.query_norm = LayerNorm(name="query_norm")
        self.key_norm = LayerNorm(name="key_norm")
        self.value_norm = LayerNorm(name="value_norm")
        self.query = MaskedConv1D(c, 1, name="query")
        self.key = MaskedConv1D(c, 1, name="key")
        self.value = MaskedConv1D(c, 1, name="value")
        self.proj = MaskedConv1D(c, 1, name="proj")
        self.attn_drop = keras.layers.Dropout(self.attn_pdrop)
        self.proj_drop = keras.layers.Dropout(self.proj_pdrop)
        # additive mask constants (attributes, not config: read when a graph is traced; the
        # int8 TFLite export lowers them, see export/tflite.py)
        self.pad_key = _PAD_KEY
        self.out_of_range = _OUT_OF_RANGE

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in (self.query_conv, self.key_conv, self.value_conv):
            layer.build(shape)
        for layer in (self.query_norm, self.key_norm, self.value_norm, self.query, self.key,
                      self.value, self.proj):
            layer.build(shape)
        if self.use_rel_pe and self.local:  # the reference's global attention has no rel PE
            self.rel_pe = self.add_weight(name="rel_pe", shape=(self.n_head, self.window_size),
                                          initializer="zeros")
        else:
            self.rel_pe = None

    # --- attention kernels -------------------------------------------------------------------
    def _split_heads(self, x):
        # [B, T, C] -> [B, T, nh, hd]; head h = channels [h*hd, (h+1)*hd)
        return ops.reshape(x, (ops.shape(x)[0], -1, self.n_head, self.head_dim))

    def _global(self, q, k, v, kv_mask, training):
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        att = ops.einsum("bqhd,bkhd->bhqk", q * self.scale, k)
        key_ok = ops.reshape(kv_mask, (ops.shape(kv_mask)[0], 1, 1, -1)) > 0
        att = ops.where(key_ok, att, ops.cast(self.out_of_range, att.dtype))
        att = ops.softmax(att, axis=-1)
        att = self.attn_drop(att, training=training)
        v = v * ops.expand_dims(kv_mask, -1)
        out = ops.einsum("bhqk,bkhd->bqhd", att, v)
        return ops.reshape(out, (ops.shape(out)[0], -1, self.n_embd))

    def _local(self, q, k, v, kv_mask, training):
        w = self.window_size // 2          # window_overlap
        blk = 2 * w                        # query block length
        b = ops.shape(q)[0]
        t = ops.shape(q)[1]
        nblk = t // blk
        nh, hd = self.n_head, self.head_dim
        dt = q.dtype
        # queries: [B, nblk, blk, nh, hd]
        qb = ops.reshape(q * self.scale, (b, nblk, blk, nh, hd))

        def key_blocks(x, pad_value=0.0):
            # [B, T, D] -> [B, nblk, 2*blk, D]: block i holds positions i*blk-w .. i*blk+blk+w-1
            xp = ops.pad(x, [[0, 0], [w, w], [0, 0]], constant_values=pad_value)
            d = ops.shape(x)[-1]
            chunks = ops.reshape(xp, (b, nblk + 1, blk, d))
            # ops.slice, not chunks[:, :-1]: its gradient is a Pad, a strided slice's is the
            # much slower StridedSliceGrad (~50 ms per call at level 0 of the train step)
            return ops.concatenate([ops.slice(chunks, [0, 0, 0, 0], [b, nblk, blk, d]),
                                    ops.slice(chunks, [0, 1, 0, 0], [b, nblk, blk, d])], axis=2)

        kb = ops.reshape(key_blocks(k), (b, nblk, 2 * blk, nh, hd))
        vb = ops.reshape(key_blocks(v), (b, nblk, 2 * blk, nh, hd))
        # additive key bias: 0 valid, -1e4 padded, "-inf" outside [0, T)
        key_bias = (1.0 - kv_mask) * self.pad_key                  # [B, T, 1]
        key_bias = key_blocks(key_bias, pad_value=self.out_of_range)   # [B, nblk, 2blk, 1]
        key_bias = ops.reshape(key_bias, (b, nblk, 1, 1, 2 * blk))
        att = ops.einsum("bnqhd,bnkhd->bnhqk", qb, kb)             # [B, nblk, nh, blk, 2blk]
        att = att + ops.cast(self._band_bias(), dt) + ops.cast(key_bias, dt)
        att = ops.softmax(att, axis=-1)
        # padded query rows are zero
        qmask = ops.reshape(kv_mask, (b, nblk, 1, blk, 1))
        att = att * ops.cast(qmask, dt)
        att = self.attn_drop(att, training=training)
        out = ops.einsum("bnhqk,bnkhd->bnqhd", att, vb)
        return ops.reshape(out, (b, t, self.n_embd))

    def _band_bias(self):
        """Static [1, 1, nh|1, blk, 2blk] bias: 0 inside the band (|q-k| <= w), -big outside;
        plus the relative position bias (rel_pe[h, k-q+w]) when enabled."""
        w = self.window_size // 2
        blk = 2 * w
        qi = np.arange(blk)[:, None]
        kj = np.arange(2 * blk)[None, :]
        off = kj - w - qi                                          # key - query position
        inside = np.abs(off) <= w
        band = np.where(inside, 0.0, self.out_of_range).astype("float32")[None, None, None]
        band = ops.convert_to_tensor(band)
        if self.rel_pe is None:
            return band
        idx = np.clip(off + w, 0, self.window_size - 1).astype("int32")      # [blk, 2blk]
        rel = ops.take(self.rel_pe, ops.convert_to_tensor(idx.reshape(-1)), axis=1)
        rel = ops.reshape(rel, (1, 1, self.n_head, blk, 2 * blk))
        return band + rel * ops.convert_to_tensor(inside.astype("float32"))

    def call(self, x, mask, training=False):
        q, qx_mask = self.query_conv(x, mask)
        k, kv_mask = self.key_conv(x, mask)
        v, _ = self.value_conv(x, mask)
        q = self.query(self.query_norm(q))[0]
        k = self.key(self.key_norm(k))[0]
        v = self.value(self.value_norm(v))[0]
        if self.local:
            out = self._local(q, k, v, kv_mask, training)
        else:
            out = self._global(q, k, v, kv_mask, training)
        out = self.proj_drop(self.proj(out)[0], training=training) * qx_mask
        return out, qx_mask

    def torch_params(self, prefix):
        out = {}
        for n in ("query_conv", "key_conv", "value_conv"):
            out.update(getattr(self, n).torch_params(f"{prefix}{n}.conv."))
        for n in ("query_norm", "key_norm", "value_norm", "query", "key", "value", "proj"):
            out.update(getattr(self, n).torch_params(f"{prefix}{n}."))
        if self.rel_pe is not None:
            out[prefix + "rel_pe"] = (self.rel_pe, lambda a: np.asarray(a)[None, None],
                                      lambda a: np.asarray(a).reshape(self.n_head, -1))
        return out

    def get_config(self):
        return {**super().get_config(), "n_embd": self.n_embd, "n_head": self.n_head,
                "window_size": self.window_size, "strides": self.strides,
                "attn_pdrop": self.attn_pdrop, "proj_pdrop": self.proj_pdrop,
                "use_rel_pe": self.use_rel_pe}


def max_pool_skip(x, stride):
    """Reference `MaxPool1d(k=s+1, stride=s, padding=(s+1)//2)` on the unmasked input.

    PyTorch pads max-pool with -inf. The left pad is only ever read by window 0, which also
    holds x[0], and the right pad is never read (window i ends at i*s + s - p <= T - p), so
    padding by edge replication is exactly -inf padding and keeps inf out of the graph.
    x: [B, T, C] -> [B, T//s, C].
    """
    k, p = stride + 1, (stride + 1) // 2
    left = ops.repeat(x[:, :1], p, axis=1)
    right = ops.repeat(x[:, -1:], p, axis=1)
    xp = ops.concatenate([left, x, right], axis=1)
    return ops.max_pool(xp, pool_size=k, strides=stride, padding="valid")


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerBlock(keras.layers.Layer):
    """Pre-LN transformer block of the reference.

    out, m' = attn(ln1(x), m); out = pool_skip(x)*m' + droppath(out);
    out = out + droppath(mlp(ln2(out))*m'); mlp = 1x1(C->4C), exact GELU, dropout, 1x1(4C->C),
    dropout. Drop path (AffineDropPath, per-channel scale) exists only when path_pdrop > 0.
    call(x [B,T,C], mask [B,T,1]) -> (y [B,T//s,C], mask [B,T//s,1]).

    `remat` (attribute, not config; set by `asl_tf.training.set_remat`): in training, the
    attention module and the MLP keep only their inputs for the backward pass and recompute
    the rest (`keras.remat`). Same numbers; measured at the THUMOS14 config (batch 2, T=2304,
    bf16, bench/train_step.py): about 0.6 GB less peak RSS for about 10% more step time.
    Only allowed without dropout inside them (a recomputed dropout would draw a new mask);
    drop path stays outside the recomputed parts.
    """

    def __init__(self, n_embd, n_head, strides=1, window_size=-1, attn_pdrop=0.0,
                 proj_pdrop=0.0, path_pdrop=0.0, use_rel_pe=False, **kwargs):
        super().__init__(**kwargs)
        self.n_embd, self.n_head, self.strides = int(n_embd), int(n_head), int(strides)
        self.window_size = int(window_size)
        self.attn_pdrop, self.proj_pdrop = float(attn_pdrop), float(proj_pdrop)
        self.path_pdrop = float(path_pdrop)
        self.use_rel_pe = bool(use_rel_pe)
        c = self.n_embd
        self.ln1 = LayerNorm(name="ln1")
        self.ln2 = LayerNorm(name="ln2")
        self.attn = MaskedMHCA(c, self.n_head, self.window_size, self.strides, self.attn_pdrop,
                               self.proj_pdrop, self.use_rel_pe, name="attn")
        self.mlp_fc1 = MaskedConv1D(4 * c, 1, name="mlp_fc1")
        self.mlp_fc2 = MaskedConv1D(c, 1, name="mlp_fc2")
        self.mlp_drop1 = keras.layers.Dropout(self.proj_pdrop)
        self.mlp_drop2 = keras.layers.Dropout(self.proj_pdrop)
        if self.path_pdrop > 0:
            self.drop_path_attn = AffineDropPath(self.path_pdrop, name="drop_path_attn")
            self.drop_path_mlp = AffineDropPath(self.path_pdrop, name="drop_path_mlp")
        else:
            self.drop_path_attn = self.drop_path_mlp = None
        self.remat = False

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.ln1.build(shape)
        self.ln2.build(shape)
        self.attn.build(shape)
        self.mlp_fc1.build(shape)
        self.mlp_fc2.build(shape[:-1] + (4 * self.n_embd,))
        if self.drop_path_attn is not None:
            self.drop_path_attn.build(shape)
            self.drop_path_mlp.build(shape)

    def call(self, x, mask, training=False):
        remat = bool(training and self.remat)

        def attention(x, mask):
            return self.attn(self.ln1(x), mask, training=training)

        def mlp(out):
            shape = ops.shape(out)
            h = ops.reshape(self.ln2(out), (-1, self.n_embd))     # [B*T, C]: fusable matmuls
            h = self.mlp_drop1(gelu_exact(self.mlp_fc1.dense2d(h)), training=training)
            h = self.mlp_drop2(self.mlp_fc2.dense2d(h), training=training)
            return ops.reshape(h, shape)

        out, out_mask = (keras.remat(attention) if remat else attention)(x, mask)
        skip = max_pool_skip(x, self.strides) if self.strides > 1 else x
        if self.drop_path_attn is not None:
            out = self.drop_path_attn(out, training=training)
        out = skip * out_mask + out
        h = (keras.remat(mlp) if remat else mlp)(out) * out_mask
        if self.drop_path_mlp is not None:
            h = self.drop_path_mlp(h, training=training)
        return out + h, out_mask

    def torch_params(self, prefix):
        out = {}
        out.update(self.ln1.torch_params(prefix + "ln1."))
        out.update(self.ln2.torch_params(prefix + "ln2."))
        out.update(self.attn.torch_params(prefix + "attn."))
        out.update(self.mlp_fc1.torch_params(prefix + "mlp.0."))
        out.update(self.mlp_fc2.torch_params(prefix + "mlp.3."))
        if self.drop_path_attn is not None:
            out.update(self.drop_path_attn.torch_params(prefix + "drop_path_attn."))
            out.update(self.drop_path_mlp.torch_params(prefix + "drop_path_mlp."))
        return out

    def get_config(self):
        return {**super().get_config(), "n_embd": self.n_embd, "n_head": self.n_head,
                "strides": self.strides, "window_size": self.window_size,
                "attn_pdrop": self.attn_pdrop, "proj_pdrop": self.proj_pdrop,
                "path_pdrop": self.path_pdrop, "use_rel_pe": self.use_rel_pe}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBlock(keras.layers.Layer):
    """Reference `ConvBlock` (conv backbone): conv(k, s, C->2C) -> ReLU -> conv(k, 1, 2C->C),
    + identity (1x1 strided MaskedConv when s > 1) -> ReLU.
    call(x [B,T,C], mask [B,T,1]) -> (y [B,T//s,C], mask [B,T//s,1]).
    """

    def __init__(self, n_embd, kernel_size=3, strides=1, expansion_factor=2, **kwargs):
        super().__init__(**kwargs)
        self.n_embd, self.kernel_size = int(n_embd), int(kernel_size)
        self.strides, self.expansion_factor = int(strides), int(expansion_factor)
        width = self.n_embd * self.expansion_factor
        self.conv1 = MaskedConv1D(width, self.kernel_size, self.strides, name="conv1")
        self.conv2 = MaskedConv1D(self.n_embd, self.kernel_size, 1, name="conv2")
        self.downsample = (MaskedConv1D(self.n_embd, 1, self.strides, name="downsample")
                           if self.strides > 1 else None)

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.conv1.build(shape)
        self.conv2.build(shape[:-1] + (self.n_embd * self.expansion_factor,))
        if self.downsample is not None:
            self.downsample.build(shape)

    def call(self, x, mask, training=False):
        out, out_mask = self.conv1(x, mask)
        out, out_mask = self.conv2(ops.relu(out), out_mask)
        identity = x if self.downsample is None else self.downsample(x, mask)[0]
        return ops.relu(out + identity), out_mask

    def torch_params(self, prefix):
        out = {}
        out.update(self.conv1.torch_params(prefix + "conv1.conv."))
        out.update(self.conv2.torch_params(prefix + "conv2.conv."))
        if self.downsample is not None:
            out.update(self.downsample.torch_params(prefix + "downsample.conv."))
        return out

    def get_config(self):
        return {**super().get_config(), "n_embd": self.n_embd, "kernel_size": self.kernel_size,
                "strides": self.strides, "expansion_factor": self.expansion_factor}


def sinusoid_table(n_position, d_hid):
    """Reference `get_sinusoid_encoding` / sqrt(d_hid): [n_position, d_hid] float32 numpy.

    Entry (p, j) = sin(p / 10000^(2*(j//2)/d)) for even j, cos(...) for odd j.
    """
    pos = np.arange(n_position, dtype=np.float64)[:, None]
    j = np.arange(d_hid)
    angle = pos / np.power(10000, 2 * (j // 2) / d_hid)
    table = np.where(j % 2 == 0, np.sin(angle), np.cos(angle)).astype(np.float32)
    return table / np.float32(d_hid ** 0.5)


def interpolate_pe(table, t):
    """Positional table [L, C] for a sequence of length `t` (may be a tensor).

    t <= L: the first t rows. t > L: `F.interpolate(pe, t, 'linear', align_corners=False)`
    as the reference does in eval (src = (i+0.5)*L/t - 0.5, clamped at 0).
    Returns [t, C].
    """
    length = int(table.shape[0])
    tf_ = ops.cast(t, "float32")
    dst = ops.arange(t, dtype="float32")
    longer = tf_ > length
    src = ops.where(longer, ops.maximum((dst + 0.5) * (length / ops.maximum(tf_, 1.0)) - 0.5,
                                        0.0), dst)
    i0 = ops.cast(ops.floor(src), "int32")
    i0 = ops.minimum(i0, length - 1)
    i1 = ops.minimum(i0 + 1, length - 1)
    lam = ops.expand_dims(src - ops.cast(i0, "float32"), -1)
    table = ops.convert_to_tensor(table)
    return ops.take(table, i0, axis=0) * (1.0 - lam) + ops.take(table, i1, axis=0) * lam
