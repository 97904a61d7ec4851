"""Shared pieces of the annotation readers: `VideoRecord`, `AnnotationSet`, field checks that
name the file, video and field, file openers (plain or .gz), and `_Builder`, which collects a
reader's rows per video and turns them into records."""
from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import os
from typing import Iterable, Optional

import numpy as np

from asl_tf.fileio import atomic_write


@dataclasses.dataclass
class VideoRecord:
    """One video's ground truth.

    segments: [N, 2] float64 seconds (start, end), as in the file (not clipped).
    labels: [N] int64 label ids; label_names: [N] str.
    fps: frames per second used to map seconds to features (default_fps if given), or None.
    feat_stride, num_frames: feature grid of this video (None if not given).
    """
    video_id: str
    subset: Optional[str]
    duration: float
    fps: Optional[float]
    feat_stride: Optional[float]
    num_frames: Optional[float]
    segments: np.ndarray
    labels: np.ndarray
    label_names: list

    @property
    def num_instances(self) -> int:
        return int(self.segments.shape[0])


@dataclasses.dataclass
class AnnotationSet:
    """Records of one split plus the class map and row statistics.

    stats: {"videos", "rows", "past_end", "end_le_start", "negative_start",
            "duration_from_segments"} for the records returned.
    """
    path: str
    fmt: str
    records: list
    class_names: list
    stats: dict

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_instances(self) -> int:
        return sum(r.num_instances for r in self.records)

    def label_map(self) -> dict:
        """{label id: class name}."""
        return {i: n for i, n in enumerate(self.class_names)}

    def check_num_classes(self, num_classes: int) -> None:
        """Raise ValueError if a label id is >= num_classes (label out of the class map)."""
        for r in self.records:
            bad = np.nonzero((r.labels < 0) | (r.labels >= num_classes))[0]
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"{self.path}: video '{r.video_id}': label id {int(r.labels[i])} "
                                 f"('{r.label_names[i]}') is outside num_classes={num_classes}")

    def write_label_map(self, path) -> None:
        """Write `{"0": name, ...}` JSON atomically (next to any output that uses ids)."""
        path = os.fspath(path)
        with atomic_write(path) as f:
            json.dump({str(i): n for i, n in enumerate(self.class_names)}, f, indent=1)


# --------------------------------------------------------------------------- helpers

def _err(path, video, field, msg):
    where = f"{path}: "
    if video is not None:
        where += f"video '{video}': "
    if field is not None:
        where += f"field '{field}': "
    return ValueError(where + msg)


def _num(value, path, video, field):
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise _err(path, video, field, f"expected a number, got {value!r}") from None
    if not np.isfinite(out):
        raise _err(path, video, field, f"expected a finite number, got {value!r}")
    return out


