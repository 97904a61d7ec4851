"""The model is written with keras.ops only: the same weights give the same outputs on the JAX
backend (run in a subprocess with KERAS_BACKEND=jax) as on TensorFlow, within 1e-5.

Two models: the visible golden one (local attention, identity neck) and a small one that
exercises the other paths (absolute PE with interpolation, global attention on some levels,
relative PE, FPN neck, droppath scales).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import FIXTURES, REPO

G = FIXTURES / "golden" / "model"

SMALL = {
    "backbone_arch": [2, 1, 3], "regression_range": [[0, 4], [4, 8], [8, 16], [16, 10000]],
    "n_head": 2, "n_mha_win_size": [5, -1, 5, -1], "embd_dim": 16, "fpn_dim": 16,
    "head_dim": 8, "fpn_type": "fpn", "use_abs_pe": True, "use_rel_pe": True, "input_dim": 12,
    "num_classes": 3, "max_seq_len": 32, "embd_kernel_size": 5, "head_num_layers": 2,
    "train_cfg": {"droppath": 0.1, "dropout": 0.1, "init_loss_norm": 100},
}

_CHILD = r"""
import json, sys
import numpy as np
import keras
assert keras.backend.backend() == "jax", keras.backend.backend()
from asl_tf.compat import actionformer as af
cfg, weights, inputs, out = sys.argv[1:5]
model = af.model_from_config(json.load(open(cfg)))
af.load_state_dict(model, weights)
x = np.load(inputs)
res = {}
for name in ("a", "b"):
    o = af.forward(model, x[name + "_feats"], x[name + "_mask"])
    for k, v in o.items():
        res[name + "_" + k] = v
np.savez(out, **res)
"""


def _randomize(model, seed):
    from asl_tf.compat import actionformer as af

    rng = np.random.RandomState(seed)
    sd = {k: (v + 0.3 * rng.randn(*v.shape)).astype(np.float32)
          for k, v in af.export_state_dict(model).items()}
    af.load_state_dict(model, sd)
    return sd


@pytest.mark.slow
def test_jax_backend_matches_tensorflow(tmp_path):
    from asl_tf.compat import actionformer as af

    meta = json.loads((G / "visible_config.json").read_text())
    inp = np.load(G / "visible_inputs.npz")
    cases = []
    # visible golden model: batch of 2 and the long video (padded to 512)
    cases.append((meta["config_model (merged, as passed to make_meta_arch)"],
                  dict(np.load(G / "visible_state_dict.npz")),
                  {"a_feats": inp["batched_feats"].transpose(0, 2, 1),
                   "a_mask": inp["batched_mask"][:, 0],
                   "b_feats": inp["long_padded_feats"].transpose(0, 2, 1),
                   "b_mask": inp["long_padded_mask"][:, 0]}))
    # small model: T=32 (= max_seq_len) and T=64 (> max_seq_len: interpolated abs PE)
    small = af.model_from_config(SMALL)
    sd = _randomize(small, 3)
    rng = np.random.RandomState(4)
    ma = np.ones((2, 32), bool)
    ma[1, 20:] = False
    mb = np.ones((1, 64), bool)
    mb[0, 50:] = False
    cases.append((SMALL, sd, {"a_feats": rng.randn(2, 32, 12).astype(np.float32), "a_mask": ma,
                              "b_feats": rng.randn(1, 64, 12).astype(np.float32),
                              "b_mask": mb}))
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2",
               JAX_PLATFORMS="cpu")
    for i, (cfg, weights, inputs) in enumerate(cases):
        paths = {n: str(tmp_path / f"{i}_{n}") for n in ("cfg.json", "w.npz", "x.npz", "o.npz")}
        with open(paths["cfg.json"], "w") as fh:
            json.dump(cfg, fh)
        np.savez(paths["w.npz"], **weights)
        np.savez(paths["x.npz"], **inputs)
        res = subprocess.run([sys.executable, "-c", _CHILD, paths["cfg.json"], paths["w.npz"],
                              paths["x.npz"], paths["o.npz"]], env=env, capture_output=True,
                             text=True, timeout=400)
        assert res.returncode == 0, res.stderr[-3000:]
        jax_out = np.load(paths["o.npz"])
        model = af.model_from_config(cfg)
        af.load_state_dict(model, weights)
        for name in ("a", "b"):
            tf_out = af.forward(model, inputs[name + "_feats"], inputs[name + "_mask"])
            for key, val in tf_out.items():
                got = jax_out[f"{name}_{key}"]
                assert got.shape == val.shape, (i, name, key)
                if val.dtype == bool:
                    np.testing.assert_array_equal(got, val)
                else:
                    np.testing.assert_allclose(got, val, rtol=0, atol=1e-5,
                                               err_msg=f"case {i} {name} {key}")
            # the comparison is not vacuous
            assert np.abs(tf_out["cls_logits"]).max() > 0.1
