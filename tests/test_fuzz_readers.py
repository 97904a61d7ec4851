"""Fuzzing every reader a user feeds (issue 17, deliverable 2), with Hypothesis.

Property, for each reader: any input either parses to valid records or raises `ValueError`
(the library's `UserError` is one) / `FileNotFoundError` whose message names the file; never
another exception, never a hang (a 20 s alarm per example), never a file written beside it.

Readers: the annotation formats (`read_annotations`, every format), feature files (`.npy`,
`.npz`, `.h5` through `FeatureReader`), configs (`load_config`) and `--override` values,
prediction files (CSV, JSON: `load_predictions`), ground truth (`load_ground_truth`), the
edge sidecar JSON (`edge.runtime.load_meta`), checkpoints (`.pth`, `.npz`: `read_state_dict`).

Tiers: `make test` runs FAST examples per reader; `@pytest.mark.slow` copies run FULL
(`HYPOTHESIS_PROFILE=full` raises the fast ones too). `tests/fixtures/fuzz_corpus/<reader>/`
holds real broken files met while fuzzing and testing; every one is replayed each run.
"""
import contextlib
import io
import json
import os
import pickle
import signal
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asl_tf.compat.actionformer import read_state_dict
from asl_tf.config import load_config
from asl_tf.data.annotations import FORMATS, read_annotations
from asl_tf.data.features import FeatureReader
from asl_tf.eval_io import load_ground_truth, load_predictions
from conftest import FIXTURES, REPO
from edge.runtime import load_meta

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fast")
FAST = 300 if PROFILE == "full" else 15
FULL = 300
CORPUS = FIXTURES / "fuzz_corpus"
ALLOWED = (ValueError, FileNotFoundError)  # UserError is a ValueError


def _cfg(n):
    return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


@contextlib.contextmanager
def _alarm(seconds=20):
    def hang(*_):
        raise AssertionError(f"reader still running after {seconds} s (a hang)")
    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def check_reader(read, files, *, names=None):
    """Write `files` ({name: bytes}) into a fresh folder, call `read(folder)`; return its value or
    None when it raised an allowed error naming one of the files. Asserts nothing was written."""
    with tempfile.TemporaryDirectory() as d:
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        before = sorted(os.listdir(d))
        try:
            with _alarm():
                return read(d)
        except ALLOWED as err:
            text = str(err)
            named = names if names is not None else list(files)
            assert any(n in text for n in named), f"error does not name the file: {text!r}"
            return None
        finally:
            assert sorted(os.listdir(d)) == before, "the reader wrote a file"


# ---------------------------------------------------------------- strategies
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
json_value = st.recursive(json_scalar, lambda c: st.one_of(
    st.lists(c, max_size=4), st.dictionaries(st.text(max_size=6), c, max_size=4)), max_leaves=12)


def _mutate(draw, obj, depth=0):
    """A valid document with a few fields replaced by arbitrary JSON values or removed."""
    if isinstance(obj, dict) and obj:
        obj = dict(obj)
        for key in draw(st.lists(st.sampled_from(sorted(obj)), max_size=2, unique=True)):
            action = draw(st.sampled_from(["replace", "drop", "recurse", "recurse"]))
            if action == "replace":
                obj[key] = draw(json_value)
            elif action == "drop":
                del obj[key]
            else:
                obj[key] = _mutate(draw, obj[key], depth + 1)
        return obj
    if isinstance(obj, list) and obj:
        obj = list(obj)
        i = draw(st.integers(0, len(obj) - 1))
        obj[i] = _mutate(draw, obj[i], depth + 1) if draw(st.booleans()) else draw(json_value)
        return obj
    return draw(json_value) if draw(st.booleans()) else obj


@st.composite
def mutated_json(draw, base):
    doc = _mutate(draw, base)
    text = json.dumps(doc, allow_nan=True)
    if draw(st.integers(0, 5)) == 0:  # sometimes cut or corrupt the text itself
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=4))
    return text.encode("utf-8", "surrogatepass") if draw(st.integers(0, 9)) else \
        draw(st.binary(max_size=64))