def _get(obj, key, path, video, field=None):
    if not isinstance(obj, dict):
        raise _err(path, video, field, f"expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise _err(path, video, field or key, "missing")
    return obj[key]


def _segment(seg, path, video, field="segment"):
    if not isinstance(seg, (list, tuple)) or len(seg) != 2:
        raise _err(path, video, field, f"expected [start, end], got {seg!r}")
    return (_num(seg[0], path, video, field), _num(seg[1], path, video, field))


def _open_text(path, newline=None):
    """Open a text file, transparently gunzipping `*.gz`."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", newline=newline)
    return open(path, newline=newline)


def _load_json(path):
    try:
        with _open_text(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    except (UnicodeDecodeError, OSError, EOFError):
        raise ValueError(f"{path}: not a readable text (JSON) file") from None


def _read_csv(path, required):
    try:
        with _open_text(path, newline="") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            missing = [c for c in required if c not in fields]
            if missing:
                raise ValueError(f"{path}: missing CSV column(s) {missing} (has {fields})")
            rows = []
            for i, row in enumerate(reader):
                if None in row or any(row.get(c) is None for c in required):
                    raise ValueError(f"{path}: row {i + 2}: wrong number of columns")
                rows.append(row)
            return rows
    except (UnicodeDecodeError, OSError, EOFError):
        raise ValueError(f"{path}: not a readable text (CSV) file") from None
    except csv.Error as err:
        raise ValueError(f"{path}: malformed CSV ({err})") from None


def _hms(text, path, video, field):
    """'HH:MM:SS.ss' -> seconds."""
    parts = str(text).split(":")
    if len(parts) != 3:
        raise _err(path, video, field, f"expected HH:MM:SS.ss, got {text!r}")
    h, m, s = (_num(p, path, video, field) for p in parts)
    return h * 3600.0 + m * 60.0 + s


def _rank_names(names: Iterable[str]) -> list:
    return sorted(set(names))


class _Builder:
    """Collects per-video rows and turns them into records and a class map."""

    def __init__(self, path, fps_default, feat_stride, num_frames):
        self.path = path
        self.default_fps = fps_default
        self.feat_stride = feat_stride
        self.num_frames = num_frames
        self.videos = {}        # vid -> dict(subset, duration, fps, rows=[(s, e, id|None, name)])
        self.dur_from_segments = 0

    def video(self, vid, subset, duration, fps):
        if vid not in self.videos:
            self.videos[vid] = {"subset": subset, "duration": duration, "fps": fps, "rows": []}
        return self.videos[vid]

    def class_names_from_ids(self):
        """Class map from (id, name) pairs; ValueError if an id has two names or a name two ids."""
        by_id, by_name = {}, {}
        for vid, v in self.videos.items():
            for s, e, lid, name in v["rows"]:
                if by_id.setdefault(lid, name) != name:
                    raise _err(self.path, vid, "label_id", f"id {lid} is used for both "
                               f"'{by_id[lid]}' and '{name}'")
                if by_name.setdefault(name, lid) != lid:
                    raise _err(self.path, vid, "label", f"'{name}' has ids {by_name[name]} and {lid}")
        if not by_id:
            return []
        n = max(by_id) + 1
        return [by_id.get(i, f"class_{i}") for i in range(n)]

    def records(self, class_names, by_name=False):
        index = {n: i for i, n in enumerate(class_names)}
        out = []
        for vid, v in self.videos.items():
            rows = v["rows"]
            segs = np.array([(s, e) for s, e, _, _ in rows], dtype=np.float64).reshape(-1, 2)
            names = [n for _, _, _, n in rows]
            if by_name:
                labels = np.array([index[n] for n in names], dtype=np.int64)
            else:
                labels = np.array([lid for _, _, lid, _ in rows], dtype=np.int64)
            duration = v["duration"]
            if duration is None:
                duration = float(segs[:, 1].max()) if len(segs) else 0.0
                self.dur_from_segments += 1
            fps = self.default_fps if self.default_fps is not None else v["fps"]
            out.append(VideoRecord(
                video_id=vid, subset=v["subset"], duration=float(duration),
                fps=None if fps is None else float(fps),
                feat_stride=self.feat_stride, num_frames=self.num_frames,
                segments=segs, labels=labels, label_names=names))
        return out


def _split_set(split) -> Optional[set]:
    if split is None:
        return None
    if isinstance(split, str):
        split = [split]
    return {str(s).lower() for s in split}


def _as_list(x):
    if x is None:
        return []
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def _row_stats(records, dur_from_segments) -> dict:
    past = le = neg = rows = 0
    for r in records:
        s, e = r.segments[:, 0], r.segments[:, 1]
        rows += len(s)
        past += int(np.sum(e > r.duration))
        le += int(np.sum(e <= s))
        neg += int(np.sum(s < 0))
    return {"videos": len(records), "rows": rows, "past_end": past, "end_le_start": le,
            "negative_start": neg, "duration_from_segments": dur_from_segments}


def _plain_video(b, path, vid, v):
    """Register video `vid` of an entry with `subset` and `duration` (seconds, no fps) in
    builder `b`; returns its row holder."""
    subset = str(_get(v, "subset", path, vid))
    duration = _num(_get(v, "duration", path, vid), path, vid, "duration")
    return b.video(vid, subset, duration, None)
