"""Batch-1 forward benchmark of ASLDetector at the THUMOS14 I3D config; prints JSON.

    python bench/forward.py [--threads 1,2] [--modes eager,function,xla,bf16,bf16_xla,floor,bf16_floor]
                            [--repeats 5] [--seq_len 2304] [--out bench.json]

Config (configs/thumos14_i3d.yaml / ActionFormer thumos_i3d.yaml): input 2048, 512 wide,
arch (2,2,5), local window 19, max_seq_len 2304, 20 classes; 29,251,612 parameters.
`median_cpu_s` is the process CPU time per call: on a shared machine it is the figure least
disturbed by other load (at 1 thread it is the single-core time). Every (threads, mode) pair
runs in its own subprocess, so thread settings take effect and peak
RSS (ru_maxrss of that process) belongs to that mode alone. Times are the median over
--repeats calls after one warm-up call (trace/compile time reported separately).

Modes: eager (model(x) op by op), function (tf.function), xla (tf.function jit_compile=True),
bf16 / bf16_xla (the same with the keras mixed_bfloat16 policy).
Also `floor` / `bf16_floor`: the matmul floor. The forward graph is traced at T, every 2-D
MatMul in it (M, K, N and dtype, 99% of the FLOPs) is collected, and those matmuls alone run
in one tf.function with nothing else: the time any implementation of this model needs with
TensorFlow's (oneDNN) matmul on this CPU. `fraction_of_floor` = floor time / forward time.
Also `attention`: the local-attention kernel alone at T=2304 (blocked band, the model's
implementation, vs. a gathered-window implementation), which is how the model's choice was made.

Reference for scale (issue 3, PyTorch on this machine, 2 threads): 0.60 s full inference,
0.66 s heads-only forward, 90.5 GFLOP per forward, peak RSS 0.59 GB.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
REFERENCE = {"torch_full_inference_s": 0.60, "torch_forward_s": 0.66, "gflop": 90.5,
             "torch_peak_rss_gb": 0.59}
THUMOS = {"input_dim": 2048, "num_classes": 20, "max_seq_len": 2304, "n_mha_win_size": 19,
          "embd_dim": 512, "fpn_dim": 512, "head_dim": 512, "backbone_arch": [2, 2, 5],
          "fpn_type": "identity", "max_buffer_len_factor": 6.0,
          "train_cfg": {"droppath": 0.1, "init_loss_norm": 100, "cls_prior_prob": 0.01}}
PARAMS = 29251612


def _child(mode, threads, repeats, seq_len):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import resource

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1 if threads == 1 else 2)
    import keras

    sys.path.insert(0, REPO)
    if mode == "attention":
        return _attention_child(repeats, seq_len)
    if mode.endswith("floor"):
        return _floor_child(mode, threads, repeats, seq_len)
    if mode.startswith("bf16"):
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    from asl_tf.model.detector import build_detector

    keras.utils.set_random_seed(0)
    model = build_detector(THUMOS)
    n_params = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    rng = np.random.RandomState(0)
    feats = tf.constant(rng.randn(1, seq_len, 2048).astype(np.float32))
    mask_np = np.zeros((1, seq_len), bool)
    mask_np[0, :int(seq_len * 0.9)] = True
    mask = tf.constant(mask_np)
    x = {"feats": feats, "mask": mask}
    if mode == "eager":
        fn = lambda: model(x, training=False)  # noqa: E731
    else:
        jit = mode.endswith("xla")
        fn_ = tf.function(lambda a: model(a, training=False), jit_compile=jit)
        fn = lambda: fn_(x)  # noqa: E731
    t0 = time.perf_counter()
    out = fn()
    out["cls_logits"].numpy()
    first = time.perf_counter() - t0
    times, cpu = [], []
    load = os.getloadavg()[0]
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        out["cls_logits"].numpy()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB -> GB
    return {"mode": mode, "threads": threads, "median_s": float(np.median(times)),
            "min_s": float(np.min(times)), "median_cpu_s": float(np.median(cpu)),
            "first_call_s": first, "peak_rss_gb": rss, "params": n_params,
            "repeats": repeats, "load_avg_1min": load}


def _floor_child(mode, threads, repeats, seq_len):
    """Time only the forward's 2-D matmuls (shapes and dtypes read from the traced graph)."""
    import numpy as np
    import tensorflow as tf
    import keras

    if mode.startswith("bf16"):
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    from asl_tf.model.detector import build_detector

    keras.utils.set_random_seed(0)
    model = build_detector(THUMOS)
    spec = {"feats": tf.TensorSpec([1, seq_len, 2048], tf.float32),
            "mask": tf.TensorSpec([1, seq_len], tf.bool)}
    graph = tf.function(lambda a: model(a, training=False)).get_concrete_function(spec).graph
    shapes, other = [], 0.0
    for op in graph.get_operations():
        if op.type == "MatMul":
            a, b = op.inputs[0].shape, op.inputs[1].shape
            m, k = (a[1], a[0]) if op.get_attr("transpose_a") else (a[0], a[1])
            n = b[0] if op.get_attr("transpose_b") else b[1]
            shapes.append((int(m), int(k), int(n), op.inputs[0].dtype.name))
        elif op.type in ("BatchMatMulV2", "BatchMatMulV3", "Einsum", "Conv2D",
                         "DepthwiseConv2dNative"):
            out = op.outputs[0].shape
            if out.is_fully_defined():  # rough: attention scores / depthwise convs
                other += 2.0 * float(np.prod(out)) * 36
    gflop = sum(2.0 * m * k * n for m, k, n, _ in shapes) / 1e9
    rng = np.random.RandomState(0)
    xs = [tf.constant(rng.randn(m, k).astype(np.float32), dtype=dt) for m, k, n, dt in shapes]
    ws = [tf.constant((rng.randn(k, n) * 0.02).astype(np.float32), dtype=dt)
          for m, k, n, dt in shapes]

    @tf.function
    def matmuls():
        acc = tf.constant(0.0)
        for x, w in zip(xs, ws):
            acc += tf.cast(tf.matmul(x, w)[0, 0], tf.float32)
        return acc

    matmuls().numpy()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmuls().numpy()
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {"mode": mode, "threads": threads, "matmuls": len(shapes),
            "matmul_gflop": round(gflop, 2), "other_gflop_estimate": round(other / 1e9, 2),
            "floor_median_s": med, "floor_gflop_per_s": round(gflop / med, 1),
            "dtypes": sorted({dt for *_, dt in shapes}), "repeats": repeats}


