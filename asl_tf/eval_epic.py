"""EPIC-KITCHENS-100 action detection scorer (verb, noun and action mAP).

Semantics of the official `EvaluationCode/evaluate_detection_json_ek100.py` of
epic-kitchens/C2-Action-Detection (reimplemented, not copied):
- ground truth: every row of the annotation CSV (`EPIC_100_validation.csv`), times from the
  `start_timestamp`/`stop_timestamp` columns as `h·3600 + m·60 + s`; no duplicate or short-row
  removal, no split filter; labels `verb_class`, `noun_class` and action
  `verb_class·num_nouns + noun_class` (the CSV has no action column; the `action` column of
  the `c2_*.csv` files is another vocabulary and is not used);
- submission: `{"version": "0.2", "challenge": "action_detection", "sls_pt", "sls_tl",
  "sls_td", "results": {video: [{"verb", "noun", "action": "v,n", "score", "segment"}]}}`;
  verbs in `[0, verb_count)`, nouns in `[0, noun_count)`; the action label comes from the
  `action` string;
- predictions whose label is absent from the GT are removed (with a warning), the rest are
  remapped by rank among the sorted GT labels; then ANETdetection AP per class over the
  thresholds (default `linspace(0.1, 0.5, 5)`).
"""
import csv
import json
import os

import numpy as np
from absl import logging

from asl_tf.evaluation import GroundTruth, Predictions, average_map, parse_tiou

__all__ = ["read_epic_ground_truth", "read_epic_submission", "evaluate_epic", "TASKS"]

TASKS = ("verb", "noun", "action")
_GT_COLS = ("video_id", "start_timestamp", "stop_timestamp", "verb_class", "noun_class")


def _timestamp_to_seconds(ts, where):
    try:
        hours, minutes, seconds = map(float, ts.split(":"))
    except (ValueError, AttributeError):
        raise ValueError(f"{where}: timestamp {ts!r} is not HH:MM:SS.ss") from None
    return hours * 3600 + minutes * 60 + seconds


def read_epic_ground_truth(path):
    """EPIC-100 annotation CSV -> dict of `video_ids` (file order), `video [G]`,
    `segments [G,2]` s, `verb [G]`, `noun [G]`."""
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "r", encoding="utf8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in _GT_COLS if c not in header]
        if missing:
            raise ValueError(f"{path}: not an EPIC-KITCHENS-100 annotation CSV; missing "
                             f"column(s) {', '.join(missing)}")
        vids, index, vi, segs, verbs, nouns = [], {}, [], [], [], []
        for lineno, row in enumerate(reader, start=2):
            where = f"{path}: line {lineno}"
            vid = row["video_id"]
            if vid not in index:
                index[vid] = len(vids)
                vids.append(vid)
            vi.append(index[vid])
            segs.append((_timestamp_to_seconds(row["start_timestamp"], where),
                         _timestamp_to_seconds(row["stop_timestamp"], where)))
            try:
                verbs.append(int(row["verb_class"]))
                nouns.append(int(row["noun_class"]))
            except (TypeError, ValueError):
                raise ValueError(f"{where}: verb_class/noun_class must be integers") from None
    if not segs:
        raise ValueError(f"{path}: no annotation rows")
    return {"video_ids": vids, "video": np.asarray(vi, np.int64),
            "segments": np.asarray(segs, np.float64),
            "verb": np.asarray(verbs, np.int64), "noun": np.asarray(nouns, np.int64)}


def _int_class(value, where, field, count):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{where}: field {field!r} must be an integer class id, got {value!r}")
    if not 0 <= int(value) < count:
        raise ValueError(f"{where}: {field} class {value} is outside the class map "
                         f"[0, {count})")
    return int(value)


