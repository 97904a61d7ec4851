"""Beam `evaluate`: predictions + ground truth -> the metrics of `asl-eval` (same library code).

Predictions: one or more files `asl-eval --pred` reads (CSV, results JSON ...; globs
allowed) and/or folders of per-video `<video>.json` files in the `asl-edge run --out` /
`asl-beam detect` schema. The files are parsed in parallel; scoring (ActivityNet mAP per
tIoU, Recall@1x/5x, Ego4D recall) is one global step with `asl_tf.evaluation`, because AP
ranks every prediction of a class across all videos. The result dict equals `asl-eval --json`.
"""
import glob
import json
import os

import apache_beam as beam
import numpy as np

from asl_tf.errors import UserError
from asl_tf.eval_io import load_ground_truth, load_predictions
from asl_tf.evaluation import Predictions, default_tious, evaluate_detections, parse_tiou
from asl_tf.pipelines import common
from asl_tf.pipelines.detect import PREDICTIONS


def expand_inputs(patterns):
    """--pred values -> list of ("file" | "video", path); UserError when one matches nothing."""
    out = []
    for pat in patterns:
        if os.path.isdir(pat):
            files = sorted(glob.glob(os.path.join(pat, "*.json")))
            out += [("video", f) for f in files if os.path.basename(f) != PREDICTIONS]
            continue
        files = sorted(glob.glob(pat))
        if not files:
            raise UserError(f"--pred: {pat} matches no file")
        out += [("file", f) for f in files]
    return out


def _video_doc(path, classes):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    vid = str(doc.get("video_id") or os.path.splitext(os.path.basename(path))[0])
    dets = doc.get("detections", [])
    return Predictions([vid] * len(dets), [d["segment"] for d in dets] or np.zeros((0, 2)),
                       [classes.resolve(d["label"], f"{path}: detection {i}")
                        for i, d in enumerate(dets)], [d["score"] for d in dets])


class ParsePredictions(beam.DoFn):
    """(kind, path) -> Predictions; an unreadable file -> `failed` (path, "parse", error)."""

    def __init__(self, classes):
        self.classes = classes

    def process(self, item):
        kind, path = item
        try:
            yield (_video_doc(path, self.classes) if kind == "video"
                   else load_predictions(path, self.classes))
        except (ValueError, OSError, KeyError, TypeError) as err:
            yield beam.pvalue.TaggedOutput("failed", (os.path.basename(path), "parse", err))


def _concat(parts):
    parts = [p for p in parts if len(p)]
    if not parts:
        return Predictions([], np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0))
    return Predictions(np.concatenate([p.video_ids for p in parts]),
                       np.concatenate([p.segments for p in parts]),
                       np.concatenate([p.labels for p in parts]),
                       np.concatenate([p.scores for p in parts]))


def score(parts, gt, classes, tious, dataset, split, out_path):
    """All parsed predictions -> the `asl-eval --json` dict, written to `out_path`."""
    preds = _concat(parts)
    res = evaluate_detections(gt, preds, tious, top_k=(1, 5), ego4d=(dataset == "ego4d"))
    res = {"dataset": dataset, "split": split, "n_videos": len(gt.video_ids),
           "n_gt_instances": int(len(gt.labels)), **res}
    if classes.id_to_name:
        res["class_names"] = {str(c): classes.id_to_name.get(c, str(c)) for c in res["classes"]}
    common.write_json(out_path, res)
    return res


def build(p, gt_path, pred_patterns, dataset, out_path, split=None, tiou=None, gt_format=None,
          video_info=None):
    """Add the evaluate pipeline to `p`; the ground truth is read on the driver."""
    if dataset == "epic":
        raise UserError("--dataset epic: the EPIC submission scorer is not a Beam pipeline; "
                        "use asl-eval")
    tious = parse_tiou(tiou) if tiou else default_tious(dataset)
    gt, classes = load_ground_truth(gt_path, split=split, gt_format=gt_format,
                                    video_info=video_info)
    inputs = expand_inputs(pred_patterns)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    parsed = (p | "Inputs" >> beam.Create(inputs)
              | "Parse" >> beam.ParDo(ParsePredictions(classes)).with_outputs("failed", main="ok"))
    _ = parsed.failed | "DeadLetter" >> beam.ParDo(common.DeadLetter(out_dir))
    return (parsed.ok | "All" >> beam.combiners.ToList()
            | "Score" >> beam.Map(score, gt, classes, tious, dataset, split, out_path))
