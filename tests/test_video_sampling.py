"""edge/frames.py: timestamp resampling to the recipe's grid, snippet timing, bad videos.

No TensorFlow: tiny videos written with PyAV (tests/video_fixtures.py) whose frame j is grey
level 8j, so the frame each snippet uses is read back from its pixels and compared with the
frame on screen at the snippet's sample time, computed here from the timestamps we wrote."""
import fractions

import numpy as np
import pytest

import video_fixtures as vf
from conftest import REPO
from edge.frames import (SnippetGrid, VideoError, VideoReader, iter_snippets, rgb_converter,
                        snippet_offsets)

BIKES = f"{REPO}/tests/fixtures/videos/bikes.mp4"


def _expected(pts_s, duration, fps, stride, n, k):
    """Independent reference: per snippet, the indices of the frames on screen at its samples."""
    pts_s = np.asarray(pts_s, np.float64) - pts_s[0]
    frames = int(np.floor(duration * fps + 1e-6))
    T = (frames - n) // stride + 1 if frames >= n else 0
    q = n // k
    out = []
    for i in range(T):
        times = [(i * stride + m * q + (q - 1) // 2 + 0.5) / fps for m in range(k)]
        out.append([int(np.searchsorted(pts_s, t, side="right") - 1) for t in times])
        # the mean sample time is the detector's centre (i * stride + n / 2) / fps
        assert np.mean(times) == pytest.approx((i * stride + n / 2) / fps, abs=1e-12)
    return out


def _snippets(path, grid, **kw):
    reader = VideoReader(path, **kw)
    got = [(i, [vf.frame_index(f) for f in frames])
           for i, frames in iter_snippets(reader, grid, rgb_converter(8))]
    return got, reader


def test_offsets_are_symmetric_and_refused_otherwise():
    assert snippet_offsets(5, 1) == [2]
    assert snippet_offsets(15, 5) == [1, 4, 7, 10, 13]
    assert snippet_offsets(6, 2) == [1, 4]
    for n, k in ((4, 1), (16, 1), (6, 3), (5, 2)):
        with pytest.raises(ValueError, match="symmetrically"):
            snippet_offsets(n, k)
    g = SnippetGrid(10, 5, 5)
    assert g.num_snippets(10.0) == 20 and g.num_snippets(0.49) == 0 and g.num_snippets(0.5) == 1
    assert g.centre(3) == pytest.approx(1.75) and g.end(3) == pytest.approx(2.0)


@pytest.mark.parametrize("case", ["vfr", "ntsc_23.976", "src_10fps", "src_30fps_dense"])
def test_resampling_by_timestamps(case, tmp_path):
    rng = np.random.default_rng(3)
    if case == "vfr":  # variable frame rate: gaps 20..89 ms (ms time base, as in .mkv)
        tb, pts = fractions.Fraction(1, 1000), np.concatenate([[0], np.cumsum(
            rng.integers(20, 90, size=79))])
        grid, cont = (10, 5, 5, 1), "matroska"
    elif case == "ntsc_23.976":
        tb, pts = fractions.Fraction(1001, 24000), np.arange(120)
        grid, cont = (10, 5, 5, 1), "nut"
    elif case == "src_10fps":  # source at the grid's own rate: frame 5i + 2 exactly
        tb, pts = fractions.Fraction(1, 10), np.arange(37)
        grid, cont = (10, 5, 5, 1), "nut"
    else:
        tb, pts = fractions.Fraction(1, 30), np.arange(120) + 7  # starts at 0.233 s
        grid, cont = (10, 5, 15, 5), "nut"
    path = vf.write_video(tmp_path / f"{case}.{'mkv' if cont == 'matroska' else 'nut'}", pts, tb,
                          container=cont, rate=fractions.Fraction(1) / tb if case != "vfr" else 30)
    got, reader = _snippets(path, SnippetGrid(*grid))
    pts_s = np.asarray(pts, np.float64) * float(tb)
    exp = _expected(pts_s, reader.duration, *grid)
    assert reader.frame_count == len(pts)
    assert len(exp) > 4
    assert [i for i, _ in got] == list(range(len(exp)))
    assert [f for _, f in got] == [[j % 32 for j in e] for e in exp]
    if case == "src_10fps":  # 37 frames = 3.7 s -> 7 snippets, frame 5i + 2 each
        assert [f for _, f in got] == [[(5 * i + 2) % 32] for i in range(7)]


def test_real_clip_grid_and_duration():
    reader = VideoReader(BIKES)
    grid = SnippetGrid(10, 5, 5)
    n = sum(1 for _ in iter_snippets(reader, grid, lambda f: np.zeros((1, 1, 3), np.uint8)))
    # bikes.mp4: 250 frames at 25 fps = 10.0 s -> 100 frames at 10 fps -> 20 snippets
    assert (reader.frame_count, reader.duration, n) == (250, pytest.approx(10.0), 20)


@pytest.mark.parametrize("pix_fmt,codec", [("gray", "ffv1"), ("yuv444p", "ffv1"),
                                           ("yuv420p10le", "ffv1"), ("bgr0", "ffv1"),
                                           ("gbrp10le", "ffv1")])
def test_pixel_formats_convert_to_rgb(pix_fmt, codec, tmp_path):
    """Uncommon pixel formats (grey, 4:4:4, 10-bit YUV, BGR, 10-bit planar RGB) come out as
    the right RGB."""
    path = vf.write_video(tmp_path / f"v_{pix_fmt}.nut", np.arange(12),
                          fractions.Fraction(1, 10), pix_fmt=pix_fmt, codec=codec,
                          container="nut", values=[96] * 12)
    reader = VideoReader(path)
    snips = list(iter_snippets(reader, SnippetGrid(10, 5, 5), rgb_converter(8)))
    assert len(snips) == 2
    rgb = snips[0][1]
    assert rgb.shape == (1, 8, 8, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - 96).max() <= 2


def test_bad_videos(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    with pytest.raises(VideoError, match="not a readable video"):
        VideoReader(str(text))
    with pytest.raises(FileNotFoundError, match="video file not found"):
        VideoReader(str(tmp_path / "missing.mp4"))
    wav = vf.write_audio_only(tmp_path / "sound.wav")
    with pytest.raises(VideoError, match=r"no video stream \(streams: audio\)"):
        VideoReader(wav)
    # truncated: an .mp4 cut in half loses its index; an .mkv cut in half decodes only half
    data = open(BIKES, "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[:len(data) // 2])
    with pytest.raises(VideoError, match="not a readable video"):
        VideoReader(str(tmp_path / "cut.mp4"))
    mkv = vf.write_video(tmp_path / "full.mkv", np.arange(80) * 100, fractions.Fraction(1, 1000),
                         container="matroska")
    data = open(mkv, "rb").read()
    (tmp_path / "cut.mkv").write_bytes(data[:len(data) // 2])
    reader = VideoReader(str(tmp_path / "cut.mkv"))
    with pytest.raises(VideoError, match="truncated video: the container says 8.00 s"):
        list(reader.frames())
    grid = SnippetGrid(10, 5, 5)
    # 1 frame, and a clip of 4 frames at 10 fps (0.4 s): shorter than one 0.5 s snippet
    for name, n in (("one.nut", 1), ("short.nut", 4)):
        path = vf.write_video(tmp_path / name, np.arange(n), fractions.Fraction(1, 10),
                              container="nut")
        with pytest.raises(VideoError, match=f"\\({n} frames\\), shorter than one snippet"):
            list(iter_snippets(VideoReader(path), grid, rgb_converter(8)))
    # exactly one snippet long: one snippet
    path = vf.write_video(tmp_path / "five.nut", np.arange(5), fractions.Fraction(1, 10),
                          container="nut")
    assert [i for i, _ in iter_snippets(VideoReader(path), grid, rgb_converter(8))] == [0]


@pytest.mark.parametrize("stall", [None, 30])
def test_camera_that_stops_sending_ends_cleanly(stall, tmp_path):
    """A network camera sends 4 s of video, then closes (EOF) or stalls with the connection open
    (the read timeout ends it): the stream ends with the snippets of what it had."""
    url = vf.camera_server(vf.camera_stream(tmp_path / "cam.ts", frames=40), stall_s=stall)
    reader = VideoReader(url, timeout=1.0)
    snips = list(iter_snippets(reader, SnippetGrid(10, 5, 5), rgb_converter(8)))
    assert reader.frame_count == 40 and reader.duration == pytest.approx(4.0)
    assert [i for i, _ in snips] == list(range(8))
    assert [vf.frame_index(f[0]) for _, f in snips] == [(5 * i + 2) % 32 for i in range(8)]
    assert reader.stopped_by == ("eof" if stall is None else "timeout: no data for 1.0 s")
