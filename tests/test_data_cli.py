"""`asl-data stats` on the fixture copies of the real files: counts, JSON, exit codes."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import FIXTURES, REPO

D = FIXTURES / "data"
EPIC = D / "epic_kitchens_100"


def _run(*args, tmp_path=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "asl_tf.cli.data", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


CASES = [
    ("thumos14", ["--annotations", D / "thumos14/thumos14.json", "--format", "actionformer", "--split", "test",
                  "--config", REPO / "configs/thumos14_i3d.yaml"], (212, 3358, 20), {"rows_past_end": 26}),
    ("multithumos", ["--annotations", D / "multithumos/multithumos.json.gz", "--format", "actionformer",
                     "--split", "test"], (212, 20186, 65), {"rows_end_le_start": 30, "rows_past_end": 29}),
    ("charades", ["--annotations", D / "charades/charades.json.gz", "--format", "superevents", "--split", "testing"],
     (1863, 16691, 157), {"rows_past_end": 5027}),
    ("epic", ["--annotations", EPIC / "EPIC_100_validation.csv.gz", "--format", "epic", "--split", "validation",
              "--label", "verb", "--video-info", EPIC / "EPIC_100_video_info.csv.gz"], (138, 9668, 97), {}),
    ("epic_c2", ["--annotations", EPIC / "c2_validation.csv.gz", "--format", "epic_c2", "--split", "validation",
                 "--video-info", EPIC / "c2_video_lengths.csv.gz", "--label", "noun"], (138, 9668, 300), {}),
    ("anet_bsn", ["--annotations", D / "activitynet13/anet_anno_action_validation.json.gz", "--format", "anet_bsn",
                  "--split", "validation", "--video-info", D / "activitynet13/video_info_new_validation.csv.gz",
                  "--config", REPO / "configs/anet13_tsp.yaml"],
     (4728, 7293, 200), {"rows_past_end": 71, "rows_end_le_start": 3}),
    ("ego4d", ["--annotations", D / "ego4d/moments_synthetic.json", "--format", "ego4d", "--split", "validation",
               "--config", REPO / "configs/ego4d_mq_slowfast.yaml"], (2, 3, 3), {"rows_past_end": 1}),
]


@pytest.mark.parametrize("name,args,expected,extra", CASES, ids=[c[0] for c in CASES])
def test_stats_counts(tmp_path, name, args, expected, extra):
    out = tmp_path / "stats.json"
    p = _run("stats", *args, "--json", out)
    assert p.returncode == 0, p.stderr
    d = json.loads(out.read_text())
    assert (d["videos"], d["instances"], d["classes"]) == expected
    for k, v in extra.items():
        assert d[k] == v, k
    assert str(expected[1]) in p.stdout and "instances" in p.stdout
    if "--config" in map(str, args):
        assert isinstance(d["unassignable"], int) and d["segment_steps"]["max"] > 0
        assert d["grid"]["max_seq_len"] > 0


def _thumos_test_rows():
    """(start, end, duration, fps) of every `Test` row of the THUMOS'14 fixture, read directly."""
    db = json.loads((D / "thumos14/thumos14.json").read_text())["database"]
    return [(*a["segment"], v["duration"], v["fps"]) for v in db.values()
            if v["subset"].lower() == "test" for a in v["annotations"]]


def _brute_force_assignable(ts, te, radius=1.5, n_levels=6):
    """Any pyramid point t = k * 2**l (every k from 0 to past the GT) strictly inside the
    centre-sampling window and inside its regression range (configs/_base_/actionformer.yaml)."""
    ranges = [[0, 4], [4, 8], [8, 16], [16, 32], [32, 64], [64, 10000]]
    c = (ts + te) / 2
    for lvl in range(n_levels):
        s = 2.0 ** lvl
        lo, hi = ranges[lvl]
        for k in range(int(te / s) + 2):
            t = k * s
            if max(c - radius * s, ts) < t < min(c + radius * s, te) and lo <= max(t - ts, te - t) <= hi:
                return True
    return False


