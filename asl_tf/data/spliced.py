"""Spliced-clip test bed: long videos cut from real clips, with frame-exact ground truth.

No labelled real video is reachable from the machines this project is built on, yet the bugs
of a video pipeline (frame/timestamp alignment, fps resampling, the snippet-to-seconds
conversion, window stitching on a device) only show on real decoded pixels with exact ground
truth. This module builds that ground truth: each output video is a sequence of excerpts of
real clips, re-encoded with PyAV at one fps and size. Excerpts of the clips declared as
"actions" are the annotated segments (one class per action clip); excerpts of the other clips
are background. What it measures is shot-level localisation on real pixels — an alignment and
pipeline check, **not** an action benchmark.

Guarantees (tests/test_spliced.py):
- Cut points are frame-exact at the output fps: segment ``[k0 / fps, k1 / fps]`` seconds covers
  output frames ``k0 .. k1 - 1`` (``segment_frames: [k0, k1]`` in the JSON, ``frame_exact: true``).
- Output frame ``k`` of an excerpt that starts at source time ``s0`` shows the source frame on
  screen at ``s0 + (k - k0) / fps`` (the last frame whose presentation time is not after it), so
  sources of any frame rate, constant or variable, are resampled by their timestamps.
- Seeded: the same clips, config and seed give the same cut list.
- Train and held-out videos never share an excerpt: each source clip's time range is split at
  ``clip_split`` of its duration, the training videos draw from the part before and the
  held-out videos from the part after.
- Excerpt lengths, gaps and the order of classes vary; a ``short_action_prob`` share of the
  actions is shorter than 2 s; ``touch_prob`` of the videos start, and as many end, with an action.

Layout written by `write_spliced_set` (and `asl-data splice`):
``OUT/videos/<video_id>.mp4`` and ``OUT/annotations.json`` in the ActionFormer format
(``database`` keyed by video id: ``subset`` training|validation, ``duration``, ``fps``,
``annotations`` [{``segment``, ``segment_frames``, ``label``, ``label_id``}], plus ``pieces``:
every excerpt, action or background, with its source clip and source start time).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from fractions import Fraction
from typing import Optional, Sequence

import numpy as np

from asl_tf.errors import UserError
from asl_tf.fileio import atomic_path, atomic_write

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


@dataclasses.dataclass
class SpliceConfig:
    """How the spliced set is cut. Times in seconds; the preset is configs/data/spliced.yaml."""
    videos: int = 6                  # videos in all
    heldout: int = 2                 # of which held out (subset "validation")
    fps: str = "15"                  # output frame rate, a number or a ratio ("30000/1001")
    width: int = 224
    height: int = 224
    actions: Optional[Sequence[str]] = None   # clip stems that are actions; None: all but `background`
    background: Optional[Sequence[str]] = None  # clip stems that are background
    clip_split: float = 0.6          # train excerpts from [0, split*D), held-out from [split*D, D)
    actions_per_video: Sequence[int] = (3, 6)    # inclusive range
    action_len: Sequence[float] = (2.0, 4.0)     # seconds, ordinary actions
    short_len: Sequence[float] = (0.6, 1.9)      # seconds, short actions
    short_action_prob: float = 0.3
    gap_len: Sequence[float] = (0.8, 4.0)        # background between actions, seconds
    touch_prob: float = 0.35         # share of videos that start (and, separately, end) on an action
    crf: int = 18                    # x264 quality of the re-encode
    seed: int = 0

    def rate(self) -> Fraction:
        try:
            r = Fraction(str(self.fps))
        except (ValueError, ZeroDivisionError):
            raise UserError(f"splice: fps must be a number or a ratio like 30000/1001, got {self.fps!r}") from None
        if r <= 0:
            raise UserError(f"splice: fps must be positive, got {self.fps!r}")
        return r

    @classmethod
    def from_yaml(cls, path, section: str = "splice", **overrides) -> "SpliceConfig":
        """Read the `section` of a YAML file (configs/demo_spliced.yaml); keyword overrides win
        (None values are ignored)."""
        import yaml

        try:
            with open(path, encoding="utf-8") as f:
                doc = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise UserError(f"{path}: splice config not found") from None
        except (UnicodeDecodeError, yaml.YAMLError) as err:
            raise UserError(f"{path}: not a YAML file ({str(err).splitlines()[0]})") from None
        sec = doc.get(section) if isinstance(doc, dict) else None
        if not isinstance(sec, dict):
            raise UserError(f"{path}: no '{section}' mapping")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(sec) - set(fields))
        if unknown:
            raise UserError(f"{path}: unknown key(s) '{section}.{unknown[0]}' (known: {', '.join(fields)})")
        values = {**sec, **{k: v for k, v in overrides.items() if v is not None}}
        default = cls()
        for key, value in values.items():
            if not _type_ok(key, getattr(default, key), value):
                raise UserError(f"{path}: '{section}.{key}' has the wrong type ({value!r})")
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self):
        self.rate()
        if self.videos < 1 or not 0 <= self.heldout <= self.videos:
            raise UserError(f"splice: need videos >= 1 and 0 <= heldout <= videos, got "
                            f"videos={self.videos}, heldout={self.heldout}")
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise UserError(f"splice: width and height must be even and >= 16, got "
                            f"{self.width}x{self.height}")
        if not 0.05 <= self.clip_split <= 0.95:
            raise UserError(f"splice: clip_split must be in [0.05, 0.95], got {self.clip_split}")


def _type_ok(key, want, value) -> bool:
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if key in ("actions", "background"):
        return value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    if key == "fps":
        return isinstance(value, str) or number(value)
    if isinstance(want, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(want, float):
        return number(value)
    if isinstance(want, (list, tuple)):
        return isinstance(value, list) and len(value) == 2 and all(number(v) for v in value)
    return True


# ----------------------------------------------------------------------------- source clips

@dataclasses.dataclass
class SourceClip:
    """A decoded source clip: frames resized to the output size, with presentation times (s)."""
    name: str
    path: str
    times: np.ndarray        # [F] float64 seconds, increasing
    frames: np.ndarray       # [F, H, W, 3] uint8 RGB
    duration: float          # seconds: last frame's time + its display time

    def frame_at(self, t: float) -> np.ndarray:
        """The frame on screen at time t (the last one presented at or before t)."""
        i = int(np.searchsorted(self.times, t + 1e-9, side="right")) - 1
        return self.frames[min(max(i, 0), len(self.frames) - 1)]


def decode_clip(path, width: int, height: int) -> SourceClip:
    """Decode every frame of `path` with PyAV, resized (FFmpeg bilinear) to width x height RGB."""
    import av

    path = os.fspath(path)
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as err:
        raise UserError(f"{path}: not a readable video ({err})") from None
    with container:
        if not container.streams.video:
            raise UserError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        times, frames = [], []
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                times.append(float(frame.pts * stream.time_base))
                frames.append(frame.to_ndarray(format="rgb24", width=width, height=height,
                                               interpolation="BILINEAR"))
        except av.error.FFmpegError as err:
            if not frames:
                raise UserError(f"{path}: cannot decode ({err})") from None
    if len(frames) < 2:
        raise UserError(f"{path}: needs at least 2 decodable frames, got {len(frames)}")
    order = np.argsort(times, kind="stable")
    times = np.asarray(times, np.float64)[order]
    times -= times[0]
    step = float(np.median(np.diff(times)))
    return SourceClip(pathlib.Path(path).stem, path, times, np.stack(frames)[order],
                      float(times[-1] + step))


def find_clips(clips_dir) -> list:
    """The video files directly in `clips_dir`, sorted by name."""
    d = pathlib.Path(clips_dir)
    if not d.is_dir():
        raise UserError(f"{clips_dir}: not a folder of video clips")
    out = sorted(p for p in d.iterdir() if p.suffix.lower() in VIDEO_EXTS and p.is_file())
    if not out:
        raise UserError(f"{clips_dir}: no video files ({', '.join(VIDEO_EXTS)})")
    return out


# ----------------------------------------------------------------------------- the cut list

def _frames(seconds: float, rate: Fraction) -> int:
    return max(1, int(round(seconds * float(rate))))


def plan_videos(cfg: SpliceConfig, clips: dict) -> list:
    """The cut list: per video a dict(video_id, subset, pieces=[dict(kind, clip, label, src_start,
    k0, k1)]). `clips` maps stem -> duration in seconds. Pure: no decoding, seeded."""
    cfg.validate()
    rate = cfg.rate()
    names = sorted(clips)
    background = list(cfg.background) if cfg.background else []
    actions = list(cfg.actions) if cfg.actions else [n for n in names if n not in background]
    if not background:
        background = [n for n in names if n not in actions]
    for n in actions + background:
        if n not in clips:
            raise UserError(f"splice: clip '{n}' is not among the clips ({', '.join(names)})")
    if set(actions) & set(background):
        raise UserError(f"splice: clips both action and background: {sorted(set(actions) & set(background))}")
    if not actions or not background:
        raise UserError(f"splice: need at least one action clip and one background clip, got "
                        f"actions={actions}, background={background}")
    rng = np.random.default_rng(cfg.seed)

    def portion(clip, heldout):
        d = clips[clip]
        cut = cfg.clip_split * d
        return (cut, d) if heldout else (0.0, cut)

    def excerpt(clip, nframes, heldout):
        """A source start time so that nframes output frames fit in the clip's portion."""
        lo, hi = portion(clip, heldout)
        length = nframes / float(rate)
        if length > hi - lo + 1e-9:
            return None
        return float(rng.uniform(lo, max(lo, hi - length)))

    plans = []
    n_train = cfg.videos - cfg.heldout
    for v in range(cfg.videos):
        heldout = v >= n_train
        pieces, k = [], 0
        n_act = int(rng.integers(cfg.actions_per_video[0], cfg.actions_per_video[1] + 1))
        start_on_action = rng.random() < cfg.touch_prob
        end_on_action = rng.random() < cfg.touch_prob
        for a in range(n_act):
            if a > 0 or not start_on_action:
                k = _background(pieces, k, _frames(rng.uniform(*cfg.gap_len), rate), background,
                                heldout, excerpt, rng)
            clip = actions[int(rng.integers(len(actions)))]
            short = rng.random() < cfg.short_action_prob
            want = _frames(rng.uniform(*(cfg.short_len if short else cfg.action_len)), rate)
            lo, hi = portion(clip, heldout)
            n = min(want, int((hi - lo) * float(rate)))   # the portion bounds an excerpt's length
            if n < 1:
                raise UserError(f"splice: clip '{clip}' is too short for an excerpt")
            s0 = excerpt(clip, n, heldout)
            pieces.append(dict(kind="action", clip=clip, label=clip, src_start=s0, k0=k, k1=k + n))
            k += n
        if not end_on_action:
            k = _background(pieces, k, _frames(rng.uniform(*cfg.gap_len), rate), background,
                            heldout, excerpt, rng)
        plans.append(dict(video_id=f"spliced_{v:03d}",
                          subset="validation" if heldout else "training", pieces=pieces,
                          num_frames=k, actions=actions))
    return plans


