"""Annotation readers: every supported file format -> one list of `VideoRecord`.

`read_annotations(path, fmt, ...)` returns an `AnnotationSet` with `.records` (one per video of
the split, in file order), `.class_names` (index = integer label id) and `.stats`.

Formats (`fmt`):
- `actionformer`: `{"database": {vid: {subset, duration, fps, annotations: [{label, segment [s],
  label_id}]}}}` (THUMOS14, MultiThumos, ActionFormer's ANet/EPIC/Ego4D conversions).
- `anet`: the official ActivityNet `activity_net.v1-3.min.json` (`database`, no fps, no ids;
  ids = ranks of the sorted label names of the whole file).
- `anet_bsn`: BSN's `anet_anno_action.json` (`{v_id: {duration_second, annotations}}`) with
  `video_info_new.csv` (subset, fps) as `video_info`; ids = ranks of the sorted names.
- `superevents`: `{vid: {subset, duration, actions: [[class, start_s, end_s]]}}` (Charades 0-based,
  MultiThumos 1-based: pass `label_offset=1`).
- `epic`: EPIC-KITCHENS-100 CSV (`EPIC_100_{train,validation}.csv`, HH:MM:SS.ss timestamps);
  `video_info` = `EPIC_100_video_info.csv` (duration, fps); `class_file` =
  `EPIC_100_{verb,noun}_classes.csv`.
- `epic_c2`: the C2 action-detection CSVs (`c2_*.csv`, frames at a uniform 30 fps);
  `video_info` = `c2_video_lengths.csv` (frames at 30 fps).
  For both EPIC formats `label` is `verb`, `noun` or `action`; the action id is
  `verb_class * 300 + noun_class`, the convention of the official C2 evaluator
  (`evaluate_detection_json_ek100.py`, `num_nouns=300`), not the `action` column of the c2 files.
- `ego4d`: the official Moment Queries file (`{"videos": [{video_uid, split, clips: [{clip_uid,
  video_start_sec, video_end_sec, annotations: [{labels: [{start_time, end_time, label,
  primary}]}]}]}]}`; one record per clip, primary labels only, times relative to the clip), or
  the per-clip layout `{clip_id: {subset, duration, fps?, annotations: [{segment, label,
  label_id?}]}}` (optionally under `"database"`). Without `label_id`, ids = sorted names' ranks.

Messy rows (documented policy, issue 2 rulings): rows that end past the video, or have
end <= start, are KEPT as the file has them (evaluation scores them as the official scorers do)
and counted in `.stats` (`past_end`, `end_le_start`); the training pipeline clips rows to the
video and drops end <= start rows. Files that cannot be read as the format (missing fields,
non-numeric values, labels outside the class map, inconsistent class maps) raise ValueError
naming the file, the video and the field; a missing file raises FileNotFoundError.
Segments are float64 seconds; labels int64.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import os
from typing import Iterable, Optional, Sequence, Union

import numpy as np
from absl import logging

from asl_tf.fileio import atomic_write

__all__ = ["VideoRecord", "AnnotationSet", "read_annotations", "FORMATS", "EPIC_NUM_NOUNS"]

FORMATS = ("actionformer", "anet", "anet_bsn", "superevents", "epic", "epic_c2", "ego4d")
EPIC_NUM_NOUNS = 300        # official C2 evaluator: action = verb * num_nouns + noun
EPIC_C2_FPS = 30.0          # c2_*.csv frame numbers are at a uniform 30 fps
EPIC_NUM_VERBS = 97         # official class counts (EPIC_100_{verb,noun}_classes.csv, C2 evaluator)


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


# --------------------------------------------------------------------------- formats

def _read_actionformer(path, b: _Builder, allow_missing=False):
    """ActionFormer JSON (and the Ego4D per-clip layout when allow_missing)."""
    data = _load_json(path)
    db = data.get("database", data) if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise ValueError(f"{path}: expected a JSON object with a 'database' mapping")
    has_ids = True
    for vid, v in db.items():
        if not isinstance(v, dict):
            raise _err(path, vid, None, f"expected a JSON object, got {type(v).__name__}")
        subset = _get(v, "subset", path, vid)
        if "duration" in v:
            duration = _num(v["duration"], path, vid, "duration")
        elif allow_missing:
            duration = None
        else:
            raise _err(path, vid, "duration", "missing")
        fps = _num(v["fps"], path, vid, "fps") if v.get("fps") is not None else None
        rec = b.video(vid, str(subset), duration, fps)
        anns = v.get("annotations", [])
        if not isinstance(anns, list):
            raise _err(path, vid, "annotations", "expected a list")
        for a in anns:
            s, e = _segment(_get(a, "segment", path, vid), path, vid)
            name = str(_get(a, "label", path, vid))
            if "label_id" in a:
                lid = a["label_id"]
                if isinstance(lid, bool) or not isinstance(lid, (int, float)) or int(lid) != lid or lid < 0:
                    raise _err(path, vid, "label_id", f"expected a non-negative integer, got {lid!r}")
                lid = int(lid)
            elif allow_missing:
                lid, has_ids = None, False
            else:
                raise _err(path, vid, "label_id", "missing")
            rec["rows"].append((s, e, lid, name))
    if not has_ids:
        names = _rank_names(n for v in b.videos.values() for *_, n in v["rows"])
        return names, True
    return b.class_names_from_ids(), False


def _read_anet(path, b: _Builder):
    data = _load_json(path)
    db = data.get("database") if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise ValueError(f"{path}: expected the ActivityNet schema with a 'database' mapping")
    for vid, v in db.items():
        subset = str(_get(v, "subset", path, vid))
        duration = _num(_get(v, "duration", path, vid), path, vid, "duration")
        rec = b.video(vid, subset, duration, None)
        for a in v.get("annotations", []) or []:
            s, e = _segment(_get(a, "segment", path, vid), path, vid)
            rec["rows"].append((s, e, None, str(_get(a, "label", path, vid))))
    return _rank_names(n for v in b.videos.values() for *_, n in v["rows"]), True


def _read_anet_bsn(path, b: _Builder, video_info):
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{video_id: {{duration_second, annotations}}}}")
    info = {}
    if video_info is not None:
        for row in _read_csv(video_info, ["video", "fps", "subset"]):
            info[row["video"]] = row
    else:
        logging.warning("%s: no video_info CSV given: subsets unknown, fps from default_fps", path)
    for vid, v in data.items():
        if "duration_second" in v:
            duration = _num(v["duration_second"], path, vid, "duration_second")
        else:
            duration = None
        row = info.get(vid)
        if video_info is not None and row is None:
            raise _err(video_info, vid, "video", f"no row for this video of {path}")
        subset = row["subset"] if row else None
        fps = _num(row["fps"], video_info, vid, "fps") if row else None
        if duration is None and row and "seconds" in row:
            duration = _num(row["seconds"], video_info, vid, "seconds")
        rec = b.video(vid, subset, duration, fps)
        for a in v.get("annotations", []) or []:
            s, e = _segment(_get(a, "segment", path, vid), path, vid)
            rec["rows"].append((s, e, None, str(_get(a, "label", path, vid))))
    if video_info is not None:
        extra = sorted(set(info) - set(data))
        if extra:
            logging.warning("%s: %d videos have no entry in %s (e.g. %s)", video_info, len(extra),
                            path, extra[0])
    return _rank_names(n for v in b.videos.values() for *_, n in v["rows"]), True


def _read_superevents(path, b: _Builder, label_offset):
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{video: {{subset, duration, actions}}}}")
    for vid, v in data.items():
        subset = str(_get(v, "subset", path, vid))
        duration = _num(_get(v, "duration", path, vid), path, vid, "duration")
        rec = b.video(vid, subset, duration, None)
        actions = _get(v, "actions", path, vid)
        if not isinstance(actions, list):
            raise _err(path, vid, "actions", "expected a list of [class, start, end]")
        for act in actions:
            if not isinstance(act, (list, tuple)) or len(act) != 3:
                raise _err(path, vid, "actions", f"expected [class, start, end], got {act!r}")
            c = _num(act[0], path, vid, "actions[class]")
            if int(c) != c:
                raise _err(path, vid, "actions[class]", f"expected an integer class, got {act[0]!r}")
            lid = int(c) - int(label_offset)
            if lid < 0:
                raise _err(path, vid, "actions[class]", f"class {int(c)} - label_offset {label_offset} "
                           "is negative (label out of the class map; check --label-offset)")
            s = _num(act[1], path, vid, "actions[start]")
            e = _num(act[2], path, vid, "actions[end]")
            rec["rows"].append((s, e, lid, None))
    ids = [lid for v in b.videos.values() for _, _, lid, _ in v["rows"]]
    n = max(ids) + 1 if ids else 0
    names = [f"class_{i}" for i in range(n)]
    for v in b.videos.values():
        v["rows"] = [(s, e, lid, names[lid]) for s, e, lid, _ in v["rows"]]
    return names, False


def _read_class_csv(path):
    """EPIC class CSV (`id,key,...`) -> names indexed by id."""
    names = {}
    for row in _read_csv(path, ["id", "key"]):
        i = _num(row["id"], path, None, "id")
        names[int(i)] = row["key"]
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{path}: class ids are not 0..{len(names) - 1}")
    return [names[i] for i in range(len(names))]


def _epic_class_names(label, class_file, rows_ids):
    """Class map for verb / noun / action; from class_file when given."""
    if label == "action":
        verbs = nouns = None
        if class_file:
            verbs, nouns = class_file
        n_verbs = len(verbs) if verbs else max(
            EPIC_NUM_VERBS, max((i // EPIC_NUM_NOUNS for i in rows_ids), default=-1) + 1)
        names = []
        for v in range(n_verbs):
            for n in range(EPIC_NUM_NOUNS):
                vn = verbs[v] if verbs else f"verb_{v}"
                nn = nouns[n] if nouns and n < len(nouns) else f"noun_{n}"
                names.append(f"{vn},{nn}")
        return names
    if class_file:
        return list(class_file)
    n = max({"verb": EPIC_NUM_VERBS, "noun": EPIC_NUM_NOUNS}[label], max(rows_ids, default=-1) + 1)
    return [f"{label}_{i}" for i in range(n)]


def class_file_name(class_file):
    return "from the class file" if class_file else "from the rows"


def _subset_from_name(path):
    base = os.path.basename(path).lower()
    for key, subset in (("validation", "validation"), ("val", "validation"), ("train", "training"),
                        ("test", "testing")):
        if key in base:
            return subset
    return None


def _epic_label(row, label, cols, path, vid, line):
    """Integer label of one EPIC row; cols = (verb column, noun column)."""
    def ci(col):
        v = _num(row[col], path, vid, col)
        if int(v) != v or v < 0:
            raise _err(path, vid, col, f"row {line}: expected a non-negative integer, got {row[col]!r}")
        return int(v)
    if label == "verb":
        return ci(cols[0])
    if label == "noun":
        return ci(cols[1])
    return ci(cols[0]) * EPIC_NUM_NOUNS + ci(cols[1])


def _read_epic(path, b: _Builder, label, video_info, class_file, c2: bool):
    subset = _subset_from_name(path)
    if c2:
        rows = _read_csv(path, ["video", "start", "stop", "verb", "noun"])
        vcol, to_sec = "video", lambda x, vid, f: _num(x, path, vid, f) / EPIC_C2_FPS
        verb_col, noun_col = "verb", "noun"
    else:
        rows = _read_csv(path, ["video_id", "start_timestamp", "stop_timestamp", "verb_class", "noun_class"])
        vcol, to_sec = "video_id", lambda x, vid, f: _hms(x, path, vid, f)
        verb_col, noun_col = "verb_class", "noun_class"
    info = {}
    if video_info is not None:
        if c2:
            for r in _read_csv(video_info, ["video", "frames"]):
                frames = _num(r["frames"], video_info, r["video"], "frames")
                info[r["video"]] = (frames / EPIC_C2_FPS, EPIC_C2_FPS)
        else:
            for r in _read_csv(video_info, ["video_id", "duration", "fps"]):
                vid = r["video_id"]
                info[vid] = (_num(r["duration"], video_info, vid, "duration"),
                             _num(r["fps"], video_info, vid, "fps"))
    else:
        logging.warning("%s: no video_info CSV given: durations are the latest segment end", path)
    for line, row in enumerate(rows, start=2):
        vid = row[vcol]
        if video_info is not None and vid not in info:
            raise _err(video_info, vid, "video", f"no duration for this video of {path}")
        duration, fps = info.get(vid, (None, EPIC_C2_FPS if c2 else None))
        rec = b.video(vid, subset, duration, fps)
        s = to_sec(row["start" if c2 else "start_timestamp"], vid, "start" if c2 else "start_timestamp")
        e = to_sec(row["stop" if c2 else "stop_timestamp"], vid, "stop" if c2 else "stop_timestamp")
        rec["rows"].append((s, e, _epic_label(row, label, (verb_col, noun_col), path, vid, line), None))
    ids = [lid for v in b.videos.values() for _, _, lid, _ in v["rows"]]
    names = _epic_class_names(label, class_file, ids)
    for vid, v in b.videos.items():
        for s, e, lid, _ in v["rows"]:
            if lid >= len(names):
                raise _err(path, vid, f"{label}_class", f"class id {lid} is outside the class map "
                           f"of {len(names)} classes ({class_file_name(class_file)})")
        v["rows"] = [(s, e, lid, names[lid]) for s, e, lid, _ in v["rows"]]
    return names, False


def _read_ego4d(path, b: _Builder):
    data = _load_json(path)
    if isinstance(data, dict) and isinstance(data.get("videos"), list):
        return _read_ego4d_official(path, data, b)
    return _read_actionformer(path, b, allow_missing=True)


_EGO4D_SPLITS = {"train": "training", "val": "validation", "test": "testing"}


def _read_ego4d_official(path, data, b: _Builder):
    has_ids = True
    for video in data["videos"]:
        vuid = _get(video, "video_uid", path, None)
        split = str(video.get("split", ""))
        subset = _EGO4D_SPLITS.get(split, split)
        for clip in _get(video, "clips", path, vuid):
            cid = str(_get(clip, "clip_uid", path, vuid))
            cs = _num(_get(clip, "video_start_sec", path, cid), path, cid, "video_start_sec")
            ce = _num(_get(clip, "video_end_sec", path, cid), path, cid, "video_end_sec")
            cs = max(cs, 0.0)
            fps = None
            if "video_start_frame" in clip and "video_end_frame" in clip and ce > cs:
                sf = max(_num(clip["video_start_frame"], path, cid, "video_start_frame"), 0.0)
                ef = _num(clip["video_end_frame"], path, cid, "video_end_frame")
                fps = (ef - sf) / (ce - cs)
            rec = b.video(cid, subset, ce - cs, fps)
            for annotator in clip.get("annotations", []) or []:
                for item in _get(annotator, "labels", path, cid) or []:
                    if not item.get("primary", True):
                        continue
                    if "start_time" in item:
                        s = _num(item["start_time"], path, cid, "start_time")
                        e = _num(_get(item, "end_time", path, cid), path, cid, "end_time")
                    else:
                        s = _num(_get(item, "video_start_time", path, cid), path, cid, "video_start_time") - cs
                        e = _num(_get(item, "video_end_time", path, cid), path, cid, "video_end_time") - cs
                    name = str(_get(item, "label", path, cid))
                    lid = item.get("label_id")
                    if lid is None:
                        has_ids = False
                    rec["rows"].append((s, e, None if lid is None else int(lid), name))
    if not has_ids:
        return _rank_names(n for v in b.videos.values() for *_, n in v["rows"]), True
    return b.class_names_from_ids(), False


# --------------------------------------------------------------------------- entry point

def _split_set(split) -> Optional[set]:
    if split is None:
        return None
    if isinstance(split, str):
        split = [split]
    return {str(s).lower() for s in split}


def read_annotations(path, fmt, *, split: Union[str, Sequence[str], None] = None, video_info=None,
                     label="verb", label_offset=0, default_fps=None, feat_stride=None,
                     num_frames=None, class_file=None, num_classes=None) -> AnnotationSet:
    """Read an annotation file of format `fmt` and return the records of `split`.

    Args:
      path: annotation file. fmt: one of FORMATS.
      split: subset name(s), case-insensitive (`test` matches `Test`); None = all videos.
        Single-split files (the EPIC CSVs) accept and ignore it.
      video_info: side CSV with durations/fps (anet_bsn, epic, epic_c2).
      label: EPIC label kind, verb | noun | action.
      label_offset: subtracted from super-events class numbers (MultiThumos: 1).
      default_fps: if set, every record's fps (ActionFormer `default_fps`).
      feat_stride, num_frames: copied into every record (feature grid), may be None.
      class_file: EPIC class CSV (`EPIC_100_verb_classes.csv` / `..._noun_...`); for
        label='action' a (verb_csv, noun_csv) pair.
      num_classes: if given, a label id >= num_classes raises ValueError.
    Raises:
      FileNotFoundError for a missing file; ValueError for an unknown format, an unreadable file,
      a malformed row (naming file, video and field) or a split that matches no video.
    """
    path = os.fspath(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown annotation format '{fmt}' (expected one of {', '.join(FORMATS)})")
    if label not in ("verb", "noun", "action"):
        raise ValueError(f"unknown label kind '{label}' (expected verb, noun or action)")
    for p in [path, video_info] + _as_list(class_file):
        if p is not None and not os.path.isfile(p):
            raise FileNotFoundError(f"annotation file not found: {p}")
    b = _Builder(path, default_fps, feat_stride, num_frames)
    if fmt == "actionformer":
        names, by_name = _read_actionformer(path, b)
    elif fmt == "anet":
        names, by_name = _read_anet(path, b)
    elif fmt == "anet_bsn":
        names, by_name = _read_anet_bsn(path, b, video_info)
    elif fmt == "superevents":
        names, by_name = _read_superevents(path, b, label_offset)
    elif fmt in ("epic", "epic_c2"):
        cf = None
        if class_file is not None:
            if label == "action":
                if len(_as_list(class_file)) != 2:
                    raise ValueError("label='action' needs class_file=(verb_csv, noun_csv)")
                cf = tuple(_read_class_csv(p) for p in class_file)
            else:
                cf = _read_class_csv(class_file)
        names, by_name = _read_epic(path, b, label, video_info, cf, c2=(fmt == "epic_c2"))
    else:
        names, by_name = _read_ego4d(path, b)

    wanted = _split_set(split)
    single_split = fmt in ("epic", "epic_c2")
    if wanted is not None and not single_split:
        if fmt == "anet_bsn" and video_info is None:
            raise ValueError(f"{path}: anet_bsn has no subsets without video_info "
                             "(pass --video-info video_info_new.csv)")
        subsets = sorted({str(v["subset"]) for v in b.videos.values()})
        b.videos = {k: v for k, v in b.videos.items() if str(v["subset"]).lower() in wanted}
        if not b.videos:
            raise ValueError(f"{path}: split {sorted(wanted)} matches no video "
                             f"(subsets in the file: {subsets})")
    records = b.records(names, by_name=by_name)
    if b.dur_from_segments:
        logging.warning("%s: %d videos have no duration; using their latest segment end",
                        path, b.dur_from_segments)
    aset = AnnotationSet(path=path, fmt=fmt, records=records, class_names=list(names),
                         stats=_row_stats(records, b.dur_from_segments))
    if num_classes is not None:
        aset.check_num_classes(num_classes)
    return aset


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
