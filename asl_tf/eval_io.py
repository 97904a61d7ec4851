"""Reading ground truth and predictions for the scorers (`asl_tf.evaluation`, `asl-eval`).

Ground truth: the ActivityNet/ActionFormer `{"database": {video: {subset, duration,
annotations: [{segment, label, label_id}]}}}` JSON and the Ego4D per-clip layout
`{clip: {clip_id, subset, duration, annotations: [{segment, label}]}}` are read here, keeping
every row as the official scorers do (no clipping; ActionFormer's duplicate removal happens in
the metric). Every other format goes through the data readers
(`asl_tf.data.annotations.read_annotations`).

Predictions: CSV (`video-id,t-start,t-end,label,score` or `video_id,t_start,t_end,label,score`),
a JSON list of such rows, the ActivityNet-style results JSON
`{version, external_data, results: {video: [{segment, score, label}]}}` (also the Ego4D MQ
submission layout), and ActionFormer's `{"database": {video: [{segment, label_id, scores}]}}`.
Labels may be integer ids or class names.
"""
import csv
import json
import os
from typing import Dict, Optional, Tuple

import numpy as np
from absl import logging

from asl_tf.errors import UserError
from asl_tf.evaluation import GroundTruth, Predictions

__all__ = ["load_ground_truth", "load_predictions", "ClassMap"]


class ClassMap:
    """Label ids <-> names of a ground-truth file (`ids` may be sparse)."""

    def __init__(self, id_to_name: Optional[Dict[int, str]] = None, source: str = "ground truth"):
        self.id_to_name = dict(id_to_name or {})
        self.name_to_id = {n: i for i, n in self.id_to_name.items()}
        self.source = source

    def resolve(self, label, where: str) -> int:
        """A prediction label (id or name) -> id; ValueError naming `where` if unknown."""
        if isinstance(label, (bool, np.bool_)):
            raise ValueError(f"{where}: label {label!r} is not a class id or name")
        if not isinstance(label, (str, int, float, np.integer, np.floating)):
            raise ValueError(f"{where}: label {label!r} is not a class id or name")
        lab = label
        if isinstance(lab, str):
            s = lab.strip()
            if s in self.name_to_id:
                return self.name_to_id[s]
            try:
                lab = int(s)
            except ValueError:
                try:
                    lab = float(s)
                except ValueError:
                    raise ValueError(f"{where}: label {label!r} is not a class of "
                                     f"{self.source} ({len(self.id_to_name)} classes)") from None
        if isinstance(lab, float):
            if not float(lab).is_integer():
                raise ValueError(f"{where}: label {label!r} is not an integer class id")
            lab = int(lab)
        lab = int(lab)
        if self.id_to_name and lab not in self.id_to_name:
            ids = sorted(self.id_to_name)
            raise ValueError(f"{where}: label {lab} is outside the class map of {self.source} "
                             f"(ids {ids[0]}..{ids[-1]}, {len(ids)} classes)")
        return lab


def _read_text(path):
    """The file's text; ValueError naming the file when it is not UTF-8 text."""
    try:
        with open(path, "r", encoding="utf8", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); "
                         "is it a binary file?") from None
    if "\x00" in text:
        raise ValueError(f"{path}: holds NUL bytes: a binary file, not text")
    return text


def _read_json(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    return _loads(_read_text(path), path)


def _loads(text, path):
    """`json.loads` that refuses a key given twice in one object: a video id repeated in a
    results or ground-truth file would otherwise silently drop the first one's entries."""
    from asl_tf.data.annotations.common import _DuplicateKey, _unique_keys

    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as err:
        raise ValueError(f"{path}: key {err.args[0]!r} appears twice in one object (video ids "
                         "must be unique; the second would silently replace the first)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def _segment(value, where):
    try:
        s, e = float(value[0]), float(value[1])
        if len(value) != 2:
            raise ValueError
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"{where}: field 'segment' must be [start, end], got {value!r}") from None
    return s, e


def _filter_split(entries, split, path):
    """`entries`: list of (video_id, subset, payload); keep subset.lower() == split.lower()."""
    if split is None:
        return entries
    want = str(split).lower()
    kept = [e for e in entries if str(e[1]).lower() == want]
    if not kept:
        avail = sorted({str(e[1]) for e in entries})
        raise ValueError(f"{path}: split {split!r} matches no video; available splits: "
                         f"{', '.join(avail) if avail else '(none)'}")
    return kept


def _annotations_of(vid, v, path):
    """The checked annotation list of one GT video entry."""
    if not isinstance(v, dict):
        raise ValueError(f"{path}: video {vid}: entry is not an object")
    anns = v.get("annotations", []) or []
    if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
        raise ValueError(f"{path}: video {vid}: field 'annotations' must be a list of objects")
    return anns


def _label_id(a, where):
    value = a["label_id"]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{where}: field 'label_id' must be an integer, got {value!r}")
    try:
        out = int(value)
        if out != float(value):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where}: field 'label_id' must be an integer, got {value!r}") from None
    return out


