"""Loss and gradient parity of a real `ASLDetector` with the PyTorch reference (ASL off).

Loads the golden state dict into a detector built from the golden config, then checks the
acceptance interface `training_losses` / `gradients` (asl_tf.compat.actionformer_train)
against visible_losses.json (1e-5 relative) and visible_grads.npz (per tensor,
max|g - g_ref| / max|g_ref| <= 1e-4; the key projection bias and key LayerNorm beta are
analytically zero: |g| <= 1e-6 * the largest gradient).
"""
import json

import numpy as np
import pytest

from conftest import FIXTURES
from asl_tf.compat import actionformer as af
from asl_tf.compat import actionformer_train as aft

GOLD = FIXTURES / "golden" / "model"
ZERO_SUFFIXES = ("attn.key.bias", "attn.key_norm.bias")


@pytest.fixture(scope="module")
def golden_model():
    from asl_tf.model.detector import build_detector
    cfg = json.loads((GOLD / "visible_config.json").read_text())["config_model (merged, as passed to make_meta_arch)"]
    model = build_detector(cfg)
    sd = np.load(GOLD / "visible_state_dict.npz")
    vmap = aft.torch_variable_map(model)
    assert set(vmap) == set(sd.files), set(vmap) ^ set(sd.files)
    for name, (var, _, from_torch) in vmap.items():
        var.assign(from_torch(sd[name]))
    return model


def test_parity_ignores_the_models_asl_switches():
    """The parity interface computes ActionFormer losses even for a model with ASL on."""
    from asl_tf.model.detector import build_detector
    cfg = json.loads((GOLD / "visible_config.json").read_text())["config_model (merged, as passed to make_meta_arch)"]
    model = build_detector({**cfg, "asl": {"class_level": True, "instance_level": True, "contrastive": True}})
    sd = np.load(GOLD / "visible_state_dict.npz")
    for name, (var, _, from_torch) in aft.torch_variable_map(model).items():
        var.assign(from_torch(sd[name]))
    ref = json.loads((GOLD / "visible_losses.json").read_text())
    out = af.training_losses(model, *_batch(), 100.0)
    np.testing.assert_allclose(out["final_loss"], ref["loss_values"]["final_loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="gt_labels"):
        feats, mask, segs, labels = _batch()
        af.training_losses(model, feats, mask, segs, labels[:1], 100.0)


def _batch():
    inp = np.load(GOLD / "visible_inputs.npz")
    feats = inp["batched_feats"].transpose(0, 2, 1)
    mask = inp["batched_mask"][:, 0]
    segs = [inp[f"gt_segments_v{b}"] for b in range(2)]
    labels = [inp[f"gt_labels_v{b}"] for b in range(2)]
    return feats, mask, segs, labels


def test_training_losses_match_reference(golden_model):
    ref = json.loads((GOLD / "visible_losses.json").read_text())
    before = float(golden_model.loss_normalizer.numpy())
    out = af.training_losses(golden_model, *_batch(), 100.0)   # the acceptance interface
    for k, v in ref["loss_values"].items():
        np.testing.assert_allclose(out[k], v, rtol=1e-5, err_msg=k)
    np.testing.assert_allclose(out["loss_normalizer_after"], ref["loss_normalizer_after_this_forward"], rtol=1e-6)
    assert float(golden_model.loss_normalizer.numpy()) == before


def test_gradients_match_reference(golden_model):
    ref = np.load(GOLD / "visible_grads.npz")
    got = af.gradients(golden_model, *_batch(), 100.0)
    assert set(got) == set(ref.files)
    largest = max(np.abs(ref[k]).max() for k in ref.files)
    worst = {}
    for k in ref.files:
        g, r = got[k], ref[k]
        assert g.shape == r.shape, (k, g.shape, r.shape)
        if k.endswith(ZERO_SUFFIXES):
            assert np.abs(g).max() <= 1e-6 * largest, (k, np.abs(g).max())
            continue
        worst[k] = np.abs(g - r).max() / np.abs(r).max()
    bad = {k: v for k, v in worst.items() if v > 1e-4}
    assert not bad, bad