def _anno_base():
    ann = [{"label": "Run", "label_id": 0, "segment": [1.0, 2.5]},
           {"label": "Jump", "label_id": 1, "segment": [3.0, 4.0]}]
    return {"database": {"v1": {"subset": "test", "duration": 10.0, "fps": 30.0,
                                "annotations": ann},
                         "v2": {"subset": "validation", "duration": 6.0, "fps": 25.0,
                                "annotations": ann[:1]}}}


def _superevents_base():
    return {"v1": {"subset": "testing", "duration": 10.0, "actions": [[0, 1.0, 2.0], [2, 3, 4]]}}


def _ego4d_base():
    return {"videos": [{"video_uid": "u", "clips": [{"clip_uid": "c1", "video_start_sec": 0,
            "video_end_sec": 480, "annotations": [{"labels": [
                {"label": "a", "start_time": 1.0, "end_time": 2.0, "primary": True}]}]}]}],
            "version": "1"}


def _valid_records(ann):
    for r in ann.records:
        assert np.isfinite(r.duration) and r.duration >= 0
        assert r.fps is None or r.fps > 0
        segs = np.asarray(r.segments, np.float64).reshape(-1, 2)
        assert np.isfinite(segs).all()
        assert len(r.labels) == len(segs)


def _read_anno(fmt, name, extra=None):
    def read(d):
        kw = dict(extra or {})
        kw = {k: os.path.join(d, v) if k == "video_info" else v for k, v in kw.items()}
        ann = read_annotations(os.path.join(d, name), fmt, **kw)
        _valid_records(ann)
        return ann
    return read


ANNO_CASES = {
    "actionformer": (_anno_base, {}),
    "anet": (_anno_base, {}),
    "superevents": (_superevents_base, {}),
    "ego4d": (_ego4d_base, {}),
}


def _fuzz_annotations(data):
    fmt = data.draw(st.sampled_from(sorted(ANNO_CASES)))
    base, extra = ANNO_CASES[fmt]
    check_reader(_read_anno(fmt, "anno.json", extra), {"anno.json": data.draw(mutated_json(base()))})


CSV_HEADERS = {
    "epic": "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,"
            "stop_timestamp,start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,"
            "all_nouns,all_noun_classes",
    "epic_c2": "narration_id,video_id,start_frame,stop_frame,verb_class,noun_class",
    "anet_bsn": None,
}


@st.composite
def csv_text(draw, header):
    cell = st.one_of(st.text(alphabet="0123456789.:-abP_ ", max_size=10),
                     st.sampled_from(["", "nan", "-1", "00:00:01.00", "P01_01", "1e309"]))
    ncols = header.count(",") + 1
    rows = draw(st.lists(st.lists(cell, min_size=ncols - 1, max_size=ncols + 1), max_size=4))
    text = header + "\n" + "\n".join(",".join(r) for r in rows) + "\n"
    return text.encode() if draw(st.integers(0, 7)) else draw(st.binary(max_size=64))


def _fuzz_epic_csv(data):
    fmt = data.draw(st.sampled_from(["epic", "epic_c2"]))
    info_hdr = "video_id,duration,fps" if fmt == "epic" else "video_id,frames"
    files = {"anno.csv": data.draw(csv_text(CSV_HEADERS[fmt])),
             "info.csv": data.draw(csv_text(info_hdr))}
    check_reader(_read_anno(fmt, "anno.csv", {"video_info": "info.csv"}), files)


# ---------------------------------------------------------------- feature files
@st.composite
def feature_file(draw):
    ext = draw(st.sampled_from([".npy", ".npz", ".h5"]))
    kind = draw(st.sampled_from(["array", "array", "bytes", "damaged"]))
    dtype = draw(st.sampled_from(["float32", "float64", "int16", "bool", "complex64", "U3"]))
    shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
    arr = np.asarray(draw(st.lists(st.floats(allow_nan=True, allow_infinity=True),
                                   min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))),
                     dtype=np.float64).reshape(shape)
    with contextlib.suppress(ValueError, TypeError):
        arr = arr.astype(dtype)
    buf = io.BytesIO()
    if kind == "bytes":
        return ext, draw(st.binary(max_size=200))
    if ext == ".npy":
        np.save(buf, arr)
    elif ext == ".npz":
        np.savez(buf, **{draw(st.sampled_from(["feats", "x"])): arr})
    else:
        import h5py
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "f.h5")
            with h5py.File(p, "w") as h:
                h.create_dataset(draw(st.sampled_from(["feats", "x"])),
                                 data=arr if arr.dtype.kind != "U" else arr.astype("S3"))
            buf.write(open(p, "rb").read())
    data = bytearray(buf.getvalue())
    if kind == "damaged" and data:
        i = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data = data[:i]
        else:
            data[i] ^= draw(st.integers(1, 255))
    return ext, bytes(data)


