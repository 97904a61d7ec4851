"""Video -> detections on the device, end to end, 1 thread: real-time factor and peak RSS; JSON.

The egocentric preset with on-device features (configs/ego4d_mq_edge_lite0.yaml: EfficientNet-
Lite0 snippet features, 0.5 s steps, window 256 steps) as two device paths:
- fp32: the encoder and the detector exported to TFLite fp32;
- int8: the encoder int8 (calibrated on real frames of the fixture clips) and the detector int8
  (calibrated on Lite0 features of the same clips).
Each runs `asl-edge run --video CLIP --encoder E --model M --threads 1` in a subprocess with no
TensorFlow imported (decoder, encoder and detector on 1 thread each), `--repeat` times; the
report gives the median real-time factor (seconds of video per second of processing, after
the models are loaded; also per CPU second of the process, which on a shared machine estimates
a dedicated core since every stage runs on 1 thread) and the largest peak RSS (VmHWM) of the
whole edge process.

The detector is randomly initialised (no trained Lite0 Ego4D checkpoint exists): its latency is
that of a trained one; its detections are meaningless (and an untrained detector's many
low-score candidates make NMS an upper bound).

    python bench/edge_video.py [--video tests/fixtures/videos/bikes.mp4 ...] [--repeat 3]
        [--workdir DIR] [--out results.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIPS = [os.path.join(REPO, "tests", "fixtures", "videos", n)
         for n in ("bikes.mp4", "carphone_pristine.mp4")]


def build_models(work, config):
    """Export encoder and detector (fp32 and int8) into `work`; returns {path: (enc, det)}."""
    from asl_tf.config import load_config
    from asl_tf.features.extract import extract_video, keras_encoder
    from asl_tf.features.recipe import recipe_from_config
    from asl_tf.model.detector import build_detector
    from export import encoder as enc_export
    from export.api import export_model
    from export.encoder_frames import load_frames, split

    import numpy as np

    cfg = load_config(config)
    recipe = recipe_from_config(cfg, config)
    keras_enc = keras_encoder(recipe)
    frames = load_frames(",".join(CLIPS), size=recipe.size, per_video=48)
    cal, _ = split(frames)
    model = enc_export.build()
    encs = {}
    for q in ("none", "int8"):
        path = os.path.join(work, f"lite0_{q}.tflite")
        if not os.path.exists(path):
            blob = enc_export.convert_tflite(model, q, calibration=cal.rgb)
            with open(path, "wb") as f:
                f.write(blob)
            meta = enc_export.sidecar(model, "efficientnet_lite0", q, keras_enc.weights_path)
            with open(path + ".meta.json", "w") as f:
                json.dump(meta, f, indent=1)
        encs[q] = path
    feat_dir = os.path.join(work, "calib_features")
    os.makedirs(feat_dir, exist_ok=True)
    for clip in CLIPS:
        feats, _ = extract_video(clip, recipe, keras_enc)
        np.save(os.path.join(feat_dir, os.path.splitext(os.path.basename(clip))[0] + ".npy"),
                feats)
    det = build_detector(cfg.model_dict())
    ds = cfg.dataset
    meta = {"feat_stride": ds.feat_stride, "num_frames": ds.num_frames, "fps": ds.default_fps}
    dets = {}
    for q in ("none", "int8"):
        path = os.path.join(work, f"ego4d_lite0_{q}.tflite")
        if not os.path.exists(path):
            export_model(det, "tflite", path, quantize=q, force=True, verify=False,
                         video_meta=meta, calibration=feat_dir if q == "int8" else None)
        dets[q] = path
    return {"fp32": (encs["none"], dets["none"]), "int8": (encs["int8"], dets["int8"])}, \
        int(det.count_params())


def run_edge(video, enc, det, work, threads, hop):
    out, rep = os.path.join(work, "dets.json"), os.path.join(work, "report.json")
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "edge.cli", "run", "--video", video, "--encoder", enc,
           "--model", det, "--threads", str(threads), "--out", out, "--report", rep]
    if hop:
        cmd += ["--hop", str(hop)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"edge run failed: {res.stderr.strip()}")
    with open(rep) as f:
        report = json.load(f)
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=os.path.join(REPO, "configs", "ego4d_mq_edge_lite0.yaml"))
    ap.add_argument("--video", nargs="+", default=[CLIPS[0]])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hop", type=int, default=192)
    ap.add_argument("--workdir", default=None, help="keep (and reuse) the exports here")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, REPO)
    work = args.workdir or tempfile.mkdtemp(prefix="edge_video_")
    os.makedirs(work, exist_ok=True)
    paths, params = build_models(work, args.config)
    results = []
    for video in args.video:
        for name, (enc, det) in paths.items():
            reps = [run_edge(video, enc, det, work, args.threads, args.hop)
                    for _ in range(args.repeat)]
            r = reps[0]
            results.append({
                "video": os.path.basename(video), "path": name, "video_s": r["video_s"],
                "frames_decoded": r["frames_decoded"], "frames_encoded": r["frames_encoded"],
                "snippets": r["snippets"], "windows": r["windows"],
                "real_time_factor_median": statistics.median(x["real_time_factor"] for x in reps),
                "real_time_factor_all": [x["real_time_factor"] for x in reps],
                "real_time_factor_cpu_median": statistics.median(
                    x["real_time_factor_cpu"] for x in reps),
                "process_s_median": statistics.median(x["process_s"] for x in reps),
                "load_s_median": statistics.median(x["load_s"] for x in reps),
                "encoder_ms_per_frame_median": statistics.median(
                    1e3 * x["encode_s"] / max(x["frames_encoded"], 1) for x in reps),
                "peak_rss_mb_max": max(x["peak_rss_mb"] for x in reps),
                "encoder_mb": os.path.getsize(enc) / 1e6, "detector_mb": os.path.getsize(det) / 1e6,
            })
            print(json.dumps(results[-1]), file=sys.stderr)
    doc = {"config": os.path.relpath(args.config, REPO), "threads": args.threads, "hop": args.hop,
           "detector": "randomly initialised", "detector_params": params,
           "load_average_1min": os.getloadavg()[0],
           "targets": {"int8_real_time_factor_min": 10.0, "peak_rss_mb_max": 300.0},
           "results": results}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