def _background(pieces, k, n, background, heldout, excerpt, rng):
    """Append background excerpts covering n output frames from frame k; returns the new k."""
    while n > 0:
        clip = background[int(rng.integers(len(background)))]
        m = n
        s0 = excerpt(clip, m, heldout)
        while s0 is None and m > 1:      # longer than the clip's portion: split the gap
            m = (m + 1) // 2
            s0 = excerpt(clip, m, heldout)
        if s0 is None:
            raise UserError(f"splice: background clip '{clip}' is too short for an excerpt")
        pieces.append(dict(kind="background", clip=clip, label=None, src_start=s0, k0=k, k1=k + m))
        k += m
        n -= m
    return k


# ----------------------------------------------------------------------------- writing

def encode_video(path, frames_iter, rate: Fraction, width: int, height: int, crf: int):
    """H.264 (yuv420p) at `rate`; frame k gets pts k in time base 1/rate. Atomic."""
    import av

    with atomic_path(path, suffix=".mp4") as tmp:
        with av.open(tmp, mode="w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.time_base = 1 / rate
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            for k, rgb in enumerate(frames_iter):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = k
                frame.time_base = 1 / rate
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)


def render(plan: dict, sources: dict, rate: Fraction):
    """Yield the plan's output frames in order (RGB uint8)."""
    for p in plan["pieces"]:
        src = sources[p["clip"]]
        for j in range(p["k1"] - p["k0"]):
            yield src.frame_at(p["src_start"] + j / float(rate))


