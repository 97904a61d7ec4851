"""Training-step benchmark of ASLDetector at the THUMOS14 I3D config; prints JSON.

    python bench/train_step.py [--modes graph,xla,bf16,graph_lean,bf16_lean] [--steps 4] [--warmup 1]
                               [--threads 2] [--asl off|on] [--out bench_train.json]

Config (configs/thumos14_i3d.yaml = ActionFormer thumos_i3d.yaml): input 2048, 512 wide,
arch (2,2,5), local window 19, max_seq_len 2304, 20 classes; batch 2, T = 2304, random
features with 3 GT per video, droppath 0.1 as in training. The step is the full TensorFlow
train step of asl_tf.training (forward, label assignment, losses, gradient, global clip,
AdamW + weight EMA, normaliser update) driven by `model.fit`.

Modes (each in its own subprocess, so peak RSS = that process's ru_maxrss):
  graph  tf.function step (Keras default on CPU), float32
  xla    the same with jit_compile=True
  bf16   graph step under the keras `mixed_bfloat16` policy
  graph_lean / bf16_lean  graph / bf16 with the memory settings of asl-train:
         `train_cfg.remat: true` (attention and MLP recomputed in the backward pass) and
         `--inter_op_threads 1` (one op at a time)
As in asl-train, the optimizer (moments and EMA) is built before the first step.
`--asl on` switches the three ASL parts on (the reference numbers below are ActionFormer).
Times: median seconds per step over --steps steps after --warmup steps (the first includes
the trace/compile time, reported separately as first_step_s).

Reference (issue 4, PyTorch ActionFormer on this machine, 2 threads): 3.8 s per step
(median), peak RSS 2.7 GB. Target: >= 1.3x faster at no more memory.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
REFERENCE = {"torch_s_per_step": 3.8, "torch_peak_rss_gb": 2.7}
ASL_ON = {"class_level": True, "instance_level": True, "contrastive": True}
ASL_OFF = {"class_level": False, "instance_level": False, "contrastive": False}


def _child(mode, steps, warmup, threads, asl):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, REPO)
    import numpy as np
    import tensorflow as tf
    lean = mode.endswith("_lean")
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1 if lean else threads)
    import keras

    from asl_tf import training
    from asl_tf.config import load_config
    from asl_tf.model.detector import build_detector

    cfg = load_config(os.path.join(REPO, "configs", "thumos14_i3d.yaml"))
    md = cfg.model_dict()
    md["asl"] = ASL_ON if asl == "on" else ASL_OFF
    training.set_precision("mixed_bfloat16" if mode.startswith("bf16") else "off")
    keras.utils.set_random_seed(0)
    model = build_detector(md)
    training.set_remat(model, lean)
    tc = {"epochs": 30, "warmup_epochs": 5, "clip_grad_l2norm": 1.0, "ema_decay": 0.999}
    opt = training.build_optimizer(model, {"learning_rate": 1e-4, "weight_decay": 0.05}, tc, 100)
    model.compile(optimizer=opt, jit_compile=(mode == "xla"))
    model.optimizer.build(model.trainable_variables)   # as asl-train does (else the first step traces twice)

    b, t, c = 2, md["max_seq_len"], md["input_dim"]
    rng = np.random.default_rng(0)
    x = {"feats": rng.normal(size=(b, t, c)).astype(np.float32), "mask": np.ones((b, t), bool)}
    x["mask"][1, 2000:] = False
    segs = np.array([[[100, 180], [600, 900], [1500, 1540]]] * b, np.float32)
    y = {"gt_segments": segs, "gt_labels": np.array([[1, 5, 9]] * b, np.int32)}
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()

    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.t0)

    hist = model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[Timer()])
    timed = times[warmup:]
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    return {"mode": mode, "asl": asl, "threads": threads, "remat": lean,
            "inter_op_threads": 1 if lean else threads, "batch": b, "seq_len": t,
            "params": int(sum(int(np.prod(v.shape)) for v in model.trainable_variables)),
            "first_step_s": times[0], "median_s_per_step": float(np.median(timed)),
            "steps_per_s": 1.0 / float(np.median(timed)), "step_times_s": timed,
            "peak_rss_gb": rss_gb, "loss": float(hist.history["loss"][-1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="graph,xla,bf16,graph_lean,bf16_lean")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--asl", choices=["off", "on"], default="off")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per mode")
    ap.add_argument("--out", default=None)
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print("JSON" + json.dumps(_child(args._child, args.steps, args.warmup, args.threads, args.asl)))
        return
    results = {}
    for mode in args.modes.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "--_child", mode, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--threads", str(args.threads), "--asl", args.asl]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                 env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
            line = [l for l in res.stdout.splitlines() if l.startswith("JSON")]
            results[mode] = json.loads(line[0][4:]) if line else {"error": res.stderr[-2000:]}
        except subprocess.TimeoutExpired:
            results[mode] = {"error": f"timeout after {args.timeout} s"}
    for r in results.values():
        if "median_s_per_step" in r:
            r["speedup_vs_torch"] = REFERENCE["torch_s_per_step"] / r["median_s_per_step"]
            r["rss_vs_torch"] = r["peak_rss_gb"] / REFERENCE["torch_peak_rss_gb"]
    out = {"benchmark": "train_step", "config": "configs/thumos14_i3d.yaml", "reference": REFERENCE,
           "results": results}
    text = json.dumps(out, indent=1)
    if args.out:
        sys.path.insert(0, REPO)
        from asl_tf.fileio import atomic_write
        with atomic_write(args.out) as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