def _gt_from_database(db, path, split):
    # class map over the whole file: label_id -> label, or sorted names' ranks without ids
    if not isinstance(db, dict):
        raise ValueError(f"{path}: field 'database' must map video ids to entries")
    id_to_name, names = {}, set()
    has_ids = True
    for vid, v in db.items():
        for j, a in enumerate(_annotations_of(vid, v, path)):
            where = f"{path}: video {vid}, annotation {j}"
            if "label_id" in a:
                id_to_name.setdefault(_label_id(a, where), str(a.get("label", a["label_id"])))
            else:
                has_ids = False
            if "label" in a:
                names.add(str(a["label"]))
            elif "label_id" not in a:
                raise ValueError(f"{where}: needs 'label' or 'label_id'")
    if not has_ids:
        id_to_name = dict(enumerate(sorted(names)))
        logging.info("%s: no label_id; label ids are the sorted label names' ranks", path)
    name_to_id = {n: i for i, n in id_to_name.items()}
    entries = [(str(vid), v.get("subset", ""), v) for vid, v in db.items()]
    entries = _filter_split(entries, split, path)
    vids, vi, segs, labels = [], [], [], []
    for i, (vid, _, v) in enumerate(entries):
        vids.append(vid)
        for j, a in enumerate(_annotations_of(vid, v, path)):
            where = f"{path}: video {vid}, annotation {j}"
            segs.append(_segment(a.get("segment"), where))
            if has_ids:
                labels.append(_label_id(a, where))
            else:
                if "label" not in a:
                    raise ValueError(f"{where}: needs 'label'")
                labels.append(name_to_id[str(a["label"])])
            vi.append(i)
    segs = np.asarray(segs, np.float64).reshape(-1, 2)
    if not np.isfinite(segs).all():
        raise ValueError(f"{path}: a 'segment' holds NaN/inf")
    gt = GroundTruth(vids, vi, segs, labels, id_to_name)
    return gt, ClassMap(id_to_name, path)


def _is_ego4d_clips(data):
    if not isinstance(data, dict) or not data:
        return False
    v = next(iter(data.values()))
    return isinstance(v, dict) and "annotations" in v and ("clip_id" in v or "subset" in v)


def _gt_from_ego4d_clips(data, path, split):
    """Ego4D per-clip layout, keyed by `clip_id` as the official recall code does."""
    db = {}
    for key, v in data.items():
        if not isinstance(v, dict):
            raise ValueError(f"{path}: clip {key}: entry is not an object")
        db[str(v.get("clip_id", key))] = v
    return _gt_from_database(db, path, split)


def load_ground_truth(path, split=None, gt_format=None, video_info=None, label="verb",
                      label_offset=0) -> Tuple[GroundTruth, ClassMap]:
    """Read a ground-truth file of any supported format -> (`GroundTruth` of the split, class map).

    `split` (case-insensitive) selects the videos whose subset matches; None keeps every
    video. A split that matches nothing is refused with the list of available splits.
    `gt_format` names a data-reader format (`asl_tf.data.annotations.FORMATS`); without it the
    layout is told from the file: `{"database": ...}` and the Ego4D per-clip layout are read
    here, the official Ego4D `{"videos": [...]}` file, super-events `{video: {actions}}` and
    BSN-style ActivityNet `{video: {duration_second, annotations}}` files go to the data
    readers.
    """
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if gt_format is None and path.lower().endswith(".json"):
        data = _read_json(path)
        if isinstance(data, dict) and isinstance(data.get("database"), dict):
            return _gt_from_database(data["database"], path, split)
        if _is_ego4d_clips(data):
            return _gt_from_ego4d_clips(data, path, split)
        if isinstance(data, dict) and isinstance(data.get("videos"), list):
            gt_format = "ego4d"
        elif isinstance(data, dict) and data and all(
                isinstance(v, dict) and "actions" in v for v in data.values()):
            gt_format = "superevents"
        elif isinstance(data, dict) and data and all(
                isinstance(v, dict) and "duration_second" in v for v in data.values()):
            gt_format = "anet_bsn"
    if gt_format is None:
        raise ValueError(f"{path}: cannot tell the ground-truth format; pass --gt-format "
                         "(actionformer, anet, anet_bsn, superevents, epic, epic_c2, ego4d)")
    return _gt_from_reader(path, gt_format, split, video_info, label, label_offset)


