"""EfficientNet-Lite0 frame encoder: parity with the PyTorch reference goldens (features and
logits within 1e-4, top-1 exact) for Keras and for the fp32 TFLite export; weight refusals."""
import numpy as np
import pytest

from conftest import FIXTURES

GOLDEN = FIXTURES / "golden" / "extractor" / "visible_extractor.npz"
TOL = 1e-4  # SEMANTICS.md §5: the float64 reference stays within 1.5e-5 of the goldens


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN))


@pytest.fixture(scope="module")
def top_model():
    from asl_tf.features import efficientnet_lite0
    return efficientnet_lite0(include_top=True)


@pytest.fixture(scope="module")
def both(top_model):
    """One graph with both outputs (features and logits), so one TFLite conversion covers both."""
    import keras
    return keras.Model(top_model.input, {"features": top_model.get_layer("avg_pool").output,
                                         "logits": top_model.output})


@pytest.fixture(scope="module")
def tflite_fp32(both, golden):
    """The fp32 TFLite export (export.encoder.convert_tflite) run on the golden frames."""
    from ai_edge_litert.interpreter import Interpreter

    from export import encoder as enc
    interp = Interpreter(model_content=enc.convert_tflite(both, "none"), num_threads=2)
    run = interp.get_signature_runner("serving_default")
    return run(rgb=golden["frames"].astype(np.float32))


def _check(features, logits, golden):
    np.testing.assert_allclose(features, golden["features"], rtol=0, atol=TOL)
    np.testing.assert_allclose(logits, golden["logits"], rtol=0, atol=TOL)
    np.testing.assert_array_equal(np.argmax(logits, 1), golden["top5"][:, 0])


def test_golden_top1_are_the_documented_classes(golden):
    # SEMANTICS.md §5: bikes 437 829 821 671; box 710 519 692 478.
    assert golden["top5"][:, 0].tolist() == [437, 829, 821, 671, 710, 519, 692, 478]
    assert golden["frames"].shape == (8, 224, 224, 3) and golden["frames"].dtype == np.uint8


def test_keras_features_and_logits_match_reference(both, golden):
    out = both.predict(golden["frames"].astype(np.float32), verbose=0)
    _check(out["features"], out["logits"], golden)


def test_feature_model_interface(golden):
    import keras

    from asl_tf.features import efficientnet_lite0
    m = efficientnet_lite0(include_top=False)
    assert isinstance(m, keras.Model)
    assert tuple(m.input_shape) == (None, 224, 224, 3) and tuple(m.output_shape) == (None, 1280)
    # uint8-valued floats in, normalisation inside: the same pixels as the reference's input
    y = np.asarray(m(golden["frames"][:2].astype(np.float32)))
    np.testing.assert_allclose(y, golden["features"][:2], rtol=0, atol=TOL)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in m.layers)


def test_batchnorm_folding_is_exact(golden):
    """The unfolded model (BatchNormalization layers, eps 1e-3) gives the same features."""
    import keras

    from asl_tf.features import efficientnet_lite0
    m = efficientnet_lite0(include_top=False, fold_bn=False)
    bns = [layer for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 49 and all(layer.epsilon == 1e-3 for layer in bns)
    y = np.asarray(m(golden["frames"][:2].astype(np.float32)))
    np.testing.assert_allclose(y, golden["features"][:2], rtol=0, atol=TOL)


def test_tflite_fp32_export_matches_reference(tflite_fp32, golden):
    _check(tflite_fp32["features"], tflite_fp32["logits"], golden)


def test_stride2_layers_have_explicit_asymmetric_pads(both):
    """TF "SAME" on stride 2 is asymmetric: stem + 4 stride-2 depthwise convs carry a PAD."""
    import keras
    pads = [layer for layer in both.layers if isinstance(layer, keras.layers.ZeroPadding2D)]
    assert [p.padding for p in pads] == [((0, 1), (0, 1)), ((0, 1), (0, 1)), ((1, 2), (1, 2)),
                                         ((0, 1), (0, 1)), ((1, 2), (1, 2))]


def test_weights_path_and_refusals(tmp_path):
    from asl_tf.features import default_weights_path, efficientnet_lite0
    assert default_weights_path().endswith("efficientnet-lite0-57934424.pth")
    with pytest.raises(FileNotFoundError):
        efficientnet_lite0(weights=tmp_path / "missing.pth")
    other = FIXTURES / "golden" / "model" / "visible_state_dict.pth"  # a detector's weights
    with pytest.raises(ValueError, match="visible_state_dict.pth: weights lack tensor "
                                         "'_conv_stem.weight'"):
        efficientnet_lite0(weights=other)


@pytest.mark.slow
def test_jax_backend_matches_reference():
    """keras.ops only: the same encoder on the JAX backend (subprocess) meets the goldens."""
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO
    code = ("import json, numpy as np, keras\n"
            "from asl_tf.features import efficientnet_lite0\n"
            f"z = np.load({str(GOLDEN)!r})\n"
            "y = np.asarray(efficientnet_lite0(include_top=True)(z['frames'].astype('float32')))\n"
            "print(json.dumps([keras.backend.backend(), float(np.abs(y - z['logits']).max()),"
            " y.argmax(1).tolist()]))\n")
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    backend, diff, top1 = json.loads(proc.stdout.strip().splitlines()[-1])
    assert backend == "jax" and diff <= TOL
    assert top1 == [437, 829, 821, 671, 710, 519, 692, 478]
