"""Frame-encoder benchmark (EfficientNet-Lite0, 224x224): ms per frame at 1 and 2 threads for
Keras, TFLite fp32 / dynamic / int8 and ONNX, on a batch of real frames.

    python bench/encoder.py [--workdir /tmp/asl-encoder-bench] [--batch 8] [--runs 5]
        [--json OUT.json]

The exports are made by `export.api.export_encoder` (so each carries its own verification:
max diff / cosine / top-1 agreement against Keras on held-out frames of the fixture clips;
int8 is calibrated on the other half). Timing: a batch of `--batch` real frames (bikes.mp4 and
carphone_pristine.mp4, FFmpeg bilinear to 224x224) per call, one warm-up call, then the median
of `--runs` calls, divided by the batch. All variants are timed in one subprocess per thread
count (TensorFlow fixes its thread pools once per process; Keras runs `predict_on_batch`),
interleaved run by run so a change of load hits every variant alike. The 1-minute load average
before and after the timing is recorded: the machine is shared, so numbers under load are upper
bounds.
For scale, the PyTorch reference encoder (efficientnet-lite-pytorch, eval, batch 8) takes about
43 ms per frame on 1 thread of these machines (issue 14).
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
VIDEOS = REPO / "tests" / "fixtures" / "videos"
VARIANTS = [("tflite", "none"), ("tflite", "dynamic"), ("tflite", "int8"), ("onnx", "none")]
PYTORCH_REFERENCE_MS_1T = 43.0


def _frames(batch):
    import numpy as np

    from export import encoder_frames
    frames = encoder_frames.load_frames(VIDEOS, per_video=max(1, batch // 2 + 1))
    return frames.rgb[:batch].astype(np.float32)


def probe(threads, workdir, batch, runs):
    """Subprocess body: ms per frame of every variant at `threads` threads, interleaved (run r
    of every variant before run r+1 of any), so a change of load hits all variants alike."""
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from asl_tf.features import efficientnet_lite0
    from export import encoder as enc
    model = efficientnet_lite0(include_top=False)
    runners = {"keras": model.predict_on_batch}
    for fmt, quantize in VARIANTS:
        make = enc.TFLiteEncoder if fmt == "tflite" else enc.OnnxEncoder
        runners[_label(fmt, quantize)] = make(_path(workdir, fmt, quantize), threads=threads)
    x = _frames(batch)
    times = {k: [] for k in runners}
    for run in runners.values():
        run(x)  # warm-up (allocation, tracing)
    for _ in range(runs):
        for k, run in runners.items():
            t0 = time.perf_counter()
            run(x)
            times[k].append(time.perf_counter() - t0)
    print(json.dumps({k: 1e3 * float(np.median(v)) / batch for k, v in times.items()}))


def _label(fmt, quantize):
    return f"{fmt} {'fp32' if quantize == 'none' else quantize}"


def _path(workdir, fmt, quantize):
    return os.path.join(workdir, f"efficientnet_lite0_{quantize}.{fmt}")


def _probe(threads, workdir, batch, runs):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, __file__, "--probe", str(threads), "--workdir",
                           workdir, "--batch", str(batch), "--runs", str(runs)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/asl-encoder-bench")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--probe", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        return probe(args.probe, args.workdir, args.batch, args.runs)

    from export import api
    os.makedirs(args.workdir, exist_ok=True)
    rows = [{"variant": "keras", "size_mb": None}]
    for fmt, quantize in VARIANTS:
        rep = api.export_encoder("efficientnet_lite0", fmt, _path(args.workdir, fmt, quantize),
                                 quantize=quantize, calibration=str(VIDEOS), force=True,
                                 threads=(1,), latency_runs=1)
        v = rep["verification"]
        rows.append({"variant": _label(fmt, quantize), "size_mb": round(rep["size_bytes"] / 1e6, 2),
                     "max_diff": v["max_diff"], "mean_cosine": v["mean_cosine"],
                     "min_cosine": v["min_cosine"], "top1_agreement": v["top1_agreement"]})
    load_before = os.getloadavg()[0]
    ms = {n: _probe(n, args.workdir, args.batch, args.runs) for n in (1, 2)}
    for r in rows:
        r["ms_per_frame"] = {str(n): ms[n][r["variant"]] for n in ms}
    result = {"encoder": "efficientnet_lite0", "input": [args.batch, 224, 224, 3],
              "runs": args.runs, "frames": "bikes.mp4 + carphone_pristine.mp4",
              "pytorch_reference_ms_per_frame_1_thread": PYTORCH_REFERENCE_MS_1T,
              "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0],
              "cpu_count": os.cpu_count(), "rows": rows}
    print("variant | size MB | ms/frame 1t | ms/frame 2t | mean cos | top-1 agree")
    for r in rows:
        ms = r["ms_per_frame"]
        print(f"{r['variant']} | {r['size_mb'] or '-'} | {ms['1']:.1f} | {ms['2']:.1f} | "
              f"{r.get('mean_cosine', 1.0):.4f} | {r.get('top1_agreement', 1.0):.3f}")
    print(json.dumps(result, indent=1))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
