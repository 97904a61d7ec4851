"""asl-eval: score detections against ground truth with the benchmarks' official metrics.

  asl-eval --gt GT --pred PRED --dataset thumos14|anet|multithumos|charades|ego4d|epic
           [--split SPLIT] [--tiou START:STOP:NUM] [--json OUT]
           [--gt-format FMT] [--video-info CSV]

Every dataset: ActionFormer ANETdetection mAP per tIoU and averaged, with ActionFormer's
Recall@1x/5x; `ego4d` adds the official Ego4D Recall@kx (`recall_at_1x_tiou_0.5`);
`epic` scores an EPIC-100 submission JSON against the annotation CSV (verb, noun, action).
The printed table shows percent; the JSON holds fractions in [0, 1].
"""
import json
import os

import numpy as np
from absl import flags, logging

from asl_tf.cli._common import run_app
from asl_tf.fileio import atomic_write
from asl_tf.eval_epic import TASKS, evaluate_epic
from asl_tf.eval_io import load_ground_truth, load_predictions
from asl_tf.evaluation import DEFAULT_TIOU, default_tious, evaluate_detections, parse_tiou
from asl_tf.fileio import atomic_write

FLAGS = flags.FLAGS
DATASETS = ("thumos14", "anet", "multithumos", "charades", "ego4d", "epic")
GT_FORMATS = ("actionformer", "anet", "anet_bsn", "superevents", "epic", "epic_c2", "ego4d")


