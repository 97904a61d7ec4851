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

A step whose code has not landed in the tree yet is reported as "not yet available", never
faked; a step that fails is reported with its error and the demo exits 1 after writing the
report. Knobs for a tiny run (tests): --train_videos, --test_videos, --epochs, --formats,
--data_override / --override (``key=value``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import sys
import time
import traceback

import numpy as np
from absl import flags, logging

from asl_tf.cli._common import run_app
from asl_tf.fileio import atomic_path, atomic_write

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
FLAGS = flags.FLAGS
STEPS = ("generate", "train", "evaluate", "export", "edge", "report")
NOT_YET = "not yet available"


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


# ----------------------------------------------------------------------------- step records

@dataclasses.dataclass
class Step:
    name: str
    status: str = "pending"       # done | skipped | not yet available | failed
    seconds: float = 0.0
    detail: str = ""
    data: dict = dataclasses.field(default_factory=dict)


class _Missing(Exception):
    """A module / function of another part of the project is not in the tree yet."""


def _need(module: str, *names: str):
    """Import `module` and return the named attributes; raise _Missing when absent."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and (err.name == module or module.startswith(err.name + ".")):
            raise _Missing(f"{module} is not in the tree yet") from None
        raise
    out = []
    for n in names:
        if not hasattr(mod, n):
            raise _Missing(f"{module}.{n} is not in the tree yet")
        out.append(getattr(mod, n))
    return out[0] if len(out) == 1 else tuple(out)


def _run_step(step: Step, fn, *args):
    t0 = time.time()
    logging.info("demo: step %s ...", step.name)
    print(f"[asl-demo] {step.name} ...", flush=True)
    try:
        result = fn(*args)
        step.status = "done"
        if isinstance(result, dict):
            step.data.update(result)
    except _Missing as err:
        step.status = NOT_YET
        step.detail = str(err)
    except Exception as err:  # reported in report.md; the demo exits 1 at the end
        step.status = "failed"
        step.detail = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        step.data["traceback"] = traceback.format_exc()
        logging.error("demo: step %s failed:\n%s", step.name, step.data["traceback"])
    step.seconds = time.time() - t0
    print(f"[asl-demo] {step.name}: {step.status} ({step.seconds:.1f} s)"
          + (f" -- {step.detail}" if step.detail else ""), flush=True)
    return step


# ----------------------------------------------------------------------------- 1. generate

def _parse_kv(text: str):
    import yaml

    if "=" not in text:
        raise ValueError(f"--data_override '{text}': expected key=value")
    k, v = text.split("=", 1)
    return k.strip().removeprefix("synthetic."), yaml.safe_load(v)


def data_config(path, overrides=(), train_videos=None, test_videos=None):
    """The synthetic config from YAML, with overrides applied (validated)."""
    from asl_tf.data.synthetic import SyntheticConfig

    cfg = SyntheticConfig.from_yaml(path)
    d = dataclasses.asdict(cfg)
    for text in overrides:
        k, v = _parse_kv(text)
        d[k] = v
    if train_videos is not None:
        d["num_train_videos"] = train_videos
    if test_videos is not None:
        d["num_test_videos"] = test_videos
    cfg = SyntheticConfig.from_dict(d, source=f"{path} (with overrides)")
    if not os.path.isabs(cfg.annotation_file):
        cfg.annotation_file = str(REPO_ROOT / cfg.annotation_file)
    return cfg


def step_generate(ctx):
    from asl_tf.data.synthetic import write_dataset

    data_dir = ctx["workdir"] / "data"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    summary = write_dataset(ctx["data_cfg"], data_dir)
    ctx["data"] = summary
    return {k: v for k, v in summary.items() if k != "class_names"}


# ----------------------------------------------------------------------------- 2. train

def experiment_config(ctx):
    """configs/demo.yaml pointed at the generated data."""
    from asl_tf.config import load_config

    dcfg, summary = ctx["data_cfg"], ctx["data"]
    ov = [f"dataset.json_file={summary['annotation_file']}",
          f"dataset.feat_folder=[{summary['feature_dir']}]",
          f"dataset.input_dim={dcfg.input_dim}",
          f"dataset.num_classes={len(summary['class_names'])}",
          f"dataset.feat_stride={dcfg.feat_stride}",
          f"dataset.num_frames={dcfg.num_frames}",
          f"dataset.train_split=[{dcfg.train_split}]",
          f"dataset.val_split=[{dcfg.test_split}]",
          f"output_folder={ctx['workdir'] / 'train'}"]
    if ctx["epochs"] is not None:
        ov.append(f"train_cfg.epochs={ctx['epochs']}")
    if ctx["warmup_epochs"] is not None:
        ov.append(f"train_cfg.warmup_epochs={ctx['warmup_epochs']}")
    cfg = load_config(ctx["config_path"], overrides=ov + list(ctx["overrides"]))
    cfg.dataset.class_names = list(summary["class_names"])
    return cfg


def load_split(cfg, split):
    """Records of `split` read the normal way (asl_tf.data.annotations) with the config's grid."""
    from asl_tf.data.annotations import read_annotations

    ds = cfg.dataset
    return read_annotations(ds.json_file, ds.format, split=split, default_fps=ds.default_fps,
                            feat_stride=ds.feat_stride, num_frames=ds.num_frames,
                            num_classes=ds.num_classes).records


def fit_experiment(cfg, workdir, verbose=1, callbacks=(), run_eagerly=False):
    """Train `cfg` (an ExperimentConfig) on its training split with the project's pieces.

    The normal data path (read_annotations -> FeatureReader -> tf.data training pipeline),
    `asl_tf.model.detector.build_detector`, `asl_tf.training.build_optimizer` (AdamW,
    warm-up + cosine, clip, EMA) and the ASL train step; `warmup_epochs + epochs` epochs.
    Afterwards the EMA weights are copied into the model (ActionFormer evaluates the EMA).
    Returns (model, info dict).
    """
    build_optimizer, attach_metrics, NonFiniteLossStop, use_ema_weights = _need(
        "asl_tf.training", "build_optimizer", "attach_metrics", "NonFiniteLossStop",
        "use_ema_weights")
    build_detector = _need("asl_tf.model.detector", "build_detector")
    make_train_dataset, steps_per_epoch = _need("asl_tf.data.pipeline", "make_train_dataset",
                                                "steps_per_epoch")
    FeatureReader = _need("asl_tf.data.features", "FeatureReader")
    import keras

    tc = cfg.train_cfg
    keras.utils.set_random_seed(int(tc.seed) % (2 ** 31))
    records = []
    for split in cfg.dataset.train_split:
        records += load_split(cfg, split)
    reader = FeatureReader.from_config(cfg.dataset)
    model = build_detector(cfg.model_dict())
    try:
        attach_metrics(model)
    except Exception as err:  # noqa: BLE001 - metrics are optional logs
        logging.warning("per-component loss metrics unavailable: %s", err)
    steps = steps_per_epoch(len(records), tc.batch_size)
    opt = build_optimizer(model, dataclasses.asdict(cfg.opt), dataclasses.asdict(tc), steps)
    model.compile(optimizer=opt, run_eagerly=bool(run_eagerly))
    ds = make_train_dataset(records, reader, cfg.dataset, batch_size=tc.batch_size, seed=int(tc.seed))
    os.makedirs(workdir, exist_ok=True)
    cbs = [NonFiniteLossStop(), keras.callbacks.CSVLogger(os.path.join(workdir, "log.csv"))]
    total_epochs = int(tc.epochs + tc.warmup_epochs)
    t0 = time.time()
    hist = model.fit(ds, epochs=total_epochs, steps_per_epoch=steps, verbose=verbose,
                     callbacks=cbs + list(callbacks))
    train_s = time.time() - t0
    use_ema_weights(model)
    model.save_weights(os.path.join(workdir, "final_ema.weights.h5"))
    info = {"videos": len(records), "epochs": total_epochs, "steps_per_epoch": steps,
            "steps": total_epochs * steps, "train_s": train_s}
    h = hist.history
    for k in ("loss", "cls_loss", "reg_loss", "quality_loss", "ascl_loss"):
        if h.get(k):
            info[f"{k}_first_epoch"] = float(h[k][0])
            info[f"{k}_last_epoch"] = float(h[k][-1])
    return model, info




def step_train(ctx):
    cfg = ctx["cfg"] = experiment_config(ctx)
    train_dir = ctx["workdir"] / "train"
    if train_dir.exists():  # the demo always trains from scratch
        shutil.rmtree(train_dir)
    model, info = fit_experiment(cfg, str(train_dir), verbose=ctx.get("verbose", 2),
                                 run_eagerly=ctx.get("run_eagerly", False))
    ctx["model"] = model
    return info


# ----------------------------------------------------------------------------- 3. evaluate

def held_out_videos(ctx):
    """[(video_id, duration, fps, segments [N,2] s, labels [N])] of the held-out split."""
    db = json.loads(pathlib.Path(ctx["data"]["annotation_file"]).read_text())["database"]
    split = ctx["data_cfg"].test_split.lower()
    out = []
    for vid, v in sorted(db.items()):
        if v["subset"].lower() != split:
            continue
        segs = np.array([a["segment"] for a in v["annotations"]], np.float64).reshape(-1, 2)
        labels = np.array([a["label_id"] for a in v["annotations"]], np.int64)
        out.append((vid, float(v["duration"]), float(v["fps"]), segs, labels))
    return out


def keras_detect(model, feats, fps, feat_stride, num_frames, duration):
    """Whole-video inference (trimmed padding: the reference padding's outputs on the valid
    frames, fewer frames to run), post-processed by edge.postprocess."""
    from asl_tf.inference import detect_video

    return detect_video(model, feats, fps, feat_stride, num_frames, duration, trim=True)


def score(ctx, dets):
    """mAP per tIoU (THUMOS'14 thresholds 0.3:0.7:5) of {video: detections} on the held-out GT.

    `dets[video]` is `{"segments" [M,2] s, "scores" [M], "labels" [M]}`.
    """
    ev = _need("asl_tf.evaluation", "GroundTruth", "Predictions", "average_map", "default_tious")
    GroundTruth, Predictions, average_map, default_tious = ev
    videos = held_out_videos(ctx)
    gt = GroundTruth([v[0] for v in videos],
                     np.concatenate([np.full(len(v[4]), i) for i, v in enumerate(videos)]),
                     np.concatenate([v[3] for v in videos]), np.concatenate([v[4] for v in videos]),
                     dict(enumerate(ctx["data"]["class_names"])))
    preds = Predictions.from_detections([{"video_id": vid, **d} for vid, d in dets.items()])
    return average_map(gt, preds, default_tious("thumos14"), warn=False)


def step_evaluate(ctx):
    model = ctx.get("model")
    if model is None:
        raise _Missing("no trained model (training step not available)")
    dcfg = ctx["data_cfg"]
    feat_dir = pathlib.Path(ctx["data"]["feature_dir"])
    dets = {}
    t0 = time.time()
    for vid, dur, fps, _, _ in held_out_videos(ctx):
        feats = np.load(feat_dir / f"{vid}.npy")
        dets[vid] = keras_detect(model, feats, fps, dcfg.feat_stride, dcfg.num_frames, dur)
    infer_s = time.time() - t0
    ctx["dets"] = {"keras": dets}
    res = score(ctx, dets)
    ctx["map"] = {"keras": res}
    return {"videos": len(dets), "inference_s": infer_s, **_map_summary(res)}


def _map_summary(res):
    return {"average_mAP": float(res["average_mAP"]),
            "mAP_per_tiou": [float(x) for x in res["mAP_per_tiou"]],
            "tiou_thresholds": [float(x) for x in res["tiou_thresholds"]]}


# ----------------------------------------------------------------------------- 4. export

def step_export(ctx):
    export_model = _need("export.api", "export_model")
    model = ctx.get("model")
    if model is None:
        raise _Missing("no trained model (training step not available)")
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
        raise _Missing("no exported model (export step not available)")
    EdgeModel = _need("edge.runtime", "EdgeModel")
    detect_video = _need("edge.stream", "detect_video")
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
                    "ms_per_video_second": 1000 * wall / max(secs, 1e-9), **_map_summary(res)}
    return out


