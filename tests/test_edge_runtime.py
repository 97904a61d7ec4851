"""edge/runtime.py: TFLite / ONNX models read by name, sidecar checks, input validation."""
import json
import shutil
import tempfile

import numpy as np
import pytest

import edge_models as em
from edge.runtime import EdgeModel


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return em.cached_models(tmp_path_factory)


def _window(seed=0, masked_from=None):
    rng = np.random.default_rng(seed)
    feats, _, _ = em.synthetic_video(em.WINDOW, seed=seed)
    feats += rng.normal(0, 0.1, feats.shape).astype(np.float32)
    mask = np.ones(em.WINDOW, bool)
    if masked_from is not None:
        mask[masked_from:] = False
    return feats, mask


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
@pytest.mark.parametrize("threads", [1, 2])
def test_runtime_matches_keras(models, fmt, threads):
    m = EdgeModel(models[fmt], num_threads=threads)
    assert m.backend == fmt
    assert (m.window, m.input_dim, m.num_classes) == (em.WINDOW, 8, 3)
    assert m.num_points == sum(em.level_lengths(em.WINDOW))
    assert m.class_names == ["cls_0", "cls_1", "cls_2"]
    feats, mask = _window(1, masked_from=50)
    out = m.run(feats, mask)
    ref = models["keras"]({"feats": feats[None], "mask": mask[None]}, training=False)
    assert out["cls_logits"].shape == (m.num_points, 3)
    assert out["offsets"].shape == (m.num_points, 2)
    np.testing.assert_allclose(out["cls_logits"], np.asarray(ref["cls_logits"])[0], atol=1e-4)
    np.testing.assert_allclose(out["offsets"], np.asarray(ref["offsets"])[0], atol=1e-4)
    # batch-1 input and the default all-valid mask are accepted
    full = m.run(feats[None])
    ref = models["keras"]({"feats": feats[None], "mask": np.ones((1, em.WINDOW), bool)})
    np.testing.assert_allclose(full["cls_logits"], np.asarray(ref["cls_logits"])[0], atol=1e-4)


def _copy(models, fmt, tmp_path, meta=None, name=None):
    dst = tmp_path / (name or f"m.{fmt}")
    shutil.copy(models[fmt], dst)
    if meta is not False:
        (tmp_path / (dst.name + ".meta.json")).write_text(json.dumps(meta or models["meta"]))
    return dst


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_shapes_come_from_the_model_and_must_match_the_sidecar(models, fmt, tmp_path):
    for field, value in (("window", 32), ("input_dim", 9), ("num_classes", 4)):
        meta = dict(models["meta"], **{field: value})
        if field == "num_classes":
            meta["class_names"] = [f"c{i}" for i in range(4)]
        path = _copy(models, fmt, tmp_path, meta)
        with pytest.raises(ValueError, match=f"'{field}'"):
            EdgeModel(path)


def test_not_a_model(tmp_path, models):
    missing = tmp_path / "nope.tflite"
    with pytest.raises(FileNotFoundError, match="nope.tflite"):
        EdgeModel(missing)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a TFLite"):
        EdgeModel(junk)
    fake_onnx = tmp_path / "fake.onnx"
    fake_onnx.write_text("hello, not a protobuf")
    (tmp_path / "fake.onnx.meta.json").write_text(json.dumps(models["meta"]))
    with pytest.raises(ValueError, match="fake.onnx"):
        EdgeModel(fake_onnx)
    # a TFLite flatbuffer header followed by garbage
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\xff" * 100)
    (tmp_path / "bad.tflite.meta.json").write_text(json.dumps(models["meta"]))
    with pytest.raises(ValueError, match="bad.tflite"):
        EdgeModel(bad)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_not_ours(models, fmt, tmp_path):
    path = _copy(models, fmt, tmp_path, meta=False)
    with pytest.raises(ValueError, match="not an asl-tf model"):
        EdgeModel(path)
    path = _copy(models, fmt, tmp_path, meta=dict(models["meta"], format="other"),
                 name=f"other.{fmt}")
    with pytest.raises(ValueError, match="'format'"):
        EdgeModel(path)
    meta = dict(models["meta"])
    del meta["fpn_strides"]
    path = _copy(models, fmt, tmp_path, meta=meta, name=f"nostrides.{fmt}")
    with pytest.raises(ValueError, match="'fpn_strides'"):
        EdgeModel(path)


def test_model_with_other_io_names(tmp_path):
    """A valid TFLite model whose inputs are not named feats/mask is refused by name."""
    import keras
    import tensorflow as tf

    x = keras.Input((em.WINDOW, 8), name="x")
    y = keras.layers.Dense(3, name="y")(x)
    model = keras.Model(x, y)
    path = tmp_path / "foreign.tflite"
    with tempfile.TemporaryDirectory() as d:
        model.export(d, format="tf_saved_model", verbose=False)
        path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(d).convert())
    (tmp_path / "foreign.tflite.meta.json").write_text(json.dumps(em.sidecar(em.WINDOW)))
    with pytest.raises(ValueError, match="'feats' not found"):
        EdgeModel(path)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_input_validation(models, fmt):
    m = EdgeModel(models[fmt], num_threads=1)
    feats, mask = _window(2)
    with pytest.raises(ValueError, match="feature width is 7"):
        m.run(feats[:, :7])
    with pytest.raises(ValueError, match="window length is 63"):
        m.run(feats[:63])
    with pytest.raises(ValueError, match="shape"):
        m.run(feats[None, None])
    bad = feats.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.run(bad)
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        m.run(bad)
    with pytest.raises(ValueError, match="dtype"):
        m.run(feats.astype(np.int32))
    with pytest.raises(ValueError, match="mask: dtype"):
        m.run(feats, mask.astype(np.int8))
    with pytest.raises(ValueError, match="mask: expected shape"):
        m.run(feats, mask[:10])
    # float64 is accepted and cast
    np.testing.assert_allclose(m.run(feats.astype(np.float64))["cls_logits"],
                               m.run(feats)["cls_logits"], atol=1e-6)
    with pytest.raises(ValueError, match="num_threads"):
        EdgeModel(models[fmt], num_threads=0)