def define_flags():
    flags.DEFINE_string("gt", None, "ground-truth annotation file")
    flags.DEFINE_string("pred", None, "predictions: CSV, ActivityNet/Ego4D results JSON or "
                        "EPIC submission JSON")
    flags.DEFINE_enum("dataset", None, DATASETS, "benchmark whose metric and defaults apply")
    flags.DEFINE_string("split", None, "GT subset to evaluate (case-insensitive); default: "
                        "every video of the GT file")
    flags.DEFINE_string("tiou", None, "tIoU thresholds START:STOP:NUM (np.linspace); default "
                        "per dataset: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_TIOU.items()))
    flags.DEFINE_string("json", None, "write the results here (fractions in [0, 1])")
    flags.DEFINE_enum("gt_format", None, GT_FORMATS, "GT format when it cannot be told from "
                      "the file (the data readers' names)")
    flags.DEFINE_string("video_info", None, "video info CSV for GT formats that lack "
                        "durations/fps (as in asl-data)")
    flags.DEFINE_enum("label", "verb", ("verb", "noun", "action"), "EPIC-format GT read "
                      "through the data readers: which label")
    flags.DEFINE_integer("label_offset", 0, "super-events GT: subtracted from the class "
                         "numbers (MultiThumos: 1), as in asl-data")
    flags.DEFINE_integer("verb_count", 97, "epic: number of verb classes")
    flags.DEFINE_integer("noun_count", 300, "epic: number of noun classes")
    flags.mark_flags_as_required(["gt", "pred", "dataset"])


def _write_json(path, obj):
    """Write JSON to a temp file beside `path`, then rename (never half-written)."""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise FileNotFoundError(f"--json: directory {d} does not exist")
    with atomic_write(path) as f:
        json.dump(obj, f, indent=1)


def _table(tious, columns):
    """columns: list of (name, values per tIoU, average or None) in fractions -> text (percent)."""
    widths = [max(13, len(n)) for n, _, _ in columns]
    head = "| tIoU | " + " | ".join(f"{n:>{w}s}" for (n, _, _), w in zip(columns, widths)) + " |"
    lines = [head, "|" + "-" * (len(head) - 2) + "|"]
    for i, t in enumerate(tious):
        lines.append(f"| {t:4.2f} | " + " | ".join(
            f"{100 * v[i]:{w}.2f}" for (_, v, _), w in zip(columns, widths)) + " |")
    if any(a is not None for _, _, a in columns):
        lines.append("|  avg | " + " | ".join(
            f"{100 * a:{w}.2f}" if a is not None else " " * w
            for (_, _, a), w in zip(columns, widths)) + " |")
    return "\n".join(lines)


def score(gt_path, pred_path, dataset, split=None, tiou=None, gt_format=None,
          video_info=None, verb_count=97, noun_count=300, label="verb", label_offset=0):
    """Library entry of the CLI: returns (results dict, printable text)."""
    if dataset not in DATASETS:
        raise ValueError(f"--dataset: unknown {dataset!r}; one of {', '.join(DATASETS)}")
    tious = parse_tiou(tiou) if tiou else default_tious(dataset)
    if dataset == "epic" and not str(gt_path).lower().endswith(".json") and gt_format in (None, "epic"):
        res = evaluate_epic(gt_path, pred_path, tious, num_nouns=noun_count,
                            verb_count=verb_count)
        out = {"dataset": dataset, "tiou_thresholds": tious.tolist()}
        for task in TASKS:
            r = res[task]
            out[task] = {k: r[k] for k in ("tiou_thresholds", "mAP_per_tiou", "average_mAP",
                                           "n_predictions", "n_pred_unknown_video",
                                           "n_pred_unknown_label")}
        text = _table(tious, [(f"{t} mAP (%)", res[t]["mAP_per_tiou"], res[t]["average_mAP"])
                              for t in TASKS])
        return out, f"EPIC-KITCHENS-100 action detection ({pred_path})\n{text}"

    gt, classes = load_ground_truth(gt_path, split=split, gt_format=gt_format,
                                    video_info=video_info, label=label,
                                    label_offset=label_offset)
    preds = load_predictions(pred_path, classes)
    res = evaluate_detections(gt, preds, tious, top_k=(1, 5), ego4d=(dataset == "ego4d"))
    res = {"dataset": dataset, "split": split, "n_videos": len(gt.video_ids),
           "n_gt_instances": int(len(gt.labels)), **res}
    if classes.id_to_name:
        res["class_names"] = {str(c): classes.id_to_name.get(c, str(c)) for c in res["classes"]}
    rec = np.asarray(res["mean_recall_per_tiou_per_k"])
    cols = [("mAP (%)", res["mAP_per_tiou"], res["average_mAP"]),
            ("Recall@1x (%)", rec[:, 0], None), ("Recall@5x (%)", rec[:, 1], None)]
    text = (f"{dataset}: split {split or '(all)'}, {res['n_videos']} videos, "
            f"{res['n_gt_instances']} GT instances, {res['n_predictions']} predictions "
            f"({res['n_pred_unknown_video']} for videos absent from the GT)\n"
            + _table(tious, cols))
    if dataset == "ego4d":
        e = res["ego4d_recall"]
        er = np.asarray(e["recall_per_tiou_per_rank"])
        text += "\nEgo4D official recall (instances pooled, tIoU > thr)\n" + _table(
            e["tiou_thresholds"], [(f"R@{k}x (%)", er[:, i], None)
                                   for i, k in enumerate(e["recall_ranks"])])
    return res, text


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    res, text = score(FLAGS.gt, FLAGS.pred, FLAGS.dataset, split=FLAGS.split, tiou=FLAGS.tiou,
                      gt_format=FLAGS.gt_format, video_info=FLAGS.video_info,
                      verb_count=FLAGS.verb_count, noun_count=FLAGS.noun_count,
                      label=FLAGS.label, label_offset=FLAGS.label_offset)
    print(text)
    if FLAGS.json:
        _write_json(FLAGS.json, res)
        logging.info("wrote %s", FLAGS.json)
    return 0




def run(argv=None):
    """Console-script entry point (`asl-eval`); flags accept `-` or `_` in their names."""
    run_app(main, define_flags, argv=argv)


if __name__ == "__main__":
    run()
