"""The fast paths of the model layers give the numbers of the plain ops.

`MaskedConv1D` runs a stride-1, kernel > 1 conv as shifted matmuls (asl_tf/model/layers.py,
`_shifted_matmul_conv`, chosen for the speed of its gradients): its output and gradients (input,
kernel, bias) must equal those of the conv op (`keras.ops.conv` on the zero-padded input, the
reference's Conv1d) to float32 round-off, at the sequence ends and with a padding mask, for odd
kernels 3 and 5 and non-square channel counts.
"""
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

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
    p = kernel_size // 2

    def layer(x):
        return conv(x, mask)[0]

    def reference(x):
        y = ops.conv(ops.pad(x, [[0, 0], [p, p], [0, 0]]), conv.kernel, padding="valid")
        return (y + conv.bias) * mask

    results = []
    for fn in (reference, layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * w)
        grads = tape.gradient(loss, [x, conv.kernel, conv.bias])
        results.append([y.numpy()] + [g.numpy() for g in grads])
    for ref, got in zip(*results):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
    assert np.all(results[1][0][1, 9:] == 0.0)  # padded frames are zero


@pytest.mark.slow
def test_device_train_step_script_runs_on_jax_without_a_gpu():
    """The Python part of bench/device_train_step.sh (run on a GPU machine with JAX and no
    TensorFlow) trains and times steps: here on the JAX CPU backend, demo config, 1 step."""
    import json
    import os
    import re
    import subprocess
    import sys

    from conftest import REPO
    script = open(os.path.join(REPO, "bench", "device_train_step.sh")).read()
    body = re.search(r"<<'PY'\n(.*?)\nPY\n", script, re.S).group(1)
    env = dict(os.environ, KERAS_BACKEND="jax", STEPS="1", PRECISION="float32",
               CONFIG="configs/demo.yaml", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="",
               JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", body], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout[res.stdout.index("{"):])
    # configs/demo.yaml: max_seq_len 512, all three ASL switches on; the script's batch is 2
    assert out["backend"] == "jax" and out["seq_len"] == 512 and out["batch"] == 2
    assert {k: out["asl"][k] for k in ("class_level", "instance_level", "contrastive")} == \
        {"class_level": True, "instance_level": True, "contrastive": True}
    assert out["precision"] == "float32" and out["device"].lower().startswith("cpu")
    # one timed step after two warm-up steps; the first step includes the XLA compile
    assert out["steps_per_s"] == pytest.approx(1.0 / out["median_s_per_step"], rel=1e-9)
    assert out["first_step_s"] > 3 * out["median_s_per_step"] > 0
    assert np.isfinite(out["loss"]) and out["loss"] > 0