def test_stats_feature_steps_and_unassignable(tmp_path):
    out = tmp_path / "s.json"
    p = _run("stats", "--annotations", D / "thumos14/thumos14.json", "--format", "actionformer", "--split",
             "Test", "--config", REPO / "configs/thumos14_i3d.yaml", "--json", out)
    assert p.returncode == 0, p.stderr
    d = json.loads(out.read_text())
    # expectations from the raw JSON and the config (feat_stride 4, num_frames 16, radius 1.5):
    # GTs clipped to the video, grid = (sec * fps - num_frames / 2) / feat_stride
    rows = _thumos_test_rows()
    steps = [(e - s) * f / 4 for s, e, _, f in rows]
    grid = lambda sec, f: (sec * f - 8) / 4
    unassignable = [r for r in rows if not _brute_force_assignable(
        grid(min(max(r[0], 0), r[2]), r[3]), grid(min(max(r[1], 0), r[2]), r[3]))]
    # the 26 past-the-end rows of video_test_0000270 start after the video: empty once clipped
    assert len(unassignable) == 26 and all(s >= dur for s, _, dur, _ in unassignable)
    assert d["unassignable"] == 26
    assert d["segment_steps"]["median"] == pytest.approx(float(np.median(steps)), rel=1e-9)
    assert d["segment_steps"]["max"] == pytest.approx(max(steps), rel=1e-9)
    assert d["grid"]["feat_stride"] == 4.0 and d["grid"]["num_frames"] == 16.0
    assert d["grid"]["max_seq_len"] == 2304


@pytest.mark.parametrize("args,needle", [
    (["--annotations", "/nonexistent/a.json", "--format", "actionformer"], "not found"),
    (["--annotations", D / "thumos14/thumos14.json", "--format", "csv"], "unknown annotation format"),
    (["--annotations", D / "thumos14/thumos14.json", "--format", "actionformer", "--split", "testing"],
     "matches no video"),
    (["--annotations", D / "ego4d/SOURCE.txt", "--format", "ego4d"], "not valid JSON"),
    (["--annotations", D / "thumos14/thumos14.json", "--format", "actionformer", "--config", "/nope.yaml"],
     "config file not found"),
    (["--annotations", D / "thumos14/thumos14.json", "--format", "actionformer",
      "--config", REPO / "configs/thumos14_i3d.yaml", "--override", "model.bogus=1"], "model.bogus"),
])
def test_stats_bad_input_exits_2(args, needle):
    p = _run("stats", *args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert needle in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_no_command_exits_2():
    p = _run("--annotations", "x")
    assert p.returncode == 2 and "expected a command" in p.stderr


def _check_setup(tmp_path, arrays):
    import numpy as np
    feats = tmp_path / "feats"
    feats.mkdir()
    for name, arr in arrays.items():
        np.save(feats / f"{name}.npy", arr)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"_base_: {REPO / 'configs/thumos14_i3d.yaml'}\n"
                   f"dataset: {{json_file: {D / 'thumos14/thumos14.json'}, feat_folder: [{feats}], input_dim: 4}}\n")
    return cfg


def test_check_features(tmp_path):
    import numpy as np
    good = np.zeros((10, 4), np.float32)
    cfg = _check_setup(tmp_path, {"video_test_0000004": good, "video_test_0000006": good, "stray": good})
    out = tmp_path / "c.json"
    p = _run("check", "--config", cfg, "--split", "test", "--json", out)
    assert p.returncode == 0, p.stderr
    d = json.loads(out.read_text())
    assert (d["videos"], d["with_features"], d["missing_features"], d["features_without_annotation"]) == (212, 2, 210, 1)
    p = _run("check", "--config", cfg, "--split", "test", "--strict")
    assert p.returncode == 2 and "no features" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("arr,needle", [
    ("wide", "does not match dataset.input_dim = 4"),
    ("nan", "NaN/inf"),
    ("empty", "empty features"),
])
def test_check_bad_features_exit_2(tmp_path, arr, needle):
    import numpy as np
    bad = {"wide": np.zeros((5, 6), np.float32), "nan": np.full((5, 4), np.nan, np.float32),
           "empty": np.zeros((0, 4), np.float32)}[arr]
    cfg = _check_setup(tmp_path, {"video_test_0000004": bad})
    p = _run("check", "--config", cfg, "--split", "test")
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr and "video_test_0000004" in p.stderr and len(p.stderr.strip().splitlines()) == 1
