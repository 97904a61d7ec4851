"""`asl-beam extract` on DirectRunner (2 worker processes) writes the same files as
`asl-extract-features`; a corrupt video goes to the dead letters; a rerun skips finished videos."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("apache_beam")
pytest.importorskip("av")

from conftest import REPO  # noqa: E402
from video_fixtures import write_video  # noqa: E402


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=600)


def _counters(proc):
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(lines[-1])


@pytest.mark.slow
def test_beam_extract_equals_asl_extract_features(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i, n in enumerate((30, 41, 25)):   # 10 fps: 3.0 s, 4.1 s, 2.5 s
        write_video(videos / f"clip{i}.mkv", range(n), "1/10", size=(32, 32), container="matroska")
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    ref = tmp_path / "ref"
    proc = _run("asl_tf.cli.extract", "--videos", videos, "--out", ref, "--noprogress")
    assert proc.returncode == 1, proc.stderr[-3000:]     # 1: a video failed
    out = tmp_path / "beam"
    beam_args = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    proc = _run("asl_tf.cli.beam", "extract", "--videos", videos, "--out", out, *beam_args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = _counters(proc)
    assert c["videos_done"] == 3 and c["videos_failed"] == 1 and c["videos_skipped"] == 0, c

    m_ref = json.loads((ref / "manifest.json").read_text())
    m_beam = json.loads((out / "manifest.json").read_text())
    assert m_beam["recipe"] == m_ref["recipe"] and m_beam["encoder"] == m_ref["encoder"]
    assert m_beam["videos"] == m_ref["videos"] and set(m_beam["videos"]) == {"clip0", "clip1", "clip2"}
    assert set(m_beam["failed"]) == set(m_ref["failed"]) == {"broken"}
    assert abs(c["video_seconds"] - sum(v["duration"] for v in m_ref["videos"].values())) < 0.01
    for stem in m_ref["videos"]:
        a, b = np.load(ref / f"{stem}.npy"), np.load(out / f"{stem}.npy")
        assert a.shape == b.shape and a.shape[1] == 1280 and a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    dead = json.loads((out / "_failed" / "broken.json").read_text())
    assert dead["stage"] == "extract" and dead["error"] == m_ref["failed"]["broken"]

    # rerun: the three finished videos are skipped, the broken one fails again
    mtimes = {s: (out / f"{s}.npy").stat().st_mtime_ns for s in m_ref["videos"]}
    proc = _run("asl_tf.cli.beam", "extract", "--videos", videos, "--out", out, *beam_args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = _counters(proc)
    assert c["videos_done"] == 0 and c["videos_skipped"] == 3 and c["videos_failed"] == 1, c
    assert mtimes == {s: (out / f"{s}.npy").stat().st_mtime_ns for s in m_ref["videos"]}
    assert json.loads((out / "manifest.json").read_text())["videos"] == m_ref["videos"]
