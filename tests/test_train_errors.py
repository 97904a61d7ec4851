"""asl-train on bad input (issue 17.1, 17.3, 17.4, NaN loss): a bad feature file is refused with
one line naming it before anything is written (no config.json, log.csv, tb/), so the corrected
command runs; a NaN loss stops with one line and keeps the last good backup; the run writes
`final.keras` (final EMA model) and the README's train -> export -> edge commands work."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import REPO
from training_toy import toy_config_yaml, write_toy_dataset


def _env():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user runs it: no TF start-up noise either
    return env


def _train(cfg, workdir, *extra):
    return subprocess.run([sys.executable, "-m", "asl_tf.cli.train", "--config", str(cfg),
                           "--workdir", str(workdir), "--run_eagerly", "--verbose", "0",
                           "--backup_every", "1", *extra],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)


def _error_line(p, *needles):
    assert p.returncode == 2, p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "InvalidArgumentError" not in p.stderr, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("asl-train: error: "), p.stderr[-2000:]
    errors = [ln for ln in p.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, p.stderr[-2000:]
    for n in needles:
        assert n in last, (n, last)


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["width", "nan", "empty"])
def test_bad_feature_file_refused_before_anything_is_written(tmp_path, bad):
    data = tmp_path / "data"
    write_toy_dataset(str(data))
    f = data / "features" / "v003.npy"
    good = np.load(f)
    broken = {"width": np.ones((30, 5), np.float32), "nan": np.where(good > 1, np.nan, good),
              "empty": np.zeros((0, 8), np.float32)}[bad]
    np.save(f, broken.astype(np.float32))
    cfg = toy_config_yaml(str(data), str(REPO), epochs=1, eval_every=0)
    work = tmp_path / "run"
    p = _train(cfg, work)
    _error_line(p, "v003.npy")
    assert not work.exists() or os.listdir(work) == [], os.listdir(work)
    np.save(f, good)  # the corrected command runs (not "holds a run of another config")
    p = _train(cfg, work, "--override", "train_cfg.epochs=0")
    assert p.returncode == 0, p.stderr[-3000:]
    assert (work / "final.keras").exists() and (work / "config.json").exists()


@pytest.mark.slow
def test_nan_loss_stops_with_one_line_and_keeps_last_good_backup(tmp_path):
    data = tmp_path / "data"
    write_toy_dataset(str(data))
    cfg = toy_config_yaml(str(data), str(REPO), epochs=3, eval_every=0)
    work = tmp_path / "run"
    # a learning rate that makes the weights overflow after a few steps
    p = _train(cfg, work, "--override", "opt.learning_rate=1e30",
               "--override", "train_cfg.clip_grad_l2norm=-1")
    _error_line(p, "loss")
    state = json.loads((work / "backup" / "state.json").read_text())
    with h5py.File(work / "backup" / "state.weights.h5", "r") as h:
        arrays = []
        h.visititems(lambda k, v: arrays.append(v[()]) if isinstance(v, h5py.Dataset) else None)
    assert arrays and all(np.isfinite(np.asarray(a, np.float64)).all() for a in arrays
                          if np.asarray(a).dtype.kind == "f"), state
    assert not (work / "final.keras").exists()


@pytest.mark.slow
def test_readme_train_export_edge_commands(tmp_path):
    """README: asl-train -> runs/X/final.keras -> asl-export --calibration CONFIG -> asl-edge run."""
    data = tmp_path / "data"
    write_toy_dataset(str(data))
    cfg = toy_config_yaml(str(data), str(REPO), epochs=1, eval_every=0)
    work = tmp_path / "runs" / "toy"
    p = _train(cfg, work)
    assert p.returncode == 0, p.stderr[-3000:]
    model = work / "final.keras"
    assert model.exists()
    tfl = tmp_path / "toy.tflite"
    p = subprocess.run([sys.executable, "-m", "export.cli", "--model", str(model), "--format",
                        "tflite", "--calibration", str(cfg), "--out", str(tfl),
                        "--fps", "10"],  # the toy config has no default_fps (THUMOS' has)
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "dets.json"
    p = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--model", str(tfl),
                        "--features", str(data / "features" / "v009.npy"), "--out", str(out)],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["video_id"] == "v009" and len(doc["detections"]) > 0
