"""Dataset statistics of an `AnnotationSet` (what `asl-data stats` prints).

Counts follow the issue 2 rulings: `instances` is every annotation row of the split as the file
has it; rows running past the video end, with end <= start, or starting before 0 are counted
separately. Lengths are given in seconds and, when the grid is known (fps, feat_stride,
num_frames), in feature steps.

`unassignable` counts the rows that no pyramid level can take as a positive under the
reference label assignment: a point of level l sits at `t = k * s_l` (k >= 0, input-grid units,
s_l = scale_factor**l); it is positive for a GT [ts, te] (grid units) iff t lies strictly inside
[max(c - r*s_l, ts), min(c + r*s_l, te)] (c the centre, r = center_sample_radius) and
`lo_l <= max(t - ts, te - t) <= hi_l`. Competition between overlapping GTs is ignored, rows with
end <= start are unassignable, and GTs are clipped to the video as in training.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from asl_tf.data.pipeline import sec_to_grid

__all__ = ["dataset_stats", "distribution", "is_assignable", "format_table"]


def distribution(values) -> Optional[dict]:
    """min / p25 / median / p75 / max / mean / sum of a 1-D array (None when empty)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None
    q = np.percentile(v, [0, 25, 50, 75, 100])
    return {"min": float(q[0]), "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]),
            "max": float(q[4]), "mean": float(v.mean()), "sum": float(v.sum())}


def is_assignable(ts: float, te: float, strides: Sequence[float], ranges: Sequence[Sequence[float]],
                  radius: float) -> bool:
    """True if some pyramid point is a positive for GT [ts, te] (grid units); see module doc."""
    if not te > ts:
        return False
    c = 0.5 * (ts + te)
    for s, (lo, hi) in zip(strides, ranges):
        left = max(c - radius * s, ts)
        right = min(c + radius * s, te)
        k0 = max(int(math.floor(left / s)), 0)
        k1 = int(math.ceil(right / s))
        for k in range(k0, k1 + 1):
            t = k * s
            if left < t < right:
                reg = max(t - ts, te - t)
                if lo <= reg <= hi:
                    return True
    return False