def _gathered_local_attention(q, k, v, kv_mask, w, nh):
    """The alternative: gather the 2w+1 keys of every query ([B,T,2w+1,C]) then reduce."""
    from keras import ops

    b, t, c = q.shape
    hd = c // nh
    kp = ops.pad(k, [[0, 0], [w, w], [0, 0]])
    vp = ops.pad(v, [[0, 0], [w, w], [0, 0]])
    bias = ops.pad((1.0 - kv_mask) * -1e4, [[0, 0], [w, w], [0, 0]], constant_values=-1e30)
    kw = ops.stack([kp[:, j:j + t] for j in range(2 * w + 1)], axis=2)       # B,T,W,C
    vw = ops.stack([vp[:, j:j + t] for j in range(2 * w + 1)], axis=2)
    bw = ops.stack([bias[:, j:j + t] for j in range(2 * w + 1)], axis=2)     # B,T,W,1
    qh = ops.reshape(q * (1.0 / hd ** 0.5), (b, t, 1, nh, hd))
    att = ops.sum(qh * ops.reshape(kw, (b, t, 2 * w + 1, nh, hd)), -1) + bw  # B,T,W,nh
    att = ops.softmax(att, axis=2) * ops.expand_dims(kv_mask, -1)
    out = ops.sum(ops.expand_dims(att, -1) * ops.reshape(vw, (b, t, 2 * w + 1, nh, hd)), 2)
    return ops.reshape(out, (b, t, c))


