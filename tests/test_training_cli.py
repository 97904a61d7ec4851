"""`asl-train` end to end on a tiny generated dataset: learning, resume after SIGKILL, refusal."""
import csv
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import REPO
from training_toy import toy_config_yaml, write_toy_dataset


def _cmd(cfg, workdir, *extra):
    return [sys.executable, "-m", "asl_tf.cli.train", "--config", cfg, "--workdir", workdir,
            "--run_eagerly", "--backup_every", "1", "--verbose", "0", *extra]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _weights(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None)
    return out


@pytest.mark.slow
def test_train_learns_resumes_after_sigkill_and_refuses_other_config(tmp_path):
    data = tmp_path / "data"
    write_toy_dataset(str(data))
    cfg_eval = toy_config_yaml(str(data), str(REPO), epochs=2, eval_every=1)   # 3 epochs x 4 steps
    # A: uninterrupted, with validation mAP every epoch
    a = tmp_path / "A"
    res = subprocess.run(_cmd(cfg_eval, str(a)), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.DictReader(open(a / "log.csv")))
    assert len(rows) == 3
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert float(rows[-1]["val_mAP"]) > float(rows[0]["val_mAP"])
    assert (a / "best.weights.h5").exists() and (a / "final_ema.weights.h5").exists()
    assert (a / "final.keras").exists()   # what asl-export --model takes
    # TensorBoard event files with the epoch losses (the tensorboard package is pinned)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(a / "tb" / "train"))
    acc.Reload()
    assert "epoch_loss" in acc.Tags()["tensors"]
    assert len(acc.Tensors("epoch_loss")) == 3

    # B: same config, SIGKILLed once a mid-run backup exists, then the same command again
    b = tmp_path / "B"
    proc = subprocess.Popen(_cmd(cfg_eval, str(b)), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = b / "backup" / "state.json"
    t0 = time.time()
    killed_at = None
    while time.time() - t0 < 600 and proc.poll() is None:
        if state.exists():
            try:
                step = int(state.read_text().split(":")[1].strip(" }"))
            except (ValueError, IndexError):
                step = 0
            if step >= 5:
                proc.send_signal(signal.SIGKILL)
                killed_at = step
                break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert killed_at is not None and 5 <= killed_at < 12, killed_at   # after epoch 1
    res = subprocess.run(_cmd(cfg_eval, str(b)), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    wa, wb = _weights(a / "final.weights.h5"), _weights(b / "final.weights.h5")
    assert wa.keys() == wb.keys() and len(wa) > 10
    for k in wa:   # bit-equal: deterministic ops, same seeded input stream, exact state restore
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)

    # another config in the same workdir: refused with one line, exit 2; --force restarts
    res = subprocess.run(_cmd(cfg_eval, str(b), "--override", "opt.learning_rate=0.5"), cwd=REPO,
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert "another config" in res.stderr and "opt.learning_rate" in res.stderr
    assert "Traceback" not in res.stderr
