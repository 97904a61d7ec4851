"""Export benchmark at the THUMOS14 I3D config (T=2304, C=2048, batch 1): every TFLite
variant and ONNX, run through the `edge/` runtime in a TensorFlow-free subprocess.

    python bench/export_latency.py [--config configs/thumos14_i3d.yaml] [--model M.keras] \
        [--workdir /tmp/asl-export-bench] [--runs 5] [--json OUT.json]

Per variant: file size, max |export - Keras| of logits/offsets and the average-mAP delta
(from the export's own verification, `export.api.export_model`), then in a fresh process that
imports only numpy, the runtime and `edge` (no TensorFlow): median latency of the model alone
and of full inference (model + edge.postprocess) at 1 and 2 threads, and the process's peak
RSS. Prints a table and one JSON document.

Without `--model` the detector is the config's architecture with seeded random weights (the
reference init with the last cls conv x3 so the scores spread out; `--init golden` also adds
0.1*N(0,1) to every parameter like the reference goldens); calibration/verification windows are seeded random-walk features (no
THUMOS14 features on this machine). mAP deltas are then measured against the Keras model's
own top detections (pseudo ground truth), see export/verify.py.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
VARIANTS = [("tflite", "none"), ("tflite", "fp16"), ("tflite", "dynamic"), ("tflite", "int8"),
            ("onnx", "none")]
REFERENCE = {"pytorch_median_full_inference_s_2_threads": 0.60, "pytorch_peak_rss_gb": 0.59}


# ----------------------------------------------------------------------------- edge probe

def _vm_hwm_mb():
    """Peak RSS of this process image. Not getrusage's ru_maxrss: Linux carries the parent's
    high-water mark across fork+exec, so a child of the (large) exporting process would report
    the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def probe(path, threads, runs):
    """Runs in a subprocess: latency and peak RSS through edge/ only (no TensorFlow)."""
    import numpy as np

    from edge import postprocess as pp
    from edge.runtime import EdgeModel

    m = EdgeModel(path, num_threads=threads)
    rng = np.random.default_rng(0)
    feats = np.cumsum(rng.standard_normal((m.window, m.input_dim)), 0).astype(np.float32)
    feats /= np.sqrt(np.arange(1, m.window + 1, dtype=np.float32))[:, None]
    mask = np.ones(m.window, bool)
    points = pp.make_points(m.level_lengths, m.fpn_strides, m.regression_range)
    lvl_mask = np.concatenate([mask[::s] for s in m.fpn_strides])

    def full():
        out = m.run(feats, mask)
        return pp.postprocess(out["cls_logits"], out["offsets"], lvl_mask, points,
                              m.level_lengths, m.test_cfg, 30.0, 4, 16, m.window * 4 / 30.0)

    full()  # warm-up
    model_t, full_t = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        m.run(feats, mask)
        model_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        full()
        full_t.append(time.perf_counter() - t0)
    return {"threads": threads, "median_model_s": float(np.median(model_t)),
            "median_full_s": float(np.median(full_t)),
            "peak_rss_mb": _vm_hwm_mb(),
            "tensorflow_imported": "tensorflow" in sys.modules}


