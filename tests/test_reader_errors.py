"""Readers refuse bad input with a ValueError/UserError naming the file and the field (issue 17.6,
17.8, 17.9): damaged zip archives, sidecar fields of the wrong type, labels of the wrong type,
impossible training lengths, duplicate video ids, negative durations, fps 0, empty prediction
files, non-UTF-8 text, outputs with the umask's mode."""
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import edge_models as em
from asl_tf.compat.actionformer import read_state_dict
from asl_tf.config import load_config
from asl_tf.data.annotations import read_annotations
from asl_tf.data.features import FeatureReader
from asl_tf.eval_io import load_ground_truth, load_predictions
from conftest import FIXTURES, REPO
from edge import cli as edge_cli
from edge.runtime import load_meta


def _damage(path, how):
    """`truncated`: the first half; `crc`: one byte of the first member's data flipped."""
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[:len(data) // 2]
    else:
        with zipfile.ZipFile(path) as z:
            info = z.infolist()[0]
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        data[start + info.compress_size // 2] ^= 0xFF
    out = path.with_name(f"{how}_{path.name}")
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("how", ["truncated", "crc"])
def test_damaged_npz_features_name_the_file(tmp_path, how):
    folder = tmp_path / "feats"
    folder.mkdir()
    good = folder / "good.npz"
    np.savez(good, feats=np.ones((64, 8), np.float32))
    bad = _damage(good, how)
    reader = FeatureReader([str(folder)], file_ext=".npz")
    assert reader("good").shape == (64, 8)
    with pytest.raises(ValueError, match=bad.name):
        reader(bad.stem)


@pytest.mark.parametrize("how", ["truncated", "crc"])
def test_damaged_npz_checkpoint_names_the_file(tmp_path, how):
    good = tmp_path / "ck.npz"
    np.savez(good, **{"w": np.ones(4096, np.float32)})
    bad = _damage(good, how)
    with pytest.raises(ValueError, match=bad.name):
        read_state_dict(str(bad))


@pytest.mark.parametrize("how", ["truncated", "crc"])
def test_damaged_pth_names_the_file(tmp_path, how):
    # a torch-format zip: archive/data.pkl + archive/data/0 (stored, uncompressed)
    good = tmp_path / "ck.pth"
    buf = io.BytesIO()
    pickle.dump({"w": 1}, buf, protocol=2)
    with zipfile.ZipFile(good, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue() + b"\x00" * 4096)
        z.writestr("archive/byteorder", "little")
    bad = _damage(good, how)
    with pytest.raises(ValueError, match=bad.name):
        read_state_dict(str(bad))


def test_pickled_npz_is_refused_naming_the_file(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, feats=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="obj.npz"):
        read_state_dict(str(p))
    with pytest.raises(ValueError, match="obj.npz"):
        FeatureReader([str(tmp_path)], file_ext=".npz")("obj")


def test_edge_reads_npz_features(tmp_path):
    p = tmp_path / "v.npz"
    np.savez(p, feats=np.ones((10, 8), np.float32))
    assert edge_cli._load_features(str(p)).shape == (10, 8)
    two = tmp_path / "two.npz"
    np.savez(two, a=np.ones((3, 8)), b=np.ones((3, 8)))
    with pytest.raises(ValueError, match="two.npz: a .npz features file must hold one"):
        edge_cli._load_features(str(two))


@pytest.mark.parametrize("field,value,needle", [
    ("fpn_strides", None, "field 'fpn_strides'"),
    ("level_lengths", 5, "field 'level_lengths'"),
    ("test_cfg", [1, 2], "field 'test_cfg'"),
    ("fps", 0, "field 'fps'"),
    ("window", "64", "field 'window'"),
    ("regression_range", [[0, 4], "x", [8, 1e4]], "field 'regression_range'"),
    ("class_names", "abc", "field 'class_names'"),
])
def test_sidecar_wrong_types(tmp_path, field, value, needle):
    meta = em.sidecar(64)
    meta[field] = value
    p = tmp_path / "m.tflite.meta.json"
    p.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"m.tflite.meta.json: {needle}"):
        load_meta(str(p), str(tmp_path / "m.tflite"))


def test_unknown_nms_method_refused(tmp_path):
    meta = em.sidecar(64)
    meta["test_cfg"]["nms_method"] = "greedy"
    p = tmp_path / "m.tflite.meta.json"
    p.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="nms_method.*greedy"):
        load_meta(str(p), "m.tflite")
    from edge.stream import run_nms
    with pytest.raises(ValueError, match="greedy"):
        run_nms(np.zeros((1, 2)), np.ones(1), np.zeros(1, int), {"nms_method": "greedy"})


