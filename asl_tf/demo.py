"""The end-to-end demo as library code: generate synthetic features on real THUMOS'14
timings, train (the experiment runner, `asl_tf.experiment`), evaluate, export, run the exports
through edge/, report (`asl_tf.report`). `asl-demo` (asl_tf/cli/demo.py) parses flags into the
context dict and calls `run_steps`; each step is timed and recorded, a failed step is reported
with its error.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import time
import traceback

from absl import logging

from asl_tf import report

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = ("generate", "train", "evaluate", "export", "edge", "report")


# ----------------------------------------------------------------------------- step records

@dataclasses.dataclass
class Step:
    name: str
    status: str = "pending"       # done | skipped | failed
    seconds: float = 0.0
    detail: str = ""
    data: dict = dataclasses.field(default_factory=dict)


def _run_step(step: Step, fn, *args):
    t0 = time.time()
    logging.info("demo: step %s ...", step.name)
    print(f"[asl-demo] {step.name} ...", flush=True)
    try:
        result = fn(*args)
        step.status = "done"
        if isinstance(result, dict):
            step.data.update(result)
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

def config_for_data(config_path, data_cfg, summary, output_folder, overrides=(), epochs=None,
                    warmup_epochs=None):
    """The experiment config at `config_path` (configs/demo.yaml) pointed at generated
    synthetic data: `data_cfg` (SyntheticConfig) and `summary` (what `write_dataset` returns:
    annotation_file, feature_dir, class_names); `overrides` (key.sub=value) applied last."""
    from asl_tf.config import load_config

    ov = [f"dataset.json_file={summary['annotation_file']}",
          f"dataset.feat_folder=[{summary['feature_dir']}]",
          f"dataset.input_dim={data_cfg.input_dim}",
          f"dataset.num_classes={len(summary['class_names'])}",
          f"dataset.feat_stride={data_cfg.feat_stride}",
          f"dataset.num_frames={data_cfg.num_frames}",
          f"dataset.train_split=[{data_cfg.train_split}]",
          f"dataset.val_split=[{data_cfg.test_split}]",
          f"output_folder={output_folder}"]
    if epochs is not None:
        ov.append(f"train_cfg.epochs={epochs}")
    if warmup_epochs is not None:
        ov.append(f"train_cfg.warmup_epochs={warmup_epochs}")
    cfg = load_config(config_path, overrides=ov + list(overrides))
    cfg.dataset.class_names = list(summary["class_names"])
    return cfg


def experiment_config(ctx):
    """configs/demo.yaml pointed at the generated data of the demo's context."""
    return config_for_data(ctx["config_path"], ctx["data_cfg"], ctx["data"],
                           ctx["workdir"] / "train", ctx["overrides"], ctx["epochs"],
                           ctx["warmup_epochs"])


def fit(cfg, workdir, verbose=1, run_eagerly=False, callbacks=()):
    """Train `cfg` with the experiment runner (`asl_tf.experiment.train`, no validation
    callback, no op determinism) and leave the EMA weights in the model, as ActionFormer
    evaluates them. Returns (model, info dict: videos, epochs, steps, train_s, first/last
    epoch losses)."""
    from asl_tf import experiment
    from asl_tf.data.pipeline import steps_per_epoch

    t0 = time.time()
    model, hist = experiment.train(cfg, workdir, verbose=verbose, run_eagerly=run_eagerly,
                                   deterministic=False, evaluate=False, ema_weights=True,
                                   callbacks=callbacks, force=True)
    train_s = time.time() - t0
    n = len(experiment.read_records(cfg, "train")[0])
    tc = cfg.train_cfg
    total_epochs = int(tc.epochs + tc.warmup_epochs)
    steps = steps_per_epoch(n, tc.batch_size)
    info = {"videos": n, "epochs": total_epochs, "steps_per_epoch": steps,
            "steps": total_epochs * steps, "train_s": train_s}
    for k in ("loss", "cls_loss", "reg_loss", "quality_loss", "ascl_loss"):
        if hist.get(k):
            info[f"{k}_first_epoch"] = float(hist[k][0])
            info[f"{k}_last_epoch"] = float(hist[k][-1])
    return model, info