def _fuzz_features(data):
    ext, blob = data.draw(feature_file())

    def read(d):
        arr = FeatureReader([d], file_ext=ext)("vid")
        assert arr.dtype == np.float32 and arr.ndim == 2 and np.isfinite(arr).all()
        return arr
    check_reader(read, {"vid" + ext: blob})


# ---------------------------------------------------------------- configs and overrides
OVERRIDE_KEYS = ["train_cfg.epochs", "train_cfg.batch_size", "opt.learning_rate", "model.fpn_dim",
                 "dataset.max_seq_len", "model.regression_range", "test_cfg.nms_method",
                 "nope.key", "model", "train_cfg.droppath", "dataset.crop_ratio", ""]
override_text = st.builds(lambda k, v, sep: f"{k}{sep}{v}", st.sampled_from(OVERRIDE_KEYS),
                          st.one_of(st.text(max_size=10), st.integers(-5, 5).map(str),
                                    st.sampled_from(["[1,2]", "{a: 1}", "null", "1e400", "[",
                                                     "soft", "0"])),
                          st.sampled_from(["=", "==", ":", ""]))


@st.composite
def config_yaml(draw):
    base = f"_base_: {REPO}/configs/demo.yaml\n"
    key = draw(st.sampled_from(["train_cfg", "model", "opt", "dataset", "test_cfg", "x"]))
    sub = draw(st.sampled_from(["epochs", "fpn_dim", "learning_rate", "max_seq_len", "nms_method",
                                "bogus", "batch_size"]))
    value = draw(st.one_of(st.sampled_from(["1", "-1", "0", "[]", "null", "'x'", "{a: 1}",
                                            "1e999", ".nan", "[1, [2]]", "!!python/object:os.system x"]),
                           st.text(max_size=8)))
    text = base + f"{key}:\n  {sub}: {value}\n"
    if draw(st.integers(0, 5)) == 0:
        text = draw(st.text(max_size=40))
    blob = text.encode("utf-8", "surrogatepass")
    return blob if draw(st.integers(0, 9)) else draw(st.binary(max_size=40))


def _fuzz_config(data):
    blob = data.draw(config_yaml())
    overrides = data.draw(st.lists(override_text, max_size=2))

    def read(d):
        return load_config(os.path.join(d, "c.yaml"), overrides)
    # an override error names the override, a file error the file
    check_reader(read, {"c.yaml": blob}, names=["c.yaml", "override", "demo.yaml"])


# ---------------------------------------------------------------- predictions, ground truth
def _pred_json_base():
    return {"results": {"v1": [{"segment": [1.0, 2.0], "label": "Run", "score": 0.9},
                               {"segment": [3.0, 4.0], "label": 1, "score": 0.5}]}}


def _fuzz_predictions(data):
    if data.draw(st.booleans()):
        name, blob = "p.json", data.draw(mutated_json(_pred_json_base()))
    else:
        name, blob = "p.csv", data.draw(csv_text("video-id,t-start,t-end,label,score"))

    def read(d):
        p = load_predictions(os.path.join(d, name))
        assert np.isfinite(p.segments).all() and np.isfinite(p.scores).all()
        return p
    check_reader(read, {name: blob})


def _fuzz_ground_truth(data):
    blob = data.draw(mutated_json(_anno_base()))
    check_reader(lambda d: load_ground_truth(os.path.join(d, "gt.json")), {"gt.json": blob})


# ---------------------------------------------------------------- sidecar JSON
def _sidecar_base():
    import edge_models as em
    return em.sidecar(64)


def _fuzz_sidecar(data):
    blob = data.draw(mutated_json(_sidecar_base()))
    check_reader(lambda d: load_meta(os.path.join(d, "m.tflite.meta.json"), "m.tflite"),
                 {"m.tflite.meta.json": blob})


