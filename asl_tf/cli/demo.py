"""`asl-demo`: the end-to-end demo on synthetic features with REAL annotation timings.

    asl-demo --workdir runs/demo          (what `make demo` runs)

Steps, each timed and recorded in `<workdir>/report.md`:
  1. generate  synthetic features on THUMOS'14 timings (asl_tf.data.synthetic,
               configs/demo_synthetic.yaml) -> <workdir>/data/{features/*.npy, annotations.json}
  2. train     ASL on the generated train split (configs/demo.yaml) -> <workdir>/train/
  3. evaluate  the trained Keras model on the held-out split: mAP per tIoU
  4. export    TFLite (fp32) and ONNX -> <workdir>/export/ (asl_tf export API, verified)
  5. edge      the exported models through edge/ (no TensorFlow in that code path) on the
               held-out videos: mAP per tIoU again, latency
  6. report    <workdir>/report.md and <workdir>/timeline.png (ground truth vs detections)

The steps are library code (`asl_tf.demo`, `asl_tf.experiment`, `asl_tf.report`); this module
only parses flags. A step that fails is reported with its error and the demo exits 1 after
writing the report. Knobs for a tiny run (tests): --train_videos, --test_videos, --epochs, --formats,
--data_override / --override (``key=value``).
"""
import json
import os
import pathlib
import shutil
import sys
import time

import numpy as np

from absl import flags

from asl_tf import demo
from asl_tf.cli._common import run_app
from asl_tf.demo import REPO_ROOT, STEPS, held_out_videos, score
from asl_tf.report import map_summary

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("workdir", "runs/demo", "Output folder (data, checkpoints, exports, report).")
    flags.DEFINE_string("config", str(REPO_ROOT / "configs" / "demo.yaml"), "Experiment config.")
    flags.DEFINE_string("data_config", str(REPO_ROOT / "configs" / "demo_synthetic.yaml"),
                        "Synthetic data config (section `synthetic`).")
    flags.DEFINE_multi_string("override", [], "Experiment config override key.sub=value.")
    flags.DEFINE_multi_string("data_override", [], "Synthetic config override key=value.")
    flags.DEFINE_integer("train_videos", None, "Number of training videos (default: data config).")
    flags.DEFINE_integer("test_videos", None, "Number of held-out videos (default: data config).")
    flags.DEFINE_integer("epochs", None, "Training epochs after warm-up (default: config).")
    flags.DEFINE_integer("warmup_epochs", None, "Warm-up epochs (default: config).")
    flags.DEFINE_list("formats", ["tflite", "onnx"], "Export formats run through the edge runtime.")
    flags.DEFINE_integer("timeline_videos", 4, "Held-out videos drawn in timeline.png.")
    flags.DEFINE_integer("threads", 2, "Threads for the edge runtime.")
    flags.DEFINE_bool("run_eagerly", False, "Train eagerly (no graph tracing: faster for a few "
                      "steps, slower for real runs).")
    flags.DEFINE_integer("verify_windows", 4, "Windows the export verification runs on.")
    flags.DEFINE_list("skip", [], f"Steps to skip, of {','.join(STEPS[1:-1])}.")


# ----------------------------------------------------------------------------- 4. export

def step_export(ctx):
    from export.api import export_model

    model = ctx.get("model")
    if model is None:
        raise RuntimeError("no trained model (the training step did not run)")
    dcfg = ctx["data_cfg"]
    out_dir = ctx["workdir"] / "export"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    files, reports = {}, {}
    for fmt in ctx["formats"]:
        path = out_dir / f"model.{fmt}"
        rep = export_model(model, fmt, str(path), force=True, verify=True,
                           calibration=ctx["data"]["feature_dir"],
                           verify_windows=ctx.get("verify_windows", 4),
                           video_meta={"feat_stride": dcfg.feat_stride,
                                       "num_frames": dcfg.num_frames, "fps": dcfg.default_fps},
                           threads=(1, 2), latency_runs=5)
        files[fmt] = str(path)
        reports[fmt] = _jsonable(rep)
    ctx["exports"] = files
    return {"files": files, "reports": reports}


def _jsonable(x):
    try:
        json.dumps(x)
        return x
    except TypeError:
        if isinstance(x, dict):
            return {str(k): _jsonable(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [_jsonable(v) for v in x]
        if isinstance(x, np.generic):
            return x.item()
        return str(x)


# ----------------------------------------------------------------------------- 5. edge

def step_edge(ctx):
    files = ctx.get("exports")
    if not files:
        raise RuntimeError("no exported model (the export step did not run)")
    from edge.runtime import EdgeModel
    from edge.stream import detect_video

    dcfg = ctx["data_cfg"]
    feat_dir = pathlib.Path(ctx["data"]["feature_dir"])
    out = {}
    for fmt, path in files.items():
        em = EdgeModel(path, num_threads=ctx["threads"])
        dets, t0, secs = {}, time.time(), 0.0
        for vid, dur, fps, _, _ in held_out_videos(ctx):
            feats = np.load(feat_dir / f"{vid}.npy")
            found = detect_video(em, feats, fps=fps, feat_stride=dcfg.feat_stride,
                                 num_frames=dcfg.num_frames, duration=dur)
            dets[vid] = {"segments": np.array([d["segment"] for d in found], np.float64).reshape(-1, 2),
                         "scores": np.array([d["score"] for d in found], np.float64),
                         "labels": np.array([d["label"] for d in found], np.int64)}
            secs += dur
        wall = time.time() - t0
        ctx.setdefault("dets", {})[fmt] = dets
        res = score(ctx, dets)
        ctx.setdefault("map", {})[fmt] = res
        out[fmt] = {"videos": len(dets), "wall_s": wall, "video_s": secs,
                    "ms_per_video_second": 1000 * wall / max(secs, 1e-9), **map_summary(res)}
    return out


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t_start = time.time()
    workdir = pathlib.Path(FLAGS.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    unknown = [s for s in FLAGS.skip if s not in STEPS[1:-1]]
    if unknown:
        raise ValueError(f"--skip: unknown step {unknown[0]!r} (steps: {', '.join(STEPS[1:-1])})")
    for f in FLAGS.formats:
        if f not in ("tflite", "onnx"):
            raise ValueError(f"--formats: {f!r} is not tflite or onnx")
    ctx = {"workdir": workdir, "config_path": FLAGS.config, "data_config_path": FLAGS.data_config,
           "overrides": FLAGS.override, "data_overrides": FLAGS.data_override,
           "epochs": FLAGS.epochs, "warmup_epochs": FLAGS.warmup_epochs,
           "formats": list(FLAGS.formats), "threads": FLAGS.threads,
           "run_eagerly": FLAGS.run_eagerly, "verify_windows": FLAGS.verify_windows,
           "argv": sys.argv[1:]}
    # user errors in the configs surface before any work starts (exit 2)
    ctx["data_cfg"] = demo.data_config(FLAGS.data_config, FLAGS.data_override, FLAGS.train_videos,
                                  FLAGS.test_videos)
    if not os.path.isfile(FLAGS.config):
        raise FileNotFoundError(f"{FLAGS.config}: experiment config not found (--config)")
    from asl_tf.config import load_config

    load_config(FLAGS.config, overrides=list(FLAGS.override))  # bad keys / values: exit 2 now

    steps = demo.run_steps(ctx, {"export": step_export, "edge": step_edge}, FLAGS.skip,
                           FLAGS.timeline_videos, t_start)
    if any(s.status == "failed" for s in steps):
        sys.exit(1)


def run():
    run_app(main, define_flags)


if __name__ == "__main__":
    run()