def dataset_stats(aset, *, split=None, fps: Optional[float] = None, feat_stride: Optional[float] = None,
                  num_frames: Optional[float] = None, regression_range=None, scale_factor: int = 2,
                  fpn_start_level: int = 0, center_sample_radius: float = 1.5,
                  max_seq_len: Optional[int] = None, force_upsampling: bool = False) -> dict:
    """Statistics of an AnnotationSet as a JSON-serializable dict.

    fps overrides the records' fps (else each record's own is used); feat_stride / num_frames
    override the records' grid. Feature-step figures are None when the grid is unknown.
    With `force_upsampling` (ANet) every video is resized to max_seq_len steps, so its stride is
    taken as `duration * fps / max_seq_len` (= num_frames), the reference's
    `((T-1)*feat_stride + num_frames)/max_seq_len` with T*feat_stride ~ duration*fps.
    """
    recs = aset.records
    segs = [r.segments for r in recs]
    all_segs = np.concatenate(segs, axis=0) if segs else np.zeros((0, 2))
    lengths = all_segs[:, 1] - all_segs[:, 0]
    present = sorted({int(l) for r in recs for l in r.labels})
    out = {
        "annotations": aset.path, "format": aset.fmt, "split": split,
        "videos": len(recs),
        "instances": int(all_segs.shape[0]),
        "classes": aset.num_classes,
        "classes_present": len(present),
        "rows_past_end": aset.stats["past_end"],
        "rows_end_le_start": aset.stats["end_le_start"],
        "rows_negative_start": aset.stats["negative_start"],
        "videos_without_instances": int(sum(r.num_instances == 0 for r in recs)),
        "videos_duration_from_segments": aset.stats["duration_from_segments"],
        "duration_s": distribution([r.duration for r in recs]),
        "segment_s": distribution(lengths),
        "instances_per_video": distribution([r.num_instances for r in recs]),
    }
    # the feature grid of each video
    grids = []
    for r in recs:
        f = fps if fps is not None else r.fps
        st = feat_stride if feat_stride is not None else r.feat_stride
        nf = num_frames if num_frames is not None else r.num_frames
        if force_upsampling and max_seq_len and f is not None and r.duration > 0:
            st = nf = r.duration * f / max_seq_len
        grids.append(None if f is None or st is None or nf is None or st <= 0 else (f, st, nf))
    known = all(g is not None for g in grids) and bool(recs)
    out["grid"] = None
    out["duration_steps"] = out["segment_steps"] = None
    out["unassignable"] = out["longer_than_max_seq_len"] = None
    if not known:
        out["grid_note"] = "feature-step figures need fps, feat_stride and num_frames (give --config or flags)"
        return out
    if regression_range is None:
        regression_range = [[0, 4], [4, 8], [8, 16], [16, 32], [32, 64], [64, 10000]]
    strides = [float(scale_factor ** i) for i in range(fpn_start_level, fpn_start_level + len(regression_range))]
    dur_steps, seg_steps = [], []
    unassignable = longer = 0
    for r, (f, st, nf) in zip(recs, grids):
        dur_steps.append(r.duration * f / st)
        seg_steps.extend(((r.segments[:, 1] - r.segments[:, 0]) * f / st).tolist())
        clipped = np.clip(r.segments, 0.0, r.duration)
        g = sec_to_grid(clipped, f, st, nf)
        for ts, te in g:
            if not is_assignable(float(ts), float(te), strides, regression_range, center_sample_radius):
                unassignable += 1
            if max_seq_len is not None and te - ts > max_seq_len:
                longer += 1
    fpss = sorted({g[0] for g in grids})
    out["grid"] = {"fps": fpss[0] if len(fpss) == 1 else "per video", "force_upsampling": force_upsampling,
                   "feat_stride": grids[0][1] if len({g[1] for g in grids}) == 1 else "per video",
                   "num_frames": grids[0][2] if len({g[2] for g in grids}) == 1 else "per video",
                   "strides": strides, "regression_range": [list(map(float, x)) for x in regression_range],
                   "center_sample_radius": center_sample_radius, "max_seq_len": max_seq_len}
    out["duration_steps"] = distribution(dur_steps)
    out["segment_steps"] = distribution(seg_steps)
    out["unassignable"] = unassignable
    out["longer_than_max_seq_len"] = longer if max_seq_len is not None else None
    return out


def _fmt(x):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.2f}"
    return str(x)


def format_table(stats: dict) -> str:
    """Human-readable table of `dataset_stats` output."""
    lines = [f"{stats['annotations']} ({stats['format']}, split={stats['split']})"]
    for key in ("videos", "instances", "classes", "classes_present", "rows_past_end",
                "rows_end_le_start", "rows_negative_start", "videos_without_instances",
                "unassignable", "longer_than_max_seq_len"):
        lines.append(f"  {key:<26} {_fmt(stats.get(key))}")
    head = f"  {'distribution':<26} " + " ".join(f"{k:>9}" for k in ("min", "p25", "median", "p75", "max", "mean"))
    lines.append(head)
    for key in ("duration_s", "duration_steps", "segment_s", "segment_steps", "instances_per_video"):
        d = stats.get(key)
        vals = " ".join(f"{_fmt(d[k]) if d else '-':>9}" for k in ("min", "p25", "median", "p75", "max", "mean"))
        lines.append(f"  {key:<26} {vals}")
    if stats.get("grid"):
        g = stats["grid"]
        lines.append(f"  grid: fps={g['fps']} feat_stride={g['feat_stride']} num_frames={g['num_frames']} "
                     f"strides={g['strides']} max_seq_len={g['max_seq_len']}")
    elif stats.get("grid_note"):
        lines.append(f"  note: {stats['grid_note']}")
    return "\n".join(lines)