def annotation_entry(plan: dict, rate: Fraction) -> dict:
    """The ActionFormer-format database entry of one planned video."""
    fps = float(rate)
    label_ids = {name: i for i, name in enumerate(sorted(plan["actions"]))}
    anns = [{"segment": [p["k0"] / fps, p["k1"] / fps], "segment_frames": [p["k0"], p["k1"]],
             "label": p["label"], "label_id": label_ids[p["label"]]}
            for p in plan["pieces"] if p["kind"] == "action"]
    return {"subset": plan["subset"], "duration": plan["num_frames"] / fps, "fps": fps,
            "fps_ratio": str(rate), "num_frames": plan["num_frames"], "frame_exact": True,
            "annotations": anns,
            "pieces": [{"kind": p["kind"], "clip": p["clip"], "src_start": round(p["src_start"], 6),
                        "segment_frames": [p["k0"], p["k1"]]} for p in plan["pieces"]]}


def write_spliced_set(clips_dir, out_dir, cfg: SpliceConfig, progress=None) -> dict:
    """Decode the clips, plan, encode OUT/videos/*.mp4 and write OUT/annotations.json.

    Returns a summary dict. A rerun with the same inputs rewrites the same files; every file is
    written atomically, the annotation file last.
    """
    cfg.validate()
    rate = cfg.rate()
    paths = find_clips(clips_dir)
    sources = {p.stem: decode_clip(p, cfg.width, cfg.height) for p in paths}
    plans = plan_videos(cfg, {n: s.duration for n, s in sources.items()})
    out = pathlib.Path(out_dir)
    try:
        (out / "videos").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot create the output folder ({err.strerror})") from None
    db = {}
    for i, plan in enumerate(plans):
        encode_video(out / "videos" / f"{plan['video_id']}.mp4", render(plan, sources, rate), rate,
                     cfg.width, cfg.height, cfg.crf)
        db[plan["video_id"]] = annotation_entry(plan, rate)
        if progress:
            progress(i + 1, len(plans), plan["video_id"])
    meta = {"version": "spliced-1", "what": "shot-level localisation on real pixels: an alignment "
            "and pipeline check, not an action benchmark", "config": dataclasses.asdict(cfg),
            "classes": sorted(plans[0]["actions"]),
            "sources": {n: {"file": os.path.basename(s.path), "duration": s.duration,
                            "frames": int(len(s.frames))} for n, s in sources.items()}}
    with atomic_write(out / "annotations.json") as f:
        json.dump({"database": db, "spliced": meta}, f, indent=1)
    n_inst = sum(len(e["annotations"]) for e in db.values())
    return {"videos": len(db), "instances": n_inst,
            "seconds": round(sum(e["duration"] for e in db.values()), 3),
            "classes": meta["classes"], "out": str(out)}