def run_probe(path, threads, runs, timeout):
    cmd = [sys.executable, __file__, "--probe", str(path), "--threads", str(threads),
           "--runs", str(runs)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        return {"threads": threads, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- export side

def build_model(config, model_path, seed=0, init="golden"):
    import keras
    import numpy as np
    if model_path:
        from export.api import load_model
        return load_model(model_path), "trained model " + model_path
    from asl_tf.config import load_config
    from asl_tf.model.detector import build_detector
    keras.utils.set_random_seed(seed)
    cfg = load_config(config)
    d = cfg.model_dict()
    d.setdefault("train_cfg", {})["droppath"] = 0.0
    model = build_detector(d)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if "loss_normalizer" in w.path:
            continue
        v = w.numpy()
        if init == "golden":
            v = v + 0.1 * rng.standard_normal(w.shape).astype("float32")
        if w.path.endswith("cls_head/cls_head/kernel"):
            v = 3.0 * v
        w.assign(v)
    how = ("golden-style perturbation: +0.1*N(0,1), cls kernel x3" if init == "golden"
           else "reference init, cls kernel x3")
    return model, f"random weights (seed {seed}, {how})"


def write_features(folder, n, t, c, seed=0):
    import numpy as np
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        p = folder / f"video_{i:02d}.npy"
        if p.exists():
            continue
        x = np.cumsum(rng.standard_normal((t, c)), 0) / np.sqrt(np.arange(1, t + 1))[:, None]
        np.save(p, x.astype("float32"))
    return folder


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "thumos14_i3d.yaml"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--init", choices=["golden", "default"], default="default",
                    help="random-weight recipe when no --model is given")
    ap.add_argument("--workdir", default="/tmp/asl-export-bench")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--calib_videos", type=int, default=8)
    ap.add_argument("--verify_windows", type=int, default=4)
    ap.add_argument("--variants", default=",".join(f"{f}:{q}" for f, q in VARIANTS))
    ap.add_argument("--probe_timeout", type=int, default=300)
    ap.add_argument("--json", default=None)
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe, args.threads, args.runs)))
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO))
    from export.api import export_model
    from export.verify import DEFAULT_LIMITS

    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model, origin = build_model(args.config, args.model, init=args.init)
    t = int(model.max_seq_len)
    feats = write_features(work / "features", args.calib_videos, t, int(model.input_dim))
    rows = []
    for item in args.variants.split(","):
        fmt, q = item.split(":")
        out = work / (f"model_{q}.tflite" if fmt == "tflite" else "model.onnx")
        t0 = time.time()
        # Verify with limits opened wide so every variant is written and measured; judge
        # against the default limits here.
        rep = export_model(model, fmt, out, quantize=q, calibration=feats, force=True,
                           video_meta={"feat_stride": 4, "num_frames": 16, "fps": 30.0},
                           limits={"max_diff": 1e9, "max_map_drop": 1e9},
                           verify_windows=args.verify_windows, latency_runs=1)
        v = rep["verification"]
        lim = DEFAULT_LIMITS[q]
        ok = ((lim["max_diff"] is None or v["max_diff"] <= lim["max_diff"]) and
              (lim["max_map_drop"] is None or (v["mAP_delta"] is not None
                                               and v["mAP_delta"] >= -lim["max_map_drop"])))
        row = {"format": fmt, "quantize": q, "size_mb": rep["size_bytes"] / 1e6,
               "max_diff_cls_logits": v["max_diff_cls_logits"],
               "max_diff_offsets": v["max_diff_offsets"], "mAP_delta": v["mAP_delta"],
               "passes_default_limits": ok, "export_s": time.time() - t0,
               "ops": rep.get("ops")}
        for n in (1, 2):
            row[f"edge_{n}t"] = run_probe(out, n, args.runs, args.probe_timeout)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "ops"}), flush=True)
    result = {"config": args.config, "window": t, "input_dim": int(model.input_dim),
              "weights": origin, "runs": args.runs, "reference": REFERENCE, "variants": rows}
    print(table(rows))
    print(json.dumps(result, indent=1))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def table(rows):
    head = ["variant", "size MB", "max|dlogit|", "dmAP", "model s 1t", "full s 1t",
            "model s 2t", "full s 2t", "peak RSS MB", "ok"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        e1, e2 = r["edge_1t"], r["edge_2t"]
        f = lambda d, k, s: format(d[k], s) if k in d else "err"  # noqa: E731
        lines.append("| " + " | ".join([
            f"{r['format']} {r['quantize']}", f"{r['size_mb']:.1f}",
            f"{r['max_diff_cls_logits']:.2e}",
            "-" if r["mAP_delta"] is None else f"{r['mAP_delta']:+.2f}",
            f(e1, "median_model_s", ".3f"), f(e1, "median_full_s", ".3f"),
            f(e2, "median_model_s", ".3f"), f(e2, "median_full_s", ".3f"),
            f(e2, "peak_rss_mb", ".0f"), "yes" if r["passes_default_limits"] else "NO"]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
