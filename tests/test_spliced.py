"""The spliced-clip test bed (asl_tf/data/spliced.py, `asl-data splice`): cut lists and real
re-encoded pixels against the declared sources, frame-exact at integer and NTSC frame rates."""
import json
import os
import pathlib
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

from asl_tf.data.spliced import SpliceConfig, decode_clip, plan_videos, write_spliced_set
from asl_tf.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]
CLIPS = REPO / "tests" / "fixtures" / "videos"
SIZE = 64


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-9))


def test_plan_properties_over_many_videos():
    clips = {"a": 10.0, "b": 4.0, "bg": 8.0}
    cfg = SpliceConfig(videos=40, heldout=15, fps="15", actions=["a", "b"], background=["bg"], seed=3)
    plans = plan_videos(cfg, clips)
    assert plans == plan_videos(cfg, clips)                      # seeded
    assert plans != plan_videos(SpliceConfig(**{**cfg.__dict__, "seed": 4}), clips)
    short = touch_start = touch_end = 0
    lengths, orders = set(), set()
    for p in plans:
        pieces = p["pieces"]
        # contiguous, non-empty pieces covering the whole video
        assert pieces[0]["k0"] == 0 and pieces[-1]["k1"] == p["num_frames"]
        assert all(x["k1"] == y["k0"] for x, y in zip(pieces, pieces[1:]))
        assert all(x["k1"] > x["k0"] for x in pieces)
        heldout = p["subset"] == "validation"
        for x in pieces:   # train / held-out excerpts come from disjoint parts of each clip
            s0, s1 = x["src_start"], x["src_start"] + (x["k1"] - x["k0"]) / 15
            cut = 0.6 * clips[x["clip"]]
            assert (s0 >= cut - 1e-9 and s1 <= clips[x["clip"]] + 1e-9) if heldout else (s0 >= 0 and s1 <= cut + 1e-9)
            assert (x["kind"] == "action") == (x["clip"] in ("a", "b"))
        acts = [x for x in pieces if x["kind"] == "action"]
        # two actions are never adjacent: each is a separate instance
        assert not any(x["kind"] == y["kind"] == "action" for x, y in zip(pieces, pieces[1:]))
        short += sum((x["k1"] - x["k0"]) / 15 < 2.0 for x in acts)
        touch_start += pieces[0]["kind"] == "action"
        touch_end += pieces[-1]["kind"] == "action"
        lengths |= {x["k1"] - x["k0"] for x in acts}
        orders.add(tuple(x["clip"] for x in acts))
    assert [p["subset"] for p in plans].count("validation") == 15
    assert short >= 5 and touch_start >= 3 and touch_end >= 3
    assert len(lengths) > 10 and len(orders) > 10


def test_bad_configs_are_user_errors():
    clips = {"a": 10.0, "bg": 8.0}
    for bad in (dict(fps="0"), dict(fps="x"), dict(heldout=9), dict(width=63),
                dict(actions=["nope"]), dict(actions=["a"], background=["a"])):
        with pytest.raises(UserError):
            plan_videos(SpliceConfig(**{"videos": 4, "heldout": 1, **bad}), clips)
    with pytest.raises(UserError, match="background"):
        plan_videos(SpliceConfig(videos=2, heldout=1, actions=["a", "bg"]), clips)


@pytest.mark.parametrize("fps", ["15", "30000/1001"])
def test_written_videos_are_frame_exact(tmp_path, fps):
    cfg = SpliceConfig(videos=2, heldout=1, fps=fps, width=SIZE, height=SIZE,
                       actions=["carphone_pristine"], background=["bikes"],
                       actions_per_video=[2, 3], gap_len=[0.5, 1.5], seed=1)
    summary = write_spliced_set(CLIPS, tmp_path, cfg)
    assert summary["videos"] == 2 and summary["classes"] == ["carphone_pristine"]
    gt = json.loads((tmp_path / "annotations.json").read_text())["database"]
    rate = Fraction(fps)
    sources = {n: decode_clip(CLIPS / f"{n}.mp4", SIZE, SIZE) for n in ("bikes", "carphone_pristine")}
    assert {v["subset"] for v in gt.values()} == {"training", "validation"}
    for vid, entry in gt.items():
        with av.open(str(tmp_path / "videos" / f"{vid}.mp4")) as c:
            s = c.streams.video[0]
            frames = [(f.pts * s.time_base, f.to_ndarray(format="rgb24")) for f in c.decode(s)]
        assert len(frames) == entry["num_frames"]
        assert [t for t, _ in frames] == [Fraction(k) / rate for k in range(len(frames))]
        assert entry["duration"] == pytest.approx(len(frames) / float(rate), abs=1e-9)
        for a in entry["annotations"]:
            k0, k1 = a["segment_frames"]
            assert a["segment"] == pytest.approx([k0 / float(rate), k1 / float(rate)], abs=1e-12)
        pieces = entry["pieces"]
        for prev, cur in zip(pieces, pieces[1:]):
            k = cur["segment_frames"][0]     # the first frame after a cut ...
            want = sources[cur["clip"]].frame_at(cur["src_start"])
            assert _psnr(frames[k][1], want) > 28
            # ... is the new source's, and the frame before it still the previous piece's
            last = sources[prev["clip"]].frame_at(prev["src_start"] + (k - 1 - prev["segment_frames"][0]) / float(rate))
            assert _psnr(frames[k - 1][1], last) > 28
            if prev["clip"] != cur["clip"]:
                assert _psnr(frames[k][1], last) < 20


def test_annotations_read_with_the_actionformer_reader(tmp_path):
    from asl_tf.data.annotations import read_annotations

    cfg = SpliceConfig(videos=3, heldout=1, width=32, height=32, actions=["carphone_pristine"],
                       background=["bikes"], actions_per_video=[2, 2], seed=2)
    write_spliced_set(CLIPS, tmp_path, cfg)
    gt = json.loads((tmp_path / "annotations.json").read_text())["database"]
    train = read_annotations(tmp_path / "annotations.json", "actionformer", split="training")
    held = read_annotations(tmp_path / "annotations.json", "actionformer", split="validation")
    assert len(train.records) == 2 and len(held.records) == 1
    for r in train.records + held.records:
        want = [a["segment"] for a in gt[r.video_id]["annotations"]]
        np.testing.assert_allclose(np.asarray(r.segments), np.asarray(want), atol=1e-9)
        assert r.duration == pytest.approx(gt[r.video_id]["duration"])


def test_cli_splice_and_its_errors(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "asl_tf.cli.data", "splice", "--clips", str(CLIPS), "--out",
           str(tmp_path / "out"), "--videos", "2", "--heldout", "1", "--size", "32x32"]
    bad = subprocess.run(cmd[:4] + [str(tmp_path / "nowhere")] + cmd[5:], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "nowhere" in bad.stderr and not (tmp_path / "out").exists()
    # the preset's clips are not all in the fixtures folder: name the ones that are
    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "bigbuckbunny" in res.stderr
    (tmp_path / "sp.yaml").write_text("splice:\n  actions: [carphone_pristine]\n  background: [bikes]\n")
    res = subprocess.run(cmd + ["--splice-config", str(tmp_path / "sp.yaml")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(tmp_path / "out" / "videos")) == ["spliced_000.mp4", "spliced_001.mp4"]
    assert "carphone_pristine" in (tmp_path / "out" / "annotations.json").read_text()