def _gt_from_reader(path, fmt, split, video_info, label, label_offset):
    try:
        from asl_tf.data.annotations import read_annotations
    except ImportError as err:  # the data readers are another module of this package
        raise ValueError(f"{path}: reading format {fmt!r} needs asl_tf.data.annotations "
                         f"({err})") from None
    ann = read_annotations(path, fmt, split=split, video_info=video_info, label=label,
                           label_offset=label_offset)
    names = dict(enumerate(ann.class_names)) if getattr(ann, "class_names", None) else None
    gt = GroundTruth.from_records(ann.records, names)
    return gt, ClassMap(names, path)


# ----------------------------------------------------------------------------------------------
# predictions

_CSV_COLS = {
    "video": ("video-id", "video_id"),
    "start": ("t-start", "t_start"),
    "end": ("t-end", "t_end"),
    "label": ("label",),
    "score": ("score",),
}


def _float(value, where, field):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: field {field!r} is not a number: {value!r}") from None


def _rows_to_predictions(rows, classes: ClassMap, path):
    vids, segs, labels, scores = [], [], [], []
    for where, vid, s, e, lab, sc in rows:
        vids.append(str(vid))
        segs.append((_float(s, where, "t-start"), _float(e, where, "t-end")))
        labels.append(classes.resolve(lab, where))
        scores.append(_float(sc, where, "score"))
    preds = Predictions(vids, np.asarray(segs, np.float64).reshape(-1, 2),
                        np.asarray(labels, np.int64), np.asarray(scores, np.float64))
    preds.validate(path)
    if len(preds) == 0:
        logging.warning("%s: no predictions (every AP will be 0)", path)
    return preds


def _csv_rows(path, text):
    reader = csv.reader(text.splitlines())
    header = [h.strip() for h in next(reader)]
    col = {}
    for key, names in _CSV_COLS.items():
        found = [header.index(n) for n in names if n in header]
        if not found:
            raise ValueError(f"{path}: CSV header lacks column {names[0]!r} (or {names[-1]!r}); "
                             f"header is {','.join(header)}")
        col[key] = found[0]
    rows = []
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < len(header):
            raise ValueError(f"{path}: line {lineno}: expected {len(header)} fields, got {len(row)}")
        rows.append((f"{path}: line {lineno}", row[col["video"]].strip(), row[col["start"]],
                     row[col["end"]], row[col["label"]].strip(), row[col["score"]]))
    return rows


def _json_rows(data, path):
    rows = []
    if isinstance(data, list):  # flat rows
        for i, r in enumerate(data):
            where = f"{path}: row {i}"
            if not isinstance(r, dict):
                raise ValueError(f"{where}: not an object")
            try:
                vid = r.get("video-id", r.get("video_id"))
                s = r.get("t-start", r.get("t_start"))
                e = r.get("t-end", r.get("t_end"))
                rows.append((where, vid, s, e, r["label"], r["score"]))
            except KeyError as err:
                raise ValueError(f"{where}: missing field {err.args[0]!r}") from None
            if vid is None or s is None or e is None:
                raise ValueError(f"{where}: needs video-id, t-start, t-end, label, score")
        return rows
    if isinstance(data, dict) and ("results" in data or "database" in data):
        res = data["results"] if "results" in data else data["database"]
        if not isinstance(res, dict):
            raise ValueError(f"{path}: field 'results' must map video ids to lists")
        for vid, items in res.items():
            if not isinstance(items, list):
                raise ValueError(f"{path}: video {vid}: predictions must be a list")
            for j, it in enumerate(items):
                where = f"{path}: video {vid}, prediction {j}"
                if not isinstance(it, dict):
                    raise ValueError(f"{where}: not an object")
                s, e = _segment(it.get("segment"), where)
                lab = it.get("label", it.get("label_id"))
                sc = it.get("score", it.get("scores"))
                if lab is None or sc is None:
                    raise ValueError(f"{where}: needs 'segment', 'label' and 'score'")
                rows.append((where, vid, s, e, lab, sc))
        return rows
    raise ValueError(f"{path}: unknown prediction JSON layout (expected a list of rows or "
                     "{\"results\": {video: [...]}})")


def load_predictions(path, classes: Optional[ClassMap] = None) -> Predictions:
    """Read a prediction file (CSV or JSON, see the module docstring) -> `Predictions`.

    Labels are resolved against `classes` (names or ids); a label outside it is refused.
    NaN scores and end < start are refused; an empty file gives no predictions.
    """
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    classes = classes or ClassMap()
    text = _read_text(path)
    if not text.strip():  # a crashed writer, not "no detections": refuse
        raise UserError(f"{path}: the predictions file is empty (write the CSV header or "
                        "{\"results\": {}} for a run without detections)")
    if path.lower().endswith(".json"):
        rows = _json_rows(_loads(text, path), path)
    else:
        try:
            rows = _csv_rows(path, text)
        except csv.Error as err:
            raise UserError(f"{path}: not a readable CSV ({err})") from None
    return _rows_to_predictions(rows, classes, path)