def test_json_prediction_label_list(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"results": {"v": [{"segment": [1, 2], "label": [1], "score": 0.5}]}}))
    with pytest.raises(ValueError, match="p.json: video v, prediction 0: label"):
        load_predictions(p)


@pytest.mark.parametrize("override,needle", [
    ("train_cfg.batch_size=0", "batch_size"), ("train_cfg.epochs=-1", "epochs"),
    ("train_cfg.epochs=0", "epochs")])
def test_training_lengths_refused(override, needle):
    extra = ["train_cfg.warmup_epochs=0"] if override.endswith("=0") else []
    with pytest.raises(ValueError, match=needle):
        load_config(REPO / "configs/demo.yaml", [override, *extra])


def test_edge_out_existing_folder_leaves_nothing(tmp_path):
    feats = tmp_path / "v.npy"
    np.save(feats, np.ones((10, 8), np.float32))
    out = tmp_path / "outdir"
    out.mkdir()
    code = edge_cli.main(["run", "--model", str(tmp_path / "none.tflite"), "--features",
                          str(feats), "--out", str(out)])
    assert code == 2
    assert os.listdir(out) == [] and sorted(os.listdir(tmp_path)) == ["outdir", "v.npy"]


def _db(videos):
    return {"database": videos}


def test_duplicate_video_ids_refused(tmp_path):
    p = tmp_path / "a.json"
    seg = '{"subset": "test", "duration": 10, "fps": 30, "annotations": ' \
          '[{"label": "x", "label_id": 0, "segment": [1, 2]}]}'
    p.write_text('{"database": {"vid_a": %s, "vid_a": %s}}' % (seg, seg))
    with pytest.raises(ValueError, match="a.json: key 'vid_a' appears twice"):
        read_annotations(str(p), "actionformer")


@pytest.mark.parametrize("field,value", [("duration", -5), ("fps", 0)])
def test_negative_duration_and_zero_fps_refused(tmp_path, field, value):
    v = {"subset": "test", "duration": 10, "fps": 30,
         "annotations": [{"label": "x", "label_id": 0, "segment": [1, 2]}]}
    v[field] = value
    p = tmp_path / "a.json"
    p.write_text(json.dumps(_db({"v1": v})))
    with pytest.raises(ValueError, match=f"a.json: video 'v1': field '{field}'"):
        read_annotations(str(p), "actionformer")


def test_non_utf8_and_binary_files_named(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_bytes(b"train_cfg:\n  epochs: \xff\xfe\n")
    with pytest.raises(ValueError, match="c.yaml: not UTF-8"):
        load_config(y)
    gt = tmp_path / "gt.json"
    gt.write_bytes(b'{"database": {"\xff": 1}}')
    with pytest.raises(ValueError, match="gt.json"):
        load_ground_truth(gt)
    csv = tmp_path / "p.csv"
    csv.write_bytes(b"video-id,t-start,t-end,label,score\nv,1,2,0\x00,0.5\n")
    with pytest.raises(ValueError, match="p.csv"):
        load_predictions(csv)
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.json: the predictions file is empty"):
        load_predictions(empty)


def test_outputs_get_the_umask_mode(tmp_path):
    out = tmp_path / "stats.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "asl_tf.cli.data", "stats", "--annotations",
                        str(FIXTURES / "data/thumos14/thumos14.json"), "--format",
                        "actionformer", "--json", str(out)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: os.umask(0o022))
    assert p.returncode == 0, p.stderr
    assert (out.stat().st_mode & 0o777) == 0o644


def test_keras_file_with_code_is_refused(tmp_path):
    """A stranger's .keras holding a Lambda layer (marshalled Python code) is not deserialized:
    asl-export loads models in Keras safe mode."""
    import keras

    from export.api import load_model
    marker = tmp_path / "ran"
    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda x: x * 2)(inp)
    path = tmp_path / "evil.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(ValueError, match="evil.keras"):
        load_model(path)
    assert not marker.exists()