def _attention_child(repeats, seq_len):
    import numpy as np
    import tensorflow as tf

    from asl_tf.model.layers import MaskedMHCA

    c, nh, win = 512, 4, 19
    layer = MaskedMHCA(c, nh, win)
    layer.build((None, None, c))
    rng = np.random.RandomState(0)
    q, k, v = (tf.constant(rng.randn(1, seq_len, c).astype(np.float32)) for _ in range(3))
    m = np.ones((1, seq_len, 1), np.float32)
    m[0, int(seq_len * 0.9):] = 0
    m = tf.constant(m)
    impls = {"blocked_band": tf.function(lambda: layer._local(q, k, v, m, False)),
             "gathered": tf.function(lambda: _gathered_local_attention(q, k, v, m, win // 2,
                                                                       nh))}
    res = {}
    ref = impls["blocked_band"]().numpy()
    for name, fn in impls.items():
        out = fn().numpy()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn().numpy()
            times.append(time.perf_counter() - t0)
        res[name] = {"median_s": float(np.median(times)),
                     "max_abs_diff_vs_blocked": float(np.abs(out - ref).max())}
    return {"mode": "attention", "seq_len": seq_len, "channels": c, "heads": nh,
            "window": win, "impls": res}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--modes", default="eager,function,xla,bf16,bf16_xla,floor,bf16_floor")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seq_len", type=int, default=2304)
    ap.add_argument("--attention", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--timeout", type=int, default=900, help="per subprocess, seconds")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        mode, threads = args._child.split(":")
        print("__RESULT__" + json.dumps(_child(mode, int(threads), args.repeats, args.seq_len)))
        return 0
    runs = []
    jobs = [(m, int(t)) for t in args.threads.split(",") for m in args.modes.split(",") if m]
    if args.attention:
        jobs.append(("attention", 2))
    for mode, threads in jobs:
        cmd = [sys.executable, os.path.abspath(__file__), "--_child", f"{mode}:{threads}",
               "--repeats", str(args.repeats), "--seq_len", str(args.seq_len)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS=str(threads))
        t0 = time.time()
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                 env=env)
            lines = [ln for ln in res.stdout.splitlines() if ln.startswith("__RESULT__")]
            if res.returncode == 0 and lines:
                run = json.loads(lines[-1][len("__RESULT__"):])
            else:
                run = {"mode": mode, "threads": threads, "error": res.stderr.strip()[-800:]}
        except subprocess.TimeoutExpired:
            run = {"mode": mode, "threads": threads, "error": f"timeout {args.timeout}s"}
        run["wall_s"] = round(time.time() - t0, 1)
        print(json.dumps(run), file=sys.stderr, flush=True)
        runs.append(run)
    summary = {}
    floors = {(r["mode"][:-len("floor")] or "fp32_", r["threads"]): r for r in runs
              if "floor_median_s" in r}
    for run in runs:
        if "floor_median_s" in run:
            key = f"{run['mode']}_t{run['threads']}"
            summary[key] = {"floor_median_s": round(run["floor_median_s"], 4),
                            "matmul_gflop": run["matmul_gflop"],
                            "floor_gflop_per_s": run["floor_gflop_per_s"],
                            "best_possible_speedup_vs_torch_0.60s":
                                round(0.60 / run["floor_median_s"], 2)}
        if "median_s" in run:
            key = f"{run['mode']}_t{run['threads']}"
            summary[key] = {"median_s": round(run["median_s"], 4),
                            "min_s": round(run["min_s"], 4),
                            "median_cpu_s": round(run["median_cpu_s"], 4),
                            "speedup_vs_torch_0.60s": round(0.60 / run["median_s"], 2),
                            "peak_rss_gb": round(run["peak_rss_gb"], 3)}
            floor = floors.get(("bf16_" if run["mode"].startswith("bf16") else "fp32_",
                                run["threads"]))
            if floor is not None and run["mode"] in ("function", "bf16"):
                summary[key]["fraction_of_floor"] = round(
                    floor["floor_median_s"] / run["median_s"], 3)
    report = {"benchmark": "asl_tf forward, batch 1", "seq_len": args.seq_len,
              "config": THUMOS, "expected_params": PARAMS,
              "params_ok": all(r.get("params", PARAMS) == PARAMS for r in runs),
              "reference": REFERENCE, "cpu_count": os.cpu_count(),
              "load_avg_at_end": os.getloadavg(), "summary": summary, "runs": runs}
    text = json.dumps(report, indent=1)
    if args.out:
        sys.path.insert(0, REPO)
        from asl_tf.fileio import atomic_write
        with atomic_write(args.out) as fh:
            fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