def read_epic_submission(path, verb_count=97, noun_count=300):
    """Read and validate an EPIC action-detection submission JSON -> dict of flat arrays
    `video_ids [P]`, `segments [P,2]`, `scores [P]`, `verb`, `noun`, `action_verb`, `action_noun`."""
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "r", encoding="utf8") as f:
        text = f.read()
    try:
        sub = json.loads(text) if text.strip() else {"results": {}}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(sub, dict) or "results" not in sub:
        raise ValueError(f"{path}: missing 'results' property (EPIC submission JSON)")
    for prop, want in (("version", "0.2"), ("challenge", "action_detection")):
        if prop not in sub:
            logging.warning("%s: missing %r property (the official validator requires it)",
                            path, prop)
        elif str(sub[prop]) != want:
            logging.warning("%s: %s is %r; the official validator expects %r", path, prop,
                            sub[prop], want)
    for prop in ("sls_pt", "sls_tl", "sls_td"):
        if prop in sub and not (isinstance(sub[prop], (int, float)) and 0 <= sub[prop] <= 5):
            raise ValueError(f"{path}: {prop} must be between 0 and 5, got {sub[prop]!r}")
    res = sub["results"]
    if not isinstance(res, dict):
        raise ValueError(f"{path}: 'results' must map video ids to lists of segments")
    out = {k: [] for k in ("video_ids", "segments", "scores", "verb", "noun",
                           "action_verb", "action_noun")}
    for vid, items in res.items():
        if not isinstance(items, list):
            raise ValueError(f"{path}: video {vid}: results must be a list")
        for i, e in enumerate(items):
            where = f"{path}: video {vid}, entry {i}"
            if not isinstance(e, dict):
                raise ValueError(f"{where}: not an object")
            for prop in ("verb", "noun", "score", "segment"):
                if prop not in e:
                    raise ValueError(f"{where}: missing {prop!r} property")
            verb = _int_class(e["verb"], where, "verb", verb_count)
            noun = _int_class(e["noun"], where, "noun", noun_count)
            if "action" in e:
                try:
                    av, an = [int(x) for x in str(e["action"]).split(",")]
                except ValueError:
                    raise ValueError(f"{where}: action {e['action']!r} is not a 'verb,noun' "
                                     "id") from None
                _int_class(av, where, "action verb", verb_count)
                _int_class(an, where, "action noun", noun_count)
            else:
                av, an = verb, noun
            seg = e["segment"]
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise ValueError(f"{where}: segment must have 2 timestamps, got {seg!r}")
            try:
                s, t, score = float(seg[0]), float(seg[1]), float(e["score"])
            except (TypeError, ValueError):
                raise ValueError(f"{where}: segment and score must be numbers") from None
            if not (np.isfinite(s) and np.isfinite(t)):
                raise ValueError(f"{where}: segment {seg!r} is not finite")
            if not np.isfinite(score):
                raise ValueError(f"{where}: score is {e['score']!r}")
            if t < s:
                raise ValueError(f"{where}: end < start in segment {seg!r}")
            out["video_ids"].append(str(vid))
            out["segments"].append((s, t))
            out["scores"].append(score)
            out["verb"].append(verb)
            out["noun"].append(noun)
            out["action_verb"].append(av)
            out["action_noun"].append(an)
    if not out["scores"]:
        logging.warning("%s: no predictions (every AP will be 0)", path)
    arr = {k: np.asarray(v, np.int64) for k, v in out.items()
           if k in ("verb", "noun", "action_verb", "action_noun")}
    arr["video_ids"] = out["video_ids"]
    arr["segments"] = np.asarray(out["segments"], np.float64).reshape(-1, 2)
    arr["scores"] = np.asarray(out["scores"], np.float64)
    return arr


def evaluate_epic(gt_path, submission_path, tiou_thresholds="0.1:0.5:5", num_nouns=300,
                  verb_count=97):
    """Score an EPIC-100 submission -> `{"verb"|"noun"|"action": {tiou_thresholds,
    mAP_per_tiou, average_mAP, ...}}` (fractions in [0, 1])."""
    tious = parse_tiou(tiou_thresholds)
    gt = read_epic_ground_truth(gt_path)
    sub = read_epic_submission(submission_path, verb_count=verb_count, noun_count=num_nouns)
    gt_labels = {"verb": gt["verb"], "noun": gt["noun"],
                 "action": gt["verb"] * num_nouns + gt["noun"]}
    pred_labels = {"verb": sub["verb"], "noun": sub["noun"],
                   "action": sub["action_verb"] * num_nouns + sub["action_noun"]}
    results = {}
    for task in TASKS:
        g = GroundTruth(gt["video_ids"], gt["video"], gt["segments"], gt_labels[task])
        p = Predictions(sub["video_ids"], sub["segments"], pred_labels[task], sub["scores"])
        r = average_map(g, p, tious, remove_duplicates=False, warn=False)
        if r["n_pred_unknown_label"]:
            logging.warning("%s: %d predictions have %s ids absent from the ground truth "
                            "(removed, as the official script does)", submission_path,
                            r["n_pred_unknown_label"], task)
        if task == "verb" and r["n_pred_unknown_video"]:
            logging.warning("%s: %d predictions are for %d videos absent from the ground "
                            "truth (counted as false positives)", submission_path,
                            r["n_pred_unknown_video"], len(r["unknown_videos"]))
        results[task] = r
    return results
