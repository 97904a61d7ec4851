"""Backbones of the reference: `convTransformer` (conv embedding + transformer stem + strided
transformer branch) and `conv` (conv embedding + ConvBlocks).

call(x [B,T,Cin] float, mask [B,T,1] float, training) -> (feats, masks): lists over the
levels, finest first; level l is [B, T/2^l, embd_dim] and [B, T/2^l, 1].
"""
import keras
from keras import ops

from asl_tf.model.layers import (PACKAGE, ConvBlock, LayerNorm, MaskedConv1D, TransformerBlock,
                                 interpolate_pe, sinusoid_table)


class _EmbeddingMixin:
    """What both backbones share: the conv embedding (arch[0] x (MaskedConv k -> LN -> ReLU)),
    `build`, the stem -> branch pyramid walk and the PyTorch parameter names."""

    def _make_embedding(self):
        self.embd = [MaskedConv1D(self.n_embd, self.n_embd_ks, 1, use_bias=not self.with_ln,
                                  name=f"embd_{i}") for i in range(self.arch[0])]
        self.embd_norm = [LayerNorm(name=f"embd_norm_{i}") if self.with_ln else None
                          for i in range(self.arch[0])]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for i, conv in enumerate(self.embd):
            conv.build(shape if i == 0 else shape[:-1] + (self.n_embd,))
            if self.embd_norm[i] is not None:
                self.embd_norm[i].build(shape[:-1] + (self.n_embd,))
        for blk in self.stem + self.branch:
            blk.build(shape[:-1] + (self.n_embd,))

    def _embed(self, x, mask):
        for conv, norm in zip(self.embd, self.embd_norm):
            x, mask = conv(x, mask)
            if norm is not None:
                x = norm(x)
            x = ops.relu(x)
        return x, mask

    def _pyramid(self, x, mask, **kwargs):
        """Stem blocks, then branch blocks; returns per-level (feats, masks), finest first."""
        for blk in self.stem:
            x, mask = blk(x, mask, **kwargs)
        feats, masks = [x], [mask]
        for blk in self.branch:
            x, mask = blk(x, mask, **kwargs)
            feats.append(x)
            masks.append(mask)
        return feats, masks

    def torch_params(self, prefix="backbone."):
        out = {}
        for i, conv in enumerate(self.embd):
            out.update(conv.torch_params(f"{prefix}embd.{i}.conv."))
            if self.embd_norm[i] is not None:
                out.update(self.embd_norm[i].torch_params(f"{prefix}embd_norm.{i}."))
        for i, blk in enumerate(self.stem):
            out.update(blk.torch_params(f"{prefix}stem.{i}."))
        for i, blk in enumerate(self.branch):
            out.update(blk.torch_params(f"{prefix}branch.{i}."))
        return out


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvTransformerBackbone(_EmbeddingMixin, keras.layers.Layer):
    """Reference `ConvTransformerBackbone` (single input stream).

    mha_win_size: one window per level (arch[2]+1 entries; <=1 = global attention).
    use_abs_pe: add the sinusoidal table (/sqrt(C)) times the mask after the embedding;
    in eval a sequence at least `max_len` long uses the linearly interpolated table.
    """

    def __init__(self, n_in, n_embd, n_head, n_embd_ks, max_len, arch=(2, 2, 5),
                 mha_win_size=(-1,) * 6, scale_factor=2, with_ln=False, attn_pdrop=0.0,
                 proj_pdrop=0.0, path_pdrop=0.0, use_abs_pe=False, use_rel_pe=False, **kwargs):
        super().__init__(**kwargs)
        self.n_in, self.n_embd, self.n_head = int(n_in), int(n_embd), int(n_head)
        self.n_embd_ks, self.max_len = int(n_embd_ks), int(max_len)
        self.arch = tuple(int(a) for a in arch)
        self.mha_win_size = tuple(int(w) for w in mha_win_size)
        if len(self.arch) != 3:
            raise ValueError(f"backbone_arch must have 3 entries, got {list(arch)}")
        if len(self.mha_win_size) != 1 + self.arch[2]:
            raise ValueError(f"n_mha_win_size needs {1 + self.arch[2]} entries (one per level), "
                             f"got {list(mha_win_size)}")
        self.scale_factor = int(scale_factor)
        self.with_ln = bool(with_ln)
        self.attn_pdrop, self.proj_pdrop = float(attn_pdrop), float(proj_pdrop)
        self.path_pdrop = float(path_pdrop)
        self.use_abs_pe, self.use_rel_pe = bool(use_abs_pe), bool(use_rel_pe)
        self._make_embedding()
        self.pos_embd = sinusoid_table(self.max_len, self.n_embd) if self.use_abs_pe else None
        block = dict(attn_pdrop=self.attn_pdrop, proj_pdrop=self.proj_pdrop,
                     path_pdrop=self.path_pdrop, use_rel_pe=self.use_rel_pe)
        self.stem = [TransformerBlock(self.n_embd, self.n_head, 1, self.mha_win_size[0],
                                      name=f"stem_{i}", **block) for i in range(self.arch[1])]
        self.branch = [TransformerBlock(self.n_embd, self.n_head, self.scale_factor,
                                        self.mha_win_size[1 + i], name=f"branch_{i}", **block)
                       for i in range(self.arch[2])]

    def call(self, x, mask, training=False):
        x, mask = self._embed(x, mask)
        if self.use_abs_pe:
            t = ops.shape(x)[1]
            pe = interpolate_pe(self.pos_embd, t)
            x = x + ops.cast(pe, x.dtype)[None] * mask
        return self._pyramid(x, mask, training=training)

    def get_config(self):
        return {**super().get_config(), "n_in": self.n_in, "n_embd": self.n_embd,
                "n_head": self.n_head, "n_embd_ks": self.n_embd_ks, "max_len": self.max_len,
                "arch": list(self.arch), "mha_win_size": list(self.mha_win_size),
                "scale_factor": self.scale_factor, "with_ln": self.with_ln,
                "attn_pdrop": self.attn_pdrop, "proj_pdrop": self.proj_pdrop,
                "path_pdrop": self.path_pdrop, "use_abs_pe": self.use_abs_pe,
                "use_rel_pe": self.use_rel_pe}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBackbone(_EmbeddingMixin, keras.layers.Layer):
    """Reference `ConvBackbone`: conv embedding, arch[1] ConvBlocks, arch[2] strided ConvBlocks."""

    def __init__(self, n_in, n_embd, n_embd_ks, arch=(2, 2, 5), scale_factor=2, with_ln=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.n_in, self.n_embd, self.n_embd_ks = int(n_in), int(n_embd), int(n_embd_ks)
        self.arch = tuple(int(a) for a in arch)
        if len(self.arch) != 3:
            raise ValueError(f"backbone_arch must have 3 entries, got {list(arch)}")
        self.scale_factor, self.with_ln = int(scale_factor), bool(with_ln)
        self._make_embedding()
        self.stem = [ConvBlock(self.n_embd, 3, 1, name=f"stem_{i}") for i in range(self.arch[1])]
        self.branch = [ConvBlock(self.n_embd, 3, self.scale_factor, name=f"branch_{i}")
                       for i in range(self.arch[2])]

    def call(self, x, mask, training=False):
        x, mask = self._embed(x, mask)
        return self._pyramid(x, mask)

    def get_config(self):
        return {**super().get_config(), "n_in": self.n_in, "n_embd": self.n_embd,
                "n_embd_ks": self.n_embd_ks, "arch": list(self.arch),
                "scale_factor": self.scale_factor, "with_ln": self.with_ln}