# ---------------------------------------------------------------- checkpoints
class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@st.composite
def checkpoint_file(draw):
    if draw(st.booleans()):
        buf = io.BytesIO()
        arrays = {draw(st.text(alphabet="abc._", min_size=1, max_size=6)):
                  np.zeros(draw(st.integers(0, 4)), draw(st.sampled_from(["f4", "i8", "O"])))}
        with contextlib.suppress(ValueError):
            np.savez(buf, **arrays)
        data = bytearray(buf.getvalue())
        name = "ck.npz"
    else:
        payload = draw(st.sampled_from([{"state_dict": {"w": 1.5}}, [1, 2], _Evil(), {"a": None}]))
        pkl = pickle.dumps(payload, protocol=2)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            z.writestr("archive/data.pkl", pkl)
            z.writestr("archive/byteorder", draw(st.sampled_from(["little", "big"])))
        data = bytearray(buf.getvalue())
        name = "ck.pth"
    if data and draw(st.booleans()):
        i = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data = data[:i]
        else:
            data[i] ^= draw(st.integers(1, 255))
    return name, bytes(data)


def _fuzz_checkpoint(data):
    name, blob = data.draw(checkpoint_file())

    def read(d):
        sd = read_state_dict(os.path.join(d, name))
        assert all(isinstance(v, np.ndarray) and v.dtype != object for v in sd.values())
        return sd
    check_reader(read, {name: blob})


FUZZERS = {"annotations": _fuzz_annotations, "epic_csv": _fuzz_epic_csv,
           "features": _fuzz_features, "config": _fuzz_config,
           "predictions": _fuzz_predictions, "ground_truth": _fuzz_ground_truth,
           "sidecar": _fuzz_sidecar, "checkpoint": _fuzz_checkpoint}


@pytest.mark.parametrize("reader", sorted(FUZZERS))
@_cfg(FAST)
@given(data=st.data())
def test_fuzz_fast(reader, data):
    FUZZERS[reader](data)


@pytest.mark.slow
@pytest.mark.parametrize("reader", sorted(FUZZERS))
@_cfg(FULL)
@given(data=st.data())
def test_fuzz_full(reader, data):
    FUZZERS[reader](data)


# ---------------------------------------------------------------- the corpus, replayed
def _corpus_reader(kind, path):
    name = os.path.basename(path)
    if kind == "features":
        ext = os.path.splitext(name)[1]
        return lambda: FeatureReader([os.path.dirname(path)], file_ext=ext)(
            os.path.splitext(name)[0])
    return {
        "annotations": lambda: read_annotations(path, "actionformer"),
        "config": lambda: load_config(path),
        "predictions": lambda: load_predictions(path),
        "ground_truth": lambda: load_ground_truth(path),
        "sidecar": lambda: load_meta(path, "m.tflite"),
        "checkpoint": lambda: read_state_dict(path),
    }[kind]


CORPUS_FILES = sorted((p.parent.name, p) for p in CORPUS.glob("*/*") if p.name != "SOURCE.txt")


def test_corpus_is_present():
    assert len(CORPUS_FILES) >= 15 and (CORPUS / "SOURCE.txt").exists()


@pytest.mark.parametrize("kind,path", CORPUS_FILES,
                         ids=[f"{k}/{p.name}" for k, p in CORPUS_FILES])
def test_corpus_replayed(kind, path, tmp_path):
    before = sorted(os.listdir(path.parent))
    with pytest.raises(ALLOWED) as exc, _alarm():
        _corpus_reader(kind, str(path))()
    assert path.name in str(exc.value), str(exc.value)
    assert sorted(os.listdir(path.parent)) == before


@pytest.mark.parametrize("name", ["header_syntax.npy", "zip_version.npz", "truncated.npy"])
def test_edge_features_reader_replays_the_feature_corpus(name):
    """`asl-edge run --features` reads .npy/.npz itself (edge/ must not import asl_tf): the
    damaged feature files of the corpus end in a ValueError naming the file there too."""
    from edge.cli import _load_features

    path = str(CORPUS / "features" / name)
    with pytest.raises(ValueError) as exc, _alarm():
        _load_features(path)
    assert name in str(exc.value)