# ----------------------------------------------------------------------------- 6. report

def _lanes(segs):
    """Lane index per segment so that segments in one lane do not overlap (greedy by start)."""
    ends, out = [], [0] * len(segs)
    for i in np.argsort(np.asarray(segs)[:, 0], kind="stable") if len(segs) else []:
        s, e = segs[i]
        lane = next((j for j, end in enumerate(ends) if end <= s), len(ends))
        if lane == len(ends):
            ends.append(e)
        ends[lane] = e
        out[i] = lane
    return out


def draw_timeline(ctx, path: pathlib.Path, n_videos: int, source: str | None = None):
    """GT vs detections over time for a few held-out videos, one colour per class.

    Per video the top max(5, 1.5 x #GT) detections of `source` are drawn (ASL models score
    low, so a fixed threshold would hide them); bar height = score / the figure's top score.
    Overlapping GT instances (e.g. CliffDiving inside Diving) are drawn in separate lanes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names = ctx["data"]["class_names"]
    videos = held_out_videos(ctx)
    # prefer videos with several instances and more than one class, then shorter ones
    videos = sorted(videos, key=lambda v: (-min(len(set(v[4].tolist())), 3), -min(len(v[4]), 12),
                                           v[1]))[:n_videos]
    dets_all = (ctx.get("dets") or {}).get(source) if source else None
    shown = {}
    for vid, _, _, _, labels in videos:
        if dets_all is not None and vid in dets_all:
            d = dets_all[vid]
            order = np.argsort(-np.asarray(d["scores"]), kind="stable")
            order = order[:max(5, int(1.5 * len(labels)))]
            shown[vid] = [(float(d["segments"][i][0]), float(d["segments"][i][1]),
                           int(d["labels"][i]), float(d["scores"][i])) for i in order
                          if float(d["scores"][i]) >= 0.01]
    top = max([x[3] for v in shown.values() for x in v], default=1.0)
    # distinct colours for the classes in the figure: tab10 first, then tab20's light shades
    present = sorted({int(k) for v in videos for k in v[4]} | {x[2] for v in shown.values() for x in v})
    palette = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("tab20").colors)[1::2]
    cmap = {k: palette[i % len(palette)] for i, k in enumerate(present)}
    color = lambda k: cmap.get(int(k), "black")  # noqa: E731
    fig, axes = plt.subplots(len(videos), 1, figsize=(13, 1.9 * len(videos) + 0.8), squeeze=False)
    used = set()
    for ax, (vid, dur, _, segs, labels) in zip(axes[:, 0], videos):
        lanes = _lanes(segs)
        h = 0.8 / (max(lanes, default=0) + 1)
        for (s, e), k, lane in zip(segs, labels, lanes):
            ax.broken_barh([(s, max(e - s, 0.05))], (1.1 + lane * h, h), color=color(k))
            used.add(int(k))
        if vid in shown:
            for s, e, k, sc in shown[vid]:
                ax.broken_barh([(s, max(e - s, 0.05))], (0.1, 0.8 * sc / top), color=color(k),
                               alpha=0.75, edgecolor="black", linewidth=0.3)
                used.add(k)
            ax.set_yticks([0.5, 1.5], [f"{source} top-k\n(height ∝ score)", "ground truth"])
        else:
            ax.set_yticks([0.5, 1.5], ["detections: n/a", "ground truth"])
        ax.set_xlim(0, dur)
        ax.set_ylim(0, 2)
        ax.set_title(vid, fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    handles = [Patch(color=color(k), label=names[k]) for k in sorted(used)]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, max(1, len(handles))), fontsize=8,
               frameon=False)
    title = "Synthetic features on real THUMOS'14 timings: ground truth vs detections"
    if shown:
        title += f" (top {source} detections per video; tallest bar = score {top:.2f})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(handles) // 6), 1, 0.97))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _map_table(maps: dict) -> list[str]:
    if not maps:
        return ["mAP: not available (see the steps above)."]
    names = list(maps)
    tious = next(iter(maps.values()))["tiou_thresholds"]
    head = "| model | " + " | ".join(f"tIoU {t:.1f}" for t in tious) + " | average |"
    lines = [head, "|" + "---|" * (len(tious) + 2)]
    for n in names:
        r = maps[n]
        lines.append(f"| {n} | " + " | ".join(f"{100 * v:.2f}" for v in r["mAP_per_tiou"])
                     + f" | **{100 * float(r['average_mAP']):.2f}** |")
    return lines


def write_report(ctx, steps, path: pathlib.Path, total_s: float):
    dcfg = ctx.get("data_cfg")
    L = ["# asl-tf demo report", ""]
    L += ["**What is synthetic.** The features are generated by `asl_tf.data.synthetic`; the "
          "video durations, action instance boundaries, overlaps and class labels are the real "
          "THUMOS'14 annotations (`tests/fixtures/data/thumos14/thumos14.json`). Numbers here "
          "measure the pipeline on that test bed, not THUMOS'14 accuracy.", ""]
    L += [f"Total wall time: {total_s:.1f} s. Command: `asl-demo {' '.join(ctx['argv'])}`", ""]
    L += ["## Steps", "", "| step | status | seconds | notes |", "|---|---|---|---|"]
    for s in steps:
        note = s.detail.replace("|", "/") if s.detail else ""
        L.append(f"| {s.name} | {s.status} | {s.seconds:.1f} | {note} |")
    L.append("")
    g = next(s for s in steps if s.name == "generate")
    if g.status == "done" and dcfg is not None:
        d = g.data
        L += ["## Data", "",
              f"- {d['train_videos']} train + {d['test_videos']} held-out videos, "
              f"{d['instances']} instances, {d['feature_steps']} feature steps, "
              f"{dcfg.input_dim} channels, {dcfg.default_fps / dcfg.feat_stride:.2f} steps/s "
              f"(feat_stride {dcfg.feat_stride} frames at {dcfg.default_fps:g} fps)",
              f"- annotations: `{d['annotation_file']}`", f"- features: `{d['feature_dir']}`",
              f"- generator config: `{ctx['data_config_path']}` (+ overrides {ctx['data_overrides']})",
              ""]
    t = next(s for s in steps if s.name == "train")
    if t.status == "done":
        L += ["## Training", "", f"- config: `{ctx['config_path']}`, workdir `{ctx['workdir'] / 'train'}`"]
        for k, v in t.data.items():
            L.append(f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}")
        L.append("")
    L += ["## Held-out mAP (%) per tIoU", ""] + _map_table(
        {k: _map_summary(v) for k, v in (ctx.get("map") or {}).items()}) + [""]
    e = next(s for s in steps if s.name == "export")
    if e.status == "done":
        L += ["## Export", ""]
        for fmt, f in e.data["files"].items():
            size = os.path.getsize(f) if os.path.isfile(f) else 0
            L.append(f"- {fmt}: `{f}` ({size / 1e6:.2f} MB)")
            rep = e.data["reports"].get(fmt)
            if isinstance(rep, dict):
                v = rep.get("verification") or {}
                lat = rep.get("latency_ms") or {}
                L.append(f"  - verified against Keras on {v.get('windows', '?')} windows "
                         f"({v.get('calibration', '?')}): max |diff| {v.get('max_diff', float('nan')):.2e}, "
                         f"mAP delta {v.get('mAP_delta', float('nan')):+.2f}, passed {rep.get('passed')}")
                if lat:
                    L.append("  - median latency per window: " + ", ".join(
                        f"{float(ms):.1f} ms @ {t} thread(s)" for t, ms in lat.items()))
        L.append("")
    ed = next(s for s in steps if s.name == "edge")
    if ed.status == "done":
        L += ["## Edge runtime (held-out videos)", "",
              "| model | videos | wall s | ms per second of video | average mAP |", "|---|---|---|---|---|"]
        for fmt, r in ed.data.items():
            L.append(f"| {fmt} | {r['videos']} | {r['wall_s']:.2f} | {r['ms_per_video_second']:.2f} "
                     f"| {100 * r['average_mAP']:.2f} |")
        L.append("")
    L += ["## Timeline", "", "![timeline](timeline.png)", ""]
    failed = [s for s in steps if s.status == "failed"]
    if failed:
        L += ["## Errors", ""]
        for s in failed:
            L += [f"### {s.name}", "", "```", s.data.get("traceback", s.detail).strip(), "```", ""]
    with atomic_write(path) as f:
        f.write("\n".join(L))


# ----------------------------------------------------------------------------- main

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
    ctx["data_cfg"] = data_config(FLAGS.data_config, FLAGS.data_override, FLAGS.train_videos,
                                  FLAGS.test_videos)
    if not os.path.isfile(FLAGS.config):
        raise FileNotFoundError(f"{FLAGS.config}: experiment config not found (--config)")
    from asl_tf.config import load_config

    load_config(FLAGS.config, overrides=list(FLAGS.override))  # bad keys / values: exit 2 now

    steps = [Step(n) for n in STEPS]
    by = {s.name: s for s in steps}
    _run_step(by["generate"], step_generate, ctx)
    funcs = {"train": step_train, "evaluate": step_evaluate, "export": step_export,
             "edge": step_edge}
    for name, fn in funcs.items():
        if by["generate"].status != "done":
            by[name].status, by[name].detail = "skipped", "no data"
        elif name in FLAGS.skip:
            by[name].status, by[name].detail = "skipped", "--skip"
        else:
            _run_step(by[name], fn, ctx)

    rep = by["report"]
    t0 = time.time()
    report_md, timeline = workdir / "report.md", workdir / "timeline.png"
    try:
        if by["generate"].status == "done":
            source = next((k for k in ("tflite", "onnx", "keras") if k in (ctx.get("dets") or {})),
                          None)
            draw_timeline(ctx, timeline, FLAGS.timeline_videos, source)
        rep.status = "done"
    except Exception as err:  # noqa: BLE001 - reported
        rep.status, rep.detail = "failed", f"{type(err).__name__}: {err}"
        rep.data["traceback"] = traceback.format_exc()
    rep.seconds = time.time() - t0
    total = time.time() - t_start
    write_report(ctx, steps, report_md, total)
    summary = {s.name: s.status for s in steps}
    (workdir / "summary.json").write_text(json.dumps(
        {"steps": {s.name: {"status": s.status, "seconds": round(s.seconds, 2), "detail": s.detail}
                   for s in steps},
         "mAP": {k: _map_summary(v) for k, v in (ctx.get("map") or {}).items()},
         "total_s": round(total, 2)}, indent=1))
    print(f"\nasl-demo finished in {total:.1f} s: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    print(f"  data:      {workdir / 'data'}")
    print(f"  training:  {workdir / 'train'}")
    if ctx.get("exports"):
        for fmt, f in ctx["exports"].items():
            print(f"  {fmt + ':':10} {f}")
    print(f"  report:    {report_md}")
    if timeline.exists():
        print(f"  timeline:  {timeline}")
    if any(s.status == "failed" for s in steps):
        sys.exit(1)


def run():
    run_app(main, define_flags)


if __name__ == "__main__":
    run()
