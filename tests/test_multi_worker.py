"""`asl-train --strategy multi_worker` across 2 processes (TF_CONFIG, localhost ports, 1 CPU
each): equal to a single-process run with the same global batch (ASCL cross-replica gather and
loss normaliser included, the base config turns ASL on); a killed worker makes the other fail
with one line in bounded time; rerunning both resumes and ends equal to an uninterrupted run."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import REPO
from training_toy import toy_config_yaml, write_toy_dataset

TIMEOUT = 20   # --collective_timeout of the 2-worker runs (s)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env(extra=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    env.update(extra or {})
    return env


def _cmd(cfg, workdir, strategy):
    return [sys.executable, "-m", "asl_tf.cli.train", "--config", cfg, "--workdir", workdir,
            "--run_eagerly", "--backup_every", "1", "--verbose", "0", "--strategy", strategy,
            "--collective_timeout", str(TIMEOUT)]


def _one_cpu(i):
    cpus = sorted(os.sched_getaffinity(0))
    return lambda: os.sched_setaffinity(0, {cpus[i % len(cpus)]})


def start_workers(cfg, workdir, n=2, ports=None):
    """n `asl-train` processes of one cluster (worker 0 is the chief), 1 CPU each."""
    ports = ports or _free_ports(n)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for i in range(n):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(_cmd(cfg, workdir, "multi_worker"), cwd=REPO,
                                      env=_env({"TF_CONFIG": tf_config}), preexec_fn=_one_cpu(i),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _wait_all(procs, timeout=600):
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return outs


def _weights(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None)
    return out


def _max_diff(a, b):
    assert a.keys() == b.keys() and len(a) > 10
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64))))
               if np.asarray(a[k]).size else 0.0 for k in a)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("mw")
    data = root / "data"
    write_toy_dataset(str(data))
    # 8 videos, global batch 2 -> 4 steps/epoch, 3 epochs (1 warm-up) = 12 steps; no eval
    return root, toy_config_yaml(str(data), str(REPO), epochs=2, eval_every=0)


@pytest.mark.slow
def test_two_workers_equal_single_process_and_survive_a_killed_worker(toy):
    root, cfg = toy
    single = root / "single"
    res = subprocess.run(_cmd(cfg, str(single), "default"), cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=600, preexec_fn=_one_cpu(0))
    assert res.returncode == 0, res.stderr[-3000:]
    multi = root / "multi"
    _wait_all(start_workers(cfg, str(multi)))
    w1, w2 = _weights(single / "final.weights.h5"), _weights(multi / "final.weights.h5")
    diff = _max_diff(w1, w2)
    print(f"max |w_single - w_2workers| = {diff:.3g}")
    assert diff < 1e-4, diff
    assert _max_diff(w2, _weights(multi / ".worker-1" / "final.weights.h5")) == 0.0
    rows1 = [l.split(",") for l in (single / "log.csv").read_text().splitlines()]
    rows2 = [l.split(",") for l in (multi / "log.csv").read_text().splitlines()]
    h1, h2 = rows1[0], rows2[0]
    # per-epoch logs: the ASCL loss (its negatives all-gathered across the workers), the
    # positive count and the loss normaliser (an EMA of the all-reduced positive count)
    for key in ("loss", "ascl_loss", "num_pos", "loss_normalizer"):
        a = [float(r[h1.index(key)]) for r in rows1[1:]]
        b = [float(r[h2.index(key)]) for r in rows2[1:]]
        np.testing.assert_allclose(b, a, rtol=1e-4, err_msg=key)
    assert min(float(r[h1.index("ascl_loss")]) for r in rows1[1:]) > 0   # ASCL is on

    # fault: kill worker 1 once the chief's backup is past step 5
    fault = root / "fault"
    procs = start_workers(cfg, str(fault))
    state = fault / "backup" / "state.json"
    t0 = time.time()
    killed = None
    while time.time() - t0 < 600 and procs[0].poll() is None:
        try:
            step = json.loads(state.read_text())["step"]
        except (OSError, ValueError, KeyError):
            step = 0
        if step >= 5:
            procs[1].send_signal(signal.SIGKILL)
            killed = time.time()
            break
        time.sleep(0.05)
    assert killed is not None, procs[0].communicate()[1][-3000:]
    procs[1].wait(timeout=60)
    _, err = procs[0].communicate(timeout=TIMEOUT + 120)
    waited = time.time() - killed
    print(f"chief failed {waited:.1f} s after worker 1 was killed")
    assert procs[0].returncode == 1, err[-3000:]
    lines = [l for l in err.splitlines() if l.startswith("asl-train: error:")]
    assert len(lines) == 1 and "lost contact with a peer worker" in lines[0], err[-3000:]
    assert "Traceback" not in err
    assert waited < TIMEOUT + 60
    resumed = json.loads(state.read_text())["step"]
    assert 5 <= resumed < 12
    # rerun both: resumes from the chief's backup, ends equal to the uninterrupted run
    _wait_all(start_workers(cfg, str(fault)))
    diff = _max_diff(w2, _weights(fault / "final.weights.h5"))
    print(f"resumed at step {resumed}: max |w_uninterrupted - w_resumed| = {diff:.3g}")
    assert diff <= 1e-6, diff


def test_worker_role_and_write_dir():
    """Fast: who is the chief and where each worker writes (TF's chief rule)."""
    from types import SimpleNamespace

    from asl_tf import training

    def strat(ttype, tid, cluster):
        spec = SimpleNamespace(as_dict=lambda: cluster)
        return SimpleNamespace(cluster_resolver=SimpleNamespace(
            task_type=ttype, task_id=tid, cluster_spec=lambda: spec))

    workers = {"worker": ["a:1", "b:1"]}
    assert training.worker_role(strat("worker", 0, workers)) == (True, "worker", 0)
    assert training.worker_role(strat("worker", 1, workers)) == (False, "worker", 1)
    with_chief = {"chief": ["c:1"], "worker": ["a:1"]}
    assert training.worker_role(strat("worker", 0, with_chief))[0] is False
    assert training.worker_role(strat("chief", 0, with_chief))[0] is True
    assert training.write_dir("/w", strat("worker", 1, workers)) == os.path.join("/w", ".worker-1")
    assert training.write_dir("/w", strat("worker", 0, workers)) == "/w"
    assert training.write_dir("/w", SimpleNamespace()) == "/w"   # single-process strategies
    assert training.peer_failure(type("UnavailableError", (Exception,), {})())
    assert not training.peer_failure(ValueError("x"))
