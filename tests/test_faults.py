"""Faults during long work (issue 17, deliverable 3): a full disk fails with one line and leaves
earlier outputs intact; `asl-export` killed mid-write leaves no half output and a rerun
completes. (Exact resume after SIGKILL with drop-path: tests/test_training_cli.py.)"""
import json
import os
import resource
import signal
import subprocess
import sys

import pytest

from conftest import FIXTURES, REPO

THUMOS = FIXTURES / "data/thumos14/thumos14.json"


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2",
                CUDA_VISIBLE_DEVICES="")


def _file_size_limit(nbytes):
    def limit():  # in the child: writes past nbytes fail with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


def test_disk_full_one_line_earlier_output_intact(tmp_path):
    out = tmp_path / "stats.json"
    out.write_text('{"earlier": "run"}\n')
    p = subprocess.run([sys.executable, "-m", "asl_tf.cli.data", "stats", "--annotations",
                        str(THUMOS), "--format", "actionformer", "--json", str(out)],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120,
                       preexec_fn=_file_size_limit(64))
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith("asl-data: error: "), p.stderr
    assert str(out) in lines[0] and "File too large" in lines[0]
    assert json.loads(out.read_text()) == {"earlier": "run"}
    assert sorted(os.listdir(tmp_path)) == ["stats.json"]  # no temp file left


def test_disk_full_edge_output(tmp_path):
    """edge.fileio (asl-edge's writer): a write past the limit fails, the old file stays."""
    out = tmp_path / "bench.json"
    out.write_text("earlier\n")
    p = subprocess.run([sys.executable, "-c",
                        "from edge.fileio import atomic_write\n"
                        f"with atomic_write({str(out)!r}) as f:\n    f.write('x' * 100000)\n"],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60,
                       preexec_fn=_file_size_limit(1000))
    assert p.returncode != 0 and "File too large" in p.stderr
    assert out.read_text() == "earlier\n" and sorted(os.listdir(tmp_path)) == ["bench.json"]


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory):
    import numpy as np

    from asl_tf.config import load_config
    from asl_tf.model.detector import build_detector
    from training_toy import toy_config_yaml
    d = tmp_path_factory.mktemp("fault_model")
    cfg = load_config(toy_config_yaml(str(d), str(REPO)))
    model = build_detector(cfg.model_dict())
    model({"feats": np.zeros((1, 32, 8), np.float32), "mask": np.ones((1, 32), bool)})
    path = d / "tiny.keras"
    model.save(path)
    return path


KILL_AT = {  # os._exit(137) (what SIGKILL leaves) at the named point of the export's writes
    "artifact_rename": "import os\n_r = os.replace\n"
                       "def rep(a, b):\n    if b.endswith('.tflite'): os._exit(137)\n"
                       "    return _r(a, b)\nos.replace = rep\n",
    "sidecar_write": "import os\nfrom export import metadata\n"
                     "def w(path, obj):\n    open(path + '.half', 'w').write('{'); os._exit(137)\n"
                     "metadata.write_json_atomic = w\n",
}


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(KILL_AT))
def test_export_killed_mid_write_leaves_no_half_output(tiny_keras, tmp_path, point):
    out = tmp_path / "m.tflite"
    args = ["--model", str(tiny_keras), "--format", "tflite", "--out", str(out), "--seq_len",
            "32", "--verify_windows", "1", "--fps", "10", "--feat_stride", "1",
            "--num_frames", "1"]
    code = KILL_AT[point] + (f"import sys\nsys.argv = ['asl-export'] + {args!r}\n"
                              "from export.cli import run\nrun()\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 137, p.stderr[-2000:]
    # killed: no model file at all, or (never) a model without its sidecar
    assert not out.exists(), os.listdir(tmp_path)
    p = subprocess.run([sys.executable, "-m", "export.cli", *args], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert out.stat().st_size > 1000
    meta = json.loads((tmp_path / "m.tflite.meta.json").read_text())
    assert meta["format"] == "asl-tf" and meta["window"] == 32