def step_train(ctx):
    cfg = ctx["cfg"] = experiment_config(ctx)
    train_dir = ctx["workdir"] / "train"
    if train_dir.exists():  # the demo always trains from scratch
        shutil.rmtree(train_dir)
    model, info = fit(cfg, str(train_dir), verbose=ctx.get("verbose", 2),
                      run_eagerly=ctx.get("run_eagerly", False))
    ctx["model"] = model
    return info


# ----------------------------------------------------------------------------- 3. evaluate

def held_out(cfg):
    """`VideoRecord`s of the held-out split (the config's validation split, read with
    `asl_tf.data.annotations.read_dataset`), sorted by video id."""
    from asl_tf.data.annotations import read_dataset

    return sorted(read_dataset(cfg.dataset, "val").records, key=lambda r: r.video_id)


def held_out_records(ctx):
    return held_out(ctx.get("cfg") or experiment_config(ctx))


def held_out_videos(ctx):
    """[(video_id, duration, fps, segments [N,2] s, labels [N])] of the held-out split."""
    return [(r.video_id, float(r.duration), float(r.fps), r.segments, r.labels)
            for r in held_out_records(ctx)]


def score(ctx, dets):
    """mAP per tIoU (THUMOS'14 thresholds 0.3:0.7:5) of {video: detections} on the held-out GT.

    `dets[video]` is `{"segments" [M,2] s, "scores" [M], "labels" [M]}`.
    """
    from asl_tf import experiment
    from asl_tf.evaluation import default_tious

    return experiment.score(held_out_records(ctx), dets, ctx["data"]["class_names"],
                            default_tious("thumos14"))


def step_evaluate(ctx):
    from asl_tf import experiment
    from asl_tf.data.features import FeatureReader

    model = ctx.get("model")
    if model is None:
        raise RuntimeError("no trained model (the training step did not run)")
    cfg = ctx.get("cfg") or experiment_config(ctx)
    t0 = time.time()
    dets = experiment.detect_records(model, held_out(cfg), FeatureReader.from_config(cfg.dataset))
    infer_s = time.time() - t0
    ctx["dets"] = {"keras": dets}
    res = score(ctx, dets)
    ctx["map"] = {"keras": res}
    return {"videos": len(dets), "inference_s": infer_s, **report.map_summary(res)}


def run_steps(ctx, deploy_steps=(), skip=(), timeline_videos=4, t_start=None):
    """Run the demo's steps on `ctx` (workdir, configs, knobs), write report.md, timeline.png
    and summary.json in ctx["workdir"]. Returns the list of `Step`s.

    deploy_steps: `{"export": fn(ctx), "edge": fn(ctx)}`, the steps that use export/ and the
    edge runtime (which the library must not import; asl_tf/cli/demo.py supplies them)."""
    t_start = time.time() if t_start is None else t_start
    workdir = ctx["workdir"]
    steps = [Step(n) for n in STEPS]
    by = {s.name: s for s in steps}
    _run_step(by["generate"], step_generate, ctx)
    funcs = {"train": step_train, "evaluate": step_evaluate, **dict(deploy_steps)}
    for name, fn in funcs.items():
        if by["generate"].status != "done":
            by[name].status, by[name].detail = "skipped", "no data"
        elif name in skip:
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
            report.draw_timeline(ctx, held_out_videos(ctx), timeline, timeline_videos, source)
        rep.status = "done"
    except Exception as err:  # noqa: BLE001 - reported
        rep.status, rep.detail = "failed", f"{type(err).__name__}: {err}"
        rep.data["traceback"] = traceback.format_exc()
    rep.seconds = time.time() - t0
    total = time.time() - t_start
    report.write_report(ctx, steps, report_md, total)
    summary = {s.name: s.status for s in steps}
    report.write_text(workdir / "summary.json", json.dumps(
        {"steps": {s.name: {"status": s.status, "seconds": round(s.seconds, 2), "detail": s.detail}
                   for s in steps},
         "mAP": {k: report.map_summary(v) for k, v in (ctx.get("map") or {}).items()},
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
    return steps
