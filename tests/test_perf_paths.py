"""The training-only fast paths of the model layers give the numbers of the plain ops.

`MaskedConv1D` runs a stride-1 kernel > 1 conv as shifted matmuls when `training=True`
(asl_tf/model/layers.py, `_shifted_matmul_conv`) and as the conv op otherwise: outputs and
gradients (input and kernel) must agree to float32 round-off, also at the sequence ends and
with padding masks, for odd kernels 3 and 5 and a non-square channel count.
"""
import numpy as np
import pytest
import tensorflow as tf

from asl_tf.model.layers import MaskedConv1D


@pytest.mark.parametrize("kernel_size,cin,cout", [(3, 6, 10), (5, 8, 4)])
def test_shifted_matmul_conv_matches_conv(kernel_size, cin, cout):
    rng = np.random.default_rng(kernel_size)
    x = tf.constant(rng.normal(size=(2, 13, cin)).astype(np.float32))
    mask = np.ones((2, 13, 1), np.float32)
    mask[1, 9:] = 0.0
    mask = tf.constant(mask)
    conv = MaskedConv1D(cout, kernel_size, name="c")
    conv.build((None, None, cin))
    w = tf.constant(rng.normal(size=(2, 13, cout)).astype(np.float32))
    results = []
    for training in (False, True):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y, m = conv(x, mask, training=training)
            loss = tf.reduce_sum(y * w)
        gx, gk, gb = tape.gradient(loss, [x, conv.kernel, conv.bias])
        results.append([y.numpy(), gx.numpy(), gk.numpy(), gb.numpy(), m.numpy()])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(a).max())))
    # the padded frames are zero and the first/last frames see zero padding, not wrap-around
    assert np.all(results[1][0][1, 9:] == 0.0)
    kern = conv.kernel.numpy()
    p = kernel_size // 2
    xp = np.pad(x.numpy(), [(0, 0), (p, p), (0, 0)])
    ref0 = sum(xp[0, j] @ kern[j] for j in range(kernel_size)) + conv.bias.numpy()
    np.testing.assert_allclose(results[1][0][0, 0], ref0, rtol=1e-5, atol=1e-5)
